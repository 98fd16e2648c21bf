# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The decisions of the ``connect_proxy`` role: its input checks, the cluster's nodes and their
addresses, the signing keys a rotation stage leaves on a node and the public keys every node holds.

Private to this collection, reached through the filters ``vmconsole.secure.connect_proxy_plan``,
``vmconsole.secure.connect_proxy_public_keys`` and ``vmconsole.secure.cluster_nodes``, and the
module ``vmconsole.secure.proxy_token_key``. ``settings``
holds the role's variables keyed by name (``connect_proxy_port``, ...), plus the private
``__connect_proxy_stage`` (the rotation stage as a number). Every message names the variable and
the reason; no message holds a key.
"""

from __future__ import annotations

import time

from ansible_collections.vmconsole.secure.plugins.module_utils._addresses import (
    is_host_name, is_ip_address, is_ip_network,
)
from ansible_collections.vmconsole.secure.plugins.module_utils._tickets import SigningKeys
from ansible_collections.vmconsole.secure.plugins.module_utils._values import (
    as_json as _json, is_list as _is_list, is_whole as _whole, text as _text,
)

RANGES = (("connect_proxy_spice_ports", "SPICE"), ("connect_proxy_vnc_ports", "VNC"),
          ("connect_proxy_serial_ports", "serial"))
# Whole-number settings and their least value.
NUMBERS = (("connect_proxy_key_overlap", 0), ("connect_proxy_credentials_ttl", 1), ("connect_proxy_log_days", 1),
           ("connect_proxy_idle_timeout", 60), ("connect_proxy_shutdown_lifetime", 0))


def cluster_nodes(hosts, hostvars):
    """The default of connect_proxy_nodes: ``{name, address}`` of each host, the address its
    ``vmconsole_cluster_address`` (the first of a list; empty: resolve the name)."""
    out = []
    for host in hosts:
        address = hostvars[host].get("vmconsole_cluster_address") or ""
        if not isinstance(address, str):
            address = next(iter(address), "")
        out.append({"name": host, "address": address})
    return out


# --- Input checks ---------------------------------------------------------------------------

def range_errors(s):
    out = []
    for var, _label in RANGES:
        v = s[var]
        if not _is_list(v) or len(v) != 2 or not all(_whole(p) for p in v):
            out.append("%s is %s: a port range is a list [low, high] of two port numbers" % (var, _json(v)))
        elif int(v[0]) < 1 or int(v[1]) > 65535 or int(v[0]) > int(v[1]):
            out.append("%s is %s: ports go from 1 to 65535 and low must not be above high" % (var, _json(v)))
    return out


def ranges(s):
    """The console ranges as ``low-high`` (valid input only)."""
    return ["%d-%d" % (int(s[var][0]), int(s[var][1])) for var, _label in RANGES]


def port_errors(s, ranges_ok):
    p = s["connect_proxy_port"]
    if not _whole(p) or not 1 <= int(p) <= 65535:
        return ["connect_proxy_port (vmconsole_proxy_port) is %s: a port is a number from 1 to 65535" % _json(p)]
    out = []
    if ranges_ok:
        for var, label in RANGES:
            if int(s[var][0]) <= int(p) <= int(s[var][1]):
                out.append("connect_proxy_port %s lies inside %s %s (%s): the proxy port answers clients, console "
                           "ports only the node itself" % (_text(p), var, _json(s[var]), label))
    return out


def listen_errors(s):
    out = []
    if not is_ip_address(s["connect_proxy_listen_address"]):
        out.append("connect_proxy_listen_address is %s: give one IP address (0.0.0.0 for every IPv4 address, :: for "
                   "every address)" % _json(s["connect_proxy_listen_address"]))
    public = s["connect_proxy_public_host"]
    if not (is_host_name(public) or is_ip_address(public)):
        out.append("connect_proxy_public_host is %s: the name clients use for this proxy is a host name or an IP "
                   "address" % _json(public))
    return out


def network_errors(s):
    nets = s["connect_proxy_client_networks"]
    if not _is_list(nets):
        return ["connect_proxy_client_networks (vmconsole_client_networks) must be a list of networks, not %s"
                % _json(nets)]
    return ["connect_proxy_client_networks (vmconsole_client_networks) contains %s, which is not a network in CIDR "
            "form (address/prefix, e.g. 192.0.2.0/24 or 2001:db8::/64)" % _json(net)
            for net in nets if not is_ip_network(net)]


def node_errors(s, me):
    nodes = s["connect_proxy_nodes"]
    if not _is_list(nodes):
        return ["connect_proxy_nodes must be a list of {name, address}, not %s" % _json(nodes)]
    if not nodes:
        return ["connect_proxy_nodes is empty: squid would know no cluster node. Put the hypervisors in group"
                " hypervisors (with vmconsole_cluster_address), or list them in connect_proxy_nodes"]
    out = []
    for index, node in enumerate(nodes):
        at = "connect_proxy_nodes[%d]" % index
        if not isinstance(node, dict) or "name" not in node:
            out.append("%s is %s: each node is {name: NAME, address: IP}" % (at, _json(node)))
        elif not is_host_name(node["name"]):
            out.append("%s.name is %s: a node name is a host name (letters, digits, - and .)" % (at, _json(node["name"])))
        elif node.get("address") and not is_ip_address(node["address"]):
            out.append("%s.address (%s) is %s: give an IP address, or leave it empty to resolve the name"
                       % (at, node["name"], _json(node["address"])))
    if not out:
        names = [node["name"].lower() for node in nodes]
        if len(set(names)) != len(names):
            out.append("connect_proxy_nodes names a node twice: " + ", ".join(names))
        if me not in [node["name"] for node in nodes]:
            out.append("this host (%s) is not in connect_proxy_nodes (%s): the proxy runs on cluster nodes, and must "
                       "know itself to send its own consoles to 127.0.0.1" % (me, ", ".join(names)))
    return out


def number_errors(s):
    out = ["%s is %s: a whole number, at least %d" % (name, _json(s[name]), low)
           for name, low in NUMBERS if not _whole(s[name]) or int(s[name]) < low]
    out += ["%s is %s: true or false" % (name, _json(s[name]))
            for name in ("connect_proxy_tokens", "connect_proxy_token_binding") if not isinstance(s[name], bool)]
    if s["__connect_proxy_stage"] not in (0, 1, 2, 3):
        out.append("connect_proxy_rotate_stage is %s: 1, 2 or 3" % _json(s["connect_proxy_rotate_stage"]))
    return out


def _resolved_address(result):
    """The first address getent found for a name (a result of ansible.builtin.getent), or None."""
    found = ((result.get("ansible_facts") or {}).get("getent_ahosts") or {})
    return next((address for address, value in found.items() if value is not None), None)


def plan(s, host):
    """The checks and the cluster of one node: ``host`` has ``name`` (inventory_hostname) and,
    once the preflight resolved the nodes without an address, ``resolved`` (getent's results)."""
    me = host["name"]
    ranges_ok = not range_errors(s)
    nodes_bad = node_errors(s, me)
    errors = (range_errors(s) + port_errors(s, ranges_ok) + listen_errors(s) + network_errors(s) + nodes_bad
              + number_errors(s))
    out = {"errors": errors, "unaddressed": [], "addresses": {}}
    if nodes_bad:
        return out
    nodes = s["connect_proxy_nodes"]
    out["unaddressed"] = [node["name"] for node in nodes if not node.get("address")]
    out["self"] = next(node for node in nodes if node["name"] == me)
    out["others"] = [node for node in nodes if node["name"] != me]
    if "resolved" in host:
        addresses = dict((node["name"], node["address"]) for node in nodes if node.get("address"))
        for result in host["resolved"] or []:
            address = _resolved_address(result)
            if address is not None:
                addresses[result["item"]] = address
        out["addresses"] = addresses
        out["errors"] = errors + ["connect_proxy_nodes: node %s has no address and its name does not resolve on this "
                                  "host; give its address (vmconsole_cluster_address)" % name
                                  for name in out["unaddressed"] if name not in addresses]
    if ranges_ok:
        out["ranges"] = ranges(s)
    return out


def rotation_errors(s, play_hosts):
    """A rotation stage must run on every node: the nodes the play lacks."""
    stage = s["__connect_proxy_stage"]
    nodes = s["connect_proxy_nodes"]
    if stage not in (1, 2, 3) or not _is_list(nodes) or not all(isinstance(n, dict) and "name" in n for n in nodes):
        return []
    missing = [node["name"] for node in nodes if node["name"] not in play_hosts]
    if not missing:
        return []
    return ["connect_proxy_rotate_stage %d must run on every node, and %s is not in the play (or failed): each stage is"
            " complete only when every node holds the same keys" % (stage, ", ".join(missing))]


# --- Token keys -----------------------------------------------------------------------------
#
# Each node signs tokens with a key of its own (made on the node, never copied: module
# vmconsole.secure.proxy_token_key); every node verifies with the public keys of all nodes.

def signing_keys(stored, stage, now, overlap, new_signer, path):
    """The signing keys this node holds after a run at rotation ``stage``: ``{'errors': [...], 'keys': SigningKeys
    or None, 'changed': bool}``.

    ``stored``: the node's ``_tickets.SigningKeys`` (None: none yet); ``new_signer()`` makes a key, called only
    when one is needed. Stage 0 keeps the keys (or makes the first), 1 adds a pending key, 2 makes it current
    (the old one retiring), 3 drops the retiring keys once no token of theirs can be alive (``overlap``
    seconds after the switch). Running a stage again changes nothing.
    """
    def answer(keys, changed=False, error=None):
        return {"errors": [error] if error else [], "keys": keys, "changed": changed}

    if stored is None:
        if stage > 0:
            return answer(None, error="connect_proxy_rotate_stage %d: this node has no token signing key to rotate yet "
                                      "(%s): run the role without a stage first" % (stage, path))
        signer = new_signer()
        return answer(SigningKeys(signer.key_id, None, [], 0, {signer.key_id: signer}), True)
    current, pending, retiring, promoted = stored.current, stored.pending, stored.retiring, stored.promoted
    if stage == 1 and pending is None and retiring:
        return answer(stored, error="connect_proxy_rotate_stage 1: the last rotation is not finished (key %s is still "
                                    "accepted): run stage 3 first" % ", ".join(retiring))
    if stage == 1 and pending is None:
        signer = new_signer()
        return answer(stored._replace(pending=signer.key_id, keys=dict(stored.keys, **{signer.key_id: signer})), True)
    if stage == 2 and pending is not None:
        return answer(stored._replace(current=pending, pending=None, retiring=sorted(retiring + [current]),
                                      promoted=int(now)), True)
    if stage == 2 and not retiring:
        return answer(stored, error="connect_proxy_rotate_stage 2: there is no new key to make current: run stage 1 "
                                    "first")
    if stage == 3 and pending is not None:
        return answer(stored, error="connect_proxy_rotate_stage 3: key %s was added but is not current yet: run stage "
                                    "2 first" % pending)
    if stage == 3 and retiring and int(now) - promoted < int(overlap):
        return answer(stored, error="connect_proxy_rotate_stage 3: key %s became current %d s ago; tokens of %s may "
                                    "live until %d s after that (connect_proxy_key_overlap): run stage 3 again after %s"
                                    % (current, int(now) - promoted, ", ".join(retiring), int(overlap),
                                       time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(promoted + int(overlap)))))
    if stage == 3 and retiring:
        return answer(stored._replace(retiring=[], keys={current: stored.keys[current]}), True)
    return answer(stored)


