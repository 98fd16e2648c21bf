# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The module half of console_ticket against a scripted QMP server: what it sends, and when not."""

from __future__ import annotations

import calendar
import datetime
import json
import os
import socket
import stat
import sys
import time
from urllib.parse import urlsplit

import pytest

from ansible_collections.vmconsole.secure.plugins.modules import console_ticket
from ansible_collections.vmconsole.secure.plugins.module_utils._tickets import (
    SigningKeys, dump_signing_keys, private_key_text, proxy_keys_of, proxy_signer, verify_proxy_token,
)
from ansible_collections.vmconsole.secure.tests.unit.fakelibvirt import FakeDomain, FakeLibvirt, graphics_of
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
def audit_log(tmp_path):
    return tmp_path / "log" / "tickets.log"


@pytest.fixture
def ticket(fake_qmp, run_module, certs, audit_log):
    """``ticket(table, check_mode=False, **args)`` -> (result, server). With ``vm``, the socket is found by name."""
    count = []

    def run(table, check_mode=False, **args):
        count.append(1)
        server = fake_qmp(qemu(table), name="%s.qmp" % (args.get("vm") or "vm%d" % len(count)))
        params = dict(socket=server.path, password=TICKET, console_host="hv1", ca_file=certs, server_cert_file=certs,
                      audit_log=str(audit_log))
        if args.get("vm"):
            params.update(socket=None, socket_dir=os.path.dirname(server.path))
        params.update(args)
        return run_module(console_ticket.main, {k: v for k, v in params.items() if v is not None},
                          check_mode=check_mode), server
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


# --- proxy tokens ---------------------------------------------------------------------------------

OK_TABLE = {"query-spice": SPICE, "set_password": {}, "expire_password": {}}
S1, S2 = proxy_signer(b"\x01" * 32), proxy_signer(b"\x02" * 32)
K2 = S2.key_id


@pytest.fixture
def keys_file(tmp_path):
    """The node's signing keys in the middle of a rotation: S2 signs, S1 retires."""
    path = tmp_path / "proxy-signing.json"
    path.write_text(dump_signing_keys(SigningKeys(K2, None, [S1.key_id], 1, {S1.key_id: S1, K2: S2})))
    return str(path)


def load_proxy_keys(dummy_keys_file):
    """The public keys every node verifies with."""
    return proxy_keys_of("hv1", S1, S2)


def test_proxy_user_puts_a_token_for_that_user_and_vm_into_the_proxy_url(ticket, keys_file):
    result, server = ticket(OK_TABLE, vm="web1", proxy="http://hv1.example.org:3128", proxy_user="alice@example.org",
                            proxy_token_key_file=keys_file)
    assert not result.get("failed"), result
    url = urlsplit(result["vv"]["proxy"])
    assert (url.hostname, url.port, url.username) == ("hv1.example.org", 3128, "alice_40example_2Eorg__web1")
    check = verify_proxy_token(load_proxy_keys(keys_file), url.username, url.password)
    assert check.ok and (check.user, check.vm, check.key_id) == ("alice@example.org", "web1", K2)
    assert (check.console, check.client) == ("spice", None), "a SPICE token, for whichever client uses it first"
    assert abs(check.expires - (time.time() + 28800)) < 5
    assert (result["proxy_username"], result["proxy_token_key_id"], result["proxy_token_expires"]) == (
        url.username, K2, check.expires)
    outside_vv = dict(result)
    del outside_vv["vv"]
    assert url.password not in json.dumps(outside_vv), "the token leaves the module only inside vv"
    assert sent(server, "set_password")[0]["password"] == TICKET


def test_proxy_client_address_binds_the_token_to_that_client(ticket, keys_file):
    result, server = ticket(OK_TABLE, vm="web1", proxy="http://hv1:3128", proxy_user="alice",
                            proxy_client_address="2001:db8::7", proxy_token_key_file=keys_file)
    assert not result.get("failed"), result
    url = urlsplit(result["vv"]["proxy"])
    keys = load_proxy_keys(keys_file)
    assert verify_proxy_token(keys, url.username, url.password, client="2001:db8::7").ok
    assert verify_proxy_token(keys, url.username, url.password, client="2001:db8::8").status == "wrong_client"


