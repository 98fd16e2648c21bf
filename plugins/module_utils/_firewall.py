# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The decisions of the ``console_firewall`` role: its checks, port ranges, sources, and the
comparison of the live rules with what the rules files make.

Private to this collection. The role's YAML hands its variables (``settings``, keyed by
variable name: ``console_firewall_backend``, ..., and the private ``__console_firewall_chain``
and ``__console_firewall_nft_table``), what the preflight read on the host (``host``) and the
output of the state script (``state``) to :func:`plan` through the filter
``vmconsole.secure.console_firewall_plan``, and wires the answer into tasks and templates.
"""

from __future__ import annotations

import re
import shlex

from ansible_collections.vmconsole.secure.plugins.module_utils._addresses import is_ip_network
from ansible_collections.vmconsole.secure.plugins.module_utils._values import (
    as_json as _json, is_list as _is_list, is_whole as _is_whole, text as _text, to_bool as boolean,
)

BACKENDS = ("iptables", "nftables")
# The iptables families. IPv6 rules exist when the host has IPv6 (/proc/net/if_inet6).
FAMILIES = (
    {"name": "ipv4", "cmd": "iptables", "file": "rules.v4", "loopback": "127.0.0.0/8", "nft": "ip"},
    {"name": "ipv6", "cmd": "ip6tables", "file": "rules.v6", "loopback": "::1/128", "nft": "ip6"},
)
# Every place an earlier run (or another backend) may have left the role's rules: iptables
# binaries of both flavours per family (legacy ones only listed when the kernel has their
# table: listing would create it), and the nftables table.
PLACES = (
    {"name": "iptables-legacy", "kind": "iptables", "flavour": "legacy", "family": "ipv4", "proc": "ip_tables_names"},
    {"name": "ip6tables-legacy", "kind": "iptables", "flavour": "legacy", "family": "ipv6", "proc": "ip6_tables_names"},
    {"name": "iptables-nft", "kind": "iptables", "flavour": "nf_tables", "family": "ipv4"},
    {"name": "ip6tables-nft", "kind": "iptables", "flavour": "nf_tables", "family": "ipv6"},
    {"name": "nft", "kind": "nftables"},
)
FILES = ("rules.v4", "rules.v6", "rules.nft")

_PRIORITY = re.compile(r"^-?[0-9]+$")
_SSH_CONNECTIONS = re.compile(r"(^|[.])(ssh|paramiko|paramiko_ssh)$")


# --- Port ranges --------------------------------------------------------------------------

def range_input(s):
    """Every port range the chain filters, as given, with the variable that set it: consoles
    (SPICE, VNC, serial, QMP), the proxy port and the portal's port (kind "proxy": open to clients), migration."""
    out = [
        {"var": "console_firewall_spice_ports", "label": "SPICE", "kind": "console", "value": s["console_firewall_spice_ports"]},
        {"var": "console_firewall_vnc_ports", "label": "VNC", "kind": "console", "value": s["console_firewall_vnc_ports"]},
        {"var": "console_firewall_serial_ports", "label": "serial", "kind": "console", "value": s["console_firewall_serial_ports"]},
    ]
    for index, item in enumerate(s["console_firewall_qmp_ports"] or []):
        single = isinstance(item, (int, float, str))
        out.append({"var": "console_firewall_qmp_ports[%d]" % index, "label": "QMP", "kind": "console",
                    "value": [item, item] if single else item})
    port = s["console_firewall_proxy_port"]
    out.append({"var": "console_firewall_proxy_port", "label": "proxy", "kind": "proxy", "value": [port, port]})
    portal = s.get("console_firewall_portal_port")
    if portal is not None and portal != "":
        out.append({"var": "console_firewall_portal_port", "label": "portal", "kind": "proxy", "value": [portal, portal]})
    if boolean(s["console_firewall_migration"]):
        out.append({"var": "console_firewall_migration_ports", "label": "migration", "kind": "migration",
                    "value": s["console_firewall_migration_ports"]})
    return out


def range_errors(inputs):
    """What is wrong with the port ranges themselves."""
    out = []
    for r in inputs:
        v, proxy = r["value"], r["kind"] == "proxy"
        if not _is_list(v) or len(v) != 2 or not all(_is_whole(p) for p in v):
            out.append("%s is %s: %s" % (r["var"], _json(v), "a port is a number from 1 to 65535" if proxy
                                         else "a port range is a list [low, high] of two port numbers"))
        elif int(v[0]) < 1 or int(v[1]) > 65535 or int(v[0]) > int(v[1]):
            out.append("%s is %s: %s" % (r["var"], _json(v), "ports go from 1 to 65535" if proxy
                                         else "ports go from 1 to 65535 and low must not be above high"))
    return out


