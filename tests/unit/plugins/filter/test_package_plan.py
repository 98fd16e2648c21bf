# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The package_plan filter: the decision of the collection's one package step (roles/_common/tasks/packages.yml)."""

from __future__ import annotations

import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.vmconsole.secure.plugins.filter.package_plan import FilterModule, package_plan
from ansible_collections.vmconsole.secure.plugins.module_utils import _host_info

PACKAGES = ["squid", "python3", "logrotate"]


def probe(python_apt=False, **states):
    """host_info's result for PACKAGES: the states given, every other package installed."""
    packages = dict((name, "installed") for name in PACKAGES)
    packages.update(states)
    return {"packages": packages, "python_modules": {"apt_pkg": python_apt}, "changed": False}


def test_nothing_missing_does_nothing_in_either_mode():
    for check_mode in (False, True):
        for python_apt in (False, True):
            assert package_plan(probe(python_apt), PACKAGES, check_mode) == {
                "missing": [], "python_apt": python_apt, "apt": False, "dry_run": False}


def test_a_real_run_installs_what_is_missing_in_the_order_asked():
    plan = package_plan(probe(logrotate="not-installed", squid="unknown"), PACKAGES, False)
    assert plan == {"missing": ["squid", "logrotate"], "python_apt": False, "apt": True, "dry_run": False}


@pytest.mark.parametrize("state", ["config-files", "not-installed", "unknown", "half-installed", "unpacked"])
def test_only_installed_counts_as_installed(state):
    assert package_plan(probe(squid=state), PACKAGES)["missing"] == ["squid"]


def test_a_dry_run_without_python3_apt_only_says_what_it_would_install():
    plan = package_plan(probe(python_apt=False, squid="not-installed"), PACKAGES, True)
    assert plan == {"missing": ["squid"], "python_apt": False, "apt": False, "dry_run": True}


def test_a_dry_run_with_python3_apt_asks_apt_too():
    plan = package_plan(probe(python_apt=True, squid="not-installed"), PACKAGES, True)
    assert plan == {"missing": ["squid"], "python_apt": True, "apt": True, "dry_run": True}


def test_a_package_asked_twice_is_installed_once():
    # qemu_spice's source build asks for its build dependencies and run-time packages together.
    plan = package_plan({"packages": {"a": "unknown", "b": "installed"}}, ["a", "b", "a"], False)
    assert plan["missing"] == ["a"]


def test_a_probe_without_python_modules_means_no_python3_apt():
    assert package_plan({"packages": {"a": "unknown"}}, ["a"], True) == {
        "missing": ["a"], "python_apt": False, "apt": False, "dry_run": True}


def test_a_package_the_probe_did_not_ask_about_is_missing():
    assert package_plan({"packages": {}}, ["a"], False)["missing"] == ["a"]


def test_the_plan_reads_what_host_info_returns():
    # The same keys and values as module_utils/_host_info.py writes them.
    def run(argv, **kwargs):
        return type("Done", (), {"stdout": "squid\tinstalled\nlogrotate\tconfig-files\n"})()
    states = _host_info.package_states(["squid", "logrotate", "python3"], run=run)
    plan = package_plan({"packages": states, "python_modules": _host_info.python_modules(["no_such_module_x"])},
                        ["squid", "logrotate", "python3"], False)
    assert plan["missing"] == ["logrotate", "python3"]


@pytest.mark.parametrize("packages", [None, "squid", [], ["squid", ""], ["squid", 3], [" squid"], {"squid": 1}])
def test_bad_package_lists_name_the_option(packages):
    with pytest.raises(AnsibleFilterError, match=r"^package_plan: _common_packages must be a non-empty list of "
                                                 r"package names, not "):
        package_plan(probe(), packages)


@pytest.mark.parametrize("result", [None, [], "x", {}, {"packages": ["squid"]}, {"failed": True, "msg": "x"}])
def test_the_input_must_be_a_host_info_result(result):
    with pytest.raises(AnsibleFilterError, match=r"^package_plan: the input must be the result of "
                                                 r"vmconsole.secure.host_info with packages$"):
        package_plan(result, PACKAGES)


@pytest.mark.parametrize("check_mode", [None, "yes", 1])
def test_check_mode_must_be_a_boolean(check_mode):
    with pytest.raises(AnsibleFilterError, match=r"^package_plan: check_mode must be true or false"):
        package_plan(probe(), PACKAGES, check_mode)


def test_the_filter_is_registered():
    assert FilterModule().filters() == {"package_plan": package_plan}
