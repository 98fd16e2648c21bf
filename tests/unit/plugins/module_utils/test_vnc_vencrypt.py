# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""VeNCrypt, QEMU's SASL framing and the SCRAM client, against test vectors and a fake server."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import os
import ssl
import struct

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from ansible_collections.vmconsole.secure.plugins.module_utils._vnc import (
    ScramClient,
    ScramError,
    saslprep,
    vnc_auth_probe,
)
from ansible_collections.vmconsole.secure.tests.unit import fakespice
from ansible_collections.vmconsole.secure.tests.unit.plugins.module_utils.test_vnc import serve, wait_for_session

USER, PASSWORD = "alice", "pencil,=x"
SUBJECT = "O=vmconsole test,CN=node1"
CHALLENGE = bytes(range(16))


# --- SCRAM ---------------------------------------------------------------------------------------

def test_scram_sha256_rfc7677_vector():
    client = ScramClient("user", "pencil", nonce="rOprNGfwEbeRWgbNEkqO")
    assert client.client_first() == "n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
    final = client.client_final("r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                                "s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
    assert final == ("c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                     "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
    client.verify_server_final("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
    with pytest.raises(ScramError, match="server signature is wrong"):
        client.verify_server_final("v=" + base64.b64encode(bytes(32)).decode())


def test_scram_sha1_rfc5802_vector():
    client = ScramClient("user", "pencil", hash_name="sha1", nonce="fyko+d2lbbFgONRv9qkxdawL")
    final = client.client_final("r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096")
    assert final == "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts="
    client.verify_server_final("v=rmF9pqV8S7suAoZWja4dJRkFsKQ=")


@pytest.mark.parametrize("server_first, message", [
    ("r=someone-else,s=QSXCR+Q6sek8bf92,i=4096", "does not extend the client nonce"),
    ("r=abc,s=QSXCR+Q6sek8bf92,i=4096", "does not extend the client nonce"),    # no server part
    ("r=abcdef,s=QSXCR+Q6sek8bf92", "lacks i="),
    ("r=abcdef,s=***,i=4096", "bad salt or iteration count"),
    ("r=abcdef,s=QSXCR+Q6sek8bf92,i=99999999", "out of range"),
    ("m=ext,r=abcdef,s=QSXCR+Q6sek8bf92,i=1", "extension"),
    ("e=unknown-user", "unknown-user"),
    ("garbage", "malformed"),
])
def test_scram_refuses_bad_server_first(server_first, message):
    with pytest.raises(ScramError, match=message):
        ScramClient("user", "pencil", nonce="abc").client_final(server_first)


def test_scram_escapes_the_user_name_and_preps_strings():
    assert ScramClient("a=b,c", "x", nonce="n").client_first() == "n,,n=a=3Db=2Cc,r=n"
    assert saslprep("I\u00adX") == "IX" and saslprep("\u2168") == "IX" and saslprep("user\u00a0x") == "user x"
    with pytest.raises(ValueError, match="U\\+0007"):
        saslprep("\u0007")
    with pytest.raises(ValueError, match="right-to-left"):
        saslprep("\u0627\u0031")


# --- a fake QEMU ---------------------------------------------------------------------------------

def scram_server(password, client_first, salt=b"saltsalt", iterations=4096, server_nonce="SRV"):
    """An independent SCRAM-SHA-256 server step: (server_first, check(client_final) -> server_final or None)."""
    bare = client_first.split(",", 2)[2]
    nonce = dict(part.split("=", 1) for part in bare.split(","))["r"] + server_nonce
    server_first = "r=%s,s=%s,i=%d" % (nonce, base64.b64encode(salt).decode(), iterations)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()

    def check(client_final):
        without_proof, proof = client_final.rsplit(",p=", 1)
        auth = ",".join((bare, server_first, without_proof)).encode()
        signature = hmac.new(hashlib.sha256(client_key).digest(), auth, "sha256").digest()
        if bytes(a ^ b for a, b in zip(base64.b64decode(proof), signature)) != client_key:
            return None
        return "v=" + base64.b64encode(hmac.new(hmac.new(salted, b"Server Key", "sha256").digest(), auth,
                                                "sha256").digest()).decode()
    return server_first, check


class FakeVeNCrypt(fakespice._ThreadedServer):  # pylint: disable=protected-access
    """QEMU's VeNCrypt and SASL side (ui/vnc-auth-vencrypt.c, ui/vnc-auth-sasl.c), byte for byte.

    ``subtypes``: offered sub-types (QEMU offers one); ``users``: SASL passwords; ``vnc_password``
    for X509VNC; ``tls``: server SSLContext; ``tamper``: corrupt the server signature.
    Every session records what the client sent in ``sessions``.
    """

    def __init__(self, tls, subtypes=(263,), users=None, vnc_password=None, mechlist=b"SCRAM-SHA-256", tamper=False):
        super().__init__()
        self.tls, self.subtypes, self.users, self.vnc_password = tls, list(subtypes), users or {}, vnc_password
        self.mechlist, self.tamper = mechlist, tamper
        self.sessions = []

    def handle(self, conn):
        session = {}
        self.sessions.append(session)
        try:
            self._handle(conn, session)
        except (EOFError, ssl.SSLError, ConnectionError):
            session["hung_up"] = True                      # the client stopped early, as it may

    def _handle(self, conn, session):
        conn.sendall(b"RFB 003.008\n")
        fakespice.recv_exact(conn, 12)
        conn.sendall(b"\x01\x13")
        session["type"] = fakespice.recv_exact(conn, 1)[0]
        conn.sendall(b"\x00\x02")
        session["vencrypt_version"] = fakespice.recv_exact(conn, 2)
        conn.sendall(b"\x00" + bytes([len(self.subtypes)]) + b"".join(struct.pack(">I", t) for t in self.subtypes))
        chosen = fakespice.recv_exact(conn, 4)
        session["subtype"] = struct.unpack(">I", chosen)[0]
        if session["subtype"] not in self.subtypes:
            conn.sendall(b"\x00")
            return
        conn.sendall(b"\x01")
        try:
            conn = self.tls.wrap_socket(conn, server_side=True)
        except (ssl.SSLError, OSError):
            session["tls_failed"] = True                   # the client did not trust us
            return
        if session["subtype"] == 261:
            conn.sendall(CHALLENGE)
            ok = fakespice.recv_exact(conn, 16) == fakespice.FakeVNCServer.expected_response(self.vnc_password, CHALLENGE)
            conn.sendall(struct.pack(">I", 0 if ok else 1) + (b"" if ok else struct.pack(">I", 22) + b"Authentication failed\0"))
        else:
            ok = self._sasl(conn, session)
        if ok:
            session["after_auth"] = conn.recv(1)          # b"": the client hung up before ClientInit

    def _sasl(self, conn, session):
        conn.sendall(struct.pack(">I", len(self.mechlist)) + self.mechlist)
        size = struct.unpack(">I", fakespice.recv_exact(conn, 4))[0]
        session["mechname"] = fakespice.recv_exact(conn, size)
        size = struct.unpack(">I", fakespice.recv_exact(conn, 4))[0]
        start = session["start"] = fakespice.recv_exact(conn, size)
        assert start.endswith(b"\0") and b"\0" not in start[:-1]
        user = start.decode()[:-1].split(",")[2][2:]
        if user not in self.users:
            return False                                   # sasl_server_start fails: QEMU just closes
        server_first, check = scram_server(self.users[user], start.decode()[:-1])
        conn.sendall(struct.pack(">I", len(server_first) + 1) + server_first.encode() + b"\0\x00")
        size = struct.unpack(">I", fakespice.recv_exact(conn, 4))[0]
        final = session["step"] = fakespice.recv_exact(conn, size)
        server_final = check(final.decode()[:-1])
        if server_final is None:
            return False
        if self.tamper:
            server_final = "v=" + base64.b64encode(bytes(32)).decode()
        conn.sendall(struct.pack(">I", len(server_final) + 1) + server_final.encode() + b"\0\x01" + struct.pack(">I", 0))
        return True


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    ca = fakespice.make_ca()
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "vmconsole test"),
                      x509.NameAttribute(NameOID.COMMON_NAME, "node1")])
    key, cert = fakespice.issue_cert(ca, name)
    return dict(ca_pem=fakespice.pem(ca[1]), context=fakespice.server_context(str(tmp_path_factory.mktemp("tls")), key, cert))