def test_proxy_token_ttl_and_default_port(ticket, keys_file):
    result, dummy = ticket(OK_TABLE, vm="web1", proxy="http://[fd00::1]", proxy_user="bob", proxy_token_key_file=keys_file,
                           proxy_token_ttl="600")
    url = urlsplit(result["vv"]["proxy"])
    assert (url.hostname, url.port) == ("fd00::1", 3128)
    assert abs(result["proxy_token_expires"] - (time.time() + 600)) < 5


@pytest.fixture
def proxy_fact(tmp_path):
    """``proxy_fact(**fields)`` -> the path of a connect_proxy fact of the node."""
    def write(**fields):
        path = tmp_path / "vmconsole_proxy.fact"
        path.write_text(json.dumps(dict(dict(url="http://hv1.example.org:3128", tokens=True), **fields)))
        return str(path)
    return write


def test_an_ad_hoc_ticket_goes_through_the_nodes_proxy_with_a_token_for_the_controller_user(
        ticket, keys_file, proxy_fact):
    result, dummy = ticket(OK_TABLE, vm="web1", proxy_token_key_file=keys_file, proxy_fact_file=proxy_fact(),
                           controller_user="carol")
    assert not result.get("failed"), result
    url = urlsplit(result["vv"]["proxy"])
    assert (url.hostname, url.port, url.username) == ("hv1.example.org", 3128, "carol__web1")
    assert verify_proxy_token(load_proxy_keys(keys_file), url.username, url.password).ok
    # An explicit person wins over the controller's login name.
    result, dummy = ticket(OK_TABLE, vm="web2", proxy_token_key_file=keys_file, proxy_fact_file=proxy_fact(),
                           controller_user="carol", proxy_user="dave")
    assert urlsplit(result["vv"]["proxy"]).username == "dave__web2"


@pytest.mark.parametrize("args, proxy", [
    (dict(proxy=""), None),                                  # explicitly without a proxy
    (dict(tokens=False), "http://hv1.example.org:3128"),     # a proxy without token checks: no token
    (dict(protocol="vnc", password="Vnc0Pass", proxy=None), None),   # remote-viewer uses no proxy for VNC
    (dict(missing=True), None),                              # no connect_proxy on the node
])
def test_the_nodes_proxy_default_and_where_it_does_not_apply(ticket, keys_file, proxy_fact, tmp_path, args, proxy):
    fact = str(tmp_path / "none.fact") if args.pop("missing", False) else proxy_fact(tokens=args.pop("tokens", True))
    table = dict(OK_TABLE, **{"query-vnc": VNC}) if args.get("protocol") == "vnc" else OK_TABLE
    result, dummy = ticket(table, vm="web1", proxy_token_key_file=keys_file, proxy_fact_file=fact,
                           controller_user="carol", **args)
    assert not result.get("failed"), result
    assert result["vv"]["proxy"] == proxy and "proxy_username" not in result


def test_a_controller_login_name_that_cannot_be_a_proxy_user_is_named(ticket, keys_file, proxy_fact):
    result, server = ticket(OK_TABLE, vm="web1", proxy_token_key_file=keys_file, proxy_fact_file=proxy_fact(),
                            controller_user="x" * 65)
    assert result.get("failed") and result["msg"].startswith(
        "controller_user (the default of proxy_user, the login name on the controller): "), result["msg"]
    assert server.connections == 0


@pytest.mark.parametrize("text, message", [
    ("{not json", "proxy_fact_file: %s cannot be read"),
    ('{"tokens": true}', "proxy_fact_file: %s has no proxy url"),
    ('{"url": "http://hv1:3128", "tokens": true}', "proxy_user is missing: the node's proxy (http://hv1:3128) checks"),
])
def test_an_unusable_proxy_fact_or_an_unknown_person_sends_nothing(ticket, keys_file, tmp_path, text, message):
    fact = tmp_path / "vmconsole_proxy.fact"
    fact.write_text(text)
    result, server = ticket(OK_TABLE, vm="web1", proxy_token_key_file=keys_file, proxy_fact_file=str(fact))
    assert result.get("failed") and result["msg"].startswith(message.replace("%s", str(fact))), result["msg"]
    assert server.connections == 0


def test_without_proxy_user_the_proxy_url_is_kept(ticket, keys_file):
    result, dummy = ticket(OK_TABLE, proxy="http://hv1:3128", proxy_token_key_file="/nonexistent")
    assert result["vv"]["proxy"] == "http://hv1:3128"
    assert "proxy_username" not in result


