# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""module_utils/_connect_proxy.py and the filters connect_proxy_plan, connect_proxy_public_keys and
cluster_nodes: the connect_proxy role's checks, its view of the cluster, the signing keys a
rotation stage leaves on a node and the public keys every node holds. The settings start from the role's own defaults/main.yml."""

from __future__ import annotations

import copy
import json

import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.vmconsole.secure.plugins.filter import connect_proxy_plan as filters
from ansible_collections.vmconsole.secure.plugins.module_utils import _connect_proxy
from ansible_collections.vmconsole.secure.plugins.module_utils._tickets import SigningKeys, proxy_signer, public_key_text
from ansible_collections.vmconsole.secure.tests.unit.roles import role_settings

TEMPLATED = {
    "connect_proxy_port": 3128,
    "connect_proxy_client_networks": ["192.0.2.0/24"],
    "connect_proxy_public_host": "hv1",
    "connect_proxy_spice_ports": [61000, 61999],
    "connect_proxy_vnc_ports": [5900, 5999],
    "connect_proxy_serial_ports": [62000, 62999],
    "connect_proxy_nodes": [{"name": "hv1", "address": "10.0.0.1"}, {"name": "hv2", "address": ""}],
    "connect_proxy_rotate_stage": 0,
    "__connect_proxy_stage": 0,
}


SETTINGS = role_settings("connect_proxy", TEMPLATED)


def plan(host=None, **changes):
    s = copy.deepcopy(SETTINGS)
    s.update(changes)
    return filters.connect_proxy_plan(s, host or {"name": "hv1"})


def one_error(host=None, **changes):
    found = plan(host, **changes)["errors"]
    assert len(found) == 1, found
    return found[0]


def test_the_defaults_have_no_error():
    assert plan()["errors"] == []


@pytest.mark.parametrize("changes, expect", [
    ({"connect_proxy_spice_ports": [61000]}, "connect_proxy_spice_ports is [61000]: a port range is a list [low, high] "
                                             "of two port numbers"),
    ({"connect_proxy_vnc_ports": [5999, 5900]}, "connect_proxy_vnc_ports is [5999, 5900]: ports go from 1 to 65535 and "
                                                "low must not be above high"),
    ({"connect_proxy_port": 70000}, "connect_proxy_port (vmconsole_proxy_port) is 70000: a port is a number from 1 to "
                                    "65535"),
    ({"connect_proxy_port": True}, "connect_proxy_port (vmconsole_proxy_port) is true: a port is a number"),
    ({"connect_proxy_port": 61500}, "connect_proxy_port 61500 lies inside connect_proxy_spice_ports [61000, 61999] "
                                    "(SPICE): the proxy port answers clients, console ports only the node itself"),
    ({"connect_proxy_listen_address": "hv1"}, 'connect_proxy_listen_address is "hv1": give one IP address (0.0.0.0 for '
                                              'every IPv4 address, :: for every address)'),
    ({"connect_proxy_listen_address": "fe80::1%eth0"}, 'connect_proxy_listen_address is "fe80::1%eth0"'),
    ({"connect_proxy_public_host": "hv 1"}, 'connect_proxy_public_host is "hv 1": the name clients use for this proxy '
                                            'is a host name or an IP address'),
    ({"connect_proxy_public_host": "10.0.0"}, 'connect_proxy_public_host is "10.0.0"'),
    ({"connect_proxy_client_networks": ["10.0.0.1"]}, 'connect_proxy_client_networks (vmconsole_client_networks) '
                                                      'contains "10.0.0.1", which is not a network in CIDR form'),
    ({"connect_proxy_client_networks": "10.0.0.0/8"}, "connect_proxy_client_networks (vmconsole_client_networks) must "
                                                      "be a list of networks, not \"10.0.0.0/8\""),
    ({"connect_proxy_nodes": []}, "connect_proxy_nodes is empty: squid would know no cluster node"),
    ({"connect_proxy_nodes": "hv1"}, 'connect_proxy_nodes must be a list of {name, address}, not "hv1"'),
    ({"connect_proxy_nodes": [{"name": "hv1"}, "hv2"]}, 'connect_proxy_nodes[1] is "hv2": each node is '
                                                        '{name: NAME, address: IP}'),
    ({"connect_proxy_nodes": [{"name": "hv1"}, {"name": "hv_2"}]}, 'connect_proxy_nodes[1].name is "hv_2": a node name '
                                                                   'is a host name'),
    ({"connect_proxy_nodes": [{"name": "hv1", "address": "10.0.0.300"}]}, 'connect_proxy_nodes[0].address (hv1) is '
                                                                          '"10.0.0.300": give an IP address'),
    ({"connect_proxy_nodes": [{"name": "hv1"}, {"name": "HV1"}]}, "connect_proxy_nodes names a node twice: hv1, hv1"),
    ({"connect_proxy_nodes": [{"name": "hv2"}]}, "this host (hv1) is not in connect_proxy_nodes (hv2): the proxy runs "
                                                 "on cluster nodes"),
    ({"connect_proxy_key_overlap": -1}, "connect_proxy_key_overlap is -1: a whole number, at least 0"),
    ({"connect_proxy_idle_timeout": 59}, "connect_proxy_idle_timeout is 59: a whole number, at least 60"),
    ({"connect_proxy_credentials_ttl": "soon"}, 'connect_proxy_credentials_ttl is "soon": a whole number, at least 1'),
    ({"connect_proxy_tokens": "yes"}, 'connect_proxy_tokens is "yes": true or false'),
    ({"connect_proxy_token_binding": "on"}, 'connect_proxy_token_binding is "on": true or false'),
    ({"connect_proxy_rotate_stage": 4, "__connect_proxy_stage": 4}, "connect_proxy_rotate_stage is 4: 1, 2 or 3"),
])
def test_bad_input(changes, expect):
    assert expect in one_error(**changes)


