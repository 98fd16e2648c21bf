# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The browser consoles' relay tickets and limits, and the CONNECT request (the relay itself runs against a real
QEMU and squid in tests/integration/test_portal.py)."""

from __future__ import annotations

import asyncio
import base64

import pytest

from ansible_collections.vmconsole.secure.plugins.module_utils._relay import (
    ENDED,
    FOLLOW_WITHIN,
    MOVED,
    STAYED,
    TRANSIT,
    Placement,
    RelayError,
    RelayLimits,
    RelayTickets,
    connect_request,
    console_fate,
    follow_console,
    open_through_proxy,
    placement_of,
    reconnect_bounds,
)


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_a_ticket_works_once_for_its_session():
    tickets = RelayTickets()
    ticket = tickets.mint("alice", "vm1", "serial", "s1")
    relay = tickets.take(ticket, "s1")
    assert (relay.user, relay.vm, relay.console, relay.session) == ("alice", "vm1", "serial", "s1")
    assert tickets.take(ticket, "s1") is None                       # used


def test_a_ticket_of_another_session_is_refused_and_gone():
    tickets = RelayTickets()
    ticket = tickets.mint("alice", "vm1", "serial", "s1")
    assert tickets.take(ticket, "s2") is None
    assert tickets.take(ticket, "s1") is None                       # a refused try used it up


def test_a_ticket_expires():
    clock = Clock()
    tickets = RelayTickets(ttl=30, clock=clock)
    early, late = tickets.mint("a", "vm1", "serial", "s"), tickets.mint("a", "vm1", "serial", "s")
    clock.now += 29.9
    assert tickets.take(early, "s") is not None
    clock.now += 0.1
    assert tickets.take(late, "s") is None


@pytest.mark.parametrize("bad", [None, "", "x" * 129, 42, "unknown"])
def test_no_ticket_is_no_relay(bad):
    assert RelayTickets().take(bad, "s") is None


def test_an_unknown_console_gets_no_ticket():
    with pytest.raises(ValueError, match="console must be one of serial"):
        RelayTickets().mint("a", "vm1", "telnet", "s")


def test_the_store_is_bounded_oldest_first():
    tickets = RelayTickets(limit=3)
    made = [tickets.mint("a", "vm1", "serial", "s") for dummy in range(4)]
    assert tickets.take(made[0], "s") is None and tickets.take(made[3], "s") is not None


def test_limits_per_person_and_per_vm():
    limits = RelayLimits(per_user=2, per_vm=3)
    assert limits.acquire("alice", "vm1") and limits.acquire("alice", "vm2")
    assert not limits.acquire("alice", "vm3")                       # alice has 2
    assert limits.acquire("bob", "vm1") and limits.acquire("carol", "vm1")
    assert not limits.acquire("dave", "vm1")                        # vm1 has 3
    limits.release("alice", "vm1")
    assert limits.acquire("dave", "vm1") and limits.acquire("alice", "vm3")


def test_the_connect_request_carries_the_token():
    request = connect_request("hv2", 62001, "alice__vm1", "v3_token")
    assert request.startswith(b"CONNECT hv2:62001 HTTP/1.1\r\nHost: hv2:62001\r\n")
    assert b"Proxy-Authorization: Basic " + base64.b64encode(b"alice__vm1:v3_token") in request
    assert connect_request("fd00::2", 1, "u", "t").startswith(b"CONNECT [fd00::2]:1 ")


def test_a_refusing_proxy_is_a_relay_error():
    async def scenario():
        async def proxy(reader, writer):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 403 Forbidden\r\n\r\n")
            await writer.drain()
            writer.close()
        server = await asyncio.start_server(proxy, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            with pytest.raises(RelayError) as info:
                await open_through_proxy("127.0.0.1", port, "hv1", 62000, "u", "t", None, timeout=5)
            return info.value.reason, str(info.value)
        finally:
            server.close()
    assert asyncio.run(scenario()) == ("proxy_refused", "the proxy refused the console (403)")


def test_an_unreachable_proxy_is_a_relay_error():
    with pytest.raises(RelayError) as info:
        asyncio.run(open_through_proxy("127.0.0.1", 1, "hv1", 62000, "u", "t", None, timeout=5))
    assert info.value.reason == "proxy_down"


# --- what became of the VM when a relay's console end closed ------------------------------------------------

HV1 = Placement("hv1", "a1-1")


def entry(node, state="running", here=True, instance="a1-1"):
    return dict(name="vm1", node=node, state=state, here=here, consoles=["spice"], instance=instance)


@pytest.mark.parametrize("now, fate", [
    (entry("hv2", instance="b7-2"), MOVED),                          # live migration to another node
    (entry("hv2", instance=None), MOVED),                            # another node, its QEMU's instance unknown
    (entry("hv1", instance="c3-9"), MOVED),                          # a new QEMU on the same node
    (entry("hv1"), STAYED),                                          # same node, same QEMU: a cut, not a move
    (entry("hv1", instance=None), STAYED),                           # same node, nothing says another QEMU
    (entry("hv1", state="paused"), STAYED),
    (entry("hv2", state="inmigrate", here=False), TRANSIT),          # the target has not taken over yet
    (entry("hv1", state="postmigrate", here=False), TRANSIT),
    (entry("hv1", state="stopped", here=False), ENDED),              # shut down: nothing to reconnect to
    (entry("hv1", state="shutdown", here=False), ENDED),
    (None, ENDED),                                                   # no node lists it any more
])
def test_the_fate_of_a_vm_whose_console_closed(now, fate):
    assert console_fate(HV1, now) == fate


def test_a_placement_is_the_node_and_the_qemu():
    assert placement_of(entry("hv1")) == HV1
    assert placement_of(dict(node="hv2", here=True)) == Placement("hv2", None)


def test_a_relay_without_an_instance_still_sees_another_node():
    assert console_fate(Placement("hv1", None), entry("hv1", instance="c3-9")) == STAYED
    assert console_fate(Placement("hv1", None), entry("hv2")) == MOVED


class Answers:
    """``where()`` answering the given entries in turn (the last again), on a fake clock that ``sleep`` advances."""

    def __init__(self, *entries):
        self.entries, self.asked, self.clock, self.slept = list(entries), 0, Clock(), []

    async def where(self):
        self.asked += 1
        answer = self.entries[min(self.asked, len(self.entries)) - 1]
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def sleep(self, seconds):
        self.slept.append(seconds)
        self.clock.now += seconds

    def follow(self, **bounds):
        return asyncio.run(follow_console(self.where, HV1, clock=self.clock, sleep=self.sleep, **bounds))


def test_a_cut_is_told_at_once_and_never_a_move():
    answers = Answers(entry("hv1"))
    assert answers.follow() == (STAYED, entry("hv1")) and answers.asked == 1 and answers.slept == []


def test_a_vm_in_transit_is_asked_for_again_until_it_runs():
    arrived = entry("hv2", instance="b7-2")
    answers = Answers(entry("hv1", "postmigrate", here=False), entry("hv2", "inmigrate", here=False), arrived)
    assert answers.follow(interval=0.25) == (MOVED, arrived)
    assert answers.asked == 3 and answers.slept == [0.25, 0.25]


def test_a_vm_that_stays_in_transit_is_ended_within_the_bound():
    answers = Answers(entry("hv2", "inmigrate", here=False))
    fate, _entry = answers.follow(within=2.0, interval=0.25)
    assert fate == ENDED and sum(answers.slept) == pytest.approx(2.0) and answers.asked == 9
    assert Answers(entry("hv2", "inmigrate", here=False)).follow()[0] == ENDED and FOLLOW_WITHIN <= 30


@pytest.mark.parametrize("error", [OSError("down"), ValueError("not JSON"), asyncio.TimeoutError()])
def test_a_cluster_that_cannot_be_asked_is_no_reconnection(error):
    assert Answers(error).follow() == (ENDED, None)


def test_the_pages_reconnection_bounds():
    text = reconnect_bounds()
    assert text == 'data-reconnect-tries="5" data-reconnect-delay="0.25" data-reconnect-within="30"'
