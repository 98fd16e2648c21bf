# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import socket
import struct
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from ansible_collections.vmconsole.secure.plugins.module_utils import _spice
from ansible_collections.vmconsole.secure.plugins.module_utils._spice import (
    INPUTS, MAIN, SpiceLink, SpiceUnreachable, encrypt_ticket, proxy_from_url, spice_link_probe,
)
from ansible_collections.vmconsole.secure.tests.unit import fakespice

TICKET = "Tk7pW2xq9ZbR4mN8vL3cJ6hF1sD5gA0eY2uI7oPq"
PROXY_PASSWORD = "pr0xyS3cretT0ken"
SERVER_NAME = x509.Name([
    x509.NameAttribute(NameOID.COUNTRY_NAME, "XX"),
    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "vmconsole test"),
    x509.NameAttribute(NameOID.COMMON_NAME, "node1"),
])
SERVER_SUBJECT = "C=XX,O=vmconsole test,CN=node1"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    ca = fakespice.make_ca("test CA")
    server_key, server_cert = fakespice.issue_cert(ca, SERVER_NAME)
    other_ca = fakespice.make_ca("other CA")
    context = fakespice.server_context(str(tmp_path_factory.mktemp("tls")), server_key, server_cert)
    return dict(ca_pem=fakespice.pem(ca[1]), other_ca_pem=fakespice.pem(other_ca[1]), context=context)


@pytest.fixture
def servers():
    """Start fake servers through this fixture; all are closed after the test."""
    started = []

    def start(server):
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.close()
        assert not server.errors, server.errors


def probe(*args, **kwargs):
    """spice_link_probe, plus the promise that no secret ever shows up in its answer."""
    result = spice_link_probe(*args, **kwargs)
    assert set(result) == {"status", "link_result", "http_status", "detail", "subject"}
    assert result["status"] in _spice.PROBE_STATUSES
    assert TICKET not in repr(result) and PROXY_PASSWORD not in repr(result)
    assert result["detail"]
    return result


def closed_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- the link message and the ticket ----------------------------------------------------------

def test_link_message_on_the_wire(servers):
    server = servers(fakespice.FakeSpiceServer(ticket=TICKET))
    result = probe("127.0.0.1", server.port, TICKET, tls=False)
    assert result == dict(status="accepted", link_result=8, http_status=None, subject=None, detail=result["detail"])
    assert "BAD_CONNECTION_ID" in result["detail"]
    (link,) = server.links
    assert (link["magic"], link["major"], link["minor"]) == (b"REDQ", 2, 2)
    assert link["size"] == 18 + 4                       # SpiceLinkMess + one common caps word
    assert link["channel_type"] == INPUTS == 3 and link["channel_id"] == 0
    assert link["caps_offset"] == 18
    assert link["common_caps"] == [0b11]                # PROTOCOL_AUTH_SELECTION | AUTH_SPICE
    assert link["channel_caps"] == []
    assert link["auth_mechanism"] == 1                  # SPICE_COMMON_CAP_AUTH_SPICE
    assert link["ticket_bytes"] == TICKET.encode() + b"\0"


def test_probe_connection_ids_are_random_and_never_zero(servers, monkeypatch):
    server = servers(fakespice.FakeSpiceServer(ticket=TICKET))
    for dummy in range(8):
        assert probe("127.0.0.1", server.port, TICKET, tls=False)["status"] == "accepted"
    ids = [link["connection_id"] for link in server.links]
    assert len(set(ids)) == len(ids) and 0 not in ids
    assert {link["channel_type"] for link in server.links} == {INPUTS}
    # Connection id 0 would ask for a new session: never sent, even if the dice say 0.
    monkeypatch.setattr(_spice.secrets, "randbits", lambda bits: 0)
    assert probe("127.0.0.1", server.port, TICKET, tls=False)["status"] == "accepted"
    assert server.links[-1]["connection_id"] == 1


@pytest.mark.parametrize("server_ticket, client_ticket", [(TICKET, TICKET[:-1] + "x"), (None, TICKET), (TICKET, "")])
def test_refused_ticket(servers, server_ticket, client_ticket):
    server = servers(fakespice.FakeSpiceServer(ticket=server_ticket))
    result = probe("127.0.0.1", server.port, client_ticket, tls=False)
    assert (result["status"], result["link_result"]) == ("refused", 7)
    assert "PERMISSION_DENIED" in result["detail"]
    assert server.links[0]["ticket_bytes"] == client_ticket.encode() + b"\0"


