# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The decisions of the console_portal role (private): its input checks and the two configuration files.

:func:`plan` takes the role's variables and what the preflight found on one node, and returns the
errors (each naming the variable and the reason) and, when there are none, the JSON objects of the
web process (``portal``, which ``_portal.portal_config`` reads) and of the root agent (``agent``,
``_portal_agent.agent_config``).
"""

from __future__ import annotations

import re

from ansible_collections.vmconsole.secure.plugins.module_utils._portal_auth import parse_acl, parse_users
from ansible_collections.vmconsole.secure.plugins.module_utils._tickets import VM_NAME_PATTERN

_WHOLE = re.compile(r"^[0-9]+$")
_PID = re.compile(r"pid=([0-9]+)")
# Listeners the portal's port must not take: the variable and what it is.
_RANGES = (("vmconsole_spice_ports", "SPICE"), ("vmconsole_vnc_ports", "VNC"), ("vmconsole_serial_ports", "serial"),
           ("vmconsole_migration_ports", "migration"))
# Numbers of the role and their lowest value.
_NUMBERS = (("console_portal_session_idle", 60), ("console_portal_session_absolute", 60),
            ("console_portal_login_max_failures", 1), ("console_portal_login_window", 1),
            ("console_portal_login_lockout", 1), ("console_portal_ticket_ttl", 10),
            ("console_portal_token_ttl", 60), ("console_portal_relays_per_user", 1),
            ("console_portal_relays_per_vm", 1))


def _int(value):
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _WHOLE.match(value.strip()):
        return int(value)
    return None


def number_errors(s):
    """What is wrong with the role's numbers (each a whole number, at least its minimum)."""
    out = []
    for name, low in _NUMBERS:
        value = _int(s.get(name))
        if value is None or value < low:
            out.append("%s must be a whole number of at least %d, got %r" % (name, low, s.get(name)))
    idle, absolute = _int(s.get("console_portal_session_idle")), _int(s.get("console_portal_session_absolute"))
    if idle is not None and absolute is not None and idle > absolute:
        out.append("console_portal_session_idle (%d) must not be above console_portal_session_absolute (%d)"
                   % (idle, absolute))
    return out


def port_errors(s, host):
    """What is wrong with console_portal_port: not a port, the proxy's port, inside a console or migration range,
    or taken by another process on the node (``host["listeners"]``: ``ss -Hltnp`` lines of that port,
    ``host["portal_pid"]``: the portal's own main PID, 0 when it does not run)."""
    port = _int(s.get("console_portal_port"))
    if port is None or not 1 <= port <= 65535:
        return ["console_portal_port must be a port number (1-65535), got %r" % (s.get("console_portal_port"),)]
    out = []
    if port == _int(s.get("vmconsole_proxy_port")):
        out.append("console_portal_port %d is the console proxy's port (vmconsole_proxy_port): give the portal "
                   "a port of its own" % port)
    for name, label in _RANGES:
        span = s.get(name)
        if isinstance(span, (list, tuple)) and len(span) == 2 and all(_int(p) is not None for p in span):
            if _int(span[0]) <= port <= _int(span[1]):
                out.append("console_portal_port %d lies inside %s %s-%s (%s ports)" % (port, name, span[0], span[1], label))
    own = str(host.get("portal_pid") or 0)
    others = sorted({pid for line in host.get("listeners") or [] for pid in _PID.findall(line)} - {own})
    if others:
        out.append("console_portal_port %d is taken on %s by another process (pid %s): choose another port or "
                   "stop that service" % (port, host.get("name"), ", ".join(others)))
    return out


def input_errors(s):
    """What is wrong with the users and the ACL (``_portal_auth``'s checks) and the host names."""
    out = []
    for check, name in ((parse_users, "console_portal_users"), (parse_acl, "console_portal_acl")):
        try:
            check(s.get(name) if s.get(name) is not None else ({} if name.endswith("users") else []))
        except ValueError as exc:
            out.append(str(exc))
    hosts = s.get("console_portal_hosts")
    if not isinstance(hosts, list) or not all(isinstance(h, str) and h and h.isprintable() for h in hosts):
        out.append("console_portal_hosts must be a list of host names the portal is reached by, got %r" % (hosts,))
    return out


