# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The console layer on its own (the modules' tests drive it through main())."""

from __future__ import annotations

import os
import re
import socket

import pytest

from ansible_collections.vmconsole.secure.plugins.module_utils import _console
from ansible_collections.vmconsole.secure.plugins.module_utils._console import (
    LibvirtConsole,
    OptionError,
    QMPConsole,
    open_audit_log,
    read_pem,
    spice_counts,
    spice_info,
    vnc_info,
    write_audit,
)
from ansible_collections.vmconsole.secure.plugins.module_utils._qmp import QMPCommandError, QMPProtocolError
from ansible_collections.vmconsole.secure.tests.unit.fakeqmp import Error, qemu

SPICE = {"enabled": True, "auth": "spice", "tls-port": 61000, "port": 61001, "host": "127.0.0.1", "channels": []}
VNC = {"enabled": True, "auth": "vnc", "family": "ipv4", "service": "5901", "host": "127.0.0.1", "clients": []}


def channel(kind, connection_id):
    return {"port": "47654", "family": "ipv4", "channel-type": kind, "connection-id": connection_id,
            "host": "127.0.0.1", "channel-id": 0, "tls": True}


class Module:
    """What the layer uses of an AnsibleModule."""

    def __init__(self, **params):
        self.params = dict(dict(timeout=5.0, socket=None, vm=None, socket_dir="/run/vmconsole"), **params)

    def fail_json(self, **result):
        raise AssertionError("fail_json(%r)" % (result,))


@pytest.fixture
def console(fake_qmp):
    """``console(table)`` -> (a QMPConsole connected to a fake QEMU answering from ``table``, the server)."""
    consoles = []

    def connect(table):
        server = fake_qmp(qemu(table), name="vm%d.qmp" % len(consoles))
        found = QMPConsole.find(Module(), "vm1", server.path)
        consoles.append(found)
        return found, server
    yield connect
    for found in consoles:
        found.close()


@pytest.mark.parametrize("value, port", [("5901", 5901), (5901, 5901), ("vnc", None), (None, None)])
def test_port(value, port):
    assert _console._port(value) == port


def test_spice_counts_channels_and_distinct_clients():
    info = spice_info(dict(SPICE, channels=[channel(1, 7), channel(2, 7), channel(1, 9)]))
    assert spice_counts(info) == (3, 2)
    assert spice_counts(spice_info(None)) == (0, 0)


def test_missing_and_refusing_sockets_mean_the_vm_runs_elsewhere(short_tmp):
    assert QMPConsole.find(Module(), "vm1", os.path.join(short_tmp, "none.qmp")) is None
    dead = os.path.join(short_tmp, "dead.qmp")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(dead)          # the file is there, nobody listens: QEMU has gone
    sock.close()
    assert QMPConsole.find(Module(), "vm1", dead) is None


def test_a_socket_that_is_not_qmp_is_an_error(fake_qmp):
    server = fake_qmp(lambda peer: peer.send_raw(b"SSH-2.0-OpenSSH\r\n"))
    with pytest.raises(QMPProtocolError):
        QMPConsole.find(Module(), "vm1", server.path)


def test_info_is_normalized(console):
    found, server = console({"query-status": {"running": True, "status": "running"}, "query-spice": SPICE})
    info = found.info()
    assert info["status"] == dict(running=True, status="running")
    assert info["spice"]["tls_port"] == 61000 and info["spice"]["enabled"]
    assert info["vnc"] == vnc_info(None)          # QEMU without VNC: CommandNotFound is no failure
    assert info["qemu_version"] == "7.2.22"


