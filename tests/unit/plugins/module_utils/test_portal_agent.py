# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The portal's agent: what it serves, what it refuses, and to whom (a fake QMP socket; the real QEMU, squid and
remote-viewer are in tests/integration/test_portal.py)."""

from __future__ import annotations

import json
import os
import socket
import threading

import pytest

from ansible_collections.vmconsole.secure.plugins.module_utils import _portal_agent
from ansible_collections.vmconsole.secure.plugins.module_utils._portal_agent import (
    AgentConfig,
    AgentServer,
    agent_config,
    ask,
    check_request,
    handle,
    qemu_instance,
    Refusal,
)
from ansible_collections.vmconsole.secure.tests.unit.fakeqmp import FakeQMPServer, qemu


def make_config(tmp_path, vms=None, cluster_vms=(), uids=(os.getuid(),)):
    fact = tmp_path / "vms.fact"
    fact.write_text(json.dumps({"vms": vms if vms is not None else {
        "vm1": {"state": "started", "spice_tls_port": 61000, "vnc_port": None, "serial_port": 62000},
        "vm2": {"state": "stopped", "spice_tls_port": 61001, "vnc_port": 5900, "serial_port": None}}}))
    return AgentConfig(node="hv1", vms_fact=str(fact), proxy_fact=str(tmp_path / "proxy.fact"),
                       socket_dir=str(tmp_path), cluster_vms=frozenset(cluster_vms), allowed_uids=tuple(uids),
                       audit_log=str(tmp_path / "tickets.log"), ticket_ttl=60, token_ttl=600, timeout=2,
                       ca_file=str(tmp_path / "ca.pem"), server_cert_file=str(tmp_path / "cert.pem"))


@pytest.fixture
def running_vm1(tmp_path):
    server = FakeQMPServer(qemu({"query-status": {"status": "running", "running": True}}),
                           path=str(tmp_path / "vm1.qmp")).start()
    yield server
    server.stop()


def test_vms_lists_the_fact_with_live_states(tmp_path, running_vm1):
    answer = handle(make_config(tmp_path), {"op": "vms"})
    instance = answer["vms"][0].pop("instance")
    assert answer == dict(ok=True, node="hv1", vms=[
        dict(name="vm1", state="running", here=True, consoles=["spice", "serial"]),
        dict(name="vm2", state="stopped", here=False, consoles=["spice", "vnc"])])
    assert instance == qemu_instance(make_config(tmp_path), "vm1") and instance


def test_a_new_qemu_is_another_instance(tmp_path):
    config = make_config(tmp_path)
    assert qemu_instance(config, "vm1") is None                     # no QMP socket: no QEMU
    first = FakeQMPServer(qemu({"query-status": {"status": "running"}}), path=str(tmp_path / "vm1.qmp")).start()
    try:
        before = handle(config, {"op": "vms"})["vms"][0]["instance"]
        assert handle(config, {"op": "vms"})["vms"][0]["instance"] == before        # the same QEMU, asked again
    finally:
        first.stop()
    if os.path.exists(str(tmp_path / "vm1.qmp")):
        os.unlink(str(tmp_path / "vm1.qmp"))
    second = FakeQMPServer(qemu({"query-status": {"status": "running"}}), path=str(tmp_path / "vm1.qmp")).start()
    try:
        assert handle(config, {"op": "vms"})["vms"][0]["instance"] not in (None, before)
    finally:
        second.stop()


@pytest.mark.parametrize("status, here", [("running", True), ("paused", True), ("inmigrate", False),
                                          ("postmigrate", False), ("shutdown", False)])
def test_a_vm_is_here_only_in_a_state_that_runs_it(tmp_path, status, here):
    server = FakeQMPServer(qemu({"query-status": {"status": status}}), path=str(tmp_path / "vm1.qmp")).start()
    try:
        assert handle(make_config(tmp_path), {"op": "vms"})["vms"][0]["here"] is here
    finally:
        server.stop()


@pytest.mark.parametrize("request_, code, text", [
    ("not a dict", "bad_request", "a request is a JSON object"),
    ({"op": "set_password", "vm": "vm1", "user": "a"}, "bad_request", "op must be one of"),
    ({"op": "spice", "vm": "vm1"}, "bad_request", "user is missing"),
    ({"op": "spice", "user": "a"}, "bad_request", "vm is missing"),
    ({"op": "spice", "vm": "../etc", "user": "a"}, "bad_request", "vm: vm '../etc' is not a valid VM name"),
    ({"op": "spice", "vm": "vm1", "user": "a\nb"}, "bad_request", "control characters"),
    ({"op": "spice", "vm": "vm1", "user": "a", "password": "x"}, "bad_request", "unexpected field 'password'"),
    ({"op": "spice", "vm": "vm1", "user": "a", "ttl": 99999}, "bad_request", "unexpected field 'ttl'"),
    ({"op": "spice", "vm": "vm1", "user": "a", "client": "nowhere"}, "bad_request", "client: 'nowhere' does not"),
    ({"op": "spice", "vm": "vm1", "user": "a", "proxy": "ftp://x"}, "bad_request", "proxy: "),
    ({"op": "spice", "vm": "vm9", "user": "a"}, "unknown_vm", "vm vm9 is not a VM of this cluster"),
    ({"op": "cut", "vm": "vm9", "user": "a"}, "unknown_vm", "vm vm9 is not a VM of this cluster"),
])
def test_refused_requests_name_the_reason(tmp_path, request_, code, text):
    answer = handle(make_config(tmp_path), request_)
    assert answer["ok"] is False and answer["error"] == code and text in answer["message"], answer


def test_a_vm_of_another_node_is_known_for_a_cut_but_not_issued_here(tmp_path):
    config = make_config(tmp_path, cluster_vms=["far1"])
    assert check_request(config, {"op": "cut", "vm": "far1", "user": "olga"})["vm"] == "far1"
    answer = handle(config, {"op": "spice", "vm": "far1", "user": "alice"})
    assert (answer["error"], answer["message"]) == ("not_here", "vm far1 does not run on hv1")


def test_a_stopped_vm_is_not_here(tmp_path):
    answer = handle(make_config(tmp_path), {"op": "spice", "vm": "vm2", "user": "alice"})
    assert answer["error"] == "not_here"


def test_the_agent_configuration_is_checked(tmp_path):
    with pytest.raises(ValueError, match="allowed_users: no such user 'no-such-user-here'"):
        agent_config(dict(node="hv1", allowed_users=["no-such-user-here"]))
    with pytest.raises(ValueError, match="allowed_users must be a list of user names"):
        agent_config(dict(node="hv1", allowed_users="root"))
    with pytest.raises(ValueError, match="node must be a non-empty string"):
        agent_config(dict(node="", allowed_users=["root"]))
    with pytest.raises(ValueError, match="is not a valid VM name"):
        agent_config(dict(node="hv1", allowed_users=["root"], cluster_vms=["a/b"]))
    assert agent_config(dict(node="hv1", allowed_users=["root"])).allowed_uids == (0,)


def serve(config, path):
    server = AgentServer(path, config)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server


def test_the_socket_answers_an_allowed_uid(tmp_path, running_vm1):
    path = str(tmp_path / "agent.sock")
    server = serve(make_config(tmp_path), path)
    try:
        assert ask(path, {"op": "vms"})["vms"][0]["name"] == "vm1"
        with socket.socket(socket.AF_UNIX) as sock:       # not JSON: an answer that says so
            sock.connect(path)
            sock.sendall(b"garbage\n")
            assert json.loads(sock.recv(4096))["error"] == "bad_request"
        with socket.socket(socket.AF_UNIX) as sock:       # too long: refused without reading it all
            sock.connect(path)
            try:
                sock.sendall(b"x" * (_portal_agent.MAX_REQUEST + 10) + b"\n")
            except BrokenPipeError:
                pass
            assert json.loads(sock.recv(4096) or b'{"error": "bad_request"}')["error"] == "bad_request"
    finally:
        server.shutdown()
        server.server_close()


def test_the_socket_is_silent_to_any_other_uid(tmp_path):
    path = str(tmp_path / "agent.sock")
    server = serve(make_config(tmp_path, uids=(os.getuid() + 12345,)), path)
    try:
        with pytest.raises(ValueError, match="closed the connection without an answer"):
            ask(path, {"op": "vms"})
    finally:
        server.shutdown()
        server.server_close()


def test_refusal_is_an_exception_with_a_code():
    exc = Refusal("not_here", "vm x does not run on hv1")
    assert (exc.code, str(exc)) == ("not_here", "vm x does not run on hv1")
