# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Finding and cutting console tunnels: squid's active_requests report, the selection, ss -K."""

from __future__ import annotations

import base64
import json
import socket
import subprocess

import pytest

from ansible_collections.vmconsole.secure.plugins.module_utils._tunnels import (
    ManagerError, NodeProxy, Tunnel, console_of, cut, cut_tunnels, fetch_active_requests, node_proxy,
    parse_active_requests, read_manager_password, select,
)

# squid 5.7's report with the report's own request, two tunnels (one over IPv6) and a refused request.
REPORT = """Connection: 0x5653f4487e08
\tFD 17, read 70, wrote 0
\tFD desc: Reading next request
\tin: buf 0x5653f40035e0, used 0, free 4026
\tremote: 127.0.0.1:50006
\tlocal: 127.0.0.1:48367
\tnrequests: 1
uri http://node1:48367/squid-internal-mgr/active_requests
logType TCP_MISS
username -
delay_pool 0

Connection: 0x5653f4488ad8
\tFD 12, read 197, wrote 44
\tremote: 10.90.6.21:50000
\tlocal: 10.89.6.11:3128
\tnrequests: 1
uri hv1:61000
logType TCP_TUNNEL
start 1796581206.926944 (0.058337 seconds ago)
username alice__web1
delay_pool 0

Connection: 0x5653f4488bb0
\tFD 13, read 197, wrote 44
\tremote: [2001:db8::21]:50001
\tlocal: [2001:db8::11]:3128
\tnrequests: 1
uri hv2:62001
logType TCP_TUNNEL
username bob_40example_2Eorg__web1
delay_pool 0

Connection: 0x5653f4488cc0
\tremote: 10.90.6.22:50002
\tlocal: 10.89.6.11:3128
uri hv1:61002
username not-a-proxy-username
"""

ALICE = Tunnel("alice__web1", "alice", "web1", "hv1", 61000, ("10.90.6.21", 50000), ("10.89.6.11", 3128))
BOB = Tunnel("bob_40example_2Eorg__web1", "bob@example.org", "web1", "hv2", 62001, ("2001:db8::21", 50001),
             ("2001:db8::11", 3128))


def test_the_report_gives_the_tunnels_with_a_proxy_username():
    assert parse_active_requests(REPORT) == [ALICE, BOB]
    assert parse_active_requests("") == [] and parse_active_requests("garbage\nConnection: \nuri x") == []
    not_an_address = REPORT.replace("remote: 10.90.6.21:50000", "remote: hv9:50000")
    assert parse_active_requests(not_an_address) == [BOB], "a client that is not an IP address is no tunnel to cut"


@pytest.mark.parametrize("args, expected", [
    (dict(users=["alice"]), [ALICE]),
    (dict(vms=["web1"]), [ALICE, BOB]),
    (dict(pairs=[("bob@example.org", "web1")]), [BOB]),
    (dict(pairs=[("bob@example.org", "web2")]), []),
    (dict(users=["carol"], vms=["web2"]), []),
])
def test_select(args, expected):
    assert select([ALICE, BOB], **args) == expected


def test_cut_destroys_the_client_connection_by_both_addresses():
    calls = []

    def run(argv, **kwargs):
        calls.append(argv)
        return subprocess.CompletedProcess(argv, 0, stdout="ESTAB 0 0 [2001:db8::11]:3128 [2001:db8::21]:50001\n",
                                           stderr="")
    assert cut(BOB, run=run) is True
    assert calls == [["ss", "-K", "-H", "-tn", "src", "[2001:db8::11]:3128", "dst", "[2001:db8::21]:50001"]]

    def answer(returncode, stderr=""):
        return lambda argv, **kwargs: subprocess.CompletedProcess(argv, returncode, stdout="", stderr=stderr)
    assert cut(ALICE, run=answer(0)) is False
    with pytest.raises(RuntimeError, match="ss -K failed .*Operation not permitted"):
        cut(ALICE, run=answer(1, "Operation not permitted"))