def plan(s, host):
    """{"errors": [...], "missing": [...], "portal": {...}, "agent": {...}} for one node (see the module docstring).

    ``missing``: what an earlier role of the play makes (the node certificate and key of the pki role), an
    error in a real run and a warning in a dry run (the role decides); it does not keep the files from being
    worked out.

    ``s``: the role's variables plus ``vmconsole_*`` ranges and ``nodes`` ({name: https URL of its portal}).
    ``host``: ``name``, ``proxy_url`` (this node's proxy, from the connect_proxy fact; None without one),
    ``cert_files`` ({path: exists}), ``listeners``, ``portal_pid``, ``cluster_vms`` ({vm: node}), ``public``.
    """
    errors = number_errors(s) + port_errors(s, host) + input_errors(s)
    # A missing certificate apart: the pki role of the same play makes it, so a dry run only warns of it.
    missing = sorted(path for path, there in (host.get("cert_files") or {}).items() if not there)
    missing = ["%s: the node's certificate, key or trust bundle is missing (%s): run the pki role first"
               % (host.get("name"), ", ".join(missing))] if missing else []
    vms = host.get("cluster_vms") or {}
    bad = sorted(name for name in vms if not isinstance(name, str) or not VM_NAME_PATTERN.fullmatch(name))
    if bad:
        errors.append("qemu_vm_guests: %s are not VM names" % ", ".join(map(str, bad)))
    if errors:
        return dict(errors=errors, missing=missing, portal=None, agent=None)
    portal = dict(
        node=host["name"],
        public=bool(host.get("public", True)),
        hosts=list(s["console_portal_hosts"]),
        port=_int(s["console_portal_port"]),
        nodes=dict(sorted(s["nodes"].items())),
        proxy=host.get("proxy_url"),
        agent_socket=s["agent_socket"],
        users=s.get("console_portal_users") or {},
        acl=s.get("console_portal_acl") or [],
        vm_nodes=dict(sorted(vms.items())),
        cert_file=s["cert_file"],
        key_file=s["key_file"],
        ca_file=s["ca_file"],
        audit_log=s["audit_log"],
        static_zip=s["static_zip"],
        relays=dict(per_user=_int(s["console_portal_relays_per_user"]), per_vm=_int(s["console_portal_relays_per_vm"])),
        session_idle=_int(s["console_portal_session_idle"]),
        session_absolute=_int(s["console_portal_session_absolute"]),
        login=dict(max_failures=_int(s["console_portal_login_max_failures"]),
                   window=_int(s["console_portal_login_window"]),
                   lockout=_int(s["console_portal_login_lockout"])),
    )
    agent = dict(
        node=host["name"],
        allowed_users=[s["user"]],
        cluster_vms=sorted(vms),
        audit_log=s["tickets_log"],
        ticket_ttl=_int(s["console_portal_ticket_ttl"]),
        token_ttl=_int(s["console_portal_token_ttl"]),
    )
    return dict(errors=[], missing=missing, portal=portal, agent=agent)


def vm_nodes(guests):
    """{vm: node} from ``{node: qemu_vm_guests of that node}`` (guests without a name are left out; a name on two
    nodes keeps the first node in name order)."""
    out = {}
    for node in sorted(guests):
        for guest in guests[node] or []:
            if isinstance(guest, dict) and isinstance(guest.get("name"), str):
                out.setdefault(guest["name"], node)
    return out


def node_urls(nodes, port):
    """{node: https://node:port} of the portals (every node's portal listens on the same port)."""
    number = _int(port)
    return {node: "https://%s:%s" % ("[%s]" % node if ":" in node else node, number if number else port)
            for node in nodes}