def ranges(inputs):
    """The ranges as numbers, in the order the rules check them (valid input only)."""
    out = []
    for r in inputs:
        low, high = int(r["value"][0]), int(r["value"][1])
        out.append(dict(r, low=low, high=high, text=str(low) if low == high else "%d-%d" % (low, high),
                        iptables=str(low) if low == high else "%d:%d" % (low, high)))
    return out


def overlap_errors(numbered):
    """Ranges that share ports (the proxy port inside a console range is one of them)."""
    out = []
    for i, a in enumerate(numbered):
        for b in numbered[i + 1:]:
            if not (a["low"] <= b["high"] and b["low"] <= a["high"]):
                continue
            proxy = next((r for r in (a, b) if r["kind"] == "proxy"), None)
            other = next((r for r in (a, b) if r["kind"] != "proxy"), None)
            if proxy is not None and other is not None:
                whom = "cluster nodes" if other["kind"] == "migration" else "the host itself"
                out.append("%s %d lies inside %s %s (%s): the %s port must answer clients, %s ports only %s"
                           % (proxy["var"], proxy["low"], other["var"], other["text"], other["label"],
                              proxy["label"], other["label"], whom))
            else:
                out.append("%s %s (%s) overlaps %s %s (%s): each port belongs to one kind of listener, with its own rule"
                           % (a["var"], a["text"], a["label"], b["var"], b["text"], b["label"]))
    return out


# --- Addresses ----------------------------------------------------------------------------

def address_errors(s):
    out = []
    nets = s["console_firewall_client_networks"]
    if not _is_list(nets):
        out.append("console_firewall_client_networks (vmconsole_client_networks) must be a list of networks, not %s"
                   % _json(nets))
    else:
        for net in nets:
            if not is_ip_network(net):
                out.append("console_firewall_client_networks (vmconsole_client_networks) contains %s, which is not a "
                           "network in CIDR form (address/prefix, e.g. 192.0.2.0/24 or 2001:db8::/64)" % _json(net))
    cluster = s["console_firewall_cluster_addresses"]
    if not _is_list(cluster):
        out.append("console_firewall_cluster_addresses must be a list of addresses, not %s" % _json(cluster))
    else:
        for address in cluster:
            if not is_ip_network(address, prefix="optional"):
                out.append("console_firewall_cluster_addresses contains %s, which is neither an IP address nor a "
                           "network in CIDR form" % _json(address))
        if boolean(s["console_firewall_migration"]) and not cluster:
            out.append("console_firewall_cluster_addresses is empty while console_firewall_migration is true: no node"
                       " could migrate a guest to this host. Give every host of group hypervisors a"
                       " vmconsole_cluster_address, list the nodes in console_firewall_cluster_addresses, or set"
                       " console_firewall_migration: false")
    return out


def sources(s):
    """The sources per family (an address with ':' is IPv6), for the rules templates."""
    nets = list(s["console_firewall_client_networks"])
    cluster = list(s["console_firewall_cluster_addresses"])
    return {
        "ipv4": {"clients": [n for n in nets if ":" not in n], "cluster": [a for a in cluster if ":" not in a]},
        "ipv6": {"clients": [n for n in nets if ":" in n], "cluster": [a for a in cluster if ":" in a]},
    }


# --- The host -----------------------------------------------------------------------------

def management_port(host):
    """The port of the management connection: the server port sshd reports to the session, or
    the inventory's ansible_port for an ssh connection; 0 for a connection without a port on the
    host (podman, local)."""
    ssh = (host.get("ssh_connection") or "").split()
    if len(ssh) == 4:
        return int(ssh[3])
    if _SSH_CONNECTIONS.search(host.get("connection") or "ssh"):
        return int(host.get("port") or 22)
    return 0


def families(probe):
    """The iptables families of the host (``probe``: the lines of the preflight's probe)."""
    return list(FAMILIES) if "ipv6" in (probe if probe is not None else ["ipv6"]) else list(FAMILIES[:1])


