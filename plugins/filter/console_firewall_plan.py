# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Filter ``console_firewall_plan``: what the ``console_firewall`` role does on a host (see
console_firewall_plan.yml). The logic is in ``module_utils/_firewall.py``.
"""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.vmconsole.secure.plugins.module_utils._firewall import plan


def console_firewall_plan(settings, host=None, state=None):
    """The console_firewall role's decisions for one host (see console_firewall_plan.yml)."""
    if not isinstance(settings, dict):
        raise AnsibleFilterError("console_firewall_plan: the input must be a dict of the role's variables, not %s"
                                 % type(settings).__name__)
    if host is not None and not isinstance(host, dict):
        raise AnsibleFilterError("console_firewall_plan: host must be a dict of what the preflight read")
    if state is not None and not isinstance(state, (list, tuple)):
        raise AnsibleFilterError("console_firewall_plan: state must be the lines of the state script")
    return plan(settings, host, state)


class FilterModule:
    """The console_firewall role's decisions."""

    def filters(self):
        return {"console_firewall_plan": console_firewall_plan}
