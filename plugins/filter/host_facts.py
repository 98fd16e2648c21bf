# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Filters ``fact_subsets``, ``os_vars_files`` and ``system_errors``: the facts a role reads, gathered once and only
the subsets that hold them, the role's variables of the host's system, and whether the collection supports that
system (see the ``.yml`` file of each). The collection's
one facts step (``roles/_common/tasks/facts.yml``) wires them: every role gathers its facts through that step.
"""

from __future__ import annotations

import os

from collections.abc import Mapping

from ansible.errors import AnsibleFilterError

# Facts (names as in ansible_facts, without the ansible_ prefix) of each gather_subset the roles may need.
# `min` is what `setup` gathers with gather_subset [min] (ansible-core 2.19).
SUBSET_FACTS = {
    "min": frozenset([
        "apparmor", "architecture", "cmdline", "date_time", "distribution", "distribution_file_parsed",
        "distribution_file_path", "distribution_file_variety", "distribution_major_version",
        "distribution_minor_version", "distribution_release", "distribution_version", "dns", "domain",
        "effective_group_id", "effective_user_id", "env", "fips", "fqdn", "hostname", "kernel", "kernel_version",
        "local", "lsb", "machine", "machine_id", "nodename", "os_family", "pkg_mgr", "proc_cmdline", "python",
        "python_version", "real_group_id", "real_user_id", "selinux", "selinux_python_present", "service_mgr",
        "system", "system_capabilities", "system_capabilities_enforced", "user_dir", "user_gecos", "user_gid",
        "user_id", "user_shell", "user_uid", "userspace_architecture", "userspace_bits",
    ]),
    "hardware": frozenset([
        "processor", "processor_count", "processor_cores", "processor_nproc", "processor_threads_per_core",
        "processor_vcpus", "memtotal_mb", "memfree_mb", "swaptotal_mb", "mounts", "devices",
    ]),
    "network": frozenset([
        "default_ipv4", "default_ipv6", "interfaces", "all_ipv4_addresses", "all_ipv6_addresses",
    ]),
    "virtual": frozenset(["virtualization_type", "virtualization_role"]),
}
SUBSET_ORDER = ("min", "hardware", "network", "virtual")


def _names(value, what):
    if not isinstance(value, (list, tuple)) or not all(isinstance(name, str) and name for name in value):
        raise AnsibleFilterError("%s must be a list of fact names, not %r" % (what, value))
    return list(value)


def fact_subsets(required, facts):
    """The gather_subset values that hold the facts of ``required`` missing from ``facts`` (ansible_facts); empty
    when every one is there (see fact_subsets.yml)."""
    required = _names(required, "fact_subsets: _common_facts")
    if not isinstance(facts, Mapping):
        raise AnsibleFilterError("fact_subsets: the second argument must be ansible_facts, not %r" % (facts,))
    wanted = set()
    for name in required:
        if name in facts:
            continue
        subset = [key for key in SUBSET_ORDER if name in SUBSET_FACTS[key]]
        if not subset:
            raise AnsibleFilterError("fact_subsets: _common_facts names %s, which no gather_subset the collection "
                                     "knows holds (%s: see plugins/filter/host_facts.py)"
                                     % (name, ", ".join(SUBSET_ORDER)))
        wanted.add(subset[0])
    return [key for key in SUBSET_ORDER if key in wanted]


def os_vars_files(facts, role_path):
    """The files ``<role_path>/vars/<os_family>.yml``, ``<distribution>.yml`` and
    ``<distribution>_<distribution_major_version>.yml`` that exist, in that order (the most specific last, so it
    wins), each once (see os_vars_files.yml)."""
    if not isinstance(facts, Mapping) or not all(isinstance(facts.get(key), str) and facts.get(key)
                                                 for key in ("os_family", "distribution")):
        raise AnsibleFilterError("os_vars_files: the facts lack os_family or distribution: gather them first "
                                 "(fact_subsets)")
    if not isinstance(role_path, str) or not os.path.isabs(role_path):
        raise AnsibleFilterError("os_vars_files: role_path must be an absolute path, not %r" % (role_path,))
    out = []
    names = [facts["os_family"], facts["distribution"]]
    major = facts.get("distribution_major_version")
    if isinstance(major, str) and major:
        names.append("%s_%s" % (facts["distribution"], major))
    for name in names:
        path = os.path.join(role_path, "vars", name + ".yml")
        if "/" not in name and os.path.isfile(path) and path not in out:
            out.append(path)
    return out


# The systems the collection runs on: distribution -> its oldest supported major version. Ubuntu is of the Debian
# family too, but its QEMU, squid and libvirt are other builds: not supported.
SUPPORTED_SYSTEMS = {"Debian": 12}
# The releases the lab proves (later Debian releases are admitted, untested).
TESTED_RELEASES = {"Debian": ("12", "13")}


def system_errors(facts, host=None):
    """Why the host's system is not one the collection supports (see system_errors.yml); empty when it is."""
    if not isinstance(facts, Mapping):
        raise AnsibleFilterError("system_errors: the input must be ansible_facts, not %r" % (facts,))
    name = facts.get("distribution") or "an unknown system"
    version = facts.get("distribution_version") or facts.get("distribution_major_version") or ""
    major = str(facts.get("distribution_major_version") or "")
    supported = "; ".join("%s %d and later (tested: %s)" % (d, v, ", ".join(TESTED_RELEASES.get(d, ())))
                          for d, v in sorted(SUPPORTED_SYSTEMS.items()))
    at = "%s runs" % host if host else "The host runs"
    if name not in SUPPORTED_SYSTEMS:
        return ["%s %s %s (family %s); vmconsole.secure supports %s" % (
            at, name, version, facts.get("os_family") or "?", supported)]
    if not major.isdigit() or int(major) < SUPPORTED_SYSTEMS[name]:
        version = version or "(no release number: testing or unstable?)"
        return ["%s %s %s; vmconsole.secure supports %s" % (at, name, version, supported)]
    return []


class FilterModule:
    """The facts step shared by the collection's roles."""

    def filters(self):
        return {"fact_subsets": fact_subsets, "os_vars_files": os_vars_files, "system_errors": system_errors}
