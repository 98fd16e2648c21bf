# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The SPICE and VNC probes against a real QEMU, and the console_probe module through Ansible.

Measured on QEMU 7.2 / spice-server 0.15.1: INPUTS probe link results 8 (ticket accepted)
and 7 (refused, also when no ticket is set or it expired); 5 (NEED_SECURED) on a plain port
with tls-channel=default. A MAIN link disconnects the current client; the probe does not.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from ansible_collections.vmconsole.secure.plugins.module_utils._spice import MAIN, SpiceLink, spice_link_probe
from ansible_collections.vmconsole.secure.plugins.module_utils._vnc import vnc_auth_probe
from ansible_collections.vmconsole.secure.tests.integration import _procs
from ansible_collections.vmconsole.secure.tests.unit.fakespice import FakeConnectProxy

TICKET = "Qm4xT9vB2nL7kR5wZ8cY1hJ3fD6sG0aE4uP9oIq2"
VNC_PASSWORD = "Hx7rK2mW"
PROXY_PASSWORD = "pX3vN8qL5tR1"
COLLECTION_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def set_ticket(vm, protocol, password, expire="+60", **extra):
    """set_password then expire_password (always both: set_password keeps an old expiry)."""
    with vm.qmp() as qmp:
        qmp.execute("set_password", dict(protocol=protocol, password=password, **extra))
        qmp.execute("expire_password", dict(protocol=protocol, time=expire))


def query_spice(vm):
    with vm.qmp() as qmp:
        return qmp.execute("query-spice")


def probe(vm, pki, ticket=TICKET, **kwargs):
    kwargs.setdefault("ca_pem", pki.ca_pem)
    result = spice_link_probe("127.0.0.1", kwargs.pop("port", vm.tls_port), ticket, **kwargs)
    assert TICKET not in repr(result) and PROXY_PASSWORD not in repr(result)
    return result


@pytest.fixture
def connect_proxy():
    """An HTTP CONNECT proxy on 127.0.0.1 that wants alice's password (a thread, stopped after the test)."""
    with FakeConnectProxy(credentials=("alice", PROXY_PASSWORD)) as proxy:
        yield proxy


# --- SPICE ---------------------------------------------------------------------------------------

def test_ticket_set_is_accepted(qemu_vm, pki):
    set_ticket(qemu_vm, "spice", TICKET)
    result = probe(qemu_vm, pki, host_subject=pki.subject)
    assert (result["status"], result["link_result"], result["subject"]) == ("accepted", 8, pki.subject)
    assert pki.subject == "C=XX,O=vmconsole test,CN=vmc-test-node"


def test_no_ticket_set_is_refused(qemu_vm, pki):
    result = probe(qemu_vm, pki)
    assert (result["status"], result["link_result"]) == ("refused", 7)


def test_wrong_ticket_is_refused(qemu_vm, pki):
    set_ticket(qemu_vm, "spice", TICKET)
    result = probe(qemu_vm, pki, ticket=TICKET[::-1])
    assert (result["status"], result["link_result"]) == ("refused", 7)


def test_expired_ticket_is_refused(qemu_vm, pki):
    set_ticket(qemu_vm, "spice", TICKET, expire="+1")
    assert probe(qemu_vm, pki)["status"] == "accepted"
    # QEMU counts expiry in whole seconds: the ticket dies within 2 s; allow 5.

    def refused_probe():
        result = probe(qemu_vm, pki)
        return result if result["status"] != "accepted" else None

    result = _procs.wait_until(refused_probe, 5.0, interval=0.2, what="the ticket to expire")
    assert (result["status"], result["link_result"]) == ("refused", 7)


def test_wrong_ca_is_a_tls_mismatch(qemu_vm, pki, tmp_path):
    set_ticket(qemu_vm, "spice", TICKET)
    other = _procs.make_pki(str(tmp_path / "other"))
    result = probe(qemu_vm, pki, ca_pem=other.ca_pem)
    assert (result["status"], result["link_result"]) == ("tls_mismatch", None)
    assert "not trusted by the given CA" in result["detail"]


def test_wrong_host_subject_is_a_tls_mismatch(qemu_vm, pki):
    set_ticket(qemu_vm, "spice", TICKET)
    result = probe(qemu_vm, pki, host_subject="C=XX,O=vmconsole test,CN=another-node")
    assert (result["status"], result["subject"]) == ("tls_mismatch", pki.subject)
    assert "CN=another-node" in result["detail"]


def test_closed_port_is_unreachable(pki, free_port):
    result = spice_link_probe("127.0.0.1", free_port(), TICKET, ca_pem=pki.ca_pem, timeout=3)
    assert (result["status"], result["link_result"]) == ("unreachable", None)
    assert "connection refused" in result["detail"]


def test_through_a_connect_proxy(qemu_vm, pki, connect_proxy):
    set_ticket(qemu_vm, "spice", TICKET)
    proxy = dict(host="127.0.0.1", port=connect_proxy.port, username="alice", password=PROXY_PASSWORD)
    result = probe(qemu_vm, pki, host_subject=pki.subject, proxy=proxy)
    assert (result["status"], result["link_result"], result["http_status"]) == ("accepted", 8, 200)
    assert connect_proxy.requests[-1][0] == "CONNECT 127.0.0.1:%d HTTP/1.1" % qemu_vm.tls_port
    result = probe(qemu_vm, pki, proxy=dict(proxy, password="not-" + PROXY_PASSWORD))
    assert (result["status"], result["http_status"]) == ("proxy_refused", 407)