def public_keys(nodes, reports, known):
    """The public keys file every node holds: {key id: {"node": NAME, "public": TEXT}}.

    ``nodes``: the cluster's node names (connect_proxy_nodes); ``reports``: {node: {key id: public}} of the
    nodes in this play (what proxy_token_key returned); ``known``: the entries of the public keys files the
    play's nodes hold now. A node in the play gives its keys as they are now; a node outside it keeps the
    keys the files know for it; a node no longer in ``nodes`` is dropped (its tokens stop working).
    """
    out = {}
    for name in nodes:
        if name in reports:
            for key_id, public in reports[name].items():
                out[key_id] = {"node": name, "public": public}
            continue
        for entries in known:
            for key_id, entry in entries.items():
                if entry.get("node") == name:
                    out[key_id] = {"node": name, "public": entry["public"]}
    return dict(sorted(out.items()))


# --- squid.conf ---------------------------------------------------------------------------------

SQUID_DEFAULTS = dict(
    pid_filename="/run/squid.pid",
    coredump_dir="/var/spool/squid",
    other_access_log="/var/log/squid/access.log",
    cache_log="/var/log/squid/cache.log",
    helper_children=8,
    manager_file=None,
    bindings_dir=None,
    client_networks=(),
    others=(),
    addresses={},
)

