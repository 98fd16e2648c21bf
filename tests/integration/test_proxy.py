# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Proxy tokens end to end: real squid with the connect_proxy helpers in front of a real QEMU.

squid listens on a free 127.0.0.1 port, resolves the node's test name to 127.0.0.1 through
its hosts_file, allows CONNECT only to console ports of cluster nodes, authenticates proxy
tokens (auth helper) and lets a token reach only its VM's console (external ACL helper
reading a VM map in the qemu_vm fact format). Loopback only.
"""

from __future__ import annotations

import base64
import collections
import json
import os
import random
import re
import shutil
import signal
import socket
import time

import pytest

from ansible_collections.vmconsole.secure.plugins.module_utils._spice import MAIN, spice_link_probe
from ansible_collections.vmconsole.secure.plugins.module_utils._tickets import (
    ProxySigner, mint_proxy_token, new_proxy_signer,
)
from ansible_collections.vmconsole.secure.tests.integration import _procs
from ansible_collections.vmconsole.secure.tests.integration.test_console_ticket import adhoc, read_vv, start_viewer

TICKET = "Pr0xyT1cketPr0xyT1cketPr0xyT1cketPr0xyT1"
OTHER_NODE = "vmc-other-node"     # a cluster node that is not this one (never resolved in these tests)


class Node:
    """One cluster node: a VM, a squid in front of it, and the node's token signing key (``keys``)."""

    def __init__(self, vm, squid, keys, pki):
        self.vm, self.squid, self.keys, self.pki = vm, squid, keys, pki
        self.name = pki.cn

    def set_ticket(self, ticket=TICKET, ttl=120):
        with self.vm.qmp() as qmp:
            qmp.execute("set_password", dict(protocol="spice", password=ticket))
            qmp.execute("expire_password", dict(protocol="spice", time="+%d" % ttl))

    def token(self, user="alice", vm=None, console="spice", **kwargs):
        return mint_proxy_token(self.keys, user, vm or self.vm.name, console, **kwargs)

    def probe(self, token=None, ticket=TICKET, host=None, port=None):
        proxy = dict(host="127.0.0.1", port=self.squid.port)
        if token is not None:
            proxy.update(username=token.username, password=token.token)
        return spice_link_probe(host or self.name, port or self.vm.tls_port, ticket, ca_pem=self.pki.ca_pem,
                                host_subject=self.pki.subject, proxy=proxy, timeout=10)


@pytest.fixture
def console_vm(pki):
    """A VM with SPICE TLS on a port in 61000-61999, as qemu_vm allocates them."""
    if not _procs.have_qemu():
        pytest.skip("%s is not installed" % _procs.QEMU_BINARY)
    workdir = _procs.short_tmpdir("vmc-pvm-")
    vm = None
    try:
        vm = _procs.ConsoleRangeVM("vm1", workdir, pki_dir=pki.dir)
        yield vm
    finally:
        if vm is not None:
            vm.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def node(console_vm, squid_factory, pki):
    qemu_vm = console_vm
    keys = new_proxy_signer()
    vms = {
        qemu_vm.name: {"state": "started", "unit": "vmconsole-qemu@%s.service" % qemu_vm.name, "qmp": qemu_vm.qmp_path,
                       "spice_tls_port": qemu_vm.tls_port, "vnc_port": None, "serial_port": None,
                       "migration_port": 60000},
        "vm2": {"state": "started", "spice_tls_port": 61998, "vnc_port": None, "serial_port": None},
        "gone": {"state": "stopped", "spice_tls_port": qemu_vm.tls_port},
    }
    squid = squid_factory([keys, new_proxy_signer()], self_name=pki.cn, nodes=(OTHER_NODE,), vms=vms)
    n = Node(qemu_vm, squid, keys, pki)
    n.set_ticket()
    return n