def test_ipv4_mapped_and_nat64_addresses_are_accepted():
    assert plan(connect_proxy_listen_address="::ffff:10.0.0.1", connect_proxy_public_host="64:ff9b::192.0.2.1",
                connect_proxy_client_networks=["::ffff:10.0.0.0/104"],
                connect_proxy_nodes=[{"name": "hv1", "address": "::ffff:10.0.0.1"}])["errors"] == []


def test_the_cluster_as_a_node_sees_it():
    p = plan()
    assert p["self"] == {"name": "hv1", "address": "10.0.0.1"}
    assert p["others"] == [{"name": "hv2", "address": ""}]
    assert p["ranges"] == ["61000-61999", "5900-5999", "62000-62999"]
    assert p["unaddressed"] == ["hv2"] and p["addresses"] == {}


def getent(name, addresses):
    return {"item": name, "ansible_facts": {"getent_ahosts": dict((a, ["STREAM", name]) for a in addresses)}}


def test_resolved_addresses_and_names_that_do_not_resolve():
    p = plan({"name": "hv1", "resolved": [getent("hv2", ["10.0.0.2", "fd00::2"])]})
    assert p["addresses"] == {"hv1": "10.0.0.1", "hv2": "10.0.0.2"} and p["errors"] == []
    p = plan({"name": "hv1", "resolved": [getent("hv2", [])]})
    assert p["errors"] == ["connect_proxy_nodes: node hv2 has no address and its name does not resolve on this host; "
                           "give its address (vmconsole_cluster_address)"]


def test_a_rotation_stage_must_run_on_every_node():
    p = plan({"name": "hv1", "play_hosts": ["hv1"]}, connect_proxy_rotate_stage=2, __connect_proxy_stage=2)
    assert p["rotation_errors"] == ["connect_proxy_rotate_stage 2 must run on every node, and hv2 is not in the play "
                                    "(or failed): each stage is complete only when every node holds the same keys"]
    assert plan({"name": "hv1", "play_hosts": ["hv1"]})["rotation_errors"] == []
    assert plan({"name": "hv1", "play_hosts": ["hv1", "hv2"]}, __connect_proxy_stage=1)["rotation_errors"] == []


def test_cluster_nodes_from_the_inventory():
    hostvars = {"hv1": {"vmconsole_cluster_address": "10.0.0.1"}, "hv2": {"vmconsole_cluster_address": ["fd00::2", "x"]},
                "hv3": {}, "hv4": {"vmconsole_cluster_address": None}}
    assert filters.cluster_nodes(["hv1", "hv2", "hv3", "hv4"], hostvars) == [
        {"name": "hv1", "address": "10.0.0.1"}, {"name": "hv2", "address": "fd00::2"},
        {"name": "hv3", "address": ""}, {"name": "hv4", "address": ""}]


