# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""SPICE through the browser relay (private): the link of each channel, and which channel sockets are admitted.

spice-html5 speaks SPICE inside WebSockets and cannot do TLS there, so the portal's relay is QEMU's TLS client
(``_relay.open_through_proxy``: the VM node's proxy with the person's token, then TLS with QEMU's certificate checked
against the CA and the host subject of the ``.vv``, :func:`spice_tls_context` and :func:`check_console_subject`).
SPICE opens one connection per channel (main, display, inputs, cursor, ...), each a WebSocket of its own, all to
the same URL.

The SPICE ticket never reaches the browser. Per channel (:func:`link_channel`) the relay passes the browser's
SpiceLinkMess to QEMU and QEMU's SpiceLinkReply back (the browser needs its capabilities); the browser then
encrypts its own, empty, password with the reply's key; the relay drops those 128 bytes and sends QEMU the ticket
of the person's ``.vv`` encrypted as SPICE does (RSA-OAEP SHA-1 of ``ticket + "\\0"``, ``_spice.encrypt_ticket``).
QEMU checks it as it checks remote-viewer's; its link result goes back to the browser.

Admission (:class:`SpiceRelays`): the page's WebSocket that comes first consumes the single-use relay ticket and
must link the MAIN channel with connection id 0 (a new SPICE session). The relay reads QEMU's SPICE_MSG_MAIN_INIT on
that channel (:class:`MainInitWatch`) for the session id QEMU gave it. The later sockets present the same relay
ticket and are admitted only while that main relay is open, only from the same portal session, only for channels
other than MAIN, only with that session id as their connection id, and at most :data:`CHANNELS_PER_MAIN` at once.
The main relay counts once in ``RelayLimits``; its channels count against it, not against the person's limit. When
the main relay ends its channels end (QEMU drops a session's channels with its main channel; the relay closes them
too). Stdlib and ``cryptography`` (through ``_spice``).
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import ssl
import struct
import threading

from ansible_collections.vmconsole.secure.plugins.module_utils._relay import RelayError, open_through_proxy
from ansible_collections.vmconsole.secure.plugins.module_utils._spice import (
    COMMON_CAP_AUTH_SPICE,
    COMMON_CAP_MINI_HEADER,
    COMMON_CAP_PROTOCOL_AUTH_SELECTION,
    MAIN,
    SPICE_MAGIC,
    SPICE_VERSION_MAJOR,
    _has_cap,
    encrypt_ticket,
    proxy_from_url,
)
from ansible_collections.vmconsole.secure.plugins.module_utils._subject import check_host_subject, subject_from_der
from ansible_collections.vmconsole.secure.plugins.module_utils._vv import parse_vv

# spice/enums.h SpiceChannelType, for the audit log.
CHANNEL_NAMES = {1: "main", 2: "display", 3: "inputs", 4: "cursor", 5: "playback", 6: "record", 7: "tunnel",
                 8: "smartcard", 9: "usbredir", 10: "port", 11: "webdav"}
CHANNELS_PER_MAIN = 8           # display, inputs, cursor, playback, record, port, usbredir, webdav: more is not SPICE
LINK_TIMEOUT = 10               # seconds for either side's part of a link
MSG_MAIN_INIT = 103             # spice/enums.h SPICE_MSG_MAIN_INIT; its payload starts with the session id (u32)
ENCRYPTED_TICKET_BYTES = 128    # RSA-1024 (SPICE_TICKET_KEY_PAIR_LENGTH)
MAIN_INIT_WITHIN = 64           # QEMU sends MAIN_INIT among the first messages of a main channel: look no further
_HEADER = struct.Struct("<4sIII")           # SpiceLinkHeader: magic, major, minor, size
_LINK_MESS = struct.Struct("<IBBIII")       # SpiceLinkMess: connection id, channel type, id, caps counts, offset
_LINK_REPLY = struct.Struct("<I162sIII")    # SpiceLinkReply: error, public key (DER), caps counts, offset
_MINI = struct.Struct("<HI")                # SpiceMiniDataHeader: type, size
_FULL = struct.Struct("<QHII")              # SpiceDataHeader: serial, type, size, sub_list
_U32 = struct.Struct("<I")
_MAX_LINK = 4096                            # a link message or reply is some 20-180 bytes and a few caps words