def host_errors(s, host):
    """Everything wrong with the input on this host, each message naming the variable."""
    out = []
    backend = s["console_firewall_backend"]
    if backend not in BACKENDS:
        out.append("console_firewall_backend is %s: the role knows iptables (nf_tables or legacy, as the host has it)"
                   " and nftables" % _json(backend))
    priority = s["console_firewall_nftables_priority"]
    if isinstance(priority, bool) or not _PRIORITY.match(_text(priority)):
        out.append("console_firewall_nftables_priority is %s: a hook priority is a whole number (filter is 0)"
                   % _json(priority))
    inputs = range_input(s)
    errors = range_errors(inputs)
    out.extend(errors)
    if not errors:
        numbered = ranges(inputs)
        out.extend(overlap_errors(numbered))
        ephemeral = [int(p) for p in host["probe"][0].split()]
        for r in numbered:
            if r["kind"] == "console" and r["low"] <= ephemeral[1] and ephemeral[0] <= r["high"]:
                out.append("%s %s overlaps the ephemeral port range %d-%d of this host (net.ipv4.ip_local_port_range):"
                           " console ports take no traffic from outside, not even replies to this host's own"
                           " outgoing connections. Move the range, or the ephemeral range"
                           % (r["var"], r["text"], ephemeral[0], ephemeral[1]))
        mport = management_port(host)
        for port in ([mport] if mport > 0 else []) + list(s["console_firewall_management_ports"]):
            port = int(port)
            for r in numbered:
                if r["low"] <= port <= r["high"]:
                    who = ("the management connection (%s, port %d)" % (host.get("connection") or "ssh", port)
                           if port == mport else "console_firewall_management_ports has %d, which" % port)
                    out.append("%s would be cut: the port lies inside %s %s (%s)" % (who, r["var"], r["text"], r["label"]))
    out.extend(address_errors(s))
    return out


# --- The live rules against the files ------------------------------------------------------

def places_in_use(backend, flavour, fams):
    if backend == "nftables":
        return [p for p in PLACES if p["kind"] == "nftables"]
    names = [f["name"] for f in fams]
    return [p for p in PLACES if p["kind"] == "iptables" and p["flavour"] == flavour and p["family"] in names]


def state_script(s, fams):
    """The read-only look at the host (tasks/state.yml): the role's rules wherever they may be,
    then what the rules files (environment VMCONSOLE_RULES_<n>) make, loaded into a network
    namespace of their own that disappears with the command. Sections start with ``== name``."""
    table = s["__console_firewall_nft_table"]
    lines = ["set -euo pipefail", 'echo "== version"', "iptables -V 2>/dev/null || true"]
    for place in PLACES:
        if place["kind"] != "iptables":
            continue
        test = "command -v %s >/dev/null" % place["name"]
        if "proc" in place:
            test += " && grep -qsx filter /proc/net/%s" % place["proc"]
        lines += ["if %s; then" % test, '  echo "== %s"' % place["name"], "  %s -w -S 2>/dev/null || true" % place["name"],
                  "fi"]
    lines += ["if command -v nft >/dev/null && nft list table inet %s >/dev/null 2>&1; then" % table,
              '  echo "== nft"', "  nft list table inet %s" % table, "fi"]
    if s["console_firewall_backend"] == "nftables":
        lines += ['echo "== expected nft"',
                  "printf '%%s\\n' \"$VMCONSOLE_RULES_0\" | unshare --net -- sh -c 'nft -f - && nft list table inet %s'"
                  % table]
    else:
        for index, family in enumerate(fams):
            lines += ['echo "== expected %s"' % family["name"],
                      "printf '%%s\\n' \"$VMCONSOLE_RULES_%d\" | unshare --net -- sh -c '%s-restore -w --noflush && %s -w -S'"
                      % (index, family["cmd"], family["cmd"])]
    return "\n".join(lines) + "\n"


def sections(stdout_lines):
    """The state script's output by section, each a list of lines without surrounding blanks."""
    out, name = {}, None
    for line in stdout_lines or []:
        if line.startswith("== "):
            name = line[3:]
            out[name] = []
        elif name is not None and line.strip():
            out[name].append(line.strip())
    return out


def flavour(found):
    """nf_tables or legacy: what the host's ``iptables`` is."""
    return "legacy" if "(legacy)" in " ".join(found.get("version", [])) else "nf_tables"


def _chain_re(chain):
    return re.compile(r"^-[NA] %s( |$)" % re.escape(chain))