def connect_status(port, request, timeout=10, source="127.0.0.1"):
    """Send raw bytes to squid from ``source``; returns the HTTP status of its answer, or None if it sent none."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0)) as sock:
        try:
            sock.sendall(request)
            sock.shutdown(socket.SHUT_WR)
            answer = _procs.read_until(sock, b"\r\n")
        except (ConnectionResetError, BrokenPipeError, socket.timeout):
            return None
    parts = answer.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[0].startswith(b"HTTP/") and parts[1].isdigit() else None


def connect_request(target, username=None, password=None):
    lines = ["CONNECT %s HTTP/1.1" % target, "Host: %s" % target]
    if username is not None:
        basic = base64.b64encode(("%s:%s" % (username, password)).encode()).decode()
        lines.append("Proxy-Authorization: Basic %s" % basic)
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def assert_no_secret_in_logs(node, *secrets):
    text = _procs.read_log(node.squid.access_log, 10 ** 6) + _procs.read_log(node.squid.cache_log, 10 ** 6)
    for secret in secrets:
        assert secret not in text


# --- a valid token reaches its VM, and only its VM --------------------------------------------------

def test_valid_token_reaches_the_vm_through_squid(node):
    token = node.token()
    result = node.probe(token)
    assert (result["status"], result["http_status"], result["link_result"]) == ("accepted", 200, 8), result
    assert node.probe(token, ticket="WrongT1cket")["status"] == "refused", "QEMU still checks the ticket"
    # The audit trail: who (user and VM, decoded), where to, status; never the token.
    _procs.wait_until(lambda: "CONNECT %s:%d 200" % (node.name, node.vm.tls_port) in _procs.read_log(node.squid.access_log),
                      5, what="squid's access log", logs=node.squid.logs)
    line = [x for x in _procs.read_log(node.squid.access_log).splitlines() if " 200 " in x][0]
    assert " %s user=alice;vm=%s;console=spice CONNECT " % (token.username, node.vm.name) in line, line
    assert_no_secret_in_logs(node, token.token, TICKET)


def test_refusals(node):
    port, vm = node.squid.port, node.vm
    target = "%s:%d" % (node.name, vm.tls_port)
    valid = node.token()
    expired = node.token(now=time.time() - 7200, ttl=3600)
    forged = valid.token[:-3] + ("AAA" if valid.token[-3:] != "AAA" else "BBB")
    foreign = mint_proxy_token(ProxySigner(node.keys.key_id, new_proxy_signer().private), "alice", vm.name, "spice")
    other_vm = node.token(vm="vm2")
    serial = node.token(console="serial")
    vnc = node.token(console="vnc")
    cases = [
        ("no credentials", connect_request(target), 403),
        ("expired token", connect_request(target, expired.username, expired.token), 403),
        ("forged token", connect_request(target, valid.username, forged), 403),
        ("token of another cluster", connect_request(target, foreign.username, foreign.token), 403),
        ("this VM's token under vm2's username", connect_request(target, other_vm.username, valid.token), 403),
        ("vm2's token to this VM's port", connect_request(target, other_vm.username, other_vm.token), 403),
        ("this VM's serial token to its SPICE port", connect_request(target, serial.username, serial.token), 403),
        ("this VM's VNC token to its SPICE port", connect_request(target, vnc.username, vnc.token), 403),
        ("token of a stopped VM on its old port",
         connect_request(target, node.token(vm="gone").username, node.token(vm="gone").token), 403),
        ("port 22 of this node", connect_request("%s:22" % node.name, valid.username, valid.token), 403),
        ("QEMU migration port", connect_request("%s:60000" % node.name, valid.username, valid.token), 403),
        ("a host outside the cluster", connect_request("example.org:%d" % vm.tls_port, valid.username, valid.token), 403),
        ("127.0.0.1 instead of the node name",
         connect_request("127.0.0.1:%d" % vm.tls_port, valid.username, valid.token), 403),
        ("plain GET", b"GET http://%s:%d/ HTTP/1.1\r\nHost: %s\r\n\r\n" % (
            node.name.encode(), vm.tls_port, node.name.encode()), 403),
        ("plain GET with a valid token", b"GET http://%s/ HTTP/1.1\r\nProxy-Authorization: Basic %s\r\n\r\n" % (
            node.name.encode(), base64.b64encode(("%s:%s" % (valid.username, valid.token)).encode())), 403),
    ]
    results = {what: connect_status(port, request) for what, request, dummy in cases}
    assert results == {what: status for what, dummy, status in cases}
    # The refusals come from squid and the helpers, not from a broken path: the valid token works.
    assert node.probe(valid)["status"] == "accepted"
    assert node.probe(expired)["http_status"] == 403
    log = _procs.read_log(node.squid.access_log)
    for why in ("token-expired", "token-bad-signature", "console=serial;refused=not-a-serial-port",
                "console=vnc;refused=not-a-vnc-port", "refused=no-proxy-token"):
        assert why in log, (why, log)
    assert_no_secret_in_logs(node, valid.token, expired.token, forged, foreign.token, other_vm.token, serial.token)


def test_a_captured_token_is_refused_from_another_client(node):
    """#17 finding 5: the first client a token comes from is the only one it works from, on this node.

    A second client (another loopback address, in the client networks) replays the token it took
    from the first one's traffic: squid refuses it, and the first client keeps working."""
    target = "%s:%d" % (node.name, node.vm.tls_port)
    token = node.token(user="erin")
    assert node.probe(token)["status"] == "accepted"                      # first use, from 127.0.0.1
    assert connect_status(node.squid.port, connect_request(target, token.username, token.token),
                          source="127.0.0.3") == 403
    assert node.probe(token)["status"] == "accepted"
    other = node.token(user="frank")               # a fresh token works from that second client
    assert connect_status(node.squid.port, connect_request(target, other.username, other.token),
                          source="127.0.0.3") == 200
    _procs.wait_until(lambda: "refused=token-bound-to-another-client" in _procs.read_log(node.squid.access_log), 5,
                      what="the refusal in squid's access log", logs=node.squid.logs)
    line = [x for x in _procs.read_log(node.squid.access_log).splitlines() if "bound-to-another" in x][0]
    assert line.split(" ")[1].startswith("127.0.0.3:") and " - user=erin;vm=%s;console=spice;" % node.vm.name in line
    assert len(os.listdir(node.squid.bindings_dir)) >= 2
    assert_no_secret_in_logs(node, token.token, other.token)


