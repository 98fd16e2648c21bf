# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""SPICE through the browser relay: the link the relay completes with the ticket (fake streams on both sides, a real
RSA key), QEMU's MAIN_INIT read on the way, which channel sockets a main relay admits, and the .vv the relay reads
(tests/integration/test_portal.py runs it against a real QEMU, squid and Chromium)."""

from __future__ import annotations

import asyncio
import struct

import pytest

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from ansible_collections.vmconsole.secure.plugins.module_utils._relay import RelayError, Relay
from ansible_collections.vmconsole.secure.plugins.module_utils._relay_spice import (
    MAIN_INIT_WITHIN,
    MSG_MAIN_INIT,
    ByteReader,
    MainInitWatch,
    SpiceRelays,
    TappedReader,
    console_from_vv,
    link_channel,
    parse_link_mess,
    read_link_mess,
)
from ansible_collections.vmconsole.secure.plugins.module_utils._vv import proxy_url, render_vv

TICKET = "Spice-ticket_0123456789abcdefghijklmnopqrstuvw"
AUTH_SELECTION, MINI_HEADER = 1 << 0, 1 << 3
KEY = rsa.generate_private_key(public_exponent=65537, key_size=1024)
PUB_DER = KEY.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
CA = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def link_mess(channel_type=1, connection_id=0, common=AUTH_SELECTION | MINI_HEADER):
    """What spice-html5 sends first on a channel (spiceconn.js send_hdr)."""
    body = struct.pack("<IBBIII", connection_id, channel_type, 0, 1, 0, 18) + struct.pack("<I", common)
    return struct.pack("<4sIII", b"REDQ", 2, 2, len(body)) + body


def link_reply(error=0, common=AUTH_SELECTION | MINI_HEADER | (1 << 1)):
    body = struct.pack("<I162sIII", error, PUB_DER, 1, 0, 178) + struct.pack("<I", common)
    return struct.pack("<4sIII", b"REDQ", 2, 2, len(body)) + body


class Browser:
    """The WebSocket's messages (chunks as the browser sent them) and what reached it."""

    def __init__(self, *chunks):
        self.chunks = list(chunks)
        self.got = b""
        self.reader = ByteReader(self.receive)

    async def receive(self):
        return self.chunks.pop(0) if self.chunks else b""

    async def send(self, data):
        self.got += data


class Qemu:
    """QEMU's side: a StreamReader with its answers, a writer that keeps what the relay sent."""

    def __init__(self, answer):
        self.reader = asyncio.StreamReader()
        self.reader.feed_data(answer)
        self.reader.feed_eof()
        self.sent = b""
        self.closed = False

    def write(self, data):
        self.sent += data

    async def drain(self):
        pass

    def close(self):
        self.closed = True


def link(browser, qemu_answer, mess=None):
    async def scenario():
        qemu = Qemu(qemu_answer)
        found = await read_link_mess(browser.reader)
        result = await link_channel(browser.reader, browser.send, qemu.reader, qemu, mess or found, TICKET, timeout=5)
        return result, qemu, found
    return asyncio.run(scenario())


def decrypt(data):
    return KEY.decrypt(data, padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None))


def test_the_relay_links_with_the_ticket_and_drops_the_browsers():
    mess = link_mess()
    browsers_own = b"\xee" * 128
    # The browser's messages need not match SPICE's framing: the header comes in two pieces here.
    browser = Browser(mess[:7], mess[7:], struct.pack("<I", 1) + browsers_own, b"after-the-link")
    (code, mini), qemu, found = link(browser, link_reply() + struct.pack("<I", 0))
    assert (code, mini) == (0, True) and (found.channel_type, found.connection_id) == (1, 0)
    assert qemu.sent[:len(mess)] == mess                                # the browser's link message, as it was
    mechanism, encrypted = qemu.sent[len(mess):len(mess) + 4], qemu.sent[len(mess) + 4:]
    assert mechanism == struct.pack("<I", 1) and len(encrypted) == 128
    assert decrypt(encrypted) == TICKET.encode() + b"\0"                # QEMU gets the .vv's ticket, RSA-OAEP SHA-1
    assert browsers_own not in qemu.sent
    assert browser.got == link_reply() + struct.pack("<I", 0)           # QEMU's reply and result, nothing more
    assert TICKET.encode() not in browser.got
    assert browser.reader.leftover() == b"" and browser.chunks == [b"after-the-link"]