@pytest.mark.parametrize("args, message", [
    (dict(vm="web1", proxy_user="alice"), "proxy_user needs proxy"),
    (dict(proxy="http://hv1:3128", proxy_user="alice"), "proxy_user needs vm or libvirt_domain (the token names the VM), not socket"),
    (dict(vm="web1", proxy="http://u:p@hv1:3128", proxy_user="alice"), "proxy must not hold credentials with proxy_user"),
    (dict(vm="web1", proxy="http://hv1:3128", proxy_user="alice", protocol="vnc", password="Vnc1"),
     "proxy is SPICE-only"),
    (dict(vm="web1", proxy="http://hv1:3128", proxy_user="a\nb"), "proxy_user must not contain control characters"),
    (dict(vm="web1", proxy="http://hv1:3128", proxy_user="x" * 65), "proxy_user must be at most 64 characters"),
    (dict(vm="web1", proxy="http://hv1:3128", proxy_user="alice", proxy_token_ttl=10),
     "proxy_token_ttl must be between 60 and 604800 seconds, got 10"),
    (dict(vm="web1", proxy="http://hv1:3128", proxy_user="alice", proxy_token_ttl="8h"),
     "proxy_token_ttl must be a whole number of seconds, got '8h'"),
    (dict(vm="web1", proxy="http://hv1:3128", proxy_user="alice", proxy_client_address="192.0.2.0/24"),
     "proxy_client_address: not an IP address: '192.0.2.0/24'"),
    (dict(vm="web1", proxy="http://hv1:3128", proxy_user="alice", proxy_token_key_file="/nonexistent/keys.json"),
     "proxy_token_key_file: proxy token signing keys /nonexistent/keys.json cannot be read: No such file or directory"),
])
def test_bad_proxy_token_options_send_nothing(ticket, keys_file, args, message):
    args.setdefault("proxy_token_key_file", keys_file)
    result, server = ticket(OK_TABLE, **args)
    assert result.get("failed") and result["msg"].startswith(message), result["msg"]
    assert server.connections == 0


def test_broken_keys_file_is_named_without_its_content(ticket, tmp_path):
    path = tmp_path / "keys.json"
    secret = private_key_text(S1)
    path.write_text(json.dumps({"current": K2, "keys": {S1.key_id: secret}}))
    result, server = ticket(OK_TABLE, vm="web1", proxy="http://hv1:3128", proxy_user="alice", proxy_token_key_file=str(path))
    assert result["msg"] == ("proxy_token_key_file: proxy token signing keys %s: current must name one of the keys (%s)"
                             % (path, S1.key_id))
    assert secret not in json.dumps(result) and server.connections == 0


def test_password_inside_the_proxy_username_is_refused(ticket, keys_file):
    result, server = ticket({"query-spice": SPICE}, vm="web1", proxy="http://hv1:3128", proxy_user="alice",
                            proxy_token_key_file=keys_file, password="alice")
    assert result["msg"].startswith("password: it occurs in proxy, which the module returns")
    assert not SENDING & set(server.commands)


# --- the audit log --------------------------------------------------------------------------------

def test_issuance_is_logged_without_secrets(ticket, keys_file, audit_log):
    result, dummy = ticket(OK_TABLE, vm="web1", proxy="http://hv1:3128", proxy_user="alice", proxy_token_key_file=keys_file)
    ticket(OK_TABLE, ttl=45)
    text = audit_log.read_text()
    first, second = [json.loads(line) for line in text.splitlines()]
    assert {k: first[k] for k in ("event", "vm", "protocol", "connected", "ticket_expires", "proxy_user",
                                  "proxy_username", "proxy_token_key_id", "proxy_token_expires")} == dict(
        event="console_ticket", vm="web1", protocol="spice", connected="keep", ticket_expires=result["expires"],
        proxy_user="alice", proxy_username="alice__web1", proxy_token_key_id=K2,
        proxy_token_expires=result["proxy_token_expires"])
    assert abs(first["epoch"] - time.time()) < 5 and first["time"].endswith("Z") and first["node"] and first["run_by"]
    assert second["vm"] is None and second["socket"].endswith("vm2.qmp") and second["proxy_user"] is None
    assert TICKET not in text and urlsplit(result["vv"]["proxy"]).password not in text
    assert stat.S_IMODE(os.stat(audit_log).st_mode) == 0o640
    assert stat.S_IMODE(os.stat(audit_log.parent).st_mode) == 0o750