def test_live_session_id_is_still_an_accepted_ticket(servers, monkeypatch):
    monkeypatch.setattr(_spice.secrets, "randbits", lambda bits: 0xD8AE1234)
    server = servers(fakespice.FakeSpiceServer(ticket=TICKET, sessions=[0xD8AE1234]))
    result = probe("127.0.0.1", server.port, TICKET, tls=False)
    assert (result["status"], result["link_result"]) == ("accepted", 0)
    assert "matched a live session" in result["detail"]


def test_server_without_auth_selection_gets_no_mechanism(servers):
    """Like spice-gtk: the mechanism is sent only when the server can select one."""
    server = servers(fakespice.FakeSpiceServer(ticket=TICKET, auth_selection=False))
    assert probe("127.0.0.1", server.port, TICKET, tls=False)["status"] == "accepted"
    assert "auth_mechanism" not in server.links[0]


def test_need_secured_stops_before_the_ticket(servers):
    server = servers(fakespice.FakeSpiceServer(ticket=TICKET, need_secured=True))
    result = probe("127.0.0.1", server.port, TICKET, tls=False)
    assert (result["status"], result["link_result"]) == ("unreachable", 5)
    assert "NEED_SECURED" in result["detail"] and "tls=true" in result["detail"]
    assert "ticket_bytes" not in server.links[0]


def test_encrypt_ticket_is_rsa_oaep_sha1():
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    der = key.public_key().public_bytes(fakespice.serialization.Encoding.DER,
                                        fakespice.serialization.PublicFormat.SubjectPublicKeyInfo)
    assert len(der) == _spice.SPICE_TICKET_PUBKEY_BYTES == 162
    encrypted = encrypt_ticket(der, "abc")
    assert len(encrypted) == 128
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)
    assert key.decrypt(encrypted, oaep) == b"abc\0"


@pytest.mark.parametrize("ticket", ["x" * 60, "a\0b"])
def test_unusable_ticket_is_a_value_error_before_connecting(servers, ticket):
    server = servers(fakespice.FakeSpiceServer(ticket=TICKET))
    with pytest.raises(ValueError, match="at most 59 bytes"):
        spice_link_probe("127.0.0.1", server.port, ticket, tls=False)
    assert server.links == []


def test_longest_ticket_qemu_takes_is_carried(servers):
    server = servers(fakespice.FakeSpiceServer(ticket="y" * 59))
    assert probe("127.0.0.1", server.port, "y" * 59, tls=False)["status"] == "accepted"


# --- TLS --------------------------------------------------------------------------------------

def test_tls_accepted_with_ca_and_subject(servers, pki):
    server = servers(fakespice.FakeSpiceServer(ticket=TICKET, tls=pki["context"]))
    result = probe("127.0.0.1", server.port, TICKET, ca_pem=pki["ca_pem"], host_subject=SERVER_SUBJECT)
    assert (result["status"], result["link_result"], result["subject"]) == ("accepted", 8, SERVER_SUBJECT)


def test_subject_is_compared_like_x509_name_cmp(servers, pki):
    server = servers(fakespice.FakeSpiceServer(ticket=TICKET, tls=pki["context"]))
    result = probe("127.0.0.1", server.port, TICKET, ca_pem=pki["ca_pem"], host_subject=" C=xx,O=VMconsole   Test,CN=NODE1")
    assert result["status"] == "accepted"


@pytest.mark.parametrize("host_subject", ["CN=node1,O=vmconsole test,C=XX", "C=XX,O=vmconsole test,CN=node2", "CN=node1"])
def test_tls_subject_mismatch(servers, pki, host_subject):
    server = servers(fakespice.FakeSpiceServer(ticket=TICKET, tls=pki["context"]))
    result = probe("127.0.0.1", server.port, TICKET, ca_pem=pki["ca_pem"], host_subject=host_subject)
    assert (result["status"], result["link_result"]) == ("tls_mismatch", None)
    assert result["subject"] == SERVER_SUBJECT
    assert SERVER_SUBJECT in result["detail"] and host_subject in result["detail"]
    assert server.links == []                           # no ticket goes to a server we do not trust


def test_tls_wrong_ca(servers, pki):
    server = servers(fakespice.FakeSpiceServer(ticket=TICKET, tls=pki["context"]))
    result = probe("127.0.0.1", server.port, TICKET, ca_pem=pki["other_ca_pem"])
    assert result["status"] == "tls_mismatch"
    assert "not trusted by the given CA" in result["detail"]
    assert server.links == []


