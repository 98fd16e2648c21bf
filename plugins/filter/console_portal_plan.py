# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Filter ``console_portal_plan``: the decisions of the ``console_portal`` role (see console_portal_plan.yml).
The logic is in ``module_utils/_console_portal.py``."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.vmconsole.secure.plugins.module_utils import _console_portal


def console_portal_plan(settings, host):
    """The console_portal role's checks and configuration files for one node (see console_portal_plan.yml)."""
    if not isinstance(settings, dict) or not isinstance(host, dict) or "name" not in host:
        raise AnsibleFilterError("console_portal_plan: the input must be the role's variables and host a dict with "
                                 "the node's name")
    host = dict(host)
    hostvars = host.pop("hostvars", None) or {}
    nodes = list(host.pop("nodes", None) or [host["name"]])
    guests = {node: (hostvars[node].get("qemu_vm_guests") if node in hostvars else None) for node in nodes}
    host["cluster_vms"] = _console_portal.vm_nodes(guests)
    found = host.pop("files", None) or {}
    host["cert_files"] = {path: path in found for path in host.pop("required_files", None) or []}
    settings = dict(settings, nodes=_console_portal.node_urls(nodes, settings.get("console_portal_port")))
    return _console_portal.plan(settings, host)


class FilterModule:
    def filters(self):
        return {"console_portal_plan": console_portal_plan}