def test_check_mode_and_failures_log_nothing(ticket, audit_log):
    ticket({"query-spice": SPICE}, check_mode=True)
    ticket({"query-spice": SPICE, "set_password": Error("GenericError", "Could not set password")})
    assert not audit_log.exists() or audit_log.read_text() == ""


def test_unwritable_audit_log_fails_before_anything_is_sent(ticket, tmp_path):
    (tmp_path / "file").write_text("x")
    for check_mode in (False, True):
        result, server = ticket(OK_TABLE, check_mode=check_mode, audit_log=str(tmp_path / "file" / "tickets.log"))
        assert result["msg"].startswith("audit_log %s cannot be written: " % (tmp_path / "file" / "tickets.log"))
        assert not SENDING & set(server.commands)


def test_empty_audit_log_turns_it_off(ticket, audit_log):
    result, dummy = ticket(OK_TABLE, audit_log="")
    assert not result.get("failed") and not audit_log.parent.exists()


# --- libvirt domains: a live <graphics> update instead of QMP ----------------------------------------

LV1_XML = """<domain type='kvm' id='1'><name>lv1</name><devices>
  <graphics type='spice' port='-1' tlsPort='61100' autoport='no' listen='127.0.0.1' passwd='0ldPassw0rd'
            passwdValidTo='2020-01-01T00:00:00'>
    <listen type='address' address='127.0.0.1'/>
  </graphics>
  <graphics type='vnc' port='5910' autoport='no' listen='127.0.0.1' passwd='0ldVnc'>
    <listen type='address' address='127.0.0.1'/>
  </graphics>
</devices></domain>"""


@pytest.fixture
def lv_ticket(run_module, certs, audit_log, monkeypatch):
    """``lv_ticket(domain=FakeDomain, check_mode=False, **args)`` -> (result, fake libvirt)."""
    def run(domain=None, check_mode=False, **args):
        lib = FakeLibvirt.install(monkeypatch, {"lv1": domain or FakeDomain(LV1_XML)})
        params = dict(libvirt_domain="lv1", password=TICKET, console_host="hv1", ca_file=certs, server_cert_file=certs,
                      audit_log=str(audit_log))
        params.update(args)
        return run_module(console_ticket.main, {k: v for k, v in params.items() if v is not None},
                          check_mode=check_mode), lib
    return run


def test_libvirt_spice_ticket_is_one_live_graphics_update(lv_ticket, audit_log):
    domain = FakeDomain(LV1_XML)
    before = time.time()
    result, lib = lv_ticket(domain, ttl=45, connected="disconnect")
    assert not result.get("failed"), result
    (xml, flags), = domain.updates
    assert flags == 1, "VIR_DOMAIN_AFFECT_LIVE"
    attrs = graphics_of(xml)
    assert (attrs["type"], attrs["tlsPort"], attrs["passwd"]) == ("spice", "61100", TICKET)
    assert attrs["connected"] == "disconnect"
    valid_to = calendar.timegm(time.strptime(attrs["passwdValidTo"], "%Y-%m-%dT%H:%M:%S"))
    assert valid_to == result["expires"] and int(before) + 45 <= valid_to <= time.time() + 45
    assert (result["tls_port"], result["port"], result["ttl"]) == (61100, None, 45)
    assert result["vv"]["tls_port"] == 61100 and result["ticket_file"] is None
    assert TICKET not in json.dumps(result)
    record = json.loads(audit_log.read_text())
    assert (record["vm"], record["socket"], record["libvirt_domain"], record["libvirt_uri"], record["connected"]) == (
        None, None, "lv1", "qemu:///system", "disconnect")
    assert TICKET not in audit_log.read_text()
    assert ("open", "qemu:///system") in lib.calls and domain.xml_flags == [1]


def test_libvirt_vnc_ticket_sets_no_connected(lv_ticket):
    domain = FakeDomain(LV1_XML)
    result, dummy = lv_ticket(domain, protocol="vnc", password="Vnc12345", libvirt_uri="qemu+ssh://root@hv1/system")
    attrs = graphics_of(domain.updates[0][0])
    assert (attrs["type"], attrs["port"], attrs["passwd"]) == ("vnc", "5910", "Vnc12345") and "connected" not in attrs
    assert (result["port"], result["tls_port"], result["host_subject"]) == (5910, None, None)