def test_the_plan_filter_needs_the_nodes_name():
    with pytest.raises(AnsibleFilterError, match="host a dict with the node's name"):
        filters.connect_proxy_plan(SETTINGS, {})


# --- Token keys: a node's signing keys through a rotation, the public keys of every node --------

NOW = 1_800_000_000
PATH = "/etc/vmconsole/proxy-signing.json"
A, B, C = (proxy_signer(bytes([n]) * 32) for n in (1, 2, 3))


def made(*signers):
    """new_signer for signing_keys(): hands out ``signers`` in order and records each call."""
    queue = list(signers)
    made.calls = 0

    def new_signer():
        made.calls += 1
        return queue.pop(0)
    return new_signer


def stage(stored, number, now=NOW, overlap=28800, new=B):
    return _connect_proxy.signing_keys(stored, number, now, overlap, made(new), PATH)


def held(current, pending=None, retiring=(), promoted=0, *signers):
    return SigningKeys(current.key_id, pending.key_id if pending else None, sorted(s.key_id for s in retiring), promoted,
                       {s.key_id: s for s in (current, pending) + tuple(retiring) + signers if s is not None})


def test_the_first_run_makes_a_key_on_the_node():
    out = stage(None, 0, new=A)
    assert out == {"errors": [], "keys": held(A), "changed": True} and made.calls == 1
    assert stage(None, 1)["errors"] == ["connect_proxy_rotate_stage 1: this node has no token signing key to rotate "
                                        "yet (%s): run the role without a stage first" % PATH]
    assert made.calls == 0


def test_stage_0_keeps_the_keys_and_makes_none():
    for keys in (held(A), held(A, B), held(B, None, [A], NOW)):
        assert stage(keys, 0) == {"errors": [], "keys": keys, "changed": False} and made.calls == 0


def test_a_whole_rotation():
    one = stage(held(A), 1, new=B)
    assert one == {"errors": [], "keys": held(A, B), "changed": True}
    assert stage(one["keys"], 1) == {"errors": [], "keys": one["keys"], "changed": False} and made.calls == 0
    two = stage(one["keys"], 2)
    assert two == {"errors": [], "keys": held(B, None, [A], NOW), "changed": True}
    assert stage(two["keys"], 2, now=NOW + 5)["changed"] is False, "stage 2 again keeps the switch time"
    early = stage(two["keys"], 3, now=NOW + 100)
    assert early["errors"][0].startswith("connect_proxy_rotate_stage 3: key %s became current 100 s ago; tokens of %s "
                                         "may live until 28800 s after that (connect_proxy_key_overlap): run stage 3 "
                                         "again after " % (B.key_id, A.key_id))
    three = stage(two["keys"], 3, now=NOW + 28800)
    assert three == {"errors": [], "keys": held(B, None, (), NOW), "changed": True}
    assert stage(three["keys"], 3)["changed"] is False
    assert stage(three["keys"], 1, new=C)["keys"] == held(B, C, (), NOW), "the next rotation starts"


def test_stages_out_of_order():
    two = stage(stage(held(A), 1)["keys"], 2)["keys"]
    assert stage(two, 1)["errors"] == ["connect_proxy_rotate_stage 1: the last rotation is not finished (key %s is "
                                       "still accepted): run stage 3 first" % A.key_id]
    assert stage(held(A), 2)["errors"] == ["connect_proxy_rotate_stage 2: there is no new key to make current: run "
                                           "stage 1 first"]
    assert stage(held(A, B), 3)["errors"] == ["connect_proxy_rotate_stage 3: key %s was added but is not current yet: "
                                              "run stage 2 first" % B.key_id]
    assert made.calls == 0


def test_the_public_keys_every_node_holds():
    pa, pb, pc = (public_key_text(s) for s in (A, B, C))
    known = [{A.key_id: {"node": "hv1", "public": pa}, C.key_id: {"node": "hv3", "public": pc}},
             {"0123456789ab": {"node": "gone", "public": pa}}]
    out = _connect_proxy.public_keys(["hv1", "hv2", "hv3"], {"hv1": {B.key_id: pb}, "hv2": {A.key_id: pa}}, known)
    # hv1 and hv2 in the play give their keys as they are now (hv1 rotated: A is gone); hv3, outside the play,
    # keeps what the files know; "gone" is no node any more.
    assert out == {A.key_id: {"node": "hv2", "public": pa}, B.key_id: {"node": "hv1", "public": pb},
                   C.key_id: {"node": "hv3", "public": pc}}
    assert list(out) == sorted(out)


