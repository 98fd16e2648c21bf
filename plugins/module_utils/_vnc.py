# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""RFB (VNC) authentication probe, plain or through VeNCrypt (TLS with X.509).

Private to the collection. Stdlib plus ``cryptography`` (DES for VNC authentication); check
``HAS_CRYPTOGRAPHY`` (from ``_crypto``) before use.

The probe stops right after the SecurityResult and never sends ClientInit, so QEMU never
applies its share policy to it: a connected viewer is not disturbed (RFC 6143, 7.3.1).
Security types are handled by small functions registered in ``_SECURITY_HANDLERS`` in order
of preference. VeNCrypt (19) is one of them: it negotiates VeNCrypt 0.2, picks an X.509
sub-type, wraps the socket in TLS (server certificate checked against a CA, optionally a
client certificate for QEMU's ``verify-peer``) and then runs the sub-type's own
authentication - VNC authentication (X509VNC), SASL as QEMU frames it (X509SASL, with the
SCRAM client below) or none (X509None). See docs/vnc-vencrypt.md.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import socket
import ssl
import stringprep
import struct
import time
import unicodedata

from ansible_collections.vmconsole.secure.plugins.module_utils._crypto import (
    HAS_CRYPTOGRAPHY,
    des_ecb_encrypt,
)
from ansible_collections.vmconsole.secure.plugins.module_utils._subject import (
    check_host_subject,
    parse_subject,
    tls_handshake,
)

SECURITY_INVALID, SECURITY_NONE, SECURITY_VNC_AUTH, SECURITY_VENCRYPT = 0, 1, 2, 19
SECURITY_TYPE_NAMES = {
    0: "Invalid", 1: "None", 2: "VNC Authentication", 5: "RA2", 6: "RA2ne", 16: "Tight", 17: "Ultra",
    18: "TLS", 19: "VeNCrypt", 20: "SASL", 30: "Apple Remote Desktop",
}
# VeNCrypt sub-types (VeNCrypt 0.2; QEMU ui/vnc.h VNC_AUTH_VENCRYPT_*).
VENCRYPT_PLAIN, VENCRYPT_TLSNONE, VENCRYPT_TLSVNC, VENCRYPT_TLSPLAIN = 256, 257, 258, 259
VENCRYPT_X509NONE, VENCRYPT_X509VNC, VENCRYPT_X509PLAIN = 260, 261, 262
VENCRYPT_X509SASL, VENCRYPT_TLSSASL = 263, 264
VENCRYPT_SUBTYPE_NAMES = {
    256: "Plain", 257: "TLSNone", 258: "TLSVNC", 259: "TLSPlain", 260: "X509None", 261: "X509VNC",
    262: "X509Plain", 263: "X509SASL", 264: "TLSSASL",
}
SCRAM_MECHANISMS = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-1": "sha1"}     # best first
VNC_PASSWORD_BYTES = 8          # VNC authentication uses the first 8 bytes of the password
CHALLENGE_BYTES = 16

_VERSION = re.compile(rb"^RFB (\d{3})\.(\d{3})\n$")
_U32 = struct.Struct(">I")
_MAX_REASON = 4096
_SASL_DATA_MAX = 1024 * 1024           # QEMU's SASL_DATA_MAX_LEN
_CLIENT_CERT_HINT = (" (QEMU ends TLS sessions this way when its tls-creds object has verify-peer=on and the"
                     " client certificate is missing or not signed by its CA: give client_cert and client_key)")
# DES keys in VNC authentication carry each byte with its bits mirrored.
_MIRROR = bytes(int("{0:08b}".format(value)[::-1], 2) for value in range(256))


class VNCError(Exception):
    """The probe could not reach a verdict; ``status`` is ``unreachable``."""

    status = "unreachable"


class VNCClosed(VNCError):
    """The server closed the connection while the probe waited for data."""


class VNCRefused(VNCError):
    """The server refused the credentials (:func:`vnc_connect`)."""

    status = "refused"


class VNCTLSMismatch(VNCError):
    """The server certificate is not signed by the CA, or its subject is not the expected one."""

    status = "tls_mismatch"


class ScramError(Exception):
    """The server's SCRAM messages are malformed or do not prove it knows the password."""


def saslprep(text):
    """RFC 4013 SASLprep of a user name or password (stored strings: unassigned code points refused)."""
    mapped = "".join("" if stringprep.in_table_b1(char) else " " if stringprep.in_table_c12(char) else char
                     for char in text)
    mapped = unicodedata.normalize("NFKC", mapped)
    prohibited = (stringprep.in_table_a1, stringprep.in_table_c12, stringprep.in_table_c21_c22, stringprep.in_table_c3,
                  stringprep.in_table_c4, stringprep.in_table_c5, stringprep.in_table_c6, stringprep.in_table_c7,
                  stringprep.in_table_c8, stringprep.in_table_c9)
    for char in mapped:
        if any(test(char) for test in prohibited):
            raise ValueError("SASLprep: character U+%04X is not allowed in a SASL user name or password" % ord(char))
    if any(stringprep.in_table_d1(char) for char in mapped):
        if any(stringprep.in_table_d2(char) for char in mapped) or not (
                stringprep.in_table_d1(mapped[0]) and stringprep.in_table_d1(mapped[-1])):
            raise ValueError("SASLprep: mixed right-to-left and left-to-right text is not allowed")
    return mapped


def _scram_attributes(message, what):
    """``a=1,b=2`` -> {'a': '1', 'b': '2'}; values may contain '='."""
    attributes = {}
    for part in message.split(","):
        if len(part) < 2 or part[1] != "=":
            raise ScramError("malformed SCRAM %s: %r" % (what, message))
        attributes.setdefault(part[0], part[2:])
    return attributes


class ScramClient:
    """The client side of SCRAM (RFC 5802; SCRAM-SHA-256 is RFC 7677) without channel binding.

    ``client_first()`` -> ``client_final(server_first)`` -> ``verify_server_final(server_final)``.
    The last step checks the server signature: a server that does not know the user's salted
    password cannot produce it. Raises ScramError for malformed or failed exchanges and
    ValueError for a user name or password SASLprep refuses.
    """

    MAX_ITERATIONS = 1000000          # bounds the PBKDF2 work a hostile server can ask for

    def __init__(self, username, password, *, hash_name="sha256", nonce=None):
        self.hash_name = hash_name
        self.username = saslprep(username).replace("=", "=3D").replace(",", "=2C")
        self.password = saslprep(password).encode("utf-8")
        self.nonce = nonce or base64.b64encode(os.urandom(24)).decode("ascii")
        self.gs2_header = "n,,"
        self.client_first_bare = "n=%s,r=%s" % (self.username, self.nonce)
        self._server_signature = None

    def _hmac(self, key, data):
        return hmac.new(key, data, self.hash_name).digest()

    def client_first(self):
        return self.gs2_header + self.client_first_bare

    def client_final(self, server_first):
        attributes = _scram_attributes(server_first, "server-first message")
        if "m" in attributes:
            raise ScramError("the server asks for a SCRAM extension (m=) this client does not know")
        if "e" in attributes:
            raise ScramError("the server ended SCRAM with error %r" % attributes["e"])
        try:
            nonce, salt, iterations = attributes["r"], base64.b64decode(attributes["s"], validate=True), int(attributes["i"])
        except KeyError as exc:
            raise ScramError("SCRAM server-first message lacks %s=" % exc.args[0]) from None
        except ValueError:
            raise ScramError("SCRAM server-first message has a bad salt or iteration count: %r" % server_first) from None
        if not nonce.startswith(self.nonce) or len(nonce) == len(self.nonce):
            raise ScramError("the server's SCRAM nonce does not extend the client nonce")
        if not 1 <= iterations <= self.MAX_ITERATIONS:
            raise ScramError("SCRAM iteration count %d is out of range 1..%d" % (iterations, self.MAX_ITERATIONS))
        salted = hashlib.pbkdf2_hmac(self.hash_name, self.password, salt, iterations)
        client_key = self._hmac(salted, b"Client Key")
        stored_key = hashlib.new(self.hash_name, client_key).digest()
        without_proof = "c=%s,r=%s" % (base64.b64encode(self.gs2_header.encode("ascii")).decode("ascii"), nonce)
        auth_message = ",".join((self.client_first_bare, server_first, without_proof)).encode("utf-8")
        client_signature = self._hmac(stored_key, auth_message)
        proof = bytes(a ^ b for a, b in zip(client_key, client_signature))
        self._server_signature = self._hmac(self._hmac(salted, b"Server Key"), auth_message)
        return "%s,p=%s" % (without_proof, base64.b64encode(proof).decode("ascii"))

    def verify_server_final(self, server_final):
        attributes = _scram_attributes(server_final, "server-final message")
        if "e" in attributes:
            raise ScramError("the server refused the SCRAM proof: %s" % attributes["e"])
        if self._server_signature is None:
            raise ScramError("SCRAM server-final message before the client-final one")
        try:
            signature = base64.b64decode(attributes["v"], validate=True)
        except (KeyError, ValueError):
            raise ScramError("SCRAM server-final message has no valid v=: %r" % server_final) from None
        if not hmac.compare_digest(signature, self._server_signature):
            raise ScramError("the server signature is wrong: this server does not know the user's SCRAM key")


def vnc_des_response(password, challenge):
    """The 16-byte answer to a VNC authentication challenge (DES-ECB, mirrored-bit key)."""
    key = password.encode("utf-8")[:VNC_PASSWORD_BYTES].ljust(VNC_PASSWORD_BYTES, b"\0").translate(_MIRROR)
    return des_ecb_encrypt(key, challenge)


def _type_names(types):
    return ", ".join("%d (%s)" % (t, SECURITY_TYPE_NAMES.get(t, "unknown")) for t in types)


class _RFB:
    """One RFB connection with a deadline shared by every read and write."""

    def __init__(self, host, port, timeout, sock=None):
        self.address = "[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host, port)
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self.version = None
        self.options = {}
        self.subject = None
        self.vencrypt_subtype = None
        self.sasl_mechanism = None
        self.vencrypt_subtypes = None
        self.received = 0
        if sock is not None:            # connected by the caller (vnc_connect): a socket, or anything shaped like one
            self.sock = sock
            return
        try:
            self.sock = socket.create_connection((host, port), timeout=timeout)
        except socket.gaierror as exc:
            raise VNCError("cannot resolve %s: %s" % (self.address, exc.strerror)) from None
        except socket.timeout:
            raise VNCError("timed out after %gs connecting to %s" % (timeout, self.address)) from None
        except ConnectionRefusedError:
            raise VNCError("connection refused by %s (nothing listens there)" % self.address) from None
        except OSError as exc:
            raise VNCError("cannot connect to %s: %s" % (self.address, exc.strerror or exc)) from None

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def _arm(self, what):
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise VNCError("timed out after %gs waiting for %s from %s" % (self.timeout, what, self.address))
        self.sock.settimeout(left)

    def recv(self, size, what):
        data = bytearray()
        while len(data) < size:
            self._arm(what)
            try:
                chunk = self.sock.recv(size - len(data))
            except ssl.SSLError as exc:
                reason = exc.reason or str(exc)
                raise VNCError("%s ended the TLS session while we waited for %s: %s%s" % (
                    self.address, what, reason, _CLIENT_CERT_HINT if "CERTIFICATE" in reason.upper() else "")) from None
            except socket.timeout:
                raise VNCError("timed out after %gs waiting for %s from %s" % (self.timeout, what, self.address)) from None
            except OSError as exc:
                raise VNCError("connection to %s lost waiting for %s: %s" % (self.address, what, exc)) from None
            if not chunk:
                raise VNCClosed("%s closed the connection while we waited for %s" % (self.address, what))
            data += chunk
            self.received += len(chunk)
        return bytes(data)

    def send(self, data, what):
        self._arm(what)
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise VNCError("connection to %s lost sending %s: %s" % (self.address, what, exc)) from None

    def u32(self, what):
        return _U32.unpack(self.recv(4, what))[0]

    def start_tls(self):
        """Wrap the socket in TLS, check the server certificate (CA, then subject); sets ``subject``.

        ``options["context"]`` (with ``server_hostname``) replaces the context made from the CA options; a socket-like
        object with a ``tls_context(context)`` method (``_relay_vnc.StreamBridge``) does the handshake its own way.
        """
        context = self.options.get("context") or _tls_context(self.options)
        adapt = getattr(self.sock, "tls_context", None)
        if adapt is not None:
            context = adapt(context)
        self._arm("the TLS handshake")
        self.sock, der, self.subject = tls_handshake(
            self.sock, context, address=self.address, timeout=self.timeout, mismatch=VNCTLSMismatch, unreachable=VNCError,
            server_hostname=self.options.get("server_hostname"))
        check_host_subject(der, self.subject, self.options.get("host_subject"), address=self.address,
                           mismatch=VNCTLSMismatch)

    def reason(self):
        """A failure reason string (u32 length + text), as RFB sends it."""
        length = self.u32("the failure reason")
        text = self.recv(min(length, _MAX_REASON), "the failure reason").decode("utf-8", "replace")
        return text.strip("\0 \t\r\n") or "no reason given"      # QEMU sends a trailing NUL

    def security_result(self):
        """Read SecurityResult: (accepted, reason or None)."""
        if self.u32("the security result") == 0:
            return True, None
        return False, self.reason() if self.version >= (3, 8) else None   # 3.3/3.7 send no reason


def _auth_none(rfb, password):
    del password
    if rfb.version >= (3, 8):
        accepted, reason = rfb.security_result()
        if not accepted:
            return "refused", "%s refused the connection: %s" % (rfb.address, reason)
    return "accepted", "%s asks for no authentication (security type None): any password gets in" % rfb.address


def _auth_vnc(rfb, password):
    challenge = rfb.recv(CHALLENGE_BYTES, "the VNC authentication challenge")
    rfb.send(vnc_des_response(password, challenge), "the VNC authentication response")
    accepted, reason = rfb.security_result()
    if accepted:
        return "accepted", "password accepted by %s (VNC authentication)" % rfb.address
    return "refused", "password refused by %s (VNC authentication): %s" % (
        rfb.address, reason or "wrong, expired, or no password set")


def _tls_context(options):
    """Client TLS context: server certificate checked against the CA; host names are not compared."""
    ca_pem = options.get("ca_pem")
    if ca_pem is None:
        if options.get("ca_file") is None:
            raise ValueError("the VNC server uses VeNCrypt (TLS): give the CA that signed its certificate (ca_file or ca_pem)")
        try:
            with open(options["ca_file"], "r", encoding="ascii") as f:
                ca_pem = f.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError("ca_file %s cannot be read: %s" % (options["ca_file"], getattr(exc, "strerror", None) or exc)) from None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False            # like host_subject for SPICE, the subject is what gets pinned
    context.verify_mode = ssl.CERT_REQUIRED
    try:
        context.load_verify_locations(cadata=ca_pem)
    except (ssl.SSLError, ValueError) as exc:
        raise ValueError("the CA is not a usable PEM certificate: %s" % (getattr(exc, "reason", None) or exc)) from None
    cert, key = options.get("client_cert"), options.get("client_key")
    if (cert is None) != (key is None):
        raise ValueError("client_cert and client_key go together: give both or neither")
    if cert is not None:
        try:
            context.load_cert_chain(cert, key)
        except (ssl.SSLError, OSError) as exc:
            raise ValueError("client_cert %s / client_key %s cannot be used: %s"
                             % (cert, key, getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc)) from None
    return context


def _sasl_read(rfb, what):
    """A server SASL message: u32 length (with QEMU's trailing NUL, 0 for none) + data + u8 complete."""
    length = rfb.u32(what)
    if length > _SASL_DATA_MAX:
        raise VNCError("%s sent %d bytes of SASL data, more than QEMU's limit %d" % (rfb.address, length, _SASL_DATA_MAX))
    data = rfb.recv(length, what) if length else None
    complete = rfb.recv(1, what)[0]
    if data is not None:
        data = data[:-1] if data.endswith(b"\0") else data
    return data, bool(complete)


def _sasl_write(rfb, data, what):
    """Client SASL data as QEMU reads it: u32 length + data + NUL (the NUL counted), or u32 0 for none."""
    if data is None:
        rfb.send(_U32.pack(0), what)
    else:
        data = data.encode("utf-8") + b"\0"
        rfb.send(_U32.pack(len(data)) + data, what)


def _auth_sasl(rfb, password):
    """QEMU's SASL exchange (ui/vnc-auth-sasl.c) with a SCRAM mechanism, then SecurityResult."""
    what = "the SASL mechanism list"
    length = rfb.u32(what)
    if not 0 < length <= _MAX_REASON:
        raise VNCError("%s sent a SASL mechanism list of %d bytes" % (rfb.address, length))
    offered = [m.strip().upper() for m in rfb.recv(length, what).rstrip(b"\0").decode("ascii", "replace").split(",")]
    mechanism = next((m for m in SCRAM_MECHANISMS if m in offered), None)
    if mechanism is None:
        raise VNCError("%s offers SASL mechanisms %s; this probe runs %s" % (
            rfb.address, ", ".join(offered), ", ".join(SCRAM_MECHANISMS)))
    rfb.sasl_mechanism = mechanism
    try:
        scram = ScramClient(rfb.options["sasl_user"], password, hash_name=SCRAM_MECHANISMS[mechanism])
    except ValueError as exc:
        raise VNCError("the SASL user name or password cannot be used: %s" % exc) from None
    rfb.send(_U32.pack(len(mechanism)) + mechanism.encode("ascii"), "the SASL mechanism")
    refused = "%s closed the connection after the SASL %s: QEMU does this when SASL authentication fails " \
              "(unknown user or wrong password)"
    _sasl_write(rfb, scram.client_first(), "the SASL start")
    try:
        server_first, complete = _sasl_read(rfb, "the SCRAM server-first message")
    except VNCClosed:
        return "refused", refused % (rfb.address, "start")
    if complete or server_first is None:
        raise VNCError("%s ended SASL %s right after the start (no SCRAM challenge)" % (rfb.address, mechanism))
    try:
        client_final = scram.client_final(server_first.decode("utf-8", "replace"))
    except ScramError as exc:
        raise VNCError("SASL %s with %s failed: %s" % (mechanism, rfb.address, exc)) from None
    _sasl_write(rfb, client_final, "the SCRAM client-final message")
    try:
        server_final, complete = _sasl_read(rfb, "the SCRAM server-final message")
        if not complete:                # a server without SASL_SUCCESS_DATA: answer with an empty step
            _sasl_write(rfb, None, "the last SASL step")
            dummy, complete = _sasl_read(rfb, "the end of SASL")
    except VNCClosed:
        return "refused", refused % (rfb.address, "proof")
    if server_final is None or not complete:
        raise VNCError("%s did not finish SASL %s with a server signature" % (rfb.address, mechanism))
    try:
        scram.verify_server_final(server_final.decode("utf-8", "replace"))
    except ScramError as exc:
        if server_final.startswith(b"e="):
            return "refused", "%s refused the SASL proof: %s" % (rfb.address, exc)
        raise VNCError("SASL %s with %s failed: %s" % (mechanism, rfb.address, exc)) from None
    accepted, reason = rfb.security_result()
    if accepted:
        return "accepted", "SASL user %s accepted by %s (%s, server signature verified)" % (
            rfb.options["sasl_user"], rfb.address, mechanism)
    return "refused", "SASL user %s authenticated but refused by %s (an authz/ACL rule?): %s" % (
        rfb.options["sasl_user"], rfb.address, reason or "no reason given")


def _auth_x509none(rfb, password):
    del password
    accepted, reason = rfb.security_result()
    if not accepted:
        return "refused", "%s refused the connection: %s" % (rfb.address, reason)
    return "accepted", ("%s asks for no authentication inside TLS (VeNCrypt X509None): anyone with a TLS connection "
                        "gets in" % rfb.address)


# VeNCrypt sub-types this probe can run: the server certificate is always checked.
# The TLS* ones (anonymous Diffie-Hellman, no certificate) are left out on purpose.
_VENCRYPT_HANDLERS = {
    VENCRYPT_X509VNC: _auth_vnc,
    VENCRYPT_X509SASL: _auth_sasl,
    VENCRYPT_X509NONE: _auth_x509none,
}


def _subtype_names(subtypes):
    return ", ".join("%d (%s)" % (t, VENCRYPT_SUBTYPE_NAMES.get(t, "unknown")) for t in subtypes)


def _choose_subtype(rfb, offered):
    """X509SASL when a SASL user is given, else X509VNC, else X509None; VNCError when none fits."""
    wanted = [VENCRYPT_X509SASL] if rfb.options.get("sasl_user") is not None else [VENCRYPT_X509VNC, VENCRYPT_X509NONE]
    for subtype in wanted:
        if subtype in offered:
            return subtype
    if VENCRYPT_X509SASL in offered:
        hint = "; it wants SASL: give a SASL user name (vnc_sasl_user)"
    elif VENCRYPT_X509VNC in offered or VENCRYPT_X509NONE in offered:
        hint = "; a SASL user name was given but the server does not use SASL"
    elif any(t in offered for t in (VENCRYPT_TLSNONE, VENCRYPT_TLSVNC, VENCRYPT_TLSSASL)):
        hint = "; anonymous TLS has no certificate to check, so this probe does not run it (give QEMU x509 tls-creds)"
    else:
        hint = ""
    raise VNCError("%s offers VeNCrypt sub-types %s; this probe runs %s%s" % (
        rfb.address, _subtype_names(offered), _subtype_names(wanted), hint))


def _auth_vencrypt(rfb, password):
    """VeNCrypt 0.2: version, sub-type list and choice, TLS, then the sub-type's authentication."""
    major, minor = rfb.recv(2, "the VeNCrypt version")
    if (major, minor) < (0, 2):
        raise VNCError("%s speaks VeNCrypt %d.%d; this probe needs 0.2" % (rfb.address, major, minor))
    rfb.send(b"\0\2", "the VeNCrypt version")
    if rfb.recv(1, "the VeNCrypt version answer")[0] != 0:
        raise VNCError("%s refused VeNCrypt version 0.2" % rfb.address)
    count = rfb.recv(1, "the VeNCrypt sub-types")[0]
    if count == 0:
        raise VNCError("%s offers no VeNCrypt sub-type" % rfb.address)
    offered = list(struct.unpack(">%dI" % count, rfb.recv(4 * count, "the VeNCrypt sub-types")))
    rfb.vencrypt_subtypes = offered
    subtype = _choose_subtype(rfb, offered)
    rfb.send(_U32.pack(subtype), "the chosen VeNCrypt sub-type")
    if rfb.recv(1, "the VeNCrypt sub-type answer")[0] != 1:
        raise VNCError("%s refused VeNCrypt sub-type %s" % (rfb.address, _subtype_names([subtype])))
    rfb.vencrypt_subtype = subtype
    rfb.start_tls()
    # QEMU checks the client certificate after the handshake and just closes on failure: the
    # first read inside TLS tells.
    received = rfb.received
    try:
        return _VENCRYPT_HANDLERS[subtype](rfb, password)
    except VNCClosed as exc:
        if rfb.received != received:
            raise
        raise VNCError(str(exc) + " right after the TLS handshake" + _CLIENT_CERT_HINT) from None


# Security types this probe can run, best first.
_SECURITY_HANDLERS = (
    (SECURITY_VENCRYPT, _auth_vencrypt),
    (SECURITY_VNC_AUTH, _auth_vnc),
    (SECURITY_NONE, _auth_none),
)


def _handshake(rfb):
    """ProtocolVersion and the security type list; returns the types the server offers."""
    banner = rfb.recv(12, "the RFB version")
    match = _VERSION.match(banner)
    if not match:
        raise VNCError("%s is not a VNC server (it greeted with %r)" % (rfb.address, banner))
    server = (int(match.group(1)), int(match.group(2)))
    if server[0] < 3:
        raise VNCError("%s speaks RFB %d.%d, older than 3.3" % ((rfb.address,) + server))
    # RFC 6143 7.1.1: 3.3, 3.7 and 3.8 are the versions; anything else between means 3.3.
    rfb.version = (3, 8) if server >= (3, 8) else (3, 7) if server == (3, 7) else (3, 3)
    rfb.send(b"RFB %03d.%03d\n" % rfb.version, "the RFB version")
    if rfb.version == (3, 3):             # the server decides alone: one u32
        chosen = rfb.u32("the security type")
        if chosen == SECURITY_INVALID:
            raise VNCError("%s refused the connection: %s" % (rfb.address, rfb.reason()))
        return [chosen]
    count = rfb.recv(1, "the security types")[0]
    if count == 0:
        raise VNCError("%s refused the connection: %s" % (rfb.address, rfb.reason()))
    return list(rfb.recv(count, "the security types"))


def _authenticate(rfb, password, result, tls_only=False):
    """The handshake and the best security type both sides have: (status, detail); fills ``result``'s
    rfb_version and security_types. ``tls_only``: VeNCrypt or nothing."""
    offered = _handshake(rfb)
    result.update(rfb_version="%d.%d" % rfb.version, security_types=offered)
    handlers = _SECURITY_HANDLERS if rfb.options.get("sasl_user") is None and not tls_only else _SECURITY_HANDLERS[:1]
    for security_type, handler in handlers:
        if security_type in offered:
            if rfb.version >= (3, 7):
                rfb.send(bytes([security_type]), "the chosen security type")
            return handler(rfb, password)
    detail = "%s offers security types %s; this client runs %s" % (
        rfb.address, _type_names(offered), _type_names([t for t, dummy in handlers]))
    if rfb.options.get("sasl_user") is not None:
        detail += " (a SASL user name needs VeNCrypt X509SASL)"
    elif tls_only:
        detail += " (it must use VeNCrypt with x509 tls-creds: the console is never reached without TLS)"
    return "unreachable", detail


def vnc_connect(sock, password, *, address, context, server_hostname, timeout=10.0, sasl_user=None):
    """Authenticate on ``sock`` (connected to a VNC server, nothing read yet) as a viewer does, up to the accepted
    SecurityResult: the server waits for ClientInit next. VeNCrypt only (TLS with ``context``, which verifies the
    certificate for ``server_hostname`` and may hold a client certificate), then the sub-type's authentication as
    :func:`vnc_auth_probe` runs it. ``sock`` may be anything shaped like a socket (``_relay_vnc.StreamBridge``).

    Returns (the socket to go on with, the probe's result dict). Raises VNCRefused (credentials refused),
    VNCTLSMismatch or VNCError with a text that never holds the password.
    """
    if not HAS_CRYPTOGRAPHY:
        raise RuntimeError("VNC authentication needs the Python library cryptography (DES), which is not installed")
    host, dummy, port = address.rpartition(":")
    rfb = _RFB(host.strip("[]"), int(port), float(timeout), sock=sock)
    rfb.options = dict(context=context, server_hostname=server_hostname, sasl_user=sasl_user)
    result = dict(rfb_version=None, security_types=None)
    status, detail = _authenticate(rfb, password, result, tls_only=True)
    if status == "refused":
        raise VNCRefused(detail)
    if status != "accepted":
        raise VNCError(detail)
    result.update(status=status, detail=detail, vencrypt_subtypes=rfb.vencrypt_subtypes,
                  vencrypt_subtype=rfb.vencrypt_subtype, subject=rfb.subject, sasl_mechanism=rfb.sasl_mechanism)
    return rfb.sock, result


def vnc_auth_probe(host, port, password, *, timeout=10.0, ca_pem=None, ca_file=None, client_cert=None,
                   client_key=None, host_subject=None, sasl_user=None):
    """Check whether ``password`` opens the VNC console, without disturbing a viewer.

    Plain RFB runs VNC authentication (or notes that none is asked). When the server offers
    VeNCrypt, the probe runs it: TLS with the server certificate checked against ``ca_pem``
    (PEM text) or ``ca_file`` (read only then), ``host_subject`` compared as for SPICE when
    given, ``client_cert``/``client_key`` (files) sent when given; then X509SASL with
    ``sasl_user`` and ``password`` (SCRAM-SHA-256 or SCRAM-SHA-1) when ``sasl_user`` is given,
    else X509VNC with ``password`` (or X509None). With ``sasl_user`` a server without
    VeNCrypt X509SASL is ``unreachable``.

    Returns ``dict(status, detail, rfb_version, security_types, vencrypt_subtypes,
    vencrypt_subtype, subject, sasl_mechanism)``; status is ``accepted``, ``refused``,
    ``tls_mismatch`` (certificate not signed by the CA, or wrong subject) or ``unreachable``
    (no connection, not RFB, TLS trouble, or nothing the probe can run). Raises ValueError
    for unusable TLS options (unreadable CA or client key). The password never appears in the result.
    """
    if not HAS_CRYPTOGRAPHY:
        raise RuntimeError("VNC authentication needs the Python library cryptography (DES), which is not installed")
    if host_subject is not None:
        parse_subject(host_subject)            # ValueError before any connection
    result = dict(status=None, detail="", rfb_version=None, security_types=None, vencrypt_subtypes=None,
                  vencrypt_subtype=None, subject=None, sasl_mechanism=None)
    rfb = None
    try:
        rfb = _RFB(host, port, float(timeout))
        rfb.options = dict(ca_pem=ca_pem, ca_file=ca_file, client_cert=client_cert, client_key=client_key,
                           host_subject=host_subject, sasl_user=sasl_user)
        status, detail = _authenticate(rfb, password, result)
    except VNCError as exc:
        status, detail = exc.status, str(exc)
    finally:
        if rfb is not None:
            result.update(vencrypt_subtypes=rfb.vencrypt_subtypes, vencrypt_subtype=rfb.vencrypt_subtype,
                          subject=rfb.subject, sasl_mechanism=rfb.sasl_mechanism)
            rfb.close()
    result.update(status=status, detail=detail)
    return result
