# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The module half of console_ticket against a scripted QMP server: what it sends, and when not."""

from __future__ import annotations

import datetime
import json

import pytest

from ansible_collections.vmconsole.secure.plugins.modules import console_ticket
from ansible_collections.vmconsole.secure.tests.unit.fakeqmp import Error, qemu

TICKET = "T1cketT1cketT1cketT1cketT1cketT1cket0000"
SPICE = {"migrated": False, "enabled": True, "auth": "spice", "compiled-version": "0.15.1", "tls-port": 61000,
         "host": "127.0.0.1", "mouse-mode": "server", "channels": []}
CLIENT = {"port": "47654", "family": "ipv4", "channel-type": 1, "connection-id": 1804289383, "host": "127.0.0.1",
          "channel-id": 0, "tls": True}
VNC = {"enabled": True, "auth": "vnc", "family": "ipv4", "service": "5901", "host": "127.0.0.1", "clients": []}
SENDING = {"set_password", "expire_password"}


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    """A self-signed certificate standing in for both CA and server certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example, Inc"),
                      x509.NameAttribute(NameOID.COMMON_NAME, "hv1.example.org")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    path = tmp_path_factory.mktemp("pki") / "cert.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return str(path)


@pytest.fixture
def ticket(fake_qmp, run_module, certs):
    """``ticket(table, check_mode=False, **args)`` -> (result, server)."""
    def run(table, check_mode=False, **args):
        server = fake_qmp(qemu(table))
        params = dict(socket=server.path, password=TICKET, console_host="hv1", ca_file=certs, server_cert_file=certs)
        params.update(args)
        return run_module(console_ticket.main, params, check_mode=check_mode), server
    return run


def sent(server, command):
    return [r.get("arguments") for r in server.requests if r.get("execute") == command]


def test_spice_sends_set_password_then_expire_password(ticket):
    result, server = ticket({"query-spice": SPICE, "set_password": {}, "expire_password": {}}, ttl="45")
    assert server.commands == ["qmp_capabilities", "query-spice", "set_password", "expire_password"]
    assert sent(server, "set_password") == [dict(protocol="spice", password=TICKET, connected="keep")]
    assert sent(server, "expire_password") == [dict(protocol="spice", time="+45")]
    assert result["changed"] is True and result["ttl"] == 45
    assert (result["tls_port"], result["port"], result["host_subject"]) == (61000, None, "O=Example\\, Inc,CN=hv1.example.org")
    assert result["vv"]["ca_pem"].startswith("-----BEGIN CERTIFICATE-----")
    assert TICKET not in json.dumps(result)


def test_vnc_sends_no_connected_argument(ticket):
    result, server = ticket({"query-vnc": VNC, "set_password": {}, "expire_password": {}}, protocol="vnc",
                            password="Vnc12345", ca_file="/nonexistent", server_cert_file="/nonexistent")
    assert sent(server, "set_password") == [dict(protocol="vnc", password="Vnc12345")]
    assert sent(server, "expire_password") == [dict(protocol="vnc", time="+30")]
    assert (result["port"], result["tls_port"], result["host_subject"]) == (5901, None, None)


def test_check_mode_only_queries(ticket):
    result, server = ticket({"query-spice": SPICE}, check_mode=True, connected="disconnect")
    assert server.commands == ["qmp_capabilities", "query-spice"]
    assert result["changed"] is True


def test_disconnect_is_passed_to_qemu(ticket):
    dummy, server = ticket({"query-spice": dict(SPICE, channels=[CLIENT]), "set_password": {}, "expire_password": {}},
                           connected="disconnect")
    assert sent(server, "set_password")[0]["connected"] == "disconnect"


def test_connected_fail_with_a_client_sends_nothing(ticket):
    result, server = ticket({"query-spice": dict(SPICE, channels=[CLIENT])}, connected="fail")
    assert result["failed"] and result["msg"].startswith("connected=fail: a SPICE client is connected (1 channels)")
    assert not SENDING & set(server.commands)


def test_failed_expiry_replaces_the_ticket_with_an_unknown_one(ticket):
    result, server = ticket({"query-spice": SPICE, "set_password": {},
                             "expire_password": Error("GenericError", "Could not set password expire time")})
    assert result["failed"] and result["qmp_error_desc"] == "Could not set password expire time"
    first, second = sent(server, "set_password")
    assert first["password"] == TICKET and second["password"] != TICKET and len(second["password"]) == 40
    assert TICKET not in json.dumps(result)


def test_set_password_error_is_reported_without_the_ticket(ticket):
    result, server = ticket({"query-spice": SPICE, "set_password": Error("GenericError", "Could not set password")})
    assert result["failed"] and result["msg"].startswith("QMP command 'set_password' failed")
    assert "expire_password" not in server.commands
    assert TICKET not in json.dumps(result)


@pytest.mark.parametrize("table, args, message", [
    ({}, {}, "QEMU has no SPICE: this QEMU binary was built without it"),
    ({"query-spice": {"enabled": False, "migrated": False}}, {}, "QEMU has no SPICE: the VM was started without -spice"),
    ({"query-spice": dict(SPICE, auth="none")}, {}, "SPICE of this VM does not use tickets (auth=none"),
    ({}, dict(protocol="vnc", password="Vnc1"), "QEMU has no VNC: this QEMU binary was built without it"),
    ({"query-vnc": {"enabled": False}}, dict(protocol="vnc", password="Vnc1"), "QEMU has no VNC: the VM was started without -vnc"),
    ({"query-vnc": dict(VNC, auth="none")}, dict(protocol="vnc", password="Vnc1"), "VNC of this VM has no password authentication"),
    ({"query-vnc": dict(VNC, family="unix", service="/run/vnc.sock")}, dict(protocol="vnc", password="Vnc1"),
     "VNC of this VM does not listen on a TCP port (unix)"),
    ({"query-spice": SPICE}, dict(password="hv1"), "password: it occurs in console_host"),
    ({"query-spice": SPICE}, dict(password="Example"), "password: it occurs in host_subject (or server_cert_file)"),
    ({"query-spice": SPICE}, dict(title="a\nb"), "cannot write a .vv with these options: .vv value for 'title'"),
])
def test_refusals_send_nothing(ticket, table, args, message):
    result, server = ticket(table, **args)
    assert result["failed"] and result["msg"].startswith(message), result["msg"]
    assert not SENDING & set(server.commands)


def test_password_inside_the_ca_certificate(ticket, certs):
    with open(certs) as f:
        body = f.read().splitlines()[1]
    password = max("".join(c if c.isalnum() else " " for c in body).split(), key=len)[:12]
    result, server = ticket({"query-spice": SPICE}, password=password, host_subject="CN=x")
    assert result["msg"].startswith("password: it occurs in the CA certificate in ca_file")
    assert not SENDING & set(server.commands)


def test_files_are_read_before_connecting(ticket, tmp_path):
    result, server = ticket({"query-spice": SPICE}, ca_file=str(tmp_path / "missing.pem"))
    assert result["msg"] == "ca_file %s cannot be read: No such file or directory" % (tmp_path / "missing.pem")
    assert server.connections == 0


def test_explicit_host_subject_skips_the_server_certificate(ticket):
    result, dummy = ticket({"query-spice": SPICE, "set_password": {}, "expire_password": {}},
                           host_subject="CN=other", server_cert_file="/nonexistent")
    assert result["host_subject"] == "CN=other"


def test_plain_spice_port_warns_and_offers_it(ticket, monkeypatch):
    warnings = []
    monkeypatch.setattr(console_ticket.AnsibleModule, "warn", lambda self, text: warnings.append(text))
    result, dummy = ticket({"query-spice": dict(SPICE, **{"tls-port": None, "port": 5930}), "set_password": {},
                            "expire_password": {}})
    assert result["vv"]["port"] == 5930 and result["vv"]["tls_port"] is None
    assert any("travel in plain text" in text for text in warnings)


def test_missing_password_means_no_action_plugin(ticket):
    result, server = ticket({"query-spice": SPICE}, password=None)
    assert result["msg"].startswith("password is missing: the console_ticket action plugin generates the ticket")
    assert server.connections == 0