def test_libvirt_check_mode_sends_nothing(lv_ticket, audit_log):
    domain = FakeDomain(LV1_XML)
    result, dummy = lv_ticket(domain, check_mode=True)
    assert result["changed"] is True and not result.get("failed") and result["tls_port"] == 61100
    assert domain.updates == [] and not audit_log.exists()


def test_libvirt_explicit_ticket_file_is_kept(lv_ticket, tmp_path):
    result, dummy = lv_ticket(ticket_file=str(tmp_path / "lv1.ticket"))
    kept = json.loads((tmp_path / "lv1.ticket").read_text())
    assert kept["ticket"] == TICKET and kept["expires"] == result["expires"]


def test_libvirt_proxy_token_names_the_domain(lv_ticket, keys_file):
    result, dummy = lv_ticket(proxy="http://hv1:3128", proxy_user="alice", proxy_token_key_file=keys_file)
    url = urlsplit(result["vv"]["proxy"])
    assert url.username == "alice__lv1"
    assert verify_proxy_token(load_proxy_keys(keys_file), url.username, url.password).vm == "lv1"


@pytest.mark.parametrize("domain, args, message", [
    (None, dict(libvirt_domain="lv9"), "libvirt domain lv9 does not exist on qemu:///system "
                                       "(check libvirt_domain and libvirt_uri)"),
    (FakeDomain(LV1_XML, active=False, state=5), {}, "libvirt domain lv1 on qemu:///system is not running"),
    (FakeDomain(LV1_XML.split("<graphics type='vnc'", maxsplit=1)[0] + "</devices></domain>"), dict(protocol="vnc", password="Vnc1"),
     "libvirt domain lv1 (qemu:///system) has no <graphics type='vnc'>: it has no VNC console (protocol=vnc)"),
    (FakeDomain(LV1_XML.replace("port='5910' autoport='no' listen='127.0.0.1'", "socket='/run/v.sock'")),
     dict(protocol="vnc", password="Vnc1"), "VNC of libvirt domain lv1 (qemu:///system) does not listen on a TCP port"),
    (None, dict(protocol="vnc", password="Vnc1", connected="fail"), "connected=fail is SPICE-only"),
    (None, dict(ttl=0), "ttl must be"),
    (None, dict(libvirt_domain="a/b"), "libvirt_domain 'a/b' is not a valid libvirt domain name"),
    (None, dict(libvirt_uri="qemu+tls:///system"), "libvirt_uri: libvirt URI 'qemu+tls:///system': transport 'tls'"),
    (None, dict(vm="web1"), "parameters are mutually exclusive: libvirt_domain|vm"),
])
def test_libvirt_refusals_send_nothing(lv_ticket, domain, args, message):
    domain = domain or FakeDomain(LV1_XML)
    result, lib = lv_ticket(domain, **args)
    assert result.get("failed") and result["msg"].startswith(message), result["msg"]
    assert domain.updates == []
    assert TICKET not in json.dumps(result)


def test_libvirt_options_are_checked_before_connecting(lv_ticket):
    result, lib = lv_ticket(libvirt_domain="a/b")
    assert result["failed"] and lib.calls == []


def test_libvirt_missing_binding(run_module, certs, monkeypatch, audit_log):
    monkeypatch.setitem(sys.modules, "libvirt", None)
    result = run_module(console_ticket.main, dict(libvirt_domain="lv1", password=TICKET, ca_file=certs,
                                                  server_cert_file=certs, audit_log=str(audit_log)))
    assert result["msg"] == "libvirt_domain needs the python3-libvirt package on %s" % socket.gethostname()


def test_libvirt_refused_update_is_replaced_and_reported_without_the_ticket(lv_ticket, audit_log):
    domain = FakeDomain(LV1_XML, update_error="internal error: unable to execute QEMU command 'expire_password'")
    result, dummy = lv_ticket(domain)
    assert result["failed"] and result["msg"] == (
        "libvirt domain lv1 (qemu:///system): the live update of its <graphics> failed: internal error: unable to "
        "execute QEMU command 'expire_password'")
    assert (result["libvirt_domain"], result["libvirt_error_code"]) == ("lv1", 55)
    first, second = [graphics_of(xml)["passwd"] for xml, flags in domain.updates]
    assert first == TICKET and second != TICKET and len(second) == 40, "an unknown ticket replaces ours"
    assert TICKET not in json.dumps(result) and second not in json.dumps(result)
    assert not audit_log.exists() or audit_log.read_text() == ""