def test_tls_to_a_plain_port(servers, pki):
    server = servers(fakespice.FakeSpiceServer(ticket=TICKET))
    result = probe("127.0.0.1", server.port, TICKET, ca_pem=pki["ca_pem"])
    assert result["status"] == "unreachable"
    assert "TLS handshake" in result["detail"]


def test_plain_link_to_a_tls_port_hints_at_tls(servers, pki):
    server = servers(fakespice.FakeSpiceServer(ticket=TICKET, tls=pki["context"]))
    result = probe("127.0.0.1", server.port, TICKET, tls=False)
    assert result["status"] == "unreachable"
    assert "tls=true" in result["detail"]


@pytest.mark.parametrize("kwargs, message", [
    (dict(ca_pem="not a certificate"), "CA is not a usable PEM"),
    (dict(host_subject="CN=a,nokey"), "has no '='"),
    (dict(host_subject="XYZ=a"), "unknown attribute name"),
])
def test_bad_tls_arguments_fail_before_connecting(servers, pki, kwargs, message):
    server = servers(fakespice.FakeSpiceServer(ticket=TICKET, tls=pki["context"]))
    kwargs.setdefault("ca_pem", pki["ca_pem"])
    with pytest.raises(ValueError, match=message):
        spice_link_probe("127.0.0.1", server.port, TICKET, **kwargs)
    assert server.links == []


# --- transport failures -----------------------------------------------------------------------

def test_connection_refused():
    result = probe("127.0.0.1", closed_port(), TICKET, tls=False)
    assert result["status"] == "unreachable" and "connection refused" in result["detail"]


