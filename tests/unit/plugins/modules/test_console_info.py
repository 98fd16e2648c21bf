# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import pytest

from ansible_collections.vmconsole.secure.plugins.modules import console_info
from ansible_collections.vmconsole.secure.tests.unit.fakeqmp import Error, qemu

STATUS = {"status": "running", "singlestep": False, "running": True}
# What QEMU 7.2 answers with one SPICE client connected over TLS, and one VNC client.
SPICE = {
    "migrated": False, "enabled": True, "auth": "spice", "port": 61001, "compiled-version": "0.15.1",
    "tls-port": 61000, "host": "127.0.0.1", "mouse-mode": "server",
    "channels": [
        {"port": "47654", "family": "ipv4", "channel-type": 1, "connection-id": 1804289383, "host": "127.0.0.1",
         "channel-id": 0, "tls": True},
        {"port": "47660", "family": "ipv4", "channel-type": 2, "connection-id": 1804289383, "host": "127.0.0.1",
         "channel-id": 0, "tls": True},
    ],
}
VNC = {"enabled": True, "auth": "vnc", "family": "ipv4", "service": "5901", "host": "127.0.0.1",
       "clients": [{"host": "127.0.0.1", "service": "50422", "family": "ipv4", "websocket": False}]}
# QEMU 7.2 with SPICE built in but no -spice, and no -vnc:
SPICE_OFF = {"migrated": False, "enabled": False, "mouse-mode": "client"}
VNC_OFF = {"enabled": False}


def test_full_info(fake_qmp, run_module):
    server = fake_qmp(qemu({"query-status": STATUS, "query-spice": SPICE, "query-vnc": VNC}))
    result = run_module(console_info.main, dict(socket=server.path))
    assert result["changed"] is False
    assert result["qemu_version"] == "7.2.22"
    assert result["status"] == {"running": True, "status": "running"}
    assert result["spice"] == {
        "enabled": True, "host": "127.0.0.1", "port": 61001, "tls_port": 61000, "auth": "spice",
        "mouse_mode": "server", "migrated": False, "compiled_version": "0.15.1",
        "channels": [
            {"host": "127.0.0.1", "port": 47654, "family": "ipv4", "connection_id": 1804289383, "channel_type": 1,
             "channel_id": 0, "tls": True},
            {"host": "127.0.0.1", "port": 47660, "family": "ipv4", "connection_id": 1804289383, "channel_type": 2,
             "channel_id": 0, "tls": True},
        ],
    }
    assert result["vnc"] == {
        "enabled": True, "host": "127.0.0.1", "service": "5901", "port": 5901, "family": "ipv4", "auth": "vnc",
        "clients": [{"host": "127.0.0.1", "service": "50422", "port": 50422, "family": "ipv4", "websocket": False}],
    }
    assert server.commands == ["qmp_capabilities", "query-status", "query-spice", "query-vnc"]


@pytest.mark.parametrize("spice, vnc", [
    (SPICE_OFF, VNC_OFF),
    (Error("CommandNotFound", "The command query-spice has not been found"),
     Error("CommandNotFound", "The command query-vnc has not been found")),
])
def test_no_spice_no_vnc_is_not_a_failure(fake_qmp, run_module, spice, vnc):
    server = fake_qmp(qemu({"query-status": {"status": "paused", "running": False}, "query-spice": spice,
                            "query-vnc": vnc}))
    result = run_module(console_info.main, dict(socket=server.path))
    assert result["status"] == {"running": False, "status": "paused"}
    assert result["spice"] == {"enabled": False, "host": None, "port": None, "tls_port": None, "auth": None,
                               "mouse_mode": None, "migrated": False, "compiled_version": None, "channels": []}
    assert result["vnc"] == {"enabled": False, "host": None, "service": None, "port": None, "family": None,
                             "auth": None, "clients": []}


def test_other_errors_fail(fake_qmp, run_module):
    server = fake_qmp(qemu({"query-status": STATUS, "query-spice": Error("GenericError", "boom")}))
    result = run_module(console_info.main, dict(socket=server.path))
    assert result["failed"] is True
    assert result["qmp_error_class"] == "GenericError" and "boom" in result["msg"]


def test_check_mode_reads(fake_qmp, run_module):
    server = fake_qmp(qemu({"query-status": STATUS, "query-spice": SPICE, "query-vnc": VNC}))
    result = run_module(console_info.main, dict(socket=server.path), check_mode=True)
    assert result["changed"] is False
    assert result["spice"]["tls_port"] == 61000


def test_timeout_fails_with_socket_and_hint(fake_qmp, run_module):
    server = fake_qmp(lambda peer: peer.hold())
    result = run_module(console_info.main, dict(socket=server.path, timeout=0.3))
    assert result["failed"] is True
    assert result["qmp_error"] == "QMPTimeout"
    assert server.path in result["msg"] and "timeout option" in result["msg"]


@pytest.mark.parametrize("value, port", [("5901", 5901), (5901, 5901), ("vnc", None), (None, None)])
def test_port(value, port):
    assert console_info._port(value) == port
