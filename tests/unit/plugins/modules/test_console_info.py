# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import json
import socket
import sys

import pytest

from ansible_collections.vmconsole.secure.plugins.modules import console_info
from ansible_collections.vmconsole.secure.tests.unit.fakelibvirt import FakeDomain, FakeLibvirt
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


# --- libvirt domains: the live domain XML instead of QMP ---------------------------------------------

LV1_XML = """<domain type='kvm' id='1'><name>lv1</name><devices>
  <graphics type='spice' port='61101' tlsPort='61100' autoport='no' listen='127.0.0.1' passwd='0ldPassw0rd'
            passwdValidTo='2026-01-01T00:00:00'>
    <listen type='address' address='127.0.0.1'/>
  </graphics>
  <graphics type='vnc' port='5910' autoport='yes' listen='::1'><listen type='address' address='::1'/></graphics>
</devices></domain>"""


def test_libvirt_domain_info_from_the_live_xml(run_module, monkeypatch):
    domain = FakeDomain(LV1_XML, state=3)
    lib = FakeLibvirt.install(monkeypatch, {"lv1": domain})
    result = run_module(console_info.main, dict(libvirt_domain="lv1"), check_mode=True)
    assert result["changed"] is False and result["qemu_version"] == "7.2.22"
    assert result["status"] == {"running": False, "status": "paused"}
    assert result["spice"] == {
        "enabled": True, "host": "127.0.0.1", "port": 61101, "tls_port": 61100, "auth": None, "mouse_mode": None,
        "migrated": False, "compiled_version": None, "channels": [],
        "autoport": False, "password_set": True, "password_valid_to": 1767225600,
    }
    assert result["vnc"] == {
        "enabled": True, "host": "::1", "service": "5910", "port": 5910, "family": "ipv6", "auth": None, "clients": [],
        "autoport": True, "password_set": False, "password_valid_to": None,
    }
    assert "0ldPassw0rd" not in json.dumps(result)
    assert domain.updates == [] and lib.calls == [("open", "qemu:///system"), ("lookupByName", "lv1")]


def test_libvirt_domain_without_graphics(run_module, monkeypatch):
    FakeLibvirt.install(monkeypatch, {"lv2": FakeDomain("<domain><name>lv2</name><devices/></domain>")})
    result = run_module(console_info.main, dict(libvirt_domain="lv2", libvirt_uri="qemu:///session"))
    assert result["status"] == {"running": True, "status": "running"}
    assert result["spice"]["enabled"] is False and result["spice"]["password_set"] is None
    assert result["vnc"]["enabled"] is False and result["vnc"]["clients"] == []


@pytest.mark.parametrize("domains, args, message", [
    ({}, dict(libvirt_domain="lv9"), "libvirt domain lv9 does not exist on qemu:///system"),
    ({"lv1": FakeDomain(LV1_XML, active=False, state=5)}, dict(libvirt_domain="lv1"),
     "libvirt domain lv1 on qemu:///system is not running"),
    ({}, dict(libvirt_domain="a/b"), "libvirt_domain 'a/b' is not a valid libvirt domain name"),
    ({}, dict(libvirt_domain="lv1", socket="/run/x.qmp"), "parameters are mutually exclusive: libvirt_domain|socket"),
    ({}, {}, "one of the following is required: vm, socket, libvirt_domain"),
])
def test_libvirt_errors(run_module, monkeypatch, domains, args, message):
    FakeLibvirt.install(monkeypatch, domains)
    result = run_module(console_info.main, args)
    assert result["failed"] and result["msg"].startswith(message), result["msg"]


def test_libvirt_missing_binding(run_module, monkeypatch):
    monkeypatch.setitem(sys.modules, "libvirt", None)
    result = run_module(console_info.main, dict(libvirt_domain="lv1"))
    assert result["msg"] == "libvirt_domain needs the python3-libvirt package on %s" % socket.gethostname()