def test_libvirt_domain_without_passwd_gets_a_hint(lv_ticket):
    domain = FakeDomain(LV1_XML.replace("passwd='0ldPassw0rd'", ""), fail_updates=1,
                        update_error="internal error: unable to execute QEMU command 'set_password': "
                                     "Could not set password")
    result, dummy = lv_ticket(domain)
    assert result["msg"].endswith("Could not set password (the domain's <graphics type='spice'> has no passwd: libvirt "
                                  "then starts QEMU without SPICE password authentication unless qemu.conf sets "
                                  "spice_password, and QEMU refuses tickets; define the domain with a passwd, e.g. a "
                                  "random one with a passwdValidTo in the past)")
    assert len(domain.updates) == 2


# --- protocol=serial: a proxy token and the client command, nothing set in QEMU -------------------------

SERIAL_CHARDEVS = [  # QEMU 7.2.22's query-chardev for a qemu_vm guest (read from a real one)
    {"frontend-open": True, "filename": "disconnected:tcp:127.0.0.1:62017,server=on", "label": "vmconsole-serial"},
    {"frontend-open": True, "filename": "unix:/run/vmconsole/web1.qmp,server=on", "label": "compat_monitor0"},
]
SERIAL_TABLE = {"query-chardev": SERIAL_CHARDEVS}


@pytest.fixture
def serial(ticket, keys_file):
    """``serial(table=SERIAL_TABLE, check_mode=False, **args)``: protocol=serial for alice and web1."""
    def run(table=None, check_mode=False, **args):
        params = dict(vm="web1", protocol="serial", password=None, proxy_user="alice", proxy_token_key_file=keys_file)
        params.update(args)
        return ticket(SERIAL_TABLE if table is None else table, check_mode=check_mode, **params)
    return run


def test_serial_reads_the_port_and_mints_only_a_proxy_token(serial, keys_file):
    before = time.time()
    result, server = serial(proxy="http://hv1.example.org:3128")
    assert not result.get("failed"), result
    assert server.commands == ["qmp_capabilities", "query-chardev", "qom-get"], "read-only queries, nothing set in QEMU"
    token = result["serial_handover"]["proxy_token"]
    check = verify_proxy_token(load_proxy_keys(keys_file), result["proxy_username"], token)
    assert check.ok and (check.user, check.vm, check.key_id, check.console) == ("alice", "web1", K2, "serial")
    assert (result["protocol"], result["serial_port"], result["proxy_username"], result["console_host"]) == (
        "serial", 62017, "alice__web1", "hv1")
    assert result["expires"] == result["proxy_token_expires"] == check.expires
    assert int(before) + 28800 <= result["expires"] <= time.time() + 28800 and result["ttl"] == 28800
    home = "~/.vmconsole/pki/default/clients/alice/"
    assert result["argv"] == [
        "openssl", "s_client", "-quiet", "-proxy", "hv1.example.org:3128", "-proxy_user", "alice__web1",
        "-proxy_pass", "env:VMC_PROXY_TOKEN", "-connect", "hv1:62017", "-cert", home + "clientcert.pem",
        "-key", home + "clientkey.pem", "-CAfile", home + "cacert.pem", "-verify_return_error", "-verify_hostname", "hv1"]
    assert result["command"] == " ".join(result["argv"]) and "\n" not in result["command"]
    outside = dict(result)
    del outside["serial_handover"]
    assert token not in json.dumps(outside), "the token leaves the module only in serial_handover"
    for key in ("vv", "tls_port", "port", "host_subject", "ticket_file"):
        assert key not in result


@pytest.mark.parametrize("identities, warned", [
    (["O=vmconsole.secure,CN=bob"], True),
    ([], True),
    (["O=vmconsole.secure,CN=bob", "O=vmconsole.secure,CN=alice"], False),
    (["CN=alice+UID=7,O=x"], False),
    (None, False),          # a guest without the collection's list: nothing to say
])
def test_serial_warns_when_the_person_is_not_on_the_consoles_client_list(serial, monkeypatch, identities, warned):
    warnings = []
    monkeypatch.setattr(console_ticket.AnsibleModule, "warn", lambda self, text: warnings.append(text))
    table = dict(SERIAL_TABLE)
    if identities is not None:
        table["qom-get"] = [{"match": identity, "policy": "allow", "format": "exact"} for identity in identities]
    result, server = serial(table)
    assert not result.get("failed") and "serial_handover" in result, "a warning, not a refusal"
    assert server.commands == ["qmp_capabilities", "query-chardev", "qom-get"]
    expected = ["proxy_user alice is not on the serial console's client list of web1 (no certificate with CN=alice "
                "among %d admitted; qemu_vm_serial_clients or the guest's serial_clients): QEMU will refuse that "
                "certificate's TLS handshake" % len(identities or [])]
    assert warnings == (expected if warned else [])