# The audit log's columns: time, client address:port, the proxy username of a valid token (the helper's
# user=, "-" when refused), what the helper logged (user=U;vm=V;console=C[;via=NODE] for a valid token,
# [user=U;vm=V;]refused=WHY otherwise: the user and VM of a refused line are what the client claimed),
# method, destination (URL-encoded),
# status, bytes from and to the client, duration (ms), and the first client of a hop: that column is
# filled only on a hop from another node's proxy (its cluster address), which replaced whatever
# X-Forwarded-For its client sent by that client's address (forwarded_for truncate); on any other
# line it is "-".
_AUDIT_COLUMNS = "%{%Y-%m-%dT%H:%M:%S%z}tl %>a:%>p %#un %ea %rm %#ru %>Hs %>st %<st %tr"
LOGFORMATS = (
    "logformat vmconsole %s -" % _AUDIT_COLUMNS,
    "logformat vmconsole_hop %s %%#{X-Forwarded-For}>h" % _AUDIT_COLUMNS,
)


def squid_conf(conf):
    """The text of squid.conf for one node (without the ``ansible_managed`` line the role's template adds).

    The one squid configuration of the collection: the role installs it, and the integration tests run
    squid with it (with their own paths). ``conf`` holds (see SQUID_DEFAULTS for what may be left out):

    name, listen_address, port, user (cache_effective_user), shutdown_lifetime, hosts_file, idle_timeout,
    access_log (the CONNECT audit log), tokens (bool: proxy tokens and the destination helper),
    python, helper, keys_file, revocations_file, bindings_dir (None: tokens are not bound to the address
    they are first used from), credentials_ttl (how long squid keeps the helper's answer), vms_fact, ranges
    (``low-high`` of SPICE, VNC and serial, in that order),
    others (the other nodes: ``{name, port?}``), addresses (node name -> address), client_networks,
    pid_filename, coredump_dir, other_access_log, cache_log, helper_children, manager_file (the file with
    ``cachemgr_passwd PASSWORD active_requests``: squid's cache manager then gives that one report, to
    this node only, with that password; console_session cuts tunnels with it).
    """
    c = dict(SQUID_DEFAULTS)
    c.update(conf)
    name = c["name"]
    listen = "[%s]" % c["listen_address"] if ":" in c["listen_address"] else c["listen_address"]
    others = [node["name"] for node in c["others"]]
    node_sources = list(dict.fromkeys(c["addresses"].values()))
    # The proxies of the other nodes: the only senders whose X-Forwarded-For is logged (not 127.0.0.1,
    # where any local process may claim to be a hop).
    peer_sources = list(dict.fromkeys(c["addresses"][node] for node in others))
    children = int(c["helper_children"])
    ttl = int(c["credentials_ttl"])
    lines = [
        "#",
        "# vmconsole.secure console proxy on %s: CONNECT only, to console ports of" % name,
        "# the cluster's nodes only. This node's consoles are reached at 127.0.0.1 (%s);" % c["hosts_file"],
        "# another node's consoles through that node's own proxy (a parent hop), so console ports never",
        "# leave their host. Validated with `squid -k parse` before it is installed.",
        "",
        "http_port %s:%d" % (listen, int(c["port"])),
        "visible_hostname %s" % name,
        "cache_effective_user %s" % c["user"],
        "pid_filename %s" % c["pid_filename"],
        "coredump_dir %s" % c["coredump_dir"],
        "shutdown_lifetime %d seconds" % int(c["shutdown_lifetime"]),
        "pinger_enable off",
        "cache deny all",
        "cache_mem 8 MB",
        "hosts_file %s" % c["hosts_file"],
        "# A console tunnel may stay idle (a viewer left open) for as long as a proxy token lives.",
        "read_timeout %d seconds" % int(c["idle_timeout"]),
        "client_lifetime %d seconds" % max(int(c["idle_timeout"]), 86400),
        "cache_log %s" % c["cache_log"],
        "# logrotate renames the files, then `squid -k rotate` reopens them.",
        "logfile_rotate 0",
    ]
    if c["tokens"]:
        lines += [
            "",
            "# --- Proxy tokens and the console of the token's VM ------------------------------------------",
            "# One helper answers for each CONNECT: the token in the client's Basic credentials (signature,",
            "# expiry, revocation, the client it is bound to) and whether the destination is that token's",
            "# console; squid keeps the answer for ttl seconds per client, credentials and destination.",
            "external_acl_type vmconsole_dest ttl=%d negative_ttl=%d children-max=%d children-startup=1 concurrency=8 "
            "queue-size=2048 %%>a %%{X-Forwarded-For}>h %%{Proxy-Authorization}>h %%DST %%PORT %s %s check --keys %s "
            "--revocations %s%s --facts %s --self %s%s%s --spice-ports %s --vnc-ports %s --serial-ports %s --concurrency"
            % (ttl, ttl, children, c["python"], c["helper"], c["keys_file"], c["revocations_file"],
               " --bindings %s" % c["bindings_dir"] if c["bindings_dir"] else "", c["vms_fact"], name,
               "".join(" --node %s" % n for n in others), "".join(" --peer %s" % a for a in peer_sources),
               c["ranges"][0], c["ranges"][1], c["ranges"][2]),
        ]
    lines += [
        "",
        "# --- Who and what -----------------------------------------------------------------------------",
        "acl CONNECT method CONNECT",
        "# A transaction without an HTTP request (a peer's connection probe, a client that sent nothing):",
        "# ACLs that need a request (CONNECT, hop) are not asked about it.",
        "acl has_request has request",
        "acl console_ports port %s" % " ".join(c["ranges"]),
        "acl this_node dstdomain -n %s" % name,
        "acl cluster_nodes dstdomain -n %s" % " ".join([name] + others),
        "acl node_sources src %s" % " ".join(node_sources + ["127.0.0.1", "::1"]),
    ]
    if c["client_networks"]:
        lines.append("acl client_sources src %s" % " ".join(c["client_networks"]))
    lines += [
        "# A request another proxy forwarded (it carries a Via header): a hop.",
        "acl hop req_header Via .",
    ]
    if peer_sources:
        lines.append("acl peer_sources src %s" % " ".join(peer_sources))
    if c["tokens"]:
        lines.append("acl console_dest external vmconsole_dest")
    if c["manager_file"]:
        local = ["127.0.0.1", "::1"] + ([c["listen_address"]] if c["listen_address"] not in ("0.0.0.0", "::") else [])
        lines += [
            "",
            "# --- squid's cache manager: the active_requests report only (console_session finds the tunnels",
            "# to cut in it), asked from this node only, with the password in %s (root's)." % c["manager_file"],
            "acl manager_sources src %s" % " ".join(dict.fromkeys(local)),
            "include %s" % c["manager_file"],
            "cachemgr_passwd disable all",
        ]
    lines += [
        "",
        "# --- Audit: one line per CONNECT -------------------------------------------------------------",
        "# time, client address:port, the proxy username of a valid token (- when refused), what the helper",
        "# logged (user=U;vm=V;console=C[;via=NODE], or what the client claimed and refused=WHY), method,",
        "# destination, status, bytes from and to the client, duration (ms), and",
        "# on a hop from another node the first client (X-Forwarded-For as that node's proxy set it), else -.",
        "# Every client-controlled field is URL-encoded: a line has these 11 columns whatever a client sends.",
        "# Never a credential: squid logs no request header but X-Forwarded-For here.",
    ] + list(LOGFORMATS)
    if peer_sources:
        lines += [
            "access_log stdio:%s vmconsole_hop has_request CONNECT hop peer_sources" % c["access_log"],
            "access_log none has_request CONNECT hop peer_sources",
        ]
    lines += [
        "access_log stdio:%s vmconsole has_request CONNECT" % c["access_log"],
        "access_log none has_request CONNECT",
        "# Everything else (refused plain requests, a peer's connection probes) goes to squid's own log.",
        "access_log stdio:%s vmconsole" % c["other_access_log"],
        "",
        "# --- What is allowed -------------------------------------------------------------------------",
    ]
    if c["manager_file"]:
        lines += ["http_access allow manager manager_sources", "http_access deny manager"]
    lines += [
        "http_access deny !CONNECT",
        "http_access deny !console_ports",
        "http_access deny !cluster_nodes",
        "# Loop guard: a hop comes from a cluster node and ends here (it is never forwarded again).",
        "http_access deny hop !node_sources",
        "http_access deny hop !this_node",
        "http_access deny !node_sources !client_sources" if c["client_networks"] else "http_access deny !node_sources",
    ]
    lines += ["http_access allow console_dest"] if c["tokens"] else ["http_access allow all"]
    lines += [
        "http_access deny all",
        "",
        "# --- Where a CONNECT goes ----------------------------------------------------------------------",
        "via on",
        "# A hop carries the client's address as the only X-Forwarded-For entry (never the client's own).",
        "forwarded_for truncate",
        "always_direct allow this_node",
        "# A peer whose connection probe failed counts as down for ten connect timeouts (unless a new",
        "# probe succeeds): a short timeout keeps that window short after nodes restarted together.",
    ]
    for index, node in enumerate(c["others"], 1):
        lines += [
            "acl node_%d dstdomain -n %s" % (index, node["name"]),
            "cache_peer %s parent %d 0 no-query no-digest no-netdb-exchange connect-timeout=3 login=PASSTHRU name=%s"
            % (c["addresses"][node["name"]], int(node.get("port") or c["port"]), node["name"]),
            "cache_peer_access %s allow node_%d" % (node["name"], index),
            "cache_peer_access %s deny all" % node["name"],
        ]
    lines.append("never_direct allow all")
    return "\n".join(lines) + "\n"