@pytest.fixture
def fake(pki):
    yield from serve(functools.partial(FakeVeNCrypt, pki["context"]))


def probe(server, password, pki, **kwargs):
    kwargs.setdefault("ca_pem", pki["ca_pem"])
    result = vnc_auth_probe("127.0.0.1", server.port, password, timeout=5, **kwargs)
    assert password not in result["detail"]
    return result


def test_sasl_accepted_with_qemus_framing(fake, pki):
    server = fake(users={USER: PASSWORD})
    result = probe(server, PASSWORD, pki, sasl_user=USER, host_subject=SUBJECT)
    assert result["status"] == "accepted", result
    assert (result["vencrypt_subtype"], result["sasl_mechanism"], result["subject"]) == (263, "SCRAM-SHA-256", SUBJECT)
    recorded = wait_for_session(server, "after_auth")
    assert recorded["after_auth"] == b"" and recorded["vencrypt_version"] == b"\x00\x02"
    assert recorded["mechname"] == b"SCRAM-SHA-256"                          # no NUL: QEMU compares len bytes
    assert recorded["start"].startswith(b"n,,n=alice,r=") and recorded["step"].startswith(b"c=biws,")


def test_sasl_wrong_password_and_unknown_user_are_refused(fake, pki):
    server = fake(users={USER: PASSWORD})
    result = probe(server, PASSWORD + "!", pki, sasl_user=USER)
    assert result["status"] == "refused" and "after the SASL proof" in result["detail"]
    result = probe(server, PASSWORD, pki, sasl_user="bob")
    assert result["status"] == "refused" and "after the SASL start" in result["detail"]