AUDIT_COLUMNS = 11    # time, client, username, helper's log, method, destination, status, bytes x2, ms, XFF


def test_the_audit_log_cannot_be_forged_by_a_client(node):
    """Whatever a client puts in its username or X-Forwarded-For, each CONNECT is one line of the same
    columns; nothing it sends reads as another person, VM or first client."""
    port, vm = node.squid.port, node.vm
    target = "%s:%d" % (node.name, vm.tls_port)
    valid = node.token()
    planted = "x user=mallory;vm=web9 CONNECT %s 200 0 0 1 10.9.9.9" % target
    requests = [
        connect_request(target, planted, valid.token),
        connect_request(target, "tab\there\tuser=mallory;vm=web9", valid.token),
        connect_request(target, "8bit\xe9\xff user=mallory", valid.token),
        connect_request(target, valid.username, valid.token)[:-2] + b"X-Forwarded-For: 10.9.9.9 user=mallory\r\n\r\n",
        connect_request(target, valid.username, valid.token)[:-2] + b"Via: 1.1 hv9\r\nX-Forwarded-For: 10.9.9.9\r\n\r\n",
    ]
    for request in requests:
        connect_status(port, request)
    _procs.wait_until(lambda: len(_procs.read_log(node.squid.access_log).splitlines()) >= len(requests), 10,
                      what="squid's access log", logs=node.squid.logs)
    lines = _procs.read_log(node.squid.access_log).splitlines()
    assert len(lines) == len(requests), lines
    for line in lines:
        columns = line.split(" ")
        assert len(columns) == AUDIT_COLUMNS and "\t" not in line, line
        assert "mallory" not in columns[3] and "web9" not in columns[3], line
        assert columns[10] == "-", "a direct client's X-Forwarded-For is not logged: %s" % line
        assert columns[4:6] == ["CONNECT", target], line
    assert "10.9.9.9" not in "".join(lines)
    # The peer probes of the cluster's other node and the refused plain requests leave no ACL warnings.
    assert "ACL is used in context without" not in _procs.read_log(node.squid.cache_log, 10 ** 6)


def test_revocation_list_refuses_a_new_connection(node):
    token = node.token(now=time.time() - 5)
    node.squid.write_revocations({"users": {"alice": int(time.time()) - 1}})
    assert node.probe(token)["http_status"] == 403
    assert node.probe(node.token(user="bob"))["status"] == "accepted"


def test_vm_map_is_followed_without_restart(node):
    """qemu_vm (or a migration) rewrites the map: the ACL follows it (after its 5 s cache)."""
    token = node.token(user="carol")
    node.squid.write_facts({node.vm.name: {"state": "incoming", "spice_tls_port": node.vm.tls_port}})
    assert node.probe(token)["status"] == "accepted", "the target of a migration accepts its VM's console"
    node.squid.write_facts({})
    other = node.token(user="dave")               # a new user: the ACL's cached answer for carol does not apply
    assert node.probe(other)["http_status"] == 403


# --- a real remote-viewer with the .vv from console_ticket ---------------------------------------

