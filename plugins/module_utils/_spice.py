# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""SPICE link protocol client and the non-disruptive ticket probe.

Private to the collection. Stdlib plus ``cryptography`` (RSA-OAEP for the ticket); check
``HAS_CRYPTOGRAPHY`` (from ``_crypto``) before use.

The link handshake, per channel (spice-protocol ``spice/protocol.h``, little endian)::

    client: SpiceLinkHeader{"REDQ", 2, 2, size} SpiceLinkMess{connection_id, channel_type,
            channel_id, num_common_caps, num_channel_caps, caps_offset} caps...
    server: SpiceLinkHeader SpiceLinkReply{error, pub_key[162], num_common_caps,
            num_channel_caps, caps_offset} caps...      (error != 0: stop here)
    client: [SpiceLinkAuthMechanism{AUTH_SPICE}] RSA-OAEP-SHA1(ticket + "\\0") (128 bytes)
    server: uint32 link result (SpiceLinkErr)

spice-server checks the ticket before it looks at the connection id, and a non-MAIN channel
needs the id of a live session. So linking INPUTS with an id no session has answers
PERMISSION_DENIED (7) for a bad ticket and BAD_CONNECTION_ID (8) for a good one, and
nobody's session is touched. A MAIN link, in contrast, disconnects the current client.
"""

from __future__ import annotations

import base64
import secrets
import socket
import ssl
import struct
import time
from urllib.parse import urlsplit

from ansible_collections.vmconsole.secure.plugins.module_utils._subject import (
    check_host_subject, parse_subject, tls_handshake,
)

from ansible_collections.vmconsole.secure.plugins.module_utils._crypto import (
    HAS_CRYPTOGRAPHY,
    rsa_oaep_sha1_encrypt,
)

# spice/protocol.h, spice/enums.h
SPICE_MAGIC = b"REDQ"
SPICE_VERSION_MAJOR = 2
SPICE_VERSION_MINOR = 2
SPICE_TICKET_PUBKEY_BYTES = 1024 // 8 + 34      # SubjectPublicKeyInfo DER of a 1024-bit RSA key
SPICE_MAX_PASSWORD_LENGTH = 60                  # including the terminating NUL

MAIN, DISPLAY, INPUTS, CURSOR = 1, 2, 3, 4

COMMON_CAP_PROTOCOL_AUTH_SELECTION = 0
COMMON_CAP_AUTH_SPICE = 1
COMMON_CAP_AUTH_SASL = 2
COMMON_CAP_MINI_HEADER = 3

LINK_ERR_OK = 0
LINK_ERR_NEED_SECURED = 5
LINK_ERR_NEED_UNSECURED = 6
LINK_ERR_PERMISSION_DENIED = 7
LINK_ERR_BAD_CONNECTION_ID = 8
LINK_ERRORS = {
    0: "OK", 1: "ERROR", 2: "INVALID_MAGIC", 3: "INVALID_DATA", 4: "VERSION_MISMATCH",
    5: "NEED_SECURED", 6: "NEED_UNSECURED", 7: "PERMISSION_DENIED", 8: "BAD_CONNECTION_ID",
    9: "CHANNEL_NOT_AVAILABLE",
}

# Messages a linked channel must answer to stay connected (full SpiceDataHeader: we never
# advertise MINI_HEADER).
MSG_SET_ACK, MSG_PING = 3, 4
MSGC_ACK_SYNC, MSGC_ACK, MSGC_PONG = 1, 2, 3

_HEADER = struct.Struct("<4sIII")           # SpiceLinkHeader: magic, major, minor, size
_LINK_MESS = struct.Struct("<IBBIII")       # SpiceLinkMess
_LINK_REPLY = struct.Struct("<I%dsIII" % SPICE_TICKET_PUBKEY_BYTES)   # SpiceLinkReply
_DATA_HEADER = struct.Struct("<QHII")       # SpiceDataHeader: serial, type, size, sub_list
_U32 = struct.Struct("<I")
_MAX_REPLY = 4096                           # a link reply is 178 bytes plus a few caps words
_MAX_PROXY_ANSWER = 16384
_MAX_MESSAGE = 1 << 24

DEFAULT_PROXY_PORT = 3128      # spice-gtk's default for http:// proxies
PROBE_STATUSES = ("accepted", "refused", "tls_mismatch", "proxy_refused", "unreachable")


class SpiceError(Exception):
    """The link could not be tried. ``status`` is one of the probe statuses, ``detail`` says why."""

    status = "unreachable"

    def __init__(self, detail, http_status=None):
        super().__init__(detail)
        self.detail = detail
        self.http_status = http_status


class SpiceUnreachable(SpiceError):
    """No connection (refused, DNS, timeout), TLS handshake failure, or not a SPICE server."""


class SpiceTLSMismatch(SpiceError):
    """The server's certificate is not signed by the CA, or its subject is not ``host_subject``."""

    status = "tls_mismatch"