def test_the_public_keys_filter_reads_each_hosts_result():
    pa, pb = public_key_text(A), public_key_text(B)
    hostvars = {"hv1": {"__connect_proxy_signing": {"public_keys": {A.key_id: pa}, "known_keys": {}}},
                "hv2": {"__connect_proxy_signing": {"failed": True, "msg": "x"}},
                "hv3": {"__connect_proxy_signing": {"skipped": True}}}
    nodes = [{"name": "hv1"}, {"name": "hv2"}, {"name": "hv3"}]
    text = filters.connect_proxy_public_keys(nodes, hostvars, ["hv1", "hv2", "hv3"])
    assert json.loads(text) == {"keys": {A.key_id: {"node": "hv1", "public": pa}}}
    assert B.key_id not in text and pb not in text
    with pytest.raises(AnsibleFilterError, match="the input must be connect_proxy_nodes"):
        filters.connect_proxy_public_keys("hv1", hostvars, ["hv1"])


# --- squid.conf -----------------------------------------------------------------------------------

SQUID = dict(name="hv1", listen_address="0.0.0.0", port=3128, user="proxy", shutdown_lifetime=3,
             hosts_file="/etc/vmconsole/proxy-hosts", idle_timeout=28800, access_log="/var/log/vmconsole/proxy-access.log",
             tokens=True, python="/usr/bin/python3", helper="/usr/lib/vmconsole/proxy/vmconsole_proxy_helper.py",
             keys_file="/etc/vmconsole/proxy-keys.json", revocations_file="/etc/vmconsole/proxy-revoked.json",
             credentials_ttl=10, vms_fact="/etc/ansible/facts.d/vmconsole_vms.fact",
             ranges=["61000-61999", "5900-5999", "62000-62999"],
             others=[{"name": "hv2"}, {"name": "hv3", "port": 3129}],
             addresses={"hv1": "10.0.0.1", "hv2": "10.0.0.2", "hv3": "10.0.0.2"},
             client_networks=["192.0.2.0/24", "2001:db8::/32"])


def squid(**changes):
    return filters.connect_proxy_squid_conf(dict(SQUID, **changes)).splitlines()


def directives(lines, name):
    return [line for line in lines if line.split(" ", 1)[0] == name]


def test_squid_conf_with_tokens_asks_one_helper_for_token_client_and_console():
    lines = squid(bindings_dir="/run/vmconsole-proxy")
    assert directives(lines, "http_port") == ["http_port 0.0.0.0:3128"]
    assert not directives(lines, "auth_param")        # one helper answers all: no second round trip
    (acl,) = directives(lines, "external_acl_type")
    assert acl.startswith("external_acl_type vmconsole_dest ttl=10 negative_ttl=10 children-max=8 children-startup=1 "
                          "concurrency=8 queue-size=2048 %>a %{X-Forwarded-For}>h %{Proxy-Authorization}>h %DST %PORT "
                          "/usr/bin/python3 /usr/lib/vmconsole/proxy/vmconsole_proxy_helper.py check ")
    assert acl.endswith(" check --keys /etc/vmconsole/proxy-keys.json --revocations /etc/vmconsole/proxy-revoked.json "
                        "--bindings /run/vmconsole-proxy --facts /etc/ansible/facts.d/vmconsole_vms.fact "
                        "--self hv1 --node hv2 --node hv3 --peer 10.0.0.2 --spice-ports 61000-61999 --vnc-ports 5900-5999 "
                        "--serial-ports 62000-62999 --concurrency")
    access = directives(lines, "http_access")
    assert access[-2:] == ["http_access allow console_dest", "http_access deny all"]
    assert "http_access deny !node_sources !client_sources" in access
    assert "acl client_sources src 192.0.2.0/24 2001:db8::/32" in lines
    assert "acl node_sources src 10.0.0.1 10.0.0.2 127.0.0.1 ::1" in lines     # each address once
    assert "client_lifetime 86400 seconds" in lines and "read_timeout 28800 seconds" in lines


def test_squid_conf_without_binding_leaves_tokens_unbound():
    (acl,) = directives(squid(), "external_acl_type")
    assert "--bindings" not in acl and "--revocations /etc/vmconsole/proxy-revoked.json --facts " in acl