LinkMess = collections.namedtuple("LinkMess", "connection_id channel_type channel_id common_caps channel_caps raw")


class ByteReader:
    """Exact reads over a source of chunks (``receive``: an async callable giving bytes, b"" at the end): the
    browser's WebSocket, whose messages need not match SPICE's framing."""

    def __init__(self, receive):
        self.receive = receive
        self.buffer = bytearray()

    async def read_exact(self, size, what):
        while len(self.buffer) < size:
            chunk = await self.receive()
            if not chunk:
                raise RelayError("browser_closed", "the browser closed the channel while sending %s" % what)
            self.buffer += chunk
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    def leftover(self):
        """What the browser sent beyond the link (bytes); the buffer is empty afterwards."""
        data, self.buffer = bytes(self.buffer), bytearray()
        return data


def parse_link_header(head, who):
    """The size of the link message or reply that follows the SpiceLinkHeader ``head``; RelayError when it is not
    SPICE 2.x or the size is out of bounds."""
    magic, major, _minor, size = _HEADER.unpack(head)
    if magic != SPICE_MAGIC or major != SPICE_VERSION_MAJOR:
        raise RelayError("not_spice", "%s does not speak SPICE %d (its link starts with %r)" % (who, SPICE_VERSION_MAJOR, magic))
    if not _U32.size <= size <= _MAX_LINK:
        raise RelayError("not_spice", "%s sent a link of %d bytes" % (who, size))
    return size


def parse_link_mess(head, body):
    """A :class:`LinkMess` from the browser's SpiceLinkHeader and SpiceLinkMess; RelayError when malformed."""
    if len(body) < _LINK_MESS.size:
        raise RelayError("not_spice", "the browser sent a short link message (%d bytes)" % len(body))
    connection_id, channel_type, channel_id, n_common, n_channel, offset = _LINK_MESS.unpack_from(body)
    if n_common + n_channel > 64 or offset < _LINK_MESS.size or offset + 4 * (n_common + n_channel) > len(body):
        raise RelayError("not_spice", "the browser's link message has capabilities outside it")
    words = struct.unpack_from("<%dI" % (n_common + n_channel), body, offset)
    return LinkMess(connection_id, channel_type, channel_id, list(words[:n_common]), list(words[n_common:]), head + body)


async def read_link_mess(browser):
    """The browser's link message (:class:`LinkMess`), read from ``browser`` (a :class:`ByteReader`)."""
    head = await browser.read_exact(_HEADER.size, "its link header")
    body = await browser.read_exact(parse_link_header(head, "the browser"), "its link message")
    return parse_link_mess(head, body)


async def link_channel(browser, send_to_browser, reader, writer, mess, ticket, timeout=LINK_TIMEOUT):
    """Link one channel with QEMU for the browser; (QEMU's link result, whether the channel uses mini headers).

    ``browser`` (:class:`ByteReader`) and ``send_to_browser`` (async, bytes) are the WebSocket; ``reader`` and
    ``writer`` the TLS connection to QEMU; ``mess`` the browser's :class:`LinkMess`; ``ticket`` the SPICE ticket,
    which only QEMU gets. A link error of QEMU's reply (before the ticket) is returned as it is, and passed on.
    RelayError when either side breaks the protocol, takes too long, or the browser asks for SASL.
    """
    try:
        writer.write(mess.raw)
        await asyncio.wait_for(writer.drain(), timeout)
        head = await asyncio.wait_for(reader.readexactly(_HEADER.size), timeout)
        reply = await asyncio.wait_for(reader.readexactly(parse_link_header(head, "QEMU")), timeout)
    except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ssl.SSLError):
        raise RelayError("console_closed", "QEMU did not answer the link") from None
    await send_to_browser(head + reply)
    error = _U32.unpack_from(reply)[0]
    if error:
        return error, False
    if len(reply) < _LINK_REPLY.size:
        raise RelayError("not_spice", "QEMU sent a short link reply (%d bytes)" % len(reply))
    _error, pub_key, n_common, _n_channel, offset = _LINK_REPLY.unpack_from(reply)
    server_common = list(struct.unpack_from("<%dI" % n_common, reply, offset)) if offset + 4 * n_common <= len(reply) else []
    mechanism = b""
    if _has_cap(mess.common_caps, COMMON_CAP_PROTOCOL_AUTH_SELECTION):
        mechanism = await asyncio.wait_for(browser.read_exact(_U32.size, "its authentication mechanism"), timeout)
        if _U32.unpack(mechanism)[0] != COMMON_CAP_AUTH_SPICE:
            raise RelayError("spice_auth", "the browser asked for an authentication other than the SPICE ticket")
    # The browser's own encryption of its (empty) password: dropped, the ticket goes in its place.
    await asyncio.wait_for(browser.read_exact(ENCRYPTED_TICKET_BYTES, "its ticket"), timeout)
    try:
        encrypted = encrypt_ticket(pub_key, ticket)
    except ValueError:
        raise RelayError("not_spice", "QEMU sent an unusable ticket key") from None
    try:
        writer.write(mechanism + encrypted)
        await asyncio.wait_for(writer.drain(), timeout)
        result = await asyncio.wait_for(reader.readexactly(_U32.size), timeout)
    except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ssl.SSLError):
        raise RelayError("console_closed", "QEMU did not answer the ticket") from None
    await send_to_browser(result)
    mini = _has_cap(mess.common_caps, COMMON_CAP_MINI_HEADER) and _has_cap(server_common, COMMON_CAP_MINI_HEADER)
    return _U32.unpack(result)[0], mini