def changes(s, found, fams, dry_new):
    """Per family (iptables) or for the table (nftables) whose live rules differ from the files:
    ``{name, before, after}``. For iptables the first line says where INPUT jumps to the chain
    (once, at rule 1, is right); the others are the chain as ``iptables -S`` lists it."""
    chain = s["__console_firewall_chain"]
    out = []
    if s["console_firewall_backend"] == "nftables":
        before = found.get("nft", [])
        after = ["(the rules of rules.nft)"] if dry_new else found.get("expected nft", [])
        if before != after:
            out.append({"name": "table inet " + s["__console_firewall_nft_table"], "before": before, "after": after})
        return out
    in_chain = _chain_re(chain)
    in_use = places_in_use("iptables", flavour(found), fams)
    for family in fams:
        place = next(p for p in in_use if p["family"] == family["name"])
        live = found.get(place["name"], [])
        inputs = [line for line in live if line.startswith("-A INPUT ")]
        jumps = [str(i + 1) for i, line in enumerate(inputs) if line == "-A INPUT -j " + chain]
        before = ["INPUT: " + ("jump to %s at rule %s" % (chain, ", ".join(jumps)) if jumps else "no jump to " + chain)]
        before += [line for line in live if in_chain.match(line)]
        after = ["INPUT: jump to %s at rule 1" % chain]
        after += (["(the rules of %s)" % family["file"]] if dry_new
                  else [line for line in found.get("expected " + family["name"], []) if in_chain.match(line)])
        if before != after:
            out.append({"name": "%s (%s)" % (family["name"], place["name"]), "before": before, "after": after})
    return out


def stale(s, found, in_use):
    """The role's rules in places the current backend does not use, by place: the lines that go."""
    chain = s["__console_firewall_chain"]
    goes = re.compile(r"^-[NA] %s( |$)|^-A [A-Z]+ .*-j %s$" % (re.escape(chain), re.escape(chain)))
    out = {}
    for place in PLACES:
        if place in in_use or place["name"] not in found:
            continue
        lines = found[place["name"]]
        if place["kind"] == "nftables":
            out[place["name"]] = ["- " + line for line in lines]
        elif "-N " + chain in lines:
            out[place["name"]] = ["- " + line for line in lines if goes.match(line)]
    return out


def stale_removal(s, place):
    """The commands that remove the role's rules from a place it no longer uses."""
    chain = s["__console_firewall_chain"]
    if place == "nft":
        return "set -euo pipefail\nnft delete table inet %s\n" % s["__console_firewall_nft_table"]
    if place not in [p["name"] for p in PLACES]:
        raise ValueError("not a place of the role's rules: %r" % (place,))
    return ("set -euo pipefail\n"
            "jumps=$({cmd} -w -S INPUT | grep -cx -- '-A INPUT -j {chain}' || true)\n"
            "{{\n"
            "  echo '*filter'\n"
            "  for _ in $(seq \"$jumps\"); do echo '-D INPUT -j {chain}'; done\n"
            "  echo '-F {chain}'\n"
            "  echo '-X {chain}'\n"
            "  echo COMMIT\n"
            "}} | {cmd}-restore -w --noflush\n").format(cmd=shlex.quote(place), chain=chain)


def changes_shown(found_changes):
    """The changes as lines removed (-) and added (+), per family or table."""
    out = {}
    for c in found_changes:
        lines = (["- " + line for line in c["before"] if line not in c["after"]]
                 + ["+ " + line for line in c["after"] if line not in c["before"]])
        out[c["name"]] = lines if lines else ["(the same rules, in a new order)"] + c["after"]
    return out


def plan(s, host=None, state=None):
    """Everything the role decides, as one dict (see the filter ``console_firewall_plan``).

    ``host``: what the preflight read (``probe``: the probe's lines - ephemeral range, ipv6,
    tools; ``connection``, ``ssh_connection``, ``port``). ``state``: the state script's lines.
    """
    out = {"errors": [], "files": []}
    if host is None:
        return out
    errors = host_errors(s, host)
    fams = families(host.get("probe"))
    tools_present = "tools" in (host.get("probe") or [])
    nft = s["console_firewall_backend"] == "nftables"
    out.update({
        "errors": errors,
        "management_port": management_port(host),
        "families": fams,
        "all_families": list(FAMILIES),
        "tools_present": tools_present,
        "dry_new": bool(host.get("check_mode")) and not tools_present,
        "files": ["rules.nft"] if nft else [f["file"] for f in fams],
    })
    out["other_files"] = [f for f in FILES if f not in out["files"]]
    if errors:
        return out
    out.update({"ranges": ranges(range_input(s)), "sources": sources(s), "state_script": state_script(s, fams)})
    if state is not None:
        found = sections(state)
        in_use = places_in_use(s["console_firewall_backend"], flavour(found), fams)
        out["changes"] = changes(s, found, fams, out["dry_new"])
        out["changes_shown"] = changes_shown(out["changes"])
        out["stale"] = stale(s, found, in_use)
        out["stale_removal"] = dict((place, stale_removal(s, place)) for place in out["stale"])
    return out
