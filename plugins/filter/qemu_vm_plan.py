# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Filter ``qemu_vm_plan``: what the ``qemu_vm`` role does on a host (see qemu_vm_plan.yml).

The logic is in ``module_utils/_guests.py``.
"""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.vmconsole.secure.plugins.module_utils._guests import plan


def qemu_vm_plan(settings, host=None, changed=None):
    """The qemu_vm role's decisions for one host (see qemu_vm_plan.yml)."""
    if not isinstance(settings, dict):
        raise AnsibleFilterError("qemu_vm_plan: the input must be a dict of the role's variables, not %s"
                                 % type(settings).__name__)
    if host is not None and not isinstance(host, dict):
        raise AnsibleFilterError("qemu_vm_plan: host must be a dict of what the preflight saw")
    return plan(settings, host, changed)


class FilterModule:
    """The qemu_vm role's decisions."""

    def filters(self):
        return {"qemu_vm_plan": qemu_vm_plan}