class MainInitWatch:
    """Reads QEMU's first messages on a linked main channel (what the relay passes to the browser anyway) for
    SPICE_MSG_MAIN_INIT: ``session_id`` then, ``done`` once found or once it is clear it will not come."""

    def __init__(self, mini):
        self.header = _MINI if mini else _FULL
        self.buffer = bytearray()
        self.session_id = None
        self.done = False
        self._seen = 0

    def feed(self, data):
        """Take the next bytes QEMU sent; the session id when this completed MAIN_INIT, else None."""
        if self.done:
            return None
        self.buffer += data
        while len(self.buffer) >= self.header.size:
            fields = self.header.unpack_from(self.buffer)
            msg_type, size = (fields[0], fields[1]) if self.header is _MINI else (fields[1], fields[2])
            if msg_type == MSG_MAIN_INIT:
                if len(self.buffer) < self.header.size + _U32.size:
                    return None
                self.session_id = _U32.unpack_from(self.buffer, self.header.size)[0]
                self.done, self.buffer = True, bytearray()
                return self.session_id
            self._seen += 1
            if self._seen >= MAIN_INIT_WITHIN or size > 1 << 24:
                self.done, self.buffer = True, bytearray()
                return None
            if len(self.buffer) < self.header.size + size:
                return None
            del self.buffer[:self.header.size + size]
        return None


class TappedReader:
    """``reader`` (asyncio.StreamReader-like) whose data also goes through ``watch`` until it is done."""

    def __init__(self, reader, watch):
        self.reader, self.watch = reader, watch

    async def read(self, size=-1):
        data = await self.reader.read(size)
        if data and not self.watch.done:
            self.watch.feed(data)
        return data


def spice_tls_context(ca_pem):
    """TLS to QEMU's SPICE port as remote-viewer does with a ``.vv``: the certificate verified against the CA in its
    ``ca=``; the name is not checked (the ``.vv``'s ``host-subject=`` is, by :func:`check_console_subject`)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cadata=ca_pem)
    return context


def check_console_subject(writer, host_subject, address):
    """RelayError (and the connection closed) when QEMU's certificate does not have the subject ``host_subject``."""
    ssl_object = writer.get_extra_info("ssl_object")
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    try:
        if der is None:
            raise RelayError("tls_mismatch", "%s presented no certificate" % address)
        check_host_subject(der, subject_from_der(der), host_subject, address=address,
                           mismatch=lambda text: RelayError("tls_mismatch", text))
    except RelayError:
        writer.close()
        raise