def test_without_auth_selection_no_mechanism_is_read_or_sent():
    mess = link_mess(common=MINI_HEADER)
    browser = Browser(mess, b"\x01" * 128)
    (code, mini), qemu, _found = link(browser, link_reply() + struct.pack("<I", 0))
    assert (code, mini) == (0, True) and len(qemu.sent) == len(mess) + 128
    assert decrypt(qemu.sent[len(mess):]) == TICKET.encode() + b"\0"


def test_without_mini_headers_on_both_sides_the_channel_has_full_headers():
    browser = Browser(link_mess(), struct.pack("<I", 1) + b"\0" * 128)
    (code, mini), _qemu, _found = link(browser, link_reply(common=AUTH_SELECTION) + struct.pack("<I", 0))
    assert (code, mini) == (0, False)


def test_qemus_refusals_reach_the_browser():
    browser = Browser(link_mess(), struct.pack("<I", 1) + b"\0" * 128)
    (code, _mini), _qemu, _found = link(browser, link_reply() + struct.pack("<I", 7))     # PERMISSION_DENIED
    assert code == 7 and browser.got.endswith(struct.pack("<I", 7))
    browser = Browser(link_mess())
    (code, _mini), qemu, _found = link(browser, struct.pack("<4sIII", b"REDQ", 2, 2, 4) + struct.pack("<I", 5))
    assert code == 5 and qemu.sent == link_mess()                       # NEED_SECURED: no ticket was sent


def test_sasl_from_the_browser_is_refused_before_the_ticket():
    browser = Browser(link_mess(), struct.pack("<I", 2) + b"\0" * 128)
    with pytest.raises(RelayError) as info:
        link(browser, link_reply() + struct.pack("<I", 0))
    assert info.value.reason == "spice_auth"


@pytest.mark.parametrize("first, reason", [
    (b"GET / HTTP/1.1\r\n", "not_spice"),
    (struct.pack("<4sIII", b"REDQ", 1, 0, 18), "not_spice"),              # SPICE 1
    (struct.pack("<4sIII", b"REDQ", 2, 2, 1 << 20), "not_spice"),         # a link message of a megabyte
    (b"REDQ", "browser_closed"),                                          # the browser went away
])
def test_what_is_not_a_spice_link_is_refused(first, reason):
    with pytest.raises(RelayError) as info:
        asyncio.run(read_link_mess(Browser(first).reader))
    assert info.value.reason == reason


def test_caps_outside_the_message_are_refused():
    body = struct.pack("<IBBIII", 0, 1, 0, 9, 0, 18)
    with pytest.raises(RelayError, match="capabilities outside"):
        parse_link_mess(b"h" * 16, body)


def test_qemu_going_away_is_a_relay_error():
    browser = Browser(link_mess(), struct.pack("<I", 1) + b"\0" * 128)
    with pytest.raises(RelayError) as info:
        link(browser, link_reply()[:20])
    assert info.value.reason == "console_closed"


def mini(msg_type, payload):
    return struct.pack("<HI", msg_type, len(payload)) + payload


def test_main_init_gives_the_session_id_in_any_pieces():
    stream = mini(4, b"p" * 12) + mini(MSG_MAIN_INIT, struct.pack("<II", 0xCAFE1234, 1) + b"x" * 20) + mini(7, b"y")
    watch = MainInitWatch(mini=True)
    for index in range(len(stream)):
        watch.feed(stream[index:index + 1])                             # byte by byte
    assert watch.done and watch.session_id == 0xCAFE1234


def test_main_init_with_full_headers():
    header = struct.pack("<QHII", 1, MSG_MAIN_INIT, 8, 0)
    watch = MainInitWatch(mini=False)
    assert watch.feed(header + struct.pack("<II", 77, 1)) == 77


