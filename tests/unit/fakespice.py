# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Fake peers for unit tests: a SPICE link server, an RFB server, an HTTP CONNECT proxy,
and a tiny PKI. Each server runs in a daemon thread on 127.0.0.1 and records what the
client sent, so tests assert on the wire format, not only on the client's verdict.

The SPICE fake follows spice-server's order of checks: header, TLS requirement, link ack
with a fresh 1024-bit RSA key, [auth mechanism], ticket, then connection id.
"""

from __future__ import annotations

import base64
import datetime
import os
import select
import socket
import ssl
import struct
import threading

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, modes
from cryptography.x509.oid import NameOID

try:
    from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
except ImportError:
    from cryptography.hazmat.primitives.ciphers.algorithms import TripleDES

HEADER = struct.Struct("<4sIII")
LINK_MESS = struct.Struct("<IBBIII")
LINK_REPLY = struct.Struct("<I162sIII")
DATA_HEADER = struct.Struct("<QHII")
U32 = struct.Struct("<I")

CAP_AUTH_SELECTION, CAP_AUTH_SPICE, CAP_MINI_HEADER = 0, 1, 3
ERR_OK, ERR_INVALID_MAGIC, ERR_NEED_SECURED, ERR_PERMISSION_DENIED, ERR_BAD_CONNECTION_ID = 0, 2, 5, 7, 8
MAIN = 1
MSG_SET_ACK, MSG_PING = 3, 4
MSGC_ACK_SYNC, MSGC_PONG = 1, 3


def recv_exact(sock, size):
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise EOFError("peer closed after %d of %d bytes" % (len(data), size))
        data += chunk
    return data


class _ThreadedServer:
    """Accept loop in a daemon thread; ``handle(conn)`` runs per connection in its own thread."""

    def __init__(self):
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.errors = []
        self._conns = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def start(self):
        self._thread.start()
        return self

    def _serve(self):
        while not self._stop.is_set():
            readable, dummy, dummy2 = select.select([self.listener], [], [], 0.05)
            if not readable:
                continue
            try:
                conn, dummy = self.listener.accept()
            except OSError:
                return
            self._conns.append(conn)
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn):
        try:
            self.handle(conn)
        except Exception as exc:  # pylint: disable=broad-except  # recorded for the test to show
            self.errors.append(exc)
        finally:
            conn.close()

    def handle(self, conn):
        raise NotImplementedError

    def close(self):
        self._stop.set()
        self._thread.join(2)
        self.listener.close()
        for conn in self._conns:
            try:
                conn.close()
            except OSError:
                pass

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.close()


class FakeSpiceServer(_ThreadedServer):
    """A SPICE link server that checks the client's link message and decrypts its ticket.

    ``ticket``: the valid ticket (None = ticketing on, nothing set: every ticket refused).
    ``tls``: a server SSLContext, or None for a plain port. ``need_secured``: refuse plain
    links with NEED_SECURED, like ``tls-channel=default`` on QEMU's plain port.
    ``sessions``: connection ids of live sessions (a non-MAIN link with one gets OK).
    ``auth_selection``: whether the server advertises PROTOCOL_AUTH_SELECTION.
    ``behaviour``: "spice", or a misbehaviour: "http" (answers like a web server),
    "close" (hangs up at once), "silent" (never answers).
    Every attempt is appended to ``links`` as a dict of what the client sent.
    """

    def __init__(self, ticket=None, tls=None, need_secured=False, sessions=(), auth_selection=True, behaviour="spice"):
        super().__init__()
        self.ticket = ticket
        self.tls = tls
        self.need_secured = need_secured
        self.sessions = set(sessions)
        self.auth_selection = auth_selection
        self.behaviour = behaviour
        self.links = []
        self.hangups = []              # connections the client closed before linking, and why
        self.client_messages = []      # (type, payload) a linked MAIN client sent back
        self.rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
        self.main_conns = []

    def handle(self, conn):
        if self.behaviour == "close":
            return
        if self.behaviour == "silent":
            while conn.recv(4096):     # read, never answer, until the client gives up
                pass
            return
        if self.tls is not None:
            try:
                conn = self.tls.wrap_socket(conn, server_side=True)
            except (ssl.SSLError, OSError) as exc:
                self.hangups.append("TLS handshake: %s" % exc)     # e.g. the client does not trust us
                return
        if self.behaviour == "http":
            conn.recv(4096)
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            return
        try:
            first = conn.recv(1)
        except ConnectionError:
            # The client hung up right after the handshake. OpenSSL 3.5 (Python 3.13 on Debian 13)
            # sends the TLS 1.3 session tickets at this first read: they meet a closed socket
            # (broken pipe), or the client's close with them unread became a reset.
            first = b""
        if not first:
            self.hangups.append("before the link message")        # e.g. the subject did not match
            return
        magic, major, minor, size = HEADER.unpack(first + recv_exact(conn, HEADER.size - 1))
        if magic != b"REDQ":                                     # e.g. a TLS ClientHello on a plain port
            self.hangups.append("bad magic %r" % magic)
            conn.sendall(HEADER.pack(b"REDQ", 2, 2, LINK_REPLY.size) + LINK_REPLY.pack(ERR_INVALID_MAGIC, b"", 0, 0, 0))
            return
        record = dict(magic=magic, major=major, minor=minor, size=size)
        self.links.append(record)
        body = recv_exact(conn, size)
        connection_id, channel_type, channel_id, n_common, n_channel, caps_offset = LINK_MESS.unpack_from(body)
        caps = struct.unpack_from("<%dI" % (n_common + n_channel), body, caps_offset)
        record.update(connection_id=connection_id, channel_type=channel_type, channel_id=channel_id,
                      caps_offset=caps_offset, common_caps=list(caps[:n_common]), channel_caps=list(caps[n_common:]))

        if self.need_secured and self.tls is None:
            conn.sendall(HEADER.pack(b"REDQ", 2, 2, LINK_REPLY.size) + LINK_REPLY.pack(ERR_NEED_SECURED, b"", 0, 0, 0))
            return
        pub = self.rsa_key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        server_caps = (1 << CAP_AUTH_SPICE) | (1 << CAP_MINI_HEADER) | ((1 << CAP_AUTH_SELECTION) if self.auth_selection else 0)
        reply = LINK_REPLY.pack(ERR_OK, pub, 1, 0, LINK_REPLY.size) + U32.pack(server_caps)
        conn.sendall(HEADER.pack(b"REDQ", 2, 2, len(reply)) + reply)

        client_selects = bool(record["common_caps"] and record["common_caps"][0] & (1 << CAP_AUTH_SELECTION))
        if client_selects and self.auth_selection:
            record["auth_mechanism"] = U32.unpack(recv_exact(conn, 4))[0]
        encrypted = recv_exact(conn, 128)
        plain = self.rsa_key.decrypt(encrypted, padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None))
        record["ticket_bytes"] = plain
        ticket = plain.split(b"\0", 1)[0].decode("utf-8")
        if self.ticket is None or ticket != self.ticket:
            result = ERR_PERMISSION_DENIED
        elif channel_type == MAIN or connection_id in self.sessions:
            result = ERR_OK
        else:
            result = ERR_BAD_CONNECTION_ID
        record["result"] = result
        conn.sendall(U32.pack(result))
        if result == ERR_OK and channel_type == MAIN:
            self._serve_main(conn)

    def _serve_main(self, conn):
        """SET_ACK and PING like spice-server, then record the client's answers until it hangs up."""
        self.main_conns.append(conn)
        conn.sendall(DATA_HEADER.pack(1, MSG_SET_ACK, 8, 0) + struct.pack("<II", 7, 20))
        conn.sendall(DATA_HEADER.pack(2, MSG_PING, 12, 0) + struct.pack("<IQ", 42, 123456789))
        buffer = b""
        while True:
            try:
                chunk = conn.recv(4096)
            except OSError:
                return
            if not chunk:
                return
            buffer += chunk
            while len(buffer) >= DATA_HEADER.size:
                dummy, msg_type, size, dummy2 = DATA_HEADER.unpack_from(buffer)
                if len(buffer) < DATA_HEADER.size + size:
                    break
                self.client_messages.append((msg_type, buffer[DATA_HEADER.size:DATA_HEADER.size + size]))
                buffer = buffer[DATA_HEADER.size + size:]

    def drop_main(self):
        """Hang up every linked MAIN channel, as a new MAIN link or set_password connected=disconnect does."""
        for conn in self.main_conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class FakeConnectProxy(_ThreadedServer):
    """An HTTP CONNECT proxy: answers ``status`` (or 407 without the right credentials) and relays on 2xx.

    ``credentials``: (user, password) required, or None. ``status``: forced answer, e.g. 403.
    Requests are recorded in ``requests`` as (request_line, headers dict).
    """

    def __init__(self, credentials=None, status=None, answer=None):
        super().__init__()
        self.credentials = credentials
        self.status = status
        self.answer = answer
        self.requests = []

    def handle(self, conn):
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = conn.recv(1)
            if not chunk:
                return
            head += chunk
        lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
        self.requests.append((lines[0], headers))
        if self.answer is not None:
            conn.sendall(self.answer)
            return
        status = self.status
        if status is None and self.credentials is not None:
            wanted = "Basic " + base64.b64encode(("%s:%s" % self.credentials).encode()).decode()
            status = 200 if headers.get("Proxy-Authorization") == wanted else 407
        status = status or 200
        reasons = {200: "Connection established", 403: "Forbidden", 407: "Proxy Authentication Required", 503: "Service Unavailable"}
        conn.sendall(("HTTP/1.1 %d %s\r\nContent-Length: 0\r\n\r\n" % (status, reasons.get(status, "Other"))).encode())
        if status != 200:
            return
        target = lines[0].split(" ")[1]
        host, port = target.rsplit(":", 1)
        upstream = socket.create_connection((host.strip("[]"), int(port)), timeout=5)
        try:
            _relay(conn, upstream)
        finally:
            upstream.close()