def test_name_not_resolved(monkeypatch):
    def fail(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(_spice.socket, "create_connection", fail)
    result = probe("console.invalid", 61000, TICKET, tls=False)
    assert result["status"] == "unreachable"
    assert result["detail"] == "cannot resolve console.invalid:61000: Name or service not known"


def test_silent_server_times_out_within_the_budget(servers):
    server = servers(fakespice.FakeSpiceServer(behaviour="silent"))
    start = time.monotonic()
    result = probe("127.0.0.1", server.port, TICKET, tls=False, timeout=0.4)
    elapsed = time.monotonic() - start
    assert result["status"] == "unreachable" and "timed out" in result["detail"]
    assert 0.3 < elapsed < 2.0


@pytest.mark.parametrize("behaviour, message", [("http", "not a SPICE server"), ("close", "connection closed")])
def test_not_a_spice_server(servers, behaviour, message):
    server = servers(fakespice.FakeSpiceServer(behaviour=behaviour))
    result = probe("127.0.0.1", server.port, TICKET, tls=False)
    assert result["status"] == "unreachable" and message in result["detail"]


# --- HTTP CONNECT proxy -------------------------------------------------------------------------

def test_proxy_tunnel_with_credentials(servers, pki):
    server = servers(fakespice.FakeSpiceServer(ticket=TICKET, tls=pki["context"]))
    proxy = servers(fakespice.FakeConnectProxy(credentials=("alice", PROXY_PASSWORD)))
    result = probe("127.0.0.1", server.port, TICKET, ca_pem=pki["ca_pem"], host_subject=SERVER_SUBJECT,
                   proxy=dict(host="127.0.0.1", port=proxy.port, username="alice", password=PROXY_PASSWORD))
    assert (result["status"], result["http_status"], result["subject"]) == ("accepted", 200, SERVER_SUBJECT)
    (request_line, headers), = proxy.requests
    assert request_line == "CONNECT 127.0.0.1:%d HTTP/1.1" % server.port
    assert headers["Host"] == "127.0.0.1:%d" % server.port
    assert headers["Proxy-Authorization"] == "Basic " + fakespice.base64.b64encode(b"alice:" + PROXY_PASSWORD.encode()).decode()


@pytest.mark.parametrize("credentials, status, hint", [
    (None, 407, "none were given"),
    (("alice", "wrong-" + PROXY_PASSWORD), 407, "rejected"),
])
def test_proxy_authentication_required(servers, credentials, status, hint):
    proxy = servers(fakespice.FakeConnectProxy(credentials=("alice", PROXY_PASSWORD)))
    config = dict(host="127.0.0.1", port=proxy.port)
    if credentials:
        config.update(username=credentials[0], password=credentials[1])
    result = probe("127.0.0.1", 61000, TICKET, tls=False, proxy=config)
    assert (result["status"], result["http_status"], result["link_result"]) == ("proxy_refused", status, None)
    assert "HTTP 407 Proxy Authentication Required" in result["detail"] and hint in result["detail"]
    assert credentials is None or credentials[1] not in result["detail"]


def test_proxy_forbidden_target_in_brackets_for_ipv6(servers):
    proxy = servers(fakespice.FakeConnectProxy(status=403))
    result = probe("::1", 61000, TICKET, tls=False, proxy=dict(host="127.0.0.1", port=proxy.port))
    assert (result["status"], result["http_status"]) == ("proxy_refused", 403)
    assert proxy.requests[0][0] == "CONNECT [::1]:61000 HTTP/1.1"
    assert "refused CONNECT [::1]:61000: HTTP 403 Forbidden" in result["detail"]


def test_proxy_that_does_not_speak_http(servers):
    proxy = servers(fakespice.FakeConnectProxy(answer=b"SSH-2.0-OpenSSH\r\n\r\n"))
    result = probe("127.0.0.1", 61000, TICKET, tls=False, proxy=dict(host="127.0.0.1", port=proxy.port))
    assert (result["status"], result["http_status"]) == ("unreachable", None)
    assert "did not answer CONNECT with HTTP" in result["detail"]


def test_proxy_down():
    port = closed_port()
    result = probe("127.0.0.1", 61000, TICKET, tls=False, proxy=dict(host="127.0.0.1", port=port))
    assert result["status"] == "unreachable"
    assert "connection refused by proxy 127.0.0.1:%d" % port in result["detail"]


@pytest.mark.parametrize("url, expected", [
    ("http://proxy.example:3130", dict(host="proxy.example", port=3130, username=None, password=None)),
    ("http://u_1:t-2@node1", dict(host="node1", port=3128, username="u_1", password="t-2")),
    ("http://u:p@[2001:db8::1]:8080/", dict(host="2001:db8::1", port=8080, username="u", password="p")),
    ("http://u%41:p%42@h:1", dict(host="h", port=1, username="u%41", password="p%42")),   # no decoding, like spice-gtk
])
def test_proxy_from_url(url, expected):
    assert proxy_from_url(url) == expected


@pytest.mark.parametrize("url, message", [
    ("https://h:3128", "http://"),
    ("h:3128", "http://"),
    ("http://u:" + PROXY_PASSWORD + "@h:99999", "not valid"),
    ("http://u:" + PROXY_PASSWORD + "@[::1:3128", "not valid"),
    ("http://u:" + PROXY_PASSWORD + "@h:0", "1..65535"),
    ("http://u:" + PROXY_PASSWORD + "@h/path", "no path"),
    ("http://u:" + PROXY_PASSWORD + ":x@h", "cuts them there"),
    ("http://u@x:" + PROXY_PASSWORD + "@h", "cuts them there"),
    ("http://u:" + PROXY_PASSWORD + "@h\n", "white space"),
    ("http://", "no host"),
])
def test_proxy_from_url_errors_never_quote_the_password(url, message):
    with pytest.raises(ValueError, match=message) as info:
        proxy_from_url(url)
    assert PROXY_PASSWORD not in str(info.value)


# --- a MAIN channel held open -----------------------------------------------------------------------

def test_main_link_is_kept_alive_and_notices_the_hang_up(servers):
    server = servers(fakespice.FakeSpiceServer(ticket=TICKET))
    link = SpiceLink("127.0.0.1", server.port, tls=False)
    try:
        assert link.link(MAIN, TICKET) == 0
        assert link.server_common_caps == [0b1011]
        assert link.is_open(0.3)
        # The client answered SET_ACK(generation 7) with ACK_SYNC and PING(42) with PONG.
        assert (fakespice.MSGC_ACK_SYNC, struct.pack("<I", 7)) in server.client_messages
        assert (fakespice.MSGC_PONG, struct.pack("<IQ", 42, 123456789)) in server.client_messages
        server.drop_main()
        assert not link.is_open(1.0)
    finally:
        link.close()
    assert not link.is_open()


def test_spice_link_errors_are_typed(servers):
    server = servers(fakespice.FakeSpiceServer(behaviour="http"))
    with SpiceLink("127.0.0.1", server.port, tls=False) as link:
        with pytest.raises(SpiceUnreachable, match="not a SPICE server") as info:
            link.link(INPUTS, TICKET)
    assert info.value.status == "unreachable"