def test_remote_viewer_connects_through_squid(node, xvfb, tmp_path):
    """As the README's ad-hoc command: the proxy comes from the node's connect_proxy fact."""
    dest = str(tmp_path / "console.vv")
    audit = tmp_path / "tickets.log"
    result, proc = adhoc(dict(vm=node.vm.name, socket_dir=os.path.dirname(node.vm.qmp_path), console_host=node.name,
                              proxy_fact_file=node.squid.proxy_fact, proxy_user="alice@example.org",
                              proxy_token_key_file=node.squid.signing_file, ca_file=node.pki.ca_file,
                              server_cert_file=node.pki.server_cert_file, audit_log=str(audit), ttl=60, dest=dest))
    assert not result.get("failed"), "%s\n%s" % (result.get("msg"), proc.stderr)
    vv = read_vv(dest)
    token = vv["proxy"].split("//", 1)[1].split("@", 1)[0].split(":", 1)[1]
    assert vv["proxy"] == "http://alice_40example_2Eorg__%s:%s@127.0.0.1:%d" % (node.vm.name, token, node.squid.port)
    assert result["proxy_username"] == "alice_40example_2Eorg__%s" % node.vm.name
    assert token not in proc.stdout + proc.stderr
    log_path = str(tmp_path / "remote-viewer.log")
    with node.vm.qmp() as qmp:
        viewer = start_viewer(xvfb, dest, log_path)
        try:
            event = qmp.wait_event("SPICE_INITIALIZED", 30, match=lambda e: e["data"]["client"]["channel-type"] == MAIN)
            assert event["data"]["client"]["tls"] is True
            _procs.wait_until(lambda: "main channel: opened" in _procs.read_log(log_path), 10, what="remote-viewer's log",
                              logs={"remote-viewer": log_path, **node.squid.logs})
        finally:
            _procs.stop_process(viewer)
    # squid writes a tunnel's line when the tunnel ends: after the viewer is gone, not at once.
    line = "%s user=alice@example.org;vm=%s;console=spice CONNECT %s:%d 200" % (
        result["proxy_username"], node.vm.name, node.name, node.vm.tls_port)
    _procs.wait_until(lambda: line in _procs.read_log(node.squid.access_log), 15, what="squid's access log line",
                      logs=node.squid.logs)
    record = json.loads(audit.read_text())
    assert (record["proxy_user"], record["vm"], record["proxy_token_expires"]) == (
        "alice@example.org", node.vm.name, result["proxy_token_expires"])
    assert token not in audit.read_text() and vv["password"] not in audit.read_text()
    assert_no_secret_in_logs(node, token, vv["password"])


# --- reliability ------------------------------------------------------------------------------------

def malformed_requests(node, count, rng):
    """``count`` requests squid must refuse: broken request lines, headers and tokens."""
    target = "%s:%d" % (node.name, node.vm.tls_port)
    valid = node.token(user="mallory")
    pieces = [b"CONNECT", b" ", b"\r\n", b"\n", b"HTTP/1.1", b"Host:", b"Proxy-Authorization: Basic ", b"::", b"%",
              b"\x00", b"\xff", target.encode(), b"61000", b"22", b"GET", b"http://", b"@", b"[::1]", b"\t"]
    requests = []
    for i in range(count):
        kind = i % 5
        if kind == 0:          # random request line
            request = b"".join(rng.choice(pieces) for dummy in range(rng.randint(1, 10))) + b"\r\n\r\n"
        elif kind == 1:        # random bytes
            request = bytes(rng.randrange(256) for dummy in range(rng.randint(1, 300)))
        elif kind == 2:        # a CONNECT with a damaged token
            token = bytearray(valid.token.encode())
            where = rng.randrange(len(token))
            token[where] = rng.choice([c for c in b"AZaz09_-%:@ \x00\xff" if c != token[where]])
            request = connect_request(target, valid.username, token.decode("latin-1"))
        elif kind == 3:        # a CONNECT with a broken Proxy-Authorization header
            junk = bytes(rng.randrange(33, 127) for dummy in range(rng.randint(0, 80)))
            request = b"CONNECT %s HTTP/1.1\r\nHost: %s\r\nProxy-Authorization: %s\r\n\r\n" % (
                target.encode(), target.encode(), rng.choice([b"Basic ", b"Digest ", b"", b"Basic=="]) + junk)
        else:                  # credentials that decode to garbage (user names, separators, lengths)
            userpass = rng.choice([b"", b":", b"alice", b"alice__", b"__%s:" % node.vm.name.encode(),
                                   valid.username.encode() + b":" + valid.token.encode()[:rng.randrange(len(valid.token))],
                                   bytes(rng.randrange(256) for dummy in range(rng.randint(1, 400)))])
            request = b"CONNECT %s HTTP/1.1\r\nProxy-Authorization: Basic %s\r\n\r\n" % (
                target.encode(), base64.b64encode(userpass))
        requests.append(request)
    return requests, valid