def test_serial_port_while_a_client_is_connected_and_client_paths(serial):
    connected = [dict(SERIAL_CHARDEVS[0], filename="tcp:127.0.0.1:62933,server=on <-> 127.0.0.1:49996")]
    result, dummy = serial({"query-chardev": connected}, client_cert_file="/home/al ice/c.pem",
                           client_key_file="~/k.pem", client_ca_file="ca.pem", console_host="10.90.2.11")
    assert result["serial_port"] == 62933
    assert result["argv"][result["argv"].index("-proxy") + 1] == "10.90.2.11:3128", "default: the node's own proxy"
    assert "-cert '/home/al ice/c.pem' -key ~/k.pem -CAfile ca.pem" in result["command"]
    assert result["command"].endswith("-verify_ip 10.90.2.11")


@pytest.mark.parametrize("chardevs, message", [
    ([SERIAL_CHARDEVS[1]], "the VM has no serial console: QEMU has no chardev vmconsole-serial (the guest was started "
                           "with serial: false"),
    ([], "the VM has no serial console"),
    ([dict(SERIAL_CHARDEVS[0], filename="pty:/dev/pts/3")], "the VM's serial console cannot be reached through the "
                                                            "proxy: chardev vmconsole-serial is not a TCP socket"),
])
def test_serial_without_a_tcp_chardev_mints_nothing(serial, audit_log, chardevs, message):
    result, server = serial({"query-chardev": chardevs})
    assert result.get("failed") and result["msg"].startswith(message), result["msg"]
    assert "serial_handover" not in result and server.commands == ["qmp_capabilities", "query-chardev"]
    assert not audit_log.exists()


@pytest.mark.parametrize("args, message", [
    (dict(proxy_user=None), "protocol=serial needs proxy_user: the serial console has no ticket"),
    (dict(password="Passw0rd"), "password does not apply to protocol=serial"),
    (dict(connected="disconnect"), "connected=disconnect is SPICE-only"),
    (dict(title="x"), "title does not apply to protocol=serial"),
    (dict(vm=None, socket="/run/x.qmp"), "proxy_user needs vm or libvirt_domain (the token names the VM), not socket"),
    (dict(proxy="http://u:p@hv1:3128"), "proxy must not hold credentials with proxy_user"),
    (dict(client_key_file="-x"), "client_key_file must be a file path on the client's machine"),
    (dict(proxy_token_key_file="/nonexistent/keys.json"), "proxy_token_key_file: proxy token signing keys /nonexistent"),
])
def test_serial_refusals_before_connecting(serial, audit_log, args, message):
    result, server = serial(**args)
    assert result.get("failed") and result["msg"].startswith(message), result["msg"]
    assert server.connections == 0 and not audit_log.exists()


def test_serial_is_refused_for_a_libvirt_domain(lv_ticket, keys_file):
    domain = FakeDomain(LV1_XML)
    result, lib = lv_ticket(domain, protocol="serial", password=None, proxy_user="alice", proxy_token_key_file=keys_file)
    assert result["msg"].startswith("protocol=serial is not supported for a libvirt_domain yet"), result["msg"]
    assert lib.calls == [] and domain.updates == []


def test_serial_issuance_is_audited_without_the_token(serial, audit_log):
    result, dummy = serial()
    text = audit_log.read_text()
    record = json.loads(text)
    assert {k: record[k] for k in ("event", "vm", "protocol", "connected", "ticket_expires", "proxy_user",
                                   "proxy_username", "proxy_token_key_id", "proxy_token_expires")} == dict(
        event="console_ticket", vm="web1", protocol="serial", connected=None, ticket_expires=None, proxy_user="alice",
        proxy_username="alice__web1", proxy_token_key_id=K2, proxy_token_expires=result["expires"])
    assert result["serial_handover"]["proxy_token"] not in text