def test_no_main_init_among_the_first_messages_is_none():
    watch = MainInitWatch(mini=True)
    watch.feed(mini(4, b"") * MAIN_INIT_WITHIN + mini(MSG_MAIN_INIT, struct.pack("<I", 5)))
    assert watch.done and watch.session_id is None


def test_the_tapped_reader_passes_everything_on():
    async def scenario():
        reader = asyncio.StreamReader()
        data = mini(MSG_MAIN_INIT, struct.pack("<I", 9)) + b"rest"
        reader.feed_data(data)
        reader.feed_eof()
        watch = MainInitWatch(mini=True)
        tapped = TappedReader(reader, watch)
        got = b""
        while True:
            chunk = await tapped.read(3)
            if not chunk:
                return got == data, watch.session_id
            got += chunk
    assert asyncio.run(scenario()) == (True, 9)


def parsed(channel_type, connection_id):
    return parse_link_mess(b"", link_mess(channel_type, connection_id)[16:])


def test_a_main_relay_admits_its_own_channels_only():
    relays = SpiceRelays(per_main=2)
    relay = Relay("alice", "vm1", "spice", "s1", 0)
    events = [asyncio.Event() for dummy in range(4)]
    assert relays.admit("t1", "s1", parsed(2, 42), events[0]) == (None, "ticket")      # no main relay yet
    watch = MainInitWatch(mini=True)
    main = relays.open_main("t1", relay, "s1", dict(ticket=TICKET), watch)
    assert relays.admit("t1", "s1", parsed(2, 42), events[0]) == (None, "channel")     # its session id not seen yet
    watch.feed(mini(MSG_MAIN_INIT, struct.pack("<I", 42)))
    assert relays.admit("t1", "s2", parsed(2, 42), events[0]) == (None, "ticket")      # another portal session
    assert relays.admit("t2", "s1", parsed(2, 42), events[0]) == (None, "ticket")      # another ticket
    assert relays.admit("t1", "s1", parsed(1, 42), events[0]) == (None, "channel")     # a second MAIN
    assert relays.admit("t1", "s1", parsed(3, 43), events[0]) == (None, "channel")     # another SPICE session
    assert relays.admit("t1", "s1", parsed(2, 42), events[0]) == (main, None)
    assert relays.admit("t1", "s1", parsed(3, 42), events[1]) == (main, None)
    assert relays.admit("t1", "s1", parsed(4, 42), events[2]) == (None, "limit")
    relays.release(main, events[1])
    assert relays.admit("t1", "s1", parsed(4, 42), events[2]) == (main, None)
    relays.close_main("t1")
    assert events[0].is_set() and events[2].is_set() and not events[1].is_set()        # the open channels end
    assert relays.admit("t1", "s1", parsed(3, 42), events[3]) == (None, "ticket") and len(relays) == 0


def vv(**changes):
    values = dict(protocol="spice", host="hv2", password=TICKET, tls_port=61001, ca_pem=CA, host_subject="O=x,CN=hv2",
                  proxy=proxy_url("hv1", 3128, "alice__vm1", "v3_token-x"))
    values.update(changes)
    return render_vv(**values)


def test_the_relay_reads_the_persons_vv():
    assert console_from_vv(vv(), expires=99) == dict(
        proxy_host="hv1", proxy_port=3128, username="alice__vm1", token="v3_token-x", host="hv2", port=61001, ca=CA,
        host_subject="O=x,CN=hv2", ticket=TICKET, expires=99)


@pytest.mark.parametrize("changes, reason", [
    (dict(proxy=None), "no_proxy"),
    (dict(proxy="http://hv1:3128"), "no_proxy"),
    (dict(tls_port=None, port=5900), "no_tls"),
    (dict(ca_pem=None), "no_tls"),
])
def test_a_vv_without_what_the_relay_needs_is_refused(changes, reason):
    with pytest.raises(RelayError) as info:
        console_from_vv(vv(**changes))
    assert info.value.reason == reason and TICKET not in str(info.value)
