# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Filters ``connect_proxy_plan``, ``connect_proxy_public_keys``, ``cluster_nodes`` and ``connect_proxy_squid_conf``:
the decisions of the ``connect_proxy`` role (see the ``.yml`` file of each). The logic is in
``module_utils/_connect_proxy.py``; the public keys file is written with the collection's token code
(``module_utils/_tickets.py``).
"""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.vmconsole.secure.plugins.module_utils import _connect_proxy
from ansible_collections.vmconsole.secure.plugins.module_utils._tickets import dump_public_keys


def connect_proxy_plan(settings, host):
    """The connect_proxy role's checks and cluster for one node (see connect_proxy_plan.yml)."""
    if not isinstance(settings, dict) or not isinstance(host, dict) or "name" not in host:
        raise AnsibleFilterError("connect_proxy_plan: the input must be the role's variables and host a dict with "
                                 "the node's name")
    out = _connect_proxy.plan(settings, host)
    if "play_hosts" in host:
        out["rotation_errors"] = _connect_proxy.rotation_errors(settings, list(host["play_hosts"]))
    return out


def connect_proxy_public_keys(nodes, hostvars, play_hosts, result="__connect_proxy_signing"):
    """The public keys file every node holds (see connect_proxy_public_keys.yml)."""
    if not isinstance(nodes, list) or not all(isinstance(n, dict) and isinstance(n.get("name"), str) for n in nodes):
        raise AnsibleFilterError("connect_proxy_public_keys: the input must be connect_proxy_nodes ([{name, address}])")
    reports, known = {}, []
    for host in play_hosts:
        answer = hostvars[host].get(result) if host in hostvars else None
        if not isinstance(answer, dict) or answer.get("failed") or not isinstance(answer.get("public_keys"), dict):
            continue
        reports[host] = answer["public_keys"]
        if isinstance(answer.get("known_keys"), dict):
            known.append(answer["known_keys"])
    return dump_public_keys(_connect_proxy.public_keys([n["name"] for n in nodes], reports, known))


def cluster_nodes(hosts, hostvars):
    """``{name, address}`` of each host, from its vmconsole_cluster_address (see cluster_nodes.yml)."""
    return _connect_proxy.cluster_nodes(hosts, hostvars)


def connect_proxy_squid_conf(settings):
    """squid.conf of one node (see connect_proxy_squid_conf.yml)."""
    if not isinstance(settings, dict):
        raise AnsibleFilterError("connect_proxy_squid_conf: the input must be a dict of settings")
    try:
        return _connect_proxy.squid_conf(settings)
    except (KeyError, TypeError, ValueError) as exc:
        raise AnsibleFilterError("connect_proxy_squid_conf: %s %s" % (type(exc).__name__, exc)) from None


class FilterModule:
    """The connect_proxy role's decisions."""

    def filters(self):
        return {
            "connect_proxy_plan": connect_proxy_plan,
            "connect_proxy_public_keys": connect_proxy_public_keys,
            "cluster_nodes": cluster_nodes,
            "connect_proxy_squid_conf": connect_proxy_squid_conf,
        }