def _relay(a, b):
    peers = {a: b, b: a}
    while True:
        readable, dummy, dummy2 = select.select(list(peers), [], [], 10)
        if not readable:
            return
        for sock in readable:
            try:
                data = sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            peers[sock].sendall(data)


class FakeVNCServer(_ThreadedServer):
    """An RFB server: ``version`` (e.g. b"003.008"), offered security ``types``, the valid ``password``.

    Records (client_version, chosen_type, response) in ``sessions``. ``challenge`` is fixed
    so tests can compute the expected DES answer independently.
    """

    CHALLENGE = bytes(range(16))

    def __init__(self, password=None, version=b"003.008", types=(2,), refuse_reason=None):
        super().__init__()
        self.password = password
        self.version = version
        self.types = list(types)
        self.refuse_reason = refuse_reason
        self.sessions = []

    @staticmethod
    def expected_response(password, challenge):
        """VNC DES answer computed here independently of the client code."""
        key = bytearray(password.encode()[:8].ljust(8, b"\0"))
        key = bytes(int(bin(b)[2:].zfill(8)[::-1], 2) for b in key)
        enc = Cipher(TripleDES(key + key + key), modes.ECB()).encryptor()
        return enc.update(challenge) + enc.finalize()

    def handle(self, conn):
        conn.sendall(b"RFB " + self.version + b"\n")
        client_version = recv_exact(conn, 12)
        session = dict(client_version=client_version)
        self.sessions.append(session)
        v38 = client_version == b"RFB 003.008\n"
        if client_version == b"RFB 003.003\n":
            chosen = self.types[0] if self.types else 0
            conn.sendall(struct.pack(">I", chosen))
            if chosen == 0:
                reason = (self.refuse_reason or "no").encode()
                conn.sendall(struct.pack(">I", len(reason)) + reason)
                return
        else:
            conn.sendall(bytes([len(self.types)]) + bytes(self.types))
            if not self.types:
                reason = (self.refuse_reason or "no").encode()
                conn.sendall(struct.pack(">I", len(reason)) + reason)
                return
            choice = conn.recv(1)
            if not choice:
                session["chosen"] = None                  # the client found nothing it can run
                return
            chosen = choice[0]
        session["chosen"] = chosen
        if chosen == 1:
            if v38:
                conn.sendall(struct.pack(">I", 0))
            return
        conn.sendall(self.CHALLENGE)
        response = recv_exact(conn, 16)
        session["response"] = response
        ok = self.password is not None and response == self.expected_response(self.password, self.CHALLENGE)
        conn.sendall(struct.pack(">I", 0 if ok else 1))
        if not ok and v38:
            reason = b"Authentication failed\0"
            conn.sendall(struct.pack(">I", len(reason)) + reason)
        if ok:
            session["after_auth"] = conn.recv(1)   # b"" when the client hangs up before ClientInit


# --- PKI -------------------------------------------------------------------------------------

def make_ca(cn="fake CA"):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            # What Python 3.13's default context (VERIFY_X509_STRICT) wants of a CA, as the pki role's CA has it.
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return key, cert


def issue_cert(ca, name):
    """A leaf certificate for ``name`` (an x509.Name) signed by ``ca`` = (key, cert): (key, cert)."""
    ca_key, ca_cert = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return key, cert


def pem(cert):
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def server_context(directory, key, cert):
    """A server SSLContext for ``cert``/``key`` (files written under ``directory``)."""
    cert_path, key_path = os.path.join(directory, "server-cert.pem"), os.path.join(directory, "server-key.pem")
    with open(cert_path, "w") as f:
        f.write(pem(cert))
    with open(key_path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    return context