def test_plain_port_answers_need_secured(qemu_factory, pki):
    vm = qemu_factory(plain_port=True)
    set_ticket(vm, "spice", TICKET)
    result = probe(vm, pki, port=vm.plain_port, tls=False)
    assert (result["status"], result["link_result"]) == ("unreachable", 5)
    assert "NEED_SECURED" in result["detail"]
    # And TLS on the plain port is no SPICE TLS port.
    result = probe(vm, pki, port=vm.plain_port)
    assert result["status"] == "unreachable" and "TLS handshake" in result["detail"]


def test_probe_does_not_disturb_a_connected_client(qemu_vm, pki):
    set_ticket(qemu_vm, "spice", TICKET)
    held = SpiceLink("127.0.0.1", qemu_vm.tls_port, ca_pem=pki.ca_pem)
    second = SpiceLink("127.0.0.1", qemu_vm.tls_port, ca_pem=pki.ca_pem)
    try:
        assert held.link(MAIN, TICKET) == 0
        held_port = str(held.sock.getsockname()[1])
        assert held.is_open(0.3)

        with qemu_vm.qmp() as qmp:
            qmp.pop_events()
            for dummy in range(20):
                assert probe(qemu_vm, pki)["status"] == "accepted"
                assert probe(qemu_vm, pki, ticket="wrong")["status"] == "refused"
                assert held.is_open(0.05)
            assert held.is_open(0.5)
            channels = qmp.execute("query-spice")["channels"]
            # The probes' TCP connections show up as SPICE_CONNECTED/DISCONNECTED, never SPICE_INITIALIZED.
            qmp.execute("query-status")
            events = {event["event"] for event in qmp.pop_events()}
        assert [(c["channel-type"], c["port"]) for c in channels] == [(MAIN, held_port)]
        assert "SPICE_INITIALIZED" not in events and "SPICE_DISCONNECTED" in events

        # The check above can fail: a second MAIN link does disconnect the first client ...
        assert second.link(MAIN, TICKET) == 0
        assert _procs.wait_until(lambda: not held.is_open(0.1), 5.0, what="the first client to be dropped")
        assert [c["port"] for c in query_spice(qemu_vm)["channels"]] == [str(second.sock.getsockname()[1])]
        # ... and so does set_password connected=disconnect.
        set_ticket(qemu_vm, "spice", TICKET[::-1], connected="disconnect")
        assert _procs.wait_until(lambda: not second.is_open(0.1), 5.0, what="set_password to drop the client")
        assert query_spice(qemu_vm)["channels"] == []
    finally:
        held.close()
        second.close()


# --- VNC -----------------------------------------------------------------------------------------

def test_vnc_password(qemu_factory):
    vm = qemu_factory(spice=False, vnc=True)
    assert vnc_auth_probe("127.0.0.1", vm.vnc_port, VNC_PASSWORD)["status"] == "refused"      # none set yet
    set_ticket(vm, "vnc", VNC_PASSWORD)
    result = vnc_auth_probe("127.0.0.1", vm.vnc_port, VNC_PASSWORD)
    assert (result["status"], result["rfb_version"], result["security_types"]) == ("accepted", "3.8", [2])
    result = vnc_auth_probe("127.0.0.1", vm.vnc_port, VNC_PASSWORD[::-1])
    assert result["status"] == "refused" and result["detail"].endswith("Authentication failed")
    with vm.qmp() as qmp:
        assert qmp.execute("query-vnc")["clients"] == []        # the probes are gone, no ClientInit was sent


# --- the module, through Ansible -------------------------------------------------------------------

def run_module(args, *options):
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
               ANSIBLE_STDOUT_CALLBACK="ansible.builtin.default", ANSIBLE_CONFIG=os.path.join(COLLECTION_ROOT, "ansible.cfg"))
    argv = ["ansible", "localhost", "-i", "localhost,", "-c", "local", "-e", "ansible_python_interpreter=/usr/bin/python3",
            "-m", "vmconsole.secure.console_probe", "-a", json.dumps(args)] + list(options)
    proc = subprocess.run(argv, cwd=COLLECTION_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          timeout=120, check=False)
    return proc.returncode, proc.stdout.decode("utf-8", "replace")


def module_result(output):
    """The JSON result that the default callback prints after 'localhost | STATUS => '."""
    return json.JSONDecoder().raw_decode(output, output.index("=> {") + 3)[0]


def test_module_through_ansible_keeps_the_secrets(qemu_vm, pki, connect_proxy):
    set_ticket(qemu_vm, "spice", TICKET)
    args = dict(port=qemu_vm.tls_port, ticket=TICKET, ca_file=pki.ca_file, host_subject=pki.subject, expect="accepted",
                proxy="http://alice:%s@127.0.0.1:%d" % (PROXY_PASSWORD, connect_proxy.port))
    rc, output = run_module(args, "-vvv")
    assert rc == 0, output
    assert TICKET not in output and PROXY_PASSWORD not in output
    result = module_result(output)
    assert (result["status"], result["link_result"], result["http_status"]) == ("accepted", 8, 200)
    assert (result["subject"], result["changed"]) == (pki.subject, False)

    # Check mode probes as well; an unmet expectation fails the task with the probe's detail.
    rc, output = run_module(dict(args, ticket=TICKET[::-1]), "--check")
    assert rc != 0 and TICKET[::-1] not in output
    result = module_result(output)
    assert result["status"] == "refused" and result["link_result"] == 7
    assert result["msg"].startswith("console probe: expected status accepted, got refused: ticket refused")