@pytest.mark.parametrize("table, protocol, connected, text", [
    ({}, "spice", "keep", "QEMU has no SPICE: this QEMU binary was built without it (protocol=spice)"),
    ({"query-spice": dict(SPICE, enabled=False)}, "spice", "keep", "the VM was started without -spice"),
    ({"query-spice": dict(SPICE, auth="none")}, "spice", "keep", "does not use tickets (auth=none"),
    ({"query-spice": dict(SPICE, channels=[channel(1, 7)])}, "spice", "fail",
     "connected=fail: a SPICE client is connected"),
    ({"query-vnc": dict(VNC, auth="none")}, "vnc", "keep", "no password authentication"),
    ({"query-vnc": dict(VNC, family="unix", service="/run/vm1.vnc")}, "vnc", "keep",
     "does not listen on a TCP port (unix)"),
])
def test_ports_refuse_a_console_a_ticket_cannot_protect(console, table, protocol, connected, text):
    found, server = console(table)
    with pytest.raises(OptionError, match=re.escape(text)):
        found.ports(protocol, connected)
    assert "set_password" not in server.commands


def test_ports(console):
    found = console({"query-spice": SPICE, "query-vnc": VNC})[0]
    assert found.ports("spice", "keep") == (61000, 61001)
    assert found.ports("vnc", "keep") == (None, 5901)


def test_a_failed_expiry_leaves_a_ticket_nobody_knows(console):
    found, server = console({"set_password": {}, "expire_password": Error("GenericError", "no")})
    with pytest.raises(QMPCommandError):
        found.set_ticket("spice", "Secret0Secret0Secret0", 30, "keep")
    sets = [r["arguments"] for r in server.requests if r.get("execute") == "set_password"]
    assert sets[0]["password"] == "Secret0Secret0Secret0"
    assert len(sets) == 2 and sets[1]["password"] != sets[0]["password"] and sets[1]["connected"] == "keep"


def test_lockable_refuses_consoles_without_tickets(console):
    found = console({"query-spice": dict(SPICE, auth="none"), "query-vnc": VNC})[0]
    with pytest.raises(OptionError, match="vm vm1: its SPICE console does not use tickets"):
        found.lockable()
    found = console({"query-spice": SPICE, "query-vnc": dict(VNC, auth="none")})[0]
    with pytest.raises(OptionError, match="vm vm1: its VNC console has no password authentication"):
        found.lockable()


def test_lock_gives_up_waiting_for_channels_that_stay(console, monkeypatch):
    monkeypatch.setattr(_console, "SPICE_GONE_WAIT", 0.2)
    stuck = dict(SPICE, channels=[channel(1, 7)])
    found, server = console({"query-spice": stuck, "query-vnc": VNC, "set_password": {}, "expire_password": {}})
    spice, vnc = found.lockable()
    after = found.lock(spice, vnc)
    assert spice_counts(after[0]) == (1, 1)
    sent = [(r["execute"], r["arguments"].get("protocol"), r["arguments"].get("time")) for r in server.requests
            if r.get("execute") in ("set_password", "expire_password")]
    assert sent == [("set_password", "spice", None), ("expire_password", "spice", "now"),
                    ("set_password", "vnc", None), ("expire_password", "vnc", "now")]


def test_audit_log_errors_name_the_option_and_what_holds(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OptionError, match=r"^audit_log .*/file/tickets.log cannot be written: "):
        open_audit_log(str(blocker / "tickets.log"), False)
    audit = open_audit_log(str(tmp_path / "log" / "tickets.log"), False)
    os.close(audit.fd)
    audit.fd = os.open(os.devnull, os.O_RDONLY)        # a write that fails
    with pytest.raises(OptionError, match="cannot be written: .*; the ticket is set but not handed out$"):
        write_audit(audit, {"event": "x"}, "the ticket is set but not handed out")


def test_read_pem_says_which_option_and_why(tmp_path):
    with pytest.raises(OptionError, match="^ca_file /nonexistent cannot be read: No such file"):
        read_pem("ca_file", "/nonexistent")
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate\n")
    with pytest.raises(OptionError, match="^server_cert_file .*bad.pem is not a PEM certificate"):
        read_pem("server_cert_file", str(bad))


def test_libvirt_domains_have_no_serial_console_yet():
    found = LibvirtConsole(Module(libvirt_domain="lv1", libvirt_uri="qemu:///system"))
    with pytest.raises(OptionError, match="not supported for a libvirt_domain yet"):
        found.serial_port()