def test_squid_conf_reaches_other_nodes_through_their_proxies_only():
    lines = squid()
    peers = directives(lines, "cache_peer")
    assert peers == [
        "cache_peer 10.0.0.2 parent 3128 0 no-query no-digest no-netdb-exchange connect-timeout=3 login=PASSTHRU name=hv2",
        "cache_peer 10.0.0.2 parent 3129 0 no-query no-digest no-netdb-exchange connect-timeout=3 login=PASSTHRU name=hv3",
    ]
    assert directives(lines, "cache_peer_access") == ["cache_peer_access hv2 allow node_1", "cache_peer_access hv2 deny all",
                                                      "cache_peer_access hv3 allow node_2", "cache_peer_access hv3 deny all"]
    assert lines[-1] == "never_direct allow all" and "always_direct allow this_node" in lines
    assert "acl cluster_nodes dstdomain -n hv1 hv2 hv3" in lines


def test_squid_conf_audit_log_quotes_what_clients_send_and_trusts_only_peers_for_a_hop():
    lines = squid()
    formats = directives(lines, "logformat")
    assert [f.split(" ")[1] for f in formats] == ["vmconsole", "vmconsole_hop"]
    for form in formats:
        assert " %#un %ea %rm %#ru " in form and len(form.split(" ")) == 2 + 11
    assert formats[0].endswith(" %tr -") and formats[1].endswith(" %tr %#{X-Forwarded-For}>h")
    assert "acl peer_sources src 10.0.0.2" in lines           # the other nodes' addresses, not 127.0.0.1
    assert directives(lines, "access_log") == [
        "access_log stdio:/var/log/vmconsole/proxy-access.log vmconsole_hop has_request CONNECT hop peer_sources",
        "access_log none has_request CONNECT hop peer_sources",
        "access_log stdio:/var/log/vmconsole/proxy-access.log vmconsole has_request CONNECT",
        "access_log none has_request CONNECT",
        "access_log stdio:/var/log/squid/access.log vmconsole",
    ]
    assert "forwarded_for truncate" in lines
    # every ACL is defined before a directive uses it (squid reads the file in order)
    defined = [line.split(" ")[1] for line in lines if line.startswith("acl ")]
    for index, line in enumerate(lines):
        if line.startswith(("access_log ", "http_access ")):
            for word in line.split(" ")[2:]:
                name = word.lstrip("!")
                if name in defined:
                    assert lines.index(next(c for c in lines if c.startswith("acl %s " % name))) < index, line
    alone = squid(others=[])
    assert not any("peer_sources" in line for line in alone)
    assert directives(alone, "access_log")[0].endswith(" vmconsole has_request CONNECT")


def test_squid_conf_without_tokens_or_client_networks():
    lines = squid(tokens=False, client_networks=[], others=[], listen_address="::")
    assert not directives(lines, "auth_param") and not directives(lines, "external_acl_type")
    assert directives(lines, "http_port") == ["http_port [::]:3128"]
    access = directives(lines, "http_access")
    assert access[-2:] == ["http_access allow all", "http_access deny all"]
    assert "http_access deny !node_sources" in access and not any("client_sources" in line for line in lines)
    assert not directives(lines, "cache_peer")


def test_squid_conf_names_what_is_missing():
    with pytest.raises(AnsibleFilterError, match="connect_proxy_squid_conf: KeyError 'helper'"):
        filters.connect_proxy_squid_conf({k: v for k, v in SQUID.items() if k != "helper"})


def test_squid_conf_opens_the_cache_manager_to_this_node_for_one_report_with_a_password():
    lines = squid(manager_file="/etc/vmconsole/squid-manager.conf", listen_address="10.89.6.11")
    assert "acl manager_sources src 127.0.0.1 ::1 10.89.6.11" in lines
    include = lines.index("include /etc/vmconsole/squid-manager.conf")
    assert lines[include + 1] == "cachemgr_passwd disable all", "every other report stays off"
    access = directives(lines, "http_access")
    assert access[:3] == ["http_access allow manager manager_sources", "http_access deny manager",
                          "http_access deny !CONNECT"]
    assert not any("manager" in line for line in squid()), "without manager_file, no manager at all"
    assert "acl manager_sources src 127.0.0.1 ::1" in squid(manager_file="/m.conf")
