# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""RFB (VNC) authentication probe.

Private to the collection. Stdlib plus ``cryptography`` (DES for VNC authentication); check
``HAS_CRYPTOGRAPHY`` (from ``_crypto``) before use.

The probe stops right after the SecurityResult and never sends ClientInit, so QEMU never
applies its share policy to it: a connected viewer is not disturbed (RFC 6143, 7.3.1).
Security types are handled by small functions registered in ``_SECURITY_HANDLERS`` in order
of preference; VeNCrypt (19) fits in there as one more handler that wraps the socket in TLS
and then runs a sub-type.
"""

from __future__ import annotations

import re
import socket
import struct
import time

from ansible_collections.vmconsole.secure.plugins.module_utils._crypto import (
    HAS_CRYPTOGRAPHY,
    des_ecb_encrypt,
)

SECURITY_INVALID, SECURITY_NONE, SECURITY_VNC_AUTH, SECURITY_VENCRYPT = 0, 1, 2, 19
SECURITY_TYPE_NAMES = {
    0: "Invalid", 1: "None", 2: "VNC Authentication", 5: "RA2", 6: "RA2ne", 16: "Tight", 17: "Ultra",
    18: "TLS", 19: "VeNCrypt", 20: "SASL", 30: "Apple Remote Desktop",
}
VNC_PASSWORD_BYTES = 8          # VNC authentication uses the first 8 bytes of the password
CHALLENGE_BYTES = 16

_VERSION = re.compile(rb"^RFB (\d{3})\.(\d{3})\n$")
_U32 = struct.Struct(">I")
_MAX_REASON = 4096
# DES keys in VNC authentication carry each byte with its bits mirrored.
_MIRROR = bytes(int("{0:08b}".format(value)[::-1], 2) for value in range(256))


class VNCError(Exception):
    """The probe could not reach a verdict; ``status`` is ``unreachable``."""

    status = "unreachable"


def vnc_des_response(password, challenge):
    """The 16-byte answer to a VNC authentication challenge (DES-ECB, mirrored-bit key)."""
    key = password.encode("utf-8")[:VNC_PASSWORD_BYTES].ljust(VNC_PASSWORD_BYTES, b"\0").translate(_MIRROR)
    return des_ecb_encrypt(key, challenge)


def _type_names(types):
    return ", ".join("%d (%s)" % (t, SECURITY_TYPE_NAMES.get(t, "unknown")) for t in types)


class _RFB:
    """One RFB connection with a deadline shared by every read and write."""

    def __init__(self, host, port, timeout):
        self.address = "[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host, port)
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self.version = None
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
            except socket.timeout:
                raise VNCError("timed out after %gs waiting for %s from %s" % (self.timeout, what, self.address)) from None
            except OSError as exc:
                raise VNCError("connection to %s lost waiting for %s: %s" % (self.address, what, exc)) from None
            if not chunk:
                raise VNCError("%s closed the connection while we waited for %s" % (self.address, what))
            data += chunk
        return bytes(data)

    def send(self, data, what):
        self._arm(what)
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise VNCError("connection to %s lost sending %s: %s" % (self.address, what, exc)) from None

    def u32(self, what):
        return _U32.unpack(self.recv(4, what))[0]

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


# Security types this probe can run, best first.
_SECURITY_HANDLERS = (
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


def vnc_auth_probe(host, port, password, *, timeout=10.0):
    """Check whether ``password`` passes VNC authentication, without disturbing a viewer.

    Returns ``dict(status, detail, rfb_version, security_types)``; status is ``accepted``,
    ``refused`` or ``unreachable`` (no connection, not RFB, or no security type the probe
    can run). The password never appears in the result.
    """
    if not HAS_CRYPTOGRAPHY:
        raise RuntimeError("VNC authentication needs the Python library cryptography (DES), which is not installed")
    result = dict(status=None, detail="", rfb_version=None, security_types=None)
    rfb = None
    try:
        rfb = _RFB(host, port, float(timeout))
        offered = _handshake(rfb)
        result.update(rfb_version="%d.%d" % rfb.version, security_types=offered)
        for security_type, handler in _SECURITY_HANDLERS:
            if security_type in offered:
                if rfb.version >= (3, 7):
                    rfb.send(bytes([security_type]), "the chosen security type")
                status, detail = handler(rfb, password)
                break
        else:
            status, detail = "unreachable", "%s offers security types %s; this probe runs %s" % (
                rfb.address, _type_names(offered), _type_names([t for t, dummy in _SECURITY_HANDLERS]))
    except VNCError as exc:
        status, detail = exc.status, str(exc)
    finally:
        if rfb is not None:
            rfb.close()
    result.update(status=status, detail=detail)
    return result
