# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Filter ``package_plan``: which Debian packages a role still needs on a host, and how the run installs
them (see package_plan.yml). The collection's one package step (``roles/_common/tasks/packages.yml``) wires
it: every role installs its packages through that step.
"""

from __future__ import annotations

from collections.abc import Mapping

from ansible.errors import AnsibleFilterError

# The Python module of python3-apt: the apt module needs it for a dry run and cannot install it then.
APT_MODULE = "apt_pkg"


def package_plan(probe, packages, check_mode=False):
    """``{missing, python_apt, apt, dry_run}`` for ``packages`` on the host ``probe`` (host_info's result)
    describes (see package_plan.yml)."""
    if (not isinstance(packages, (list, tuple)) or not packages
            or not all(isinstance(name, str) and name.strip() == name and name for name in packages)):
        raise AnsibleFilterError("package_plan: _common_packages must be a non-empty list of package names, not %r"
                                 % (packages,))
    if not isinstance(probe, Mapping) or not isinstance(probe.get("packages"), Mapping):
        raise AnsibleFilterError("package_plan: the input must be the result of vmconsole.secure.host_info with "
                                 "packages")
    if not isinstance(check_mode, bool):
        raise AnsibleFilterError("package_plan: check_mode must be true or false (ansible_check_mode), not %r"
                                 % (check_mode,))
    states = probe["packages"]
    missing = []
    for name in packages:
        if states.get(name) != "installed" and name not in missing:
            missing.append(name)
    python_apt = bool((probe.get("python_modules") or {}).get(APT_MODULE))
    return {
        "missing": missing,
        "python_apt": python_apt,
        # A real run installs what is missing; a dry run asks apt only where apt can dry-run.
        "apt": bool(missing) and (not check_mode or python_apt),
        # A dry run with packages missing: it says what a real run would install, and what needs
        # those packages later in the dry run finds nothing to look at.
        "dry_run": bool(missing) and check_mode,
    }


class FilterModule:
    """The package step shared by the collection's roles."""

    def filters(self):
        return {"package_plan": package_plan}