def test_sasl_server_that_does_not_know_the_key_is_not_trusted(fake, pki):
    server = fake(users={USER: PASSWORD}, tamper=True)
    result = probe(server, PASSWORD, pki, sasl_user=USER)
    assert result["status"] == "unreachable" and "server signature is wrong" in result["detail"]


def test_sasl_without_scram_is_unreachable(fake, pki):
    server = fake(users={USER: PASSWORD}, mechlist=b"DIGEST-MD5,GSSAPI")
    result = probe(server, PASSWORD, pki, sasl_user=USER)
    assert result["status"] == "unreachable" and "DIGEST-MD5, GSSAPI" in result["detail"]


def test_x509vnc(fake, pki):
    server = fake(subtypes=(261,), vnc_password="Vk3nP8qz")
    assert probe(server, "Vk3nP8qz", pki)["status"] == "accepted"
    assert wait_for_session(server, "after_auth")["after_auth"] == b""
    result = probe(server, "wrong", pki)
    assert result["status"] == "refused" and result["detail"].endswith("Authentication failed")


@pytest.mark.parametrize("subtypes, kwargs, message", [
    ((263,), {}, "give a SASL user name"),
    ((261,), dict(sasl_user=USER), "does not use SASL"),
    ((257, 258), {}, "anonymous TLS"),
])
def test_subtype_choice(fake, pki, subtypes, kwargs, message):
    server = fake(subtypes=subtypes)
    result = probe(server, PASSWORD, pki, **kwargs)
    assert result["status"] == "unreachable" and message in result["detail"], result
    assert wait_for_session(server, "vencrypt_version")


def test_wrong_ca_and_wrong_subject_are_tls_mismatches(fake, pki):
    server = fake(users={USER: PASSWORD})
    other = fakespice.pem(fakespice.make_ca("other")[1])
    result = probe(server, PASSWORD, pki, sasl_user=USER, ca_pem=other)
    assert result["status"] == "tls_mismatch" and "not trusted" in result["detail"]
    result = probe(server, PASSWORD, pki, sasl_user=USER, host_subject="O=vmconsole test,CN=node2")
    assert result["status"] == "tls_mismatch" and result["subject"] == SUBJECT


def test_sasl_user_on_a_plain_server_is_unreachable():
    with fakespice.FakeVNCServer(password="x") as server:
        result = vnc_auth_probe("127.0.0.1", server.port, "x", sasl_user=USER)
    assert result["status"] == "unreachable" and "needs VeNCrypt X509SASL" in result["detail"]


def test_unusable_tls_options_raise(fake, pki, tmp_path):
    server = fake(subtypes=(261,), vnc_password="x")
    with pytest.raises(ValueError, match="give the CA"):
        vnc_auth_probe("127.0.0.1", server.port, "x")
    with pytest.raises(ValueError, match="cannot be read"):
        vnc_auth_probe("127.0.0.1", server.port, "x", ca_file=os.path.join(str(tmp_path), "missing.pem"))
    with pytest.raises(ValueError, match="go together"):
        vnc_auth_probe("127.0.0.1", server.port, "x", ca_pem=pki["ca_pem"], client_cert="/nonexistent")


# --- the .vv for a VeNCrypt console --------------------------------------------------------------

def test_vv_for_vencrypt_sasl_carries_username_and_password_only():
    """remote-viewer's VNC session (virt-viewer-session-vnc.c) answers gtk-vnc's USERNAME and PASSWORD
    credential requests from the .vv ``username`` and ``password``; the CA and client certificate
    come from gtk-vnc's fixed paths (~/.pki/CA/cacert.pem, ~/.pki/libvirt/...), never from the file."""
    from ansible_collections.vmconsole.secure.plugins.module_utils._vv import render_vv

    text = render_vv(protocol="vnc", host="node1.example.com", port=5902, password=PASSWORD, extra={"username": USER})
    lines = text.splitlines()
    assert lines[:4] == ["[virt-viewer]", "type=vnc", "host=node1.example.com", "port=5902"]
    assert "password=%s" % PASSWORD in lines and "username=alice" in lines
    spice_only = ("tls-port", "ca", "host-subject", "proxy", "secure-channels")
    assert not [line for line in lines if line.split("=", 1)[0] in spice_only]
    with pytest.raises(ValueError, match="SPICE-only"):
        render_vv(protocol="vnc", host="node1", port=5902, password=PASSWORD, ca_pem="x")
