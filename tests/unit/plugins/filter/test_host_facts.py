# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The fact_subsets and os_vars_files filters: the decisions of the collection's one facts step
(roles/_common/tasks/facts.yml)."""

from __future__ import annotations

import glob
import os

import pytest
import yaml

from ansible.errors import AnsibleFilterError

from ansible_collections.vmconsole.secure.plugins.filter.host_facts import (
    SUBSET_FACTS, SUBSET_ORDER, FilterModule, fact_subsets, os_vars_files, system_errors,
)

ROLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "..", "roles")
DEBIAN = {"os_family": "Debian", "distribution": "Debian", "python": {}, "env": {}}


def test_nothing_is_gathered_when_every_fact_is_there():
    assert fact_subsets(["os_family", "distribution", "python", "env"], DEBIAN) == []
    assert fact_subsets([], {}) == []


def test_a_fresh_host_gathers_min_once():
    assert fact_subsets(["os_family", "distribution", "python", "fqdn", "os_family"], {}) == ["min"]


def test_only_the_subsets_that_hold_missing_facts():
    assert fact_subsets(["os_family", "processor_nproc"], DEBIAN) == ["hardware"]
    assert fact_subsets(["default_ipv4", "processor_nproc", "env"], {}) == ["min", "hardware", "network"]


def test_every_subset_is_known_and_no_fact_is_in_two():
    assert set(SUBSET_ORDER) == set(SUBSET_FACTS)
    for first in SUBSET_ORDER:
        for second in SUBSET_ORDER:
            assert first == second or not SUBSET_FACTS[first] & SUBSET_FACTS[second]


def test_every_fact_a_role_reads_is_known():
    # Each role names the facts it reads in vars/main.yml (__<role>_required_facts).
    for path in glob.glob(os.path.join(ROLES, "*", "vars", "main.yml")):
        with open(path) as handle:
            private = yaml.safe_load(handle) or {}
        role = os.path.basename(os.path.dirname(os.path.dirname(path)))
        required = private.get("__%s_required_facts" % role)
        if required is not None:
            assert fact_subsets(required, {}) == ["min"], role


def test_an_unknown_fact_is_named():
    with pytest.raises(AnsibleFilterError, match=r"^fact_subsets: _common_facts names ansible_os_family, which no "
                                                 r"gather_subset the collection knows holds \(min, hardware, "
                                                 r"network, virtual"):
        fact_subsets(["os_family", "ansible_os_family"], {})


@pytest.mark.parametrize("required", [None, "os_family", [""], [1], {"os_family": 1}])
def test_the_fact_list_must_be_names(required):
    with pytest.raises(AnsibleFilterError, match=r"^fact_subsets: _common_facts must be a list of fact names"):
        fact_subsets(required, {})


@pytest.mark.parametrize("facts", [None, [], "x"])
def test_the_facts_must_be_ansible_facts(facts):
    with pytest.raises(AnsibleFilterError, match=r"^fact_subsets: the second argument must be ansible_facts"):
        fact_subsets(["os_family"], facts)


def role_dir(tmp_path, *names):
    (tmp_path / "vars").mkdir()
    for name in names:
        (tmp_path / "vars" / name).write_text("---\n")
    return str(tmp_path)


def test_os_vars_files_family_then_distribution(tmp_path):
    role = role_dir(tmp_path, "Debian.yml", "Ubuntu.yml", "main.yml")
    facts = {"os_family": "Debian", "distribution": "Ubuntu"}
    assert os_vars_files(facts, role) == [os.path.join(role, "vars", "Debian.yml"),
                                          os.path.join(role, "vars", "Ubuntu.yml")]


def test_os_vars_files_once_when_family_and_distribution_agree(tmp_path):
    role = role_dir(tmp_path, "Debian.yml")
    assert os_vars_files(DEBIAN, role) == [os.path.join(role, "vars", "Debian.yml")]


def test_os_vars_files_only_those_that_exist(tmp_path):
    assert os_vars_files(DEBIAN, role_dir(tmp_path, "RedHat.yml")) == []
    assert os_vars_files(DEBIAN, str(tmp_path / "no-role")) == []


def test_os_vars_files_never_leaves_the_vars_folder(tmp_path):
    role = role_dir(tmp_path, "x.yml")
    (tmp_path / "evil.yml").write_text("---\n")
    assert os_vars_files({"os_family": "../evil", "distribution": "../evil"}, role) == []


def test_os_vars_files_family_distribution_then_release(tmp_path):
    role = role_dir(tmp_path, "Debian.yml", "Debian_12.yml", "Debian_13.yml")
    assert os_vars_files(dict(DEBIAN, distribution_major_version="12"), role) == [
        os.path.join(role, "vars", "Debian.yml"), os.path.join(role, "vars", "Debian_12.yml")]
    # A release without its own file gets the family's (the newest release's) settings.
    assert os_vars_files(dict(DEBIAN, distribution_major_version="14"), role) == [
        os.path.join(role, "vars", "Debian.yml")]


def _role_vars(role, facts):
    out = {}
    for path in os_vars_files(facts, os.path.abspath(os.path.join(ROLES, role))):
        with open(path) as handle:
            out.update(yaml.safe_load(handle) or {})
    return out


# Measured on each release (issue #16): where SPICE and qxl live, what a built QEMU links.
RELEASES = {
    "12": {"spice": ["qemu-system-x86"], "runtime": ["libgnutls30", "libglib2.0-0"], "build": []},
    # QEMU 8.1+ in Debian: SPICE and qxl are modules in qemu-system-modules-spice, a Recommends only; the 64-bit
    # time_t transition renamed the libraries (dpkg-query knows only the new names).
    # QEMU 10's configure makes a venv: "Python's ensurepip module is not found" without python3-venv.
    "13": {"spice": ["qemu-system-x86", "qemu-system-modules-spice"], "runtime": ["libgnutls30t64", "libglib2.0-0t64"],
           "build": ["python3-venv"]},
}


@pytest.mark.parametrize("major", sorted(RELEASES))
def test_qemu_spice_has_the_packages_of_each_release(major):
    values = _role_vars("qemu_spice", dict(DEBIAN, distribution_major_version=major))
    assert values["__qemu_spice_packages"] == RELEASES[major]["spice"]
    runtime = values["__qemu_spice_source_runtime_packages"]
    assert set(RELEASES[major]["runtime"]) <= set(runtime)
    other = [name for m, r in RELEASES.items() if m != major for name in r["runtime"]]
    assert not set(other) & set(runtime), "another release's package names: %s" % (set(other) & set(runtime))
    assert values["__qemu_spice_build_packages_release"] == RELEASES[major]["build"]


def test_os_vars_files_of_this_collection():
    # The roles with settings per system (connect_proxy, console_firewall, pki) have vars/Debian.yml.
    for role in ("connect_proxy", "console_firewall", "pki"):
        path = os.path.abspath(os.path.join(ROLES, role))
        assert os_vars_files(DEBIAN, path) == [os.path.join(path, "vars", "Debian.yml")]


@pytest.mark.parametrize("facts", [None, {}, {"os_family": "Debian"}, {"os_family": "", "distribution": "Debian"}])
def test_os_vars_files_needs_the_facts(facts, tmp_path):
    with pytest.raises(AnsibleFilterError, match=r"^os_vars_files: the facts lack os_family or distribution: "
                                                 r"gather them first"):
        os_vars_files(facts, str(tmp_path))


@pytest.mark.parametrize("role_path", [None, "", "roles/pki", 3])
def test_os_vars_files_needs_an_absolute_role_path(role_path):
    with pytest.raises(AnsibleFilterError, match=r"^os_vars_files: role_path must be an absolute path"):
        os_vars_files(DEBIAN, role_path)


def test_the_filters_are_registered():
    assert FilterModule().filters() == {"fact_subsets": fact_subsets, "os_vars_files": os_vars_files,
                                        "system_errors": system_errors}


def _system(distribution, version, family="Debian"):
    return {"os_family": family, "distribution": distribution, "distribution_version": version,
            "distribution_major_version": version.split(".")[0]}


@pytest.mark.parametrize("facts", [_system("Debian", "12.12"), _system("Debian", "13.8"), _system("Debian", "14.1")])
def test_debian_12_and_later_are_supported(facts):
    assert system_errors(facts, "hv1") == []


@pytest.mark.parametrize("facts", [_system("Ubuntu", "20.04"), _system("Ubuntu", "22.04"), _system("Ubuntu", "24.04")])
def test_ubuntu_is_refused_by_name_although_of_the_debian_family(facts):
    # site.yml once checked "family Debian, major version >= 12", which Ubuntu 20.04 and 22.04 pass.
    assert system_errors(facts, "hv1") == [
        "hv1 runs Ubuntu %s (family Debian); vmconsole.secure supports Debian 12 and later (tested: 12, 13)"
        % facts["distribution_version"]]


def test_old_debian_testing_and_other_families_are_refused():
    assert system_errors(_system("Debian", "11.11"), "hv1") == [
        "hv1 runs Debian 11.11; vmconsole.secure supports Debian 12 and later (tested: 12, 13)"]
    sid = {"os_family": "Debian", "distribution": "Debian", "distribution_version": "n/a",
           "distribution_major_version": "n/a"}
    assert system_errors(sid, "hv1") == ["hv1 runs Debian n/a; vmconsole.secure supports Debian 12 and later (tested: "
                                         "12, 13)"]
    assert system_errors(_system("Rocky", "9.4", "RedHat")) == [
        "The host runs Rocky 9.4 (family RedHat); vmconsole.secure supports Debian 12 and later (tested: 12, 13)"]
    with pytest.raises(AnsibleFilterError, match="system_errors: the input must be ansible_facts"):
        system_errors(None)