def test_a_thousand_malformed_requests_are_refused_and_squid_keeps_serving(node):
    requests, valid = malformed_requests(node, 1000, random.Random(1000))
    statuses = [connect_status(node.squid.port, request) for request in requests]
    accepted = [(r, s) for r, s in zip(requests, statuses) if s is not None and 200 <= s < 300]
    assert accepted == [], "every malformed request is refused"
    assert all(s is None or 400 <= s < 500 for s in statuses), sorted(set(statuses), key=str)
    # squid answers 400, 403 or 407; to some binary garbage it sends nothing and closes (None).
    assert sum(s in (400, 403, 407) for s in statuses) > 800, collections.Counter(statuses)
    assert all(s is not None for i, s in enumerate(statuses) if i % 5 >= 2), "every CONNECT gets an answer"
    assert node.squid.proc.poll() is None
    assert node.probe(node.token(user="after-the-flood"))["status"] == "accepted"
    assert node.probe(valid)["status"] == "accepted"
    assert "FATAL" not in node.squid.log() and "crashing" not in node.squid.log()


def test_squid_restarts_a_killed_helper(node):
    """A helper that crashes is replaced and the next console is admitted (measured: 0.0-0.5 s).

    squid (5.7, helper.cc handleKilledServer) stops itself with "helpers are crashing too
    rapidly" when a helper dies without having answered once within 30 s of the last helper
    start: in production systemd then restarts squid (molecule/proxy measures that path). So
    the helper killed here must be one that answered: with startup=1 and one request before,
    it is the only one; a second helper (a spare squid started) would make the test ambiguous,
    and it says so instead of timing out.

    The next request waits until squid has seen the helper die: a request written to a helper
    squid has not yet seen die once stopped squid 5.7 on "assertion failed: Write.cc:40" (with the
    two helpers of earlier releases). That is squid's own fault; production's answer is systemd
    restarting squid (Restart=always, RestartSec=2; molecule/proxy measures that path with kill -9).
    This test is about squid replacing a helper.
    """
    assert node.probe(node.token(user="before"))["status"] == "accepted"   # the helper has answered
    pids = node.squid.helper_pids()
    assert len(pids) == 1, "expected the one helper that answered, found %r:\n%s" % (pids, node.squid.log())
    os.kill(pids[0], signal.SIGKILL)
    _procs.wait_until(lambda: re.search(r"WARNING: \S+ #Hlpr\d+ exited", node.squid.log()), 10,
                      what="squid to notice that the helper died", logs=node.squid.logs)

    def fresh_probe():
        """A new user and token: squid's ACL cache cannot answer."""
        result = node.probe(node.token(user="after-%d" % time.monotonic_ns()))
        return result if result["status"] == "accepted" else None

    _procs.wait_until(fresh_probe, 15, interval=0.5, what="a console through squid after the helper was killed",
                      logs=node.squid.logs)
    assert node.squid.proc.poll() is None
    alive = node.squid.helper_pids()
    assert alive and pids[0] not in alive


def test_a_burst_of_new_sessions_is_admitted(node):
    """1,000 people open a console at the same moment (a node's load): every CONNECT is checked and admitted.

    Each token is new (another user), so squid's ACL cache cannot answer: every request waits for
    the helper (and binds its token). With the two helpers of earlier releases squid refused the
    overflow of too short a queue ("queue full": 85-107 of 200 with the default queue, 295 of 1,000
    with queue-size=256); one helper answers fast enough that the queue stays short (the burst
    passed with queue-size=16, benchmarks/README.md). What fails this test now is a helper that
    cannot keep up, dies or refuses under load.
    """
    import concurrent.futures

    target = "%s:%d" % (node.name, node.vm.tls_port)
    requests = []
    for i in range(1000):
        token = node.token(user="burst%04d" % i)
        requests.append(connect_request(target, token.username, token.token))
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(requests)) as pool:
        statuses = list(pool.map(lambda request: connect_status(node.squid.port, request, timeout=60), requests))
    assert collections.Counter(statuses) == {200: len(requests)}, _procs.read_log(node.squid.cache_log, 3000)