class SpiceProxyRefused(SpiceError):
    """The HTTP proxy answered CONNECT with a non-2xx status (``http_status``)."""

    status = "proxy_refused"


def _caps_words(*bits):
    words = [0] * (max(bits) // 32 + 1)
    for bit in bits:
        words[bit // 32] |= 1 << (bit % 32)
    return words


def _has_cap(words, bit):
    index = bit // 32
    return index < len(words) and bool(words[index] >> (bit % 32) & 1)


def encrypt_ticket(pub_key_der, ticket):
    """RSA-OAEP (SHA-1, MGF1-SHA-1) of ``ticket + "\\0"`` with the key from a link reply."""
    return rsa_oaep_sha1_encrypt(pub_key_der, ticket.encode("utf-8") + b"\0")


def proxy_from_url(url):
    """``http://[user:password@]host[:port]`` -> ``dict(host, port, username, password)`` for ``proxy=``.

    Read as remote-viewer (spice-gtk ``spice-uri.c``) reads it: the user name ends at the
    first ``:``, nothing is percent-decoded, the port defaults to 3128; credentials that
    spice-gtk would cut short (``@`` anywhere, ``:`` in the password) are refused.
    ValueError texts never repeat the URL (it may carry a password).
    """
    if any(c in url for c in "\r\n\0 \t"):
        raise ValueError("proxy URL must not contain white space or line breaks")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        # urllib's own text may quote the netloc, and with it the password.
        raise ValueError("proxy URL is not valid (check the port and the brackets around an IPv6 address)") from None
    if parts.scheme != "http":
        raise ValueError("proxy URL must start with http:// (CONNECT over plain HTTP, as remote-viewer does)")
    if not parts.hostname:
        raise ValueError("proxy URL has no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("proxy URL must be http://[user:password@]host[:port] with no path, query or fragment")
    if port == 0:
        raise ValueError("proxy URL port must be 1..65535")
    username, password = parts.username, parts.password
    if "@" in (username or "") + (password or "") or ":" in (password or ""):
        raise ValueError("proxy URL credentials must not contain '@', nor ':' in the password (remote-viewer cuts them there)")
    return dict(host=parts.hostname, port=port or DEFAULT_PROXY_PORT, username=username, password=password)


def _target(host, port):
    return "[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host, port)


class SpiceLink:
    """One SPICE channel connection: TCP (optionally through an HTTP CONNECT proxy), TLS, link.

    ``SpiceLink(host, port, tls=True, ca_pem=PEM, host_subject=None, proxy=None, timeout=10.0)``;
    ``connect()`` then ``link(channel_type, ticket, connection_id=0)`` returns the link result
    (0 = linked). The socket stays open until ``close()``: a linked MAIN channel is a real
    session (and disconnects whoever was connected before). ``is_open()`` keeps it alive.

    ``proxy`` is ``dict(host, port, username=None, password=None)``. ``timeout`` bounds
    ``connect()`` + ``link()`` together. Errors raise :class:`SpiceError` subclasses whose
    text never contains the ticket or the proxy password; bad arguments raise ValueError.
    """

    def __init__(self, host, port, *, tls=True, ca_pem=None, host_subject=None, proxy=None, timeout=10.0):
        self.host, self.port = host, int(port)
        self.tls, self.ca_pem, self.host_subject = tls, ca_pem, host_subject
        self.proxy = dict(proxy) if proxy else None
        self.timeout = float(timeout)
        if host_subject is not None:
            parse_subject(host_subject)          # ValueError now rather than a mismatch later
        self._context = self._tls_context(ca_pem) if tls else None
        if self.proxy is not None and not (self.proxy.get("host") and self.proxy.get("port")):
            raise ValueError("proxy needs a host and a port")
        self.sock = None
        self.subject = None                      # server certificate subject (TLS only)
        self.http_status = None                  # the proxy's answer to CONNECT
        self.link_result = None
        self.server_common_caps = []
        self.server_channel_caps = []
        self.channel_type = None
        self._deadline = None
        self._serial = 0
        self._ack_window = self._ack_generation = None
        self._unacked = 0

    # --- transport -----------------------------------------------------------------------

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None

    @property
    def address(self):
        """``host:port`` (``[v6]:port``) of the SPICE server, for messages."""
        return _target(self.host, self.port)

    def _remaining(self, what):
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise SpiceUnreachable("timed out after %gs %s" % (self.timeout, what))
        return left

    def connect(self):
        """Open the connection (proxy CONNECT, TLS and certificate checks included); returns self."""
        self._deadline = time.monotonic() + self.timeout
        if self.proxy:
            proxy_where = _target(self.proxy["host"], int(self.proxy["port"]))
            self.sock = self._tcp(self.proxy["host"], int(self.proxy["port"]), "proxy " + proxy_where)
            self._proxy_connect(proxy_where)
        else:
            self.sock = self._tcp(self.host, self.port, self.address)
        if self.tls:
            self._start_tls()
        return self

    def _tcp(self, host, port, label):
        try:
            return socket.create_connection((host, port), timeout=self._remaining("before connecting to " + label))
        except socket.gaierror as exc:
            raise SpiceUnreachable("cannot resolve %s: %s" % (label, exc.strerror)) from None
        except socket.timeout:
            raise SpiceUnreachable("timed out after %gs connecting to %s" % (self.timeout, label)) from None
        except ConnectionRefusedError:
            raise SpiceUnreachable("connection refused by %s (nothing listens there)" % label) from None
        except OSError as exc:
            raise SpiceUnreachable("cannot connect to %s: %s" % (label, exc.strerror or exc)) from None

    def _proxy_connect(self, proxy_where):
        target = self.address
        lines = ["CONNECT %s HTTP/1.1" % target, "Host: %s" % target]
        if self.proxy.get("username") is not None:
            userpass = "%s:%s" % (self.proxy["username"], self.proxy.get("password") or "")
            lines.append("Proxy-Authorization: Basic %s" % base64.b64encode(userpass.encode("utf-8")).decode("ascii"))
        self._send(("\r\n".join(lines) + "\r\n\r\n").encode("utf-8"), "sending CONNECT to proxy " + proxy_where)
        answer = bytearray()
        while not answer.endswith(b"\r\n\r\n"):   # byte by byte: nothing of the tunnel may be read here
            if len(answer) > _MAX_PROXY_ANSWER:
                raise SpiceUnreachable("proxy %s sent an over-long answer to CONNECT" % proxy_where)
            answer += self._recv_exact(1, "the answer of proxy %s to CONNECT" % proxy_where)
        status_line = answer.split(b"\r\n", 1)[0].decode("latin-1")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            raise SpiceUnreachable("proxy %s did not answer CONNECT with HTTP: %r" % (proxy_where, status_line[:80]))
        self.http_status = int(parts[1])
        if not 200 <= self.http_status < 300:
            reason = parts[2] if len(parts) > 2 else ""
            hint = ""
            if self.http_status == 407:
                hint = " (credentials were sent and rejected)" if self.proxy.get("username") is not None \
                    else " (the proxy wants credentials and none were given)"
            raise SpiceProxyRefused("proxy %s refused CONNECT %s: HTTP %d %s%s"
                                    % (proxy_where, target, self.http_status, reason, hint), http_status=self.http_status)

    @staticmethod
    def _tls_context(ca_pem):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False             # the .vv pins the subject, not the name
        context.verify_mode = ssl.CERT_REQUIRED
        if not ca_pem:
            context.load_default_certs()
            return context
        try:
            context.load_verify_locations(cadata=ca_pem)
        except (ssl.SSLError, ValueError) as exc:
            raise ValueError("the CA is not a usable PEM certificate: %s" % (getattr(exc, "reason", None) or exc)) from None
        return context

    def _start_tls(self):
        self.sock.settimeout(self._remaining("before the TLS handshake with " + self.address))
        self.sock, der, self.subject = tls_handshake(
            self.sock, self._context, address=self.address, timeout=self.timeout, mismatch=SpiceTLSMismatch,
            unreachable=SpiceUnreachable, server_hostname=self.host, hint=" (is this the SPICE TLS port?)")
        check_host_subject(der, self.subject, self.host_subject, address=self.address, mismatch=SpiceTLSMismatch)

    def _send(self, data, what):
        try:
            self.sock.settimeout(self._remaining(what))
            self.sock.sendall(data)
        except socket.timeout:
            raise SpiceUnreachable("timed out after %gs %s" % (self.timeout, what)) from None
        except OSError as exc:
            raise SpiceUnreachable("connection to %s lost %s: %s" % (self.address, what, exc)) from None

    def _recv_exact(self, size, what):
        data = bytearray()
        while len(data) < size:
            try:
                self.sock.settimeout(self._remaining("waiting for " + what))
                chunk = self.sock.recv(size - len(data))
            except socket.timeout:
                raise SpiceUnreachable("timed out after %gs waiting for %s" % (self.timeout, what)) from None
            except OSError as exc:
                chunk, error = b"", exc
            else:
                error = None
            if not chunk:
                hint = "" if self.tls else " (if this is a TLS port, probe it with tls=true)"
                raise SpiceUnreachable("connection closed while waiting for %s%s%s"
                                       % (what, " (%s)" % error if error else "", hint))
            data += chunk
        return bytes(data)

    # --- link ----------------------------------------------------------------------------

    def link(self, channel_type, ticket, *, connection_id=0, channel_id=0):
        """Link ``channel_type`` with ``ticket``; returns the SpiceLinkErr code (0 = linked).

        A link error in the server's reply (e.g. NEED_SECURED) is returned as is: no ticket
        was sent then. Transport and protocol failures raise :class:`SpiceError`.
        """
        if not HAS_CRYPTOGRAPHY:
            raise RuntimeError("the SPICE ticket needs the Python library cryptography (RSA-OAEP), which is not installed")
        ticket_bytes = ticket.encode("utf-8")
        if len(ticket_bytes) >= SPICE_MAX_PASSWORD_LENGTH or b"\0" in ticket_bytes:
            raise ValueError("a SPICE ticket has at most %d bytes and no NUL" % (SPICE_MAX_PASSWORD_LENGTH - 1))
        if self.sock is None:
            self.connect()
        self.channel_type = channel_type
        caps = _caps_words(COMMON_CAP_PROTOCOL_AUTH_SELECTION, COMMON_CAP_AUTH_SPICE)
        mess = _LINK_MESS.pack(connection_id, channel_type, channel_id, len(caps), 0, _LINK_MESS.size)
        mess += b"".join(_U32.pack(word) for word in caps)
        self._send(_HEADER.pack(SPICE_MAGIC, SPICE_VERSION_MAJOR, SPICE_VERSION_MINOR, len(mess)) + mess,
                   "sending the link message to " + self.address)

        magic, major, minor, size = _HEADER.unpack(self._recv_exact(_HEADER.size, "the link reply from " + self.address))
        if magic != SPICE_MAGIC:
            raise SpiceUnreachable("%s is not a SPICE server (its reply starts with %r, not %r)"
                                   % (self.address, magic, SPICE_MAGIC))
        if not _U32.size <= size <= _MAX_REPLY:
            raise SpiceUnreachable("%s sent a link reply of %d bytes (SPICE %d.%d)" % (self.address, size, major, minor))
        reply = self._recv_exact(size, "the link reply from " + self.address)
        error = _U32.unpack_from(reply)[0]
        if error != LINK_ERR_OK:
            self.link_result = error
            return error
        if size < _LINK_REPLY.size:
            raise SpiceUnreachable("%s sent a short link reply (%d bytes)" % (self.address, size))
        dummy, pub_key, n_common, n_channel, caps_offset = _LINK_REPLY.unpack_from(reply)
        if caps_offset + 4 * (n_common + n_channel) > size:
            raise SpiceUnreachable("%s sent a link reply whose capabilities overflow it" % self.address)
        words = struct.unpack_from("<%dI" % (n_common + n_channel), reply, caps_offset)
        self.server_common_caps, self.server_channel_caps = list(words[:n_common]), list(words[n_common:])

        try:
            encrypted = encrypt_ticket(pub_key, ticket)
        except ValueError as exc:
            raise SpiceUnreachable("%s sent an unusable ticket key: %s" % (self.address, exc)) from None
        # Like spice-gtk: name the mechanism when the server can select one.
        auth = _U32.pack(COMMON_CAP_AUTH_SPICE) if _has_cap(self.server_common_caps, COMMON_CAP_PROTOCOL_AUTH_SELECTION) else b""
        self._send(auth + encrypted, "sending the ticket to " + self.address)
        self.link_result = _U32.unpack(self._recv_exact(_U32.size, "the link result from " + self.address))[0]
        return self.link_result

    # --- a linked channel ------------------------------------------------------------------

    def _send_message(self, msg_type, payload):
        self._serial += 1
        self.sock.sendall(_DATA_HEADER.pack(self._serial, msg_type, len(payload), 0) + payload)

    def _read_messages(self, wait):
        """Handle what the server sends until ``wait`` seconds pass quietly; False on EOF."""
        buffer = bytearray()
        deadline = time.monotonic() + wait
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return True
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                return True
            if not chunk:
                return False
            buffer += chunk
            while len(buffer) >= _DATA_HEADER.size:
                dummy, msg_type, size, dummy2 = _DATA_HEADER.unpack_from(buffer)
                if size > _MAX_MESSAGE:
                    raise SpiceUnreachable("%s sent a %d-byte message" % (self.address, size))
                if len(buffer) < _DATA_HEADER.size + size:
                    break
                payload = bytes(buffer[_DATA_HEADER.size:_DATA_HEADER.size + size])
                del buffer[:_DATA_HEADER.size + size]
                self._handle_message(msg_type, payload)

    def _handle_message(self, msg_type, payload):
        if msg_type == MSG_SET_ACK and len(payload) >= 8:
            self._ack_generation, self._ack_window = struct.unpack_from("<II", payload)
            self._unacked = 0
            self._send_message(MSGC_ACK_SYNC, _U32.pack(self._ack_generation))
            return
        if msg_type == MSG_PING and len(payload) >= 12:
            self._send_message(MSGC_PONG, payload[:12])      # id (u32) and timestamp (u64)
        if self._ack_window:
            self._unacked += 1
            if self._unacked >= self._ack_window:
                self._unacked = 0
                self._send_message(MSGC_ACK, b"")

    def is_open(self, wait=0.2):
        """True while the server keeps this (linked) channel open.

        Reads and answers what the server sends (SET_ACK, PING) for ``wait`` seconds, so a
        held MAIN channel stays alive; False once the server has closed the connection.
        """
        if self.sock is None:
            return False
        try:
            return self._read_messages(wait)
        except (ssl.SSLError, OSError):
            return False


def _verdict(code, where):
    name = "SPICE_LINK_ERR_%s" % LINK_ERRORS.get(code, "UNKNOWN_%d" % code)
    if code == LINK_ERR_BAD_CONNECTION_ID:
        return "accepted", "ticket accepted by %s (the probe link then stopped at %s, as intended)" % (where, name)
    if code == LINK_ERR_OK:
        return "accepted", "ticket accepted by %s (%s: the probe's random connection id matched a live session)" % (where, name)
    if code == LINK_ERR_PERMISSION_DENIED:
        return "refused", "ticket refused by %s (%s): wrong, expired, or no ticket set" % (where, name)
    if code == LINK_ERR_NEED_SECURED:
        return "unreachable", "%s requires TLS for this channel (%s): probe the TLS port with tls=true" % (where, name)
    if code == LINK_ERR_NEED_UNSECURED:
        return "unreachable", "%s does not take TLS for this channel (%s): probe the plain port with tls=false" % (where, name)
    return "unreachable", "%s refused the link before checking the ticket (%s)" % (where, name)


def spice_link_probe(host, port, ticket, *, ca_pem=None, host_subject=None, proxy=None, tls=True, timeout=10.0):
    """Check whether ``ticket`` would let a client in, without disturbing a connected one.

    Links the INPUTS channel with a random 32-bit connection id. spice-server 0.15 draws session
    ids from the whole 32-bit range too, so the id matches a live session with odds of 2**-32 per
    session; even then the link only adds an INPUTS channel that the probe closes at once. Returns
    ``dict(status, link_result, http_status, detail, subject)`` with status ``accepted``,
    ``refused`` (link result 7), ``tls_mismatch``, ``proxy_refused`` or ``unreachable`` (also
    for link errors that stop before the ticket check, e.g. 5 = NEED_SECURED).
    Raises ValueError for bad arguments (ticket too long, unusable CA, invalid host_subject).
    """
    result = dict(status=None, link_result=None, http_status=None, detail="", subject=None)
    connection_id = secrets.randbits(32) or 1          # 0 would ask for a new session
    link = SpiceLink(host, port, tls=tls, ca_pem=ca_pem, host_subject=host_subject, proxy=proxy, timeout=timeout)
    try:
        code = link.link(INPUTS, ticket, connection_id=connection_id)
    except SpiceError as exc:
        result.update(status=exc.status, detail=exc.detail)
        code = None
    finally:
        link.close()
        result.update(http_status=link.http_status, subject=link.subject)
    if code is not None:
        status, detail = _verdict(code, link.address)
        result.update(status=status, link_result=code, detail=detail)
    return result