def console_from_vv(text, expires=None):
    """How the relay reaches a SPICE console, from the ``.vv`` the agent issued for the person (the relay opens it as
    remote-viewer would): dict(proxy_host, proxy_port, username, token, host, port, ca, host_subject, ticket,
    expires). RelayError when the file lacks a part the relay needs (a TLS port, the proxy with a token, the CA)."""
    try:
        vv = parse_vv(text)
        proxy = proxy_from_url(vv["proxy"]) if vv.get("proxy") else None
    except ValueError as exc:
        raise RelayError("agent", "the .vv of the VM's node cannot be read: %s" % exc) from None
    if vv.get("type") != "spice" or not vv.get("tls-port") or not vv.get("ca") or not vv.get("password"):
        raise RelayError("no_tls", "the SPICE console has no TLS port with a CA and a ticket: the relay needs them")
    if proxy is None or not proxy.get("password"):
        raise RelayError("no_proxy", "the SPICE console is not reached through a proxy with a token")
    return dict(proxy_host=proxy["host"], proxy_port=proxy["port"], username=proxy["username"], token=proxy["password"],
                host=vv["host"], port=int(vv["tls-port"]), ca=vv["ca"], host_subject=vv.get("host-subject"),
                ticket=vv["password"], expires=expires)


async def open_spice(console, timeout=LINK_TIMEOUT):
    """(reader, writer) of TLS to the SPICE port of ``console`` (:func:`console_from_vv`) through the proxy, QEMU's
    certificate verified (CA, host subject); RelayError otherwise."""
    try:
        context = spice_tls_context(console["ca"])
    except (ssl.SSLError, ValueError):
        raise RelayError("tls_mismatch", "the CA of the .vv is not a usable certificate") from None
    reader, writer = await open_through_proxy(console["proxy_host"], console["proxy_port"], console["host"],
                                              console["port"], console["username"], console["token"], context, timeout)
    check_console_subject(writer, console["host_subject"], "%s:%d" % (console["host"], console["port"]))
    return reader, writer


def relay_key(ticket):
    """What the relay keeps of a relay ticket to admit a main relay's channels (a hash, as RelayTickets keeps)."""
    return hashlib.sha256(ticket.encode("utf-8")).hexdigest()


class SpiceMain:
    """One open main relay: who (``relay``: a ``_relay.Relay``), its portal ``session`` id, how QEMU is reached
    (``console``: :func:`console_from_vv`, the SPICE ticket in it kept in memory only), the :class:`MainInitWatch` of
    its main channel (``watch``), its open ``channels`` (an event per channel socket: set to end it)."""

    def __init__(self, relay, session, console):
        self.relay, self.session, self.console = relay, session, console
        self.watch = None
        self.channels = set()

    @property
    def session_id(self):
        """QEMU's id of the SPICE session (from MAIN_INIT), None until the relay saw it."""
        return self.watch.session_id if self.watch is not None else None


class SpiceRelays:
    """The open main relays by relay ticket hash, and the admission of their later channel sockets."""

    def __init__(self, per_main=CHANNELS_PER_MAIN):
        self.per_main = per_main
        self._mains = {}
        self._lock = threading.Lock()

    def open_main(self, ticket, relay, session, console, watch):
        """Register the main relay of ``ticket`` (just taken from RelayTickets), whose main channel ``watch`` reads;
        its :class:`SpiceMain`."""
        main = SpiceMain(relay, session, console)
        main.watch = watch
        with self._lock:
            self._mains[relay_key(ticket)] = main
        return main

    def close_main(self, ticket):
        """The main relay ended: no more channels for it; the events of its open channels are set."""
        with self._lock:
            main = self._mains.pop(relay_key(ticket), None)
        for ended in list(main.channels if main else ()):
            ended.set()

    def admit(self, ticket, session, mess, ended):
        """(the :class:`SpiceMain`, None) when a channel socket with ``ticket`` from portal ``session`` may link
        ``mess`` (counted then, with ``ended``), else (None, reason): ``ticket`` (no open main relay of it, or of
        another session), ``channel`` (MAIN, or not the main relay's SPICE session), ``limit``."""
        if not isinstance(ticket, str) or not 0 < len(ticket) <= 128:
            return None, "ticket"
        with self._lock:
            main = self._mains.get(relay_key(ticket))
            if main is None or main.session != session:
                return None, "ticket"
            if mess.channel_type == MAIN or main.session_id is None or mess.connection_id != main.session_id:
                return None, "channel"
            if len(main.channels) >= self.per_main:
                return None, "limit"
            main.channels.add(ended)
        return main, None

    def release(self, main, ended):
        with self._lock:
            main.channels.discard(ended)

    def __len__(self):
        return len(self._mains)