def test_serial_check_mode_reads_and_mints_nothing(serial, audit_log):
    result, server = serial(check_mode=True)
    assert not result.get("failed") and result["changed"] is True
    assert server.commands == ["qmp_capabilities", "query-chardev", "qom-get"]
    assert "serial_handover" not in result and result["proxy_token_key_id"] == K2
    assert result["serial_port"] == 62017 and "env:VMC_PROXY_TOKEN" in result["command"]
    assert not audit_log.exists()


def test_unwritable_audit_log_mints_no_serial_token(serial, tmp_path):
    (tmp_path / "file").write_text("x")
    result, dummy = serial(audit_log=str(tmp_path / "file" / "tickets.log"))
    assert result["msg"].startswith("audit_log %s cannot be written" % (tmp_path / "file" / "tickets.log"))
    assert "serial_handover" not in result


# Both halves together: the action plugin around the module's main() (fake QMP).

def run_action(run_module, args, check_mode=False):
    """The console_ticket action plugin with its module run in-process; (result, module args, the module's result)."""
    from unittest import mock

    from ansible_collections.vmconsole.secure.plugins.action import console_ticket as action

    task = mock.MagicMock()
    task.args, task.async_val, task.check_mode, task.delegate_to = dict(args), 0, check_mode, None
    connection = mock.MagicMock()
    connection._shell.tmpdir = None
    plugin = action.ActionModule(task, connection, mock.MagicMock(), loader=None, templar=None, shared_loader_obj=None)
    seen = {}

    def execute_module(module_name, module_args, task_vars):
        seen.update(args=dict(module_args), result=run_module(console_ticket.main, module_args, check_mode=check_mode))
        return dict(seen["result"])

    with mock.patch.object(plugin, "_execute_module", side_effect=execute_module), \
            mock.patch.object(plugin, "_remove_tmp_path"):
        result = plugin.run(task_vars={"inventory_hostname": "hv1"})
    return result, seen.get("args"), seen.get("result")


@pytest.fixture
def serial_action(fake_qmp, run_module, keys_file, audit_log):
    """``serial_action(check_mode=False, **args)`` -> (action result, module args, module result, server)."""
    def run(check_mode=False, **args):
        server = fake_qmp(qemu(SERIAL_TABLE), name="web1.qmp")
        params = dict(vm="web1", socket_dir=os.path.dirname(server.path), protocol="serial", proxy_user="alice",
                      proxy_token_key_file=keys_file, audit_log=str(audit_log))
        params.update(args)
        return run_action(run_module, params, check_mode) + (server,)
    return run


def test_serial_dest_gets_the_token_0600_and_the_command_reads_it(serial_action, keys_file, tmp_path):
    dest = tmp_path / "web1.token"
    result, sent, module_result, dummy = serial_action(dest=str(dest))
    assert not result.get("failed"), result
    assert "password" not in sent, "no ticket is generated for a serial console"
    token = module_result["serial_handover"]["proxy_token"]
    assert dest.read_text() == token + "\n" and stat.S_IMODE(os.stat(dest).st_mode) == 0o600
    assert "-proxy_pass file:%s " % dest in result["command"] and result["dest"] == str(dest)
    assert verify_proxy_token(load_proxy_keys(keys_file), result["proxy_username"], token).ok
    assert token not in repr(result) and "_ansible_no_log" not in result and "serial_handover" not in result


def test_serial_token_is_returned_only_with_return_secret(serial_action):
    result, sent, module_result, dummy = serial_action(return_secret=True)
    token = module_result["serial_handover"]["proxy_token"]
    assert result["proxy_token"] == token and result["_ansible_no_log"] is True
    assert "env:VMC_PROXY_TOKEN" in result["command"] and token not in result["command"]
    assert "ticket" not in result and "serial_handover" not in result


def test_serial_token_that_would_reach_nobody_is_not_minted(serial_action, audit_log):
    result, sent, module_result, server = serial_action()
    assert result["msg"] == "the proxy token would reach nobody: set dest (a file for the token) or return_secret=true"
    assert sent is None and server.connections == 0 and not audit_log.exists()


def test_serial_check_mode_writes_nothing(serial_action, tmp_path, audit_log):
    dest = tmp_path / "web1.token"
    result, sent, module_result, dummy = serial_action(check_mode=True, dest=str(dest), return_secret=True)
    assert not result.get("failed") and "proxy_token" not in result and "file:%s" % dest in result["command"]
    assert not dest.exists() and not audit_log.exists()