def test_fetch_asks_squid_by_its_name_with_the_manager_password(manager):
    port, seen = manager(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n" + REPORT.encode())
    assert parse_active_requests(fetch_active_requests("127.0.0.1", port, "hv1", "Mgr-Pw")) == [ALICE, BOB]
    (request,) = seen
    assert request.startswith("GET http://hv1:%d/squid-internal-mgr/active_requests HTTP/1.0\r\n" % port)
    assert "Authorization: Basic %s\r\n" % base64.b64encode(b"vmconsole:Mgr-Pw").decode() in request


def test_fetch_failures_say_why_without_the_password(manager):
    port, dummy = manager(b"HTTP/1.1 401 Unauthorized\r\n\r\n")
    with pytest.raises(ManagerError, match=r"refused the active_requests report \(401 Unauthorized\)") as info:
        fetch_active_requests("127.0.0.1", port, "hv1", "Mgr-Pw")
    assert "Mgr-Pw" not in str(info.value)
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    free = closed.getsockname()[1]
    closed.close()
    with pytest.raises(ManagerError, match="did not answer: Connection refused"):
        fetch_active_requests("127.0.0.1", free, "hv1", "Mgr-Pw")


def fact(tmp_path, **changes):
    manager = tmp_path / "squid-manager.conf"
    manager.write_text("cachemgr_passwd Mgr-Pw active_requests\n")
    data = dict(name="hv1", listen_address="0.0.0.0", port=3128, manager_file=str(manager), credentials_ttl=10,
                console_ports={"spice": [61000, 61999], "vnc": [5900, 5999], "serial": [62000, 62999]})
    data.update(changes)
    path = tmp_path / "vmconsole_proxy.fact"
    path.write_text(json.dumps(data))
    return str(path)


def test_node_proxy_from_the_fact(tmp_path):
    assert node_proxy(str(tmp_path / "none.fact")) is None, "no connect_proxy on this node"
    proxy = node_proxy(fact(tmp_path))
    assert proxy == NodeProxy("hv1", "127.0.0.1", 3128, "Mgr-Pw", 10,
                              {"spice": (61000, 61999), "vnc": (5900, 5999), "serial": (62000, 62999)})
    assert node_proxy(fact(tmp_path, listen_address="::")).address == "::1"
    assert node_proxy(fact(tmp_path, listen_address="10.89.6.11")).address == "10.89.6.11"
    with pytest.raises(ValueError, match="is not a connect_proxy fact of this collection's version"):
        node_proxy(fact(tmp_path, console_ports=None))
    (tmp_path / "squid-manager.conf").write_text("cachemgr_passwd Mgr-Pw all\n")
    with pytest.raises(ValueError, match="is not one line 'cachemgr_passwd PASSWORD active_requests'") as info:
        read_manager_password(str(tmp_path / "squid-manager.conf"))
    assert "Mgr-Pw" not in str(info.value)


@pytest.mark.parametrize("port, console", [(61000, "spice"), (5999, "vnc"), (62500, "serial"), (22, "other")])
def test_console_of(port, console):
    assert console_of(port, {"spice": (61000, 61999), "vnc": (5900, 5999), "serial": (62000, 62999)}) == console


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def block(tunnel):
    return "Connection: 0x1\n\tremote: %s:%d\n\tlocal: %s:%d\nuri %s:%d\nusername %s\n" % (
        tunnel.client + tunnel.local + (tunnel.destination, tunnel.port, tunnel.username))


def test_cut_tunnels_cuts_what_reopens_while_squid_may_still_accept_the_token():
    clock = Clock()
    again = ALICE._replace(client=("10.90.6.21", 50009))
    open_tunnels = {ALICE, BOB}
    destroyed = []

    def fetch():
        if clock.now >= 3 and again not in destroyed:
            open_tunnels.add(again)            # the client reconnected with its cached token
        return select(parse_active_requests("".join(block(t) for t in sorted(open_tunnels))), users=["alice"])

    def destroy(tunnel):
        destroyed.append(tunnel)
        open_tunnels.discard(tunnel)
        return True
    cut = cut_tunnels(None, users=["alice"], watch=10, fetch=fetch, destroy=destroy, clock=clock, sleep=clock.sleep)
    assert cut == [ALICE, again] and destroyed == [ALICE, again]
    assert open_tunnels == {BOB}, "other people's tunnels stay"
    assert 10 <= clock.now < 11


def test_cut_tunnels_gives_up_on_a_tunnel_that_will_not_go():
    clock = Clock()
    with pytest.raises(RuntimeError, match="1 tunnel\\(s\\) still open 5 s after they were cut"):
        cut_tunnels(None, vms=["web1"], fetch=lambda: [ALICE], destroy=lambda tunnel: False, clock=clock,
                    sleep=clock.sleep)
