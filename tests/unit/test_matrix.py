# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""tools/matrix.py: which ansible-core releases run, where, and how their results are counted."""

from __future__ import annotations

import importlib.util
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("matrix", ROOT / "tools" / "matrix.py")
matrix = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(matrix)


def minors():
    return [release[0] for release in matrix.RELEASES]


def test_every_minor_release_requires_ansible_admits_is_in_the_matrix_without_a_gap():
    floor = matrix.requires_ansible(str(ROOT / "meta" / "runtime.yml"))
    keys = [matrix.version_key(minor) for minor in minors()]
    assert keys[0] == floor                       # the oldest admitted release is tested
    assert keys == sorted(keys)
    assert all(b == (a[0], a[1] + 1) for a, b in zip(keys, keys[1:]))   # no minor left out
    for minor, version, oldest, newest in matrix.RELEASES:
        assert version.startswith(minor + ".") and oldest <= newest


def test_the_pinned_controller_is_one_of_the_matrix_releases():
    pinned = re.search(r"^ansible-core==(\S+)", (ROOT / "requirements.txt").read_text(), re.M).group(1)
    assert pinned in [release[1] for release in matrix.RELEASES]


def test_a_release_runs_on_this_machines_python_when_it_can_else_in_the_debian_13_container():
    releases = dict((release[0], release) for release in matrix.RELEASES)
    assert matrix.python_of(releases["2.16"], (3, 11)) == ("host", (3, 11))
    assert matrix.python_of(releases["2.19"], (3, 11)) == ("host", (3, 11))
    assert matrix.python_of(releases["2.20"], (3, 11)) == ("trixie", (3, 13))
    assert matrix.python_of(releases["2.21"], (3, 11)) == ("trixie", (3, 13))
    # On a machine with Python 3.13 everything from 2.18 on runs there.
    assert matrix.python_of(releases["2.21"], (3, 13)) == ("host", (3, 13))
    with pytest.raises(ValueError, match="supports no Python here"):
        matrix.python_of(("9.9", "9.9.0", (3, 20), (3, 21)), (3, 11))


def test_the_default_plan_is_unit_everywhere_and_sanity_on_the_oldest_and_the_newest():
    plan = matrix.default_plan()
    assert [minor for minor, stage in plan if stage == "unit"] == minors()
    assert [minor for minor, stage in plan if stage == "sanity"] == [minors()[0], minors()[-1]]
    assert matrix.parse_entries([]) == plan


def test_entries_name_a_release_or_a_stage_of_one():
    assert matrix.parse_entries(["2.16:unit"]) == [("2.16", "unit")]
    assert matrix.parse_entries(["2.21"]) == [("2.21", "unit"), ("2.21", "sanity")]
    assert matrix.parse_entries(["2.17"]) == [("2.17", "unit")]
    assert len(matrix.parse_entries(["all"])) == 2 * len(matrix.RELEASES)
    with pytest.raises(ValueError, match="unknown release"):
        matrix.parse_entries(["2.15"])
    with pytest.raises(ValueError, match="unknown stage"):
        matrix.parse_entries(["2.16:integration"])


def test_the_lock_pins_everything_but_what_ansible_core_chooses():
    lock = "# comment\nansible-core==2.19.14\nresolvelib==1.2.1\npytest==9.2.0\nJinja2==3.1.6\n\n"
    assert matrix.lock_constraints(lock) == ["pytest==9.2.0", "Jinja2==3.1.6"]
    real = matrix.lock_constraints((ROOT / "requirements.lock").read_text())
    assert any(line.startswith("pytest==") for line in real)
    assert not any(line.lower().startswith(("ansible-core==", "resolvelib==")) for line in real)


def test_a_venv_is_remade_when_what_it_is_made_of_changes():
    key = matrix.venv_key("2.16.19", (3, 11), ["pytest==9.2.0"])
    assert key == matrix.venv_key("2.16.19", (3, 11), ["pytest==9.2.0"])
    assert key != matrix.venv_key("2.16.18", (3, 11), ["pytest==9.2.0"])
    assert key != matrix.venv_key("2.16.19", (3, 12), ["pytest==9.2.0"])
    assert key != matrix.venv_key("2.16.19", (3, 11), ["pytest==9.2.1"])


def test_the_pip_versions_ansible_test_bootstraps_are_read_from_its_source(tmp_path):
    (tmp_path / "_internal").mkdir()
    (tmp_path / "_internal" / "python_requirements.py").write_text(
        "    default_packages = dict(\n        pip='24.2',\n    )\n    override_packages = {'3.8': {'pip': '23.3'}}\n")
    assert matrix.pip_versions(str(tmp_path)) == ["23.3", "24.2"]
    assert matrix.pip_versions(str(tmp_path / "missing")) == []


def test_pypi_minors_are_their_newest_final_release():
    versions = ["2.16.0", "2.16.19", "2.16.2", "2.21.5", "2.21.6rc1", "2.22.0rc1", "2.22.0b1"]
    assert matrix.final_minors(versions) == {"2.16": "2.16.19", "2.21": "2.21.5"}


def result(stage, rc, counts=None):
    return dict(minor="2.16", version="2.16.19", python="3.11", where="host", stage=stage, rc=rc,
                wall=1.0, cpu=0.5, counts=counts, log="/x.log")


def test_junit_counts_pytest_tests_per_unit_entry_and_one_test_per_sanity_entry(tmp_path):
    path = tmp_path / "matrix.xml"
    path.write_text(matrix.junit([result("unit", 0, [10, 0, 2]), result("sanity", 0)]))
    assert matrix.parse_junit(str(path)) == (11, 0, 2)
    path.write_text(matrix.junit([result("unit", 1, [9, 1, 2]), result("sanity", 1)]))
    assert matrix.parse_junit(str(path)) == (9, 2, 2)
    # pytest failed without a failing test (a collection error): one failure all the same.
    path.write_text(matrix.junit([result("unit", 2, [0, 0, 0])]))
    assert matrix.parse_junit(str(path)) == (0, 1, 0)
    failures = ET.parse(str(path)).getroot().iter("failure")
    assert "/x.log" in next(failures).get("message")


def test_the_table_has_a_row_per_entry():
    text = matrix.table([result("unit", 0, [10, 0, 2]), result("sanity", 1)])
    lines = text.splitlines()
    assert lines[0].split()[:5] == ["release", "version", "python", "where", "stage"]
    assert "10 passed, 0 failed, 2 skipped" in lines[1]
    assert lines[2].split()[4:6] == ["sanity", "1"]


def test_the_pinned_minor_is_read_from_requirements_txt(tmp_path):
    assert matrix.pinned_minor() in minors()
    path = tmp_path / "requirements.txt"
    path.write_text("# pins\nmolecule==26.10.0\nansible-core==2.19.14\n")
    assert matrix.pinned_minor(str(path)) == "2.19"
    path.write_text("molecule==26.10.0\n")
    with pytest.raises(ValueError, match="pins no ansible-core"):
        matrix.pinned_minor(str(path))
