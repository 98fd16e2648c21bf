# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""tools/molecule_order.py: the order in which make test starts the scenarios."""

from __future__ import annotations

import importlib.util
from pathlib import Path

_PATH = Path(__file__).resolve().parents[2] / "tools" / "molecule_order.py"
_spec = importlib.util.spec_from_file_location("molecule_order", _PATH)
molecule_order = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(molecule_order)


def test_a_scenario_starts_whenever_a_slot_is_free():
    end, starts = molecule_order.ends(["a", "b", "c", "d"], {"a": 10, "b": 6, "c": 5, "d": 4}, 2)
    assert starts == {"a": 0, "b": 0, "c": 6, "d": 10}
    assert end == 14


def test_the_order_that_ends_first_beats_longest_first():
    # The seconds of 2026-12-07 (the module's docstring), before scenario portal existed.
    seconds = {"migration": 683, "libvirt": 565, "proxy": 549, "qemu": 490, "qemu_source": 397, "pki": 323,
               "firewall": 200}
    longest_first = sorted(seconds, key=lambda n: -seconds[n])
    best = molecule_order.best_order(seconds, 3)
    assert sorted(best) == sorted(seconds)
    assert molecule_order.ends(best, seconds, 3)[0] < molecule_order.ends(longest_first, seconds, 3)[0]
    assert molecule_order.ends(best, seconds, 3)[0] == 1080  # the sum over three slots is 1,069 s


def test_of_the_orders_that_end_first_the_one_closest_to_longest_first():
    # On two slots c, a, b and a, b, c (and more) all end at 10: c, the longest, starts first.
    assert molecule_order.best_order({"a": 6, "b": 4, "c": 10}, 2) == ["c", "a", "b"]
    assert molecule_order.best_order({"a": 5, "b": 5}, 1) == ["a", "b"]


def test_many_scenarios_start_longest_first():
    seconds = dict(("s%d" % i, i) for i in range(molecule_order.MAX_EXACT + 1))
    assert molecule_order.best_order(seconds, 3) == sorted(seconds, key=lambda n: -seconds[n])


def test_the_last_run_wins_over_the_known_seconds(tmp_path, capsys):
    times = tmp_path / "times.tsv"
    times.write_text("qemu_source\t1546\nbroken line\n")
    assert molecule_order.read_times(str(times)) == {}  # not the expected lines: as a fresh clone
    times.write_text("qemu_source\t1546\npki\t300\n")
    paths = ["molecule/%s/molecule.yml" % n for n in ("pki", "qemu_source", "firewall")]
    assert molecule_order.main(["x", str(times), "3"] + paths) == 0
    assert capsys.readouterr().out.split() == ["qemu_source", "pki", "firewall"]
    # A fresh clone, one at a time: every order ends at the same time, so longest first (qemu_source: warm or cold, longest here).
    assert molecule_order.main(["x", str(tmp_path / "none"), "1"] + paths) == 0
    assert capsys.readouterr().out.split() == ["qemu_source", "pki", "firewall"]


def test_a_fresh_clone_starts_a_cold_source_build_first(tmp_path):
    cache = tmp_path / "qemu-source"
    names = sorted(molecule_order.KNOWN)
    # The lab's cache has no source tarball for bookworm: a cold compile, so qemu_source starts first.
    seconds = dict((n, molecule_order.expected(n, {}, {}, str(cache))) for n in names)
    assert seconds["qemu_source"] == molecule_order.COLD["qemu_source"]
    assert molecule_order.best_order(seconds, 3)[0] == "qemu_source"
    # With the tarball of that release (a build ran before): the warm seconds; another release's does not count.
    (cache / "trixie").mkdir(parents=True)
    (cache / "trixie" / "qemu-debian-source.tar.gz").write_bytes(b"x")
    assert molecule_order.cold("qemu_source", {"VMC_QEMU_SOURCE_RELEASE": "trixie"}, str(cache)) is False
    assert molecule_order.cold("qemu_source", {}, str(cache)) is True
    (cache / "bookworm").mkdir()
    (cache / "bookworm" / "qemu-debian-source.tar.gz").write_bytes(b"x")
    assert molecule_order.expected("qemu_source", {}, {}, str(cache)) == molecule_order.KNOWN["qemu_source"]
    assert molecule_order.best_order(dict((n, molecule_order.expected(n, {}, {}, str(cache))) for n in names), 3)[0] != "qemu_source"
    # The last run's seconds win over both; other scenarios are never cold.
    assert molecule_order.expected("qemu_source", {"qemu_source": 7}, {}, str(tmp_path / "none")) == 7
    assert molecule_order.cold("pki", {}, str(tmp_path / "none")) is False
