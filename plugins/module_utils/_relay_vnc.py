# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The VNC side of the browser consoles' relay (private): RFB towards QEMU and towards noVNC.

Towards QEMU the relay is a viewer: the CONNECT through the VM node's proxy (``_relay.open_through_proxy`` without
TLS, the proxy token for console ``vnc``), then the RFB handshake of ``_vnc.vnc_connect``: VeNCrypt, TLS with
QEMU's certificate verified against the cluster's CA for the node's name (the portal's node certificate presented,
for QEMU's ``verify-peer``), then the sub-type's authentication (X509VNC with the VNC ticket the agent set). That
code is blocking; it runs in a worker thread on a :class:`StreamBridge`, a socket-shaped face of the relay's asyncio
streams, so the handshake has one implementation (the probe's) and the bytes afterwards stay on the event loop.

Towards the browser the relay is the server: RFB 3.8 (3.7 and 3.3 answered too) with the one security type None
(:func:`greet_browser`), as Nova's and oVirt's proxies do: the person is already authenticated by the portal
session and the single-use relay ticket, and the VNC ticket never leaves the portal. After both handshakes the
browser's ClientInit goes to QEMU and the relay copies bytes (``_portal._pump``).

Also the vendored noVNC's file list for the portal's static files (:func:`vendored_static`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import json
import os
import re
import socket
import struct

from ansible_collections.vmconsole.secure.plugins.module_utils._relay import RelayError, open_through_proxy
from ansible_collections.vmconsole.secure.plugins.module_utils._vnc import SECURITY_NONE, VNCError, VNCRefused, VNCTLSMismatch, vnc_connect

NOVNC_FOLDER = "novnc"
RFB_VERSION = b"RFB 003.008\n"
HANDSHAKE_TIMEOUT = 10.0        # seconds for QEMU's handshake, and again for the browser's
_VERSION = re.compile(rb"^RFB 003\.00([378])\n$")
_U32 = struct.Struct(">I")
_TYPES = {".js": "text/javascript", ".css": "text/css"}


def vendored_static(read, folder=NOVNC_FOLDER):
    """{name under /static/: content type} of the scripts a vendored package's ``vendor.json`` lists (its sha256
    keys), e.g. ``novnc/core/rfb.js``; {} when the manifest is missing. ``read(name)`` gives a static file's bytes
    (``_portal.StaticFiles.read``)."""
    try:
        names = json.loads(read(folder + "/vendor.json").decode("utf-8"))["sha256"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}
    found = {}
    for name in names:
        kind = _TYPES.get(os.path.splitext(name)[1])
        if kind and ".." not in name.split("/"):
            found["%s/%s" % (folder, name)] = kind
    return found


class _Context:
    """What ``_subject.tls_handshake`` calls ``wrap_socket`` on: the TLS handshake done by the event loop."""

    def __init__(self, bridge, context):
        self.bridge, self.context = bridge, context

    def wrap_socket(self, sock, server_hostname=None):
        return sock.start_tls(self.context, server_hostname)


class StreamBridge:
    """A blocking, socket-shaped face (``recv``, ``sendall``, ``settimeout``, TLS, ``getpeercert``) of an asyncio
    (reader, writer) pair, for code that runs in a worker thread while ``loop`` runs; the streams stay the loop's."""

    def __init__(self, loop, reader, writer):
        self.loop, self.reader, self.writer = loop, reader, writer
        self.timeout = None

    def settimeout(self, timeout):
        self.timeout = timeout

    def _run(self, coroutine):
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        try:
            return future.result(self.timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise socket.timeout("timed out") from None

    def recv(self, size):
        return self._run(self.reader.read(size))

    def sendall(self, data):
        async def send():
            self.writer.write(data)
            await self.writer.drain()
        self._run(send())

    def tls_context(self, context):
        return _Context(self, context)

    def start_tls(self, context, server_hostname):
        self._run(self.writer.start_tls(context, server_hostname=server_hostname))
        return self

    def getpeercert(self, binary_form=False):
        ssl_object = self.writer.get_extra_info("ssl_object")
        return ssl_object.getpeercert(binary_form) if ssl_object is not None else None

    def close(self):
        self.loop.call_soon_threadsafe(self.writer.close)


async def open_vnc(proxy_host, proxy_port, node, port, username, token, password, context, timeout=HANDSHAKE_TIMEOUT):
    """(reader, writer) of QEMU's VNC console of ``node:port`` through the proxy, authenticated with ``password``
    (VeNCrypt, TLS verified by ``context`` for ``node``): QEMU waits for ClientInit. RelayError otherwise (its
    ``reason``: proxy_down, proxy_refused, console_unreachable, tls_mismatch, vnc_refused); the text never holds
    ``password``."""
    reader, writer = await open_through_proxy(proxy_host, proxy_port, node, port, username, token, None, timeout)
    loop = asyncio.get_running_loop()
    bridge = StreamBridge(loop, reader, writer)
    address = "%s:%d" % ("[%s]" % node if ":" in node else node, port)
    try:
        await loop.run_in_executor(None, functools.partial(vnc_connect, bridge, password, address=address,
                                                           context=context, server_hostname=node, timeout=timeout))
    except (VNCError, ValueError, RuntimeError) as exc:
        writer.close()
        reason = ("vnc_refused" if isinstance(exc, VNCRefused) else "tls_mismatch" if isinstance(exc, VNCTLSMismatch)
                  else "console_unreachable")
        raise RelayError(reason, "the VNC console: %s" % exc) from None
    return reader, writer


class BrowserBytes:
    """Exact byte counts read from a WebSocket's binary (or text) messages; what came in beyond them is ``rest``."""

    def __init__(self, receive):
        self.receive = receive          # async () -> bytes, or None when the WebSocket ended
        self.rest = b""

    async def read(self, size):
        while len(self.rest) < size:
            data = await self.receive()
            if data is None:
                raise RelayError("browser_closed", "the browser closed the console during the RFB handshake")
            self.rest += data
        data, self.rest = self.rest[:size], self.rest[size:]
        return data


async def greet_browser(read, send, timeout=HANDSHAKE_TIMEOUT):
    """The server's side of RFB's handshake with the browser, security type None: ProtocolVersion 3.8 offered
    (a 3.7 or 3.3 answer is served as such), the one type None, SecurityResult OK (3.8). ``read(n)`` gives n bytes,
    ``send(data)`` sends. RelayError ("browser_protocol") for a browser that speaks something else; the next bytes
    the browser sends are its ClientInit, for QEMU."""

    async def handshake():
        await send(RFB_VERSION)
        version = await read(12)
        match = _VERSION.match(version)
        if not match:
            raise RelayError("browser_protocol", "the browser does not speak RFB 3.3, 3.7 or 3.8: %r" % version[:12])
        minor = int(match.group(1))
        if minor == 3:                                    # 3.3: the server names the type, no SecurityResult for None
            await send(_U32.pack(SECURITY_NONE))
            return minor
        await send(bytes([1, SECURITY_NONE]))
        chosen = await read(1)
        if chosen[0] != SECURITY_NONE:
            raise RelayError("browser_protocol", "the browser chose security type %d, not None" % chosen[0])
        if minor == 8:
            await send(_U32.pack(0))
        return minor
    try:
        return await asyncio.wait_for(handshake(), timeout)
    except asyncio.TimeoutError:
        raise RelayError("browser_protocol", "the browser did not finish the RFB handshake in %g s" % timeout) from None
