# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The browser consoles' relay (private): relay tickets, relay limits, and the way to a console through the proxy.

A browser console is a WebSocket to the portal (``_portal``), which relays its bytes to the console
the way a person's own client goes: a CONNECT through the node's proxy with a proxy token for that
person (minted by the agent of the VM's node), then TLS to QEMU with the host certificate verified.
Console ports stay on 127.0.0.1 and every hop is encrypted. Stdlib only.

- :class:`RelayTickets`: what a console page holds to open its WebSocket. Single use, short-lived
  (:data:`RELAY_TICKET_TTL`), bound to the person's session, the VM and the console; kept as a hash.
- :class:`RelayLimits`: at most so many relays per person and per VM at once.
- :class:`VncTurns`: one VNC relay of a VM at a time between its ticket and its handshake.
- :func:`open_through_proxy`: the CONNECT (with the proxy token) and the TLS handshake.
- :func:`console_fate` and :func:`follow_console`: when a relay's console end closes, what became of the VM: it moved
  (another node, or a new QEMU on the same node: a live migration; the page gets :data:`MOVED` and opens the console
  again), it runs where it ran (a cut, or the console closed it: no reconnection) or it runs nowhere.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import hashlib
import secrets
import threading
import time

RELAY_TICKET_TTL = 30
# The buffer limit of a relay's stream from the console (asyncio's StreamReader pauses reading at twice this; its
# default is 64 KiB): the relay reads up to this much at once (``_portal._pump``).
RELAY_STREAM_LIMIT = 1 << 18
RELAY_TICKETS_MAX = 10000
CONSOLES = ("serial", "vnc", "spice")

# What became of a VM whose console end closed under a relay (:func:`console_fate`).
MOVED, STAYED, TRANSIT, ENDED = "moved", "stayed", "transit", "ended"
# QMP run states of a VM that is being moved: the target's "inmigrate", the source's "postmigrate" (it handed over)
# and "finish-migrate" (the source's last step).
TRANSIT_STATES = ("inmigrate", "postmigrate", "finish-migrate")
FOLLOW_WITHIN = 15.0        # seconds a relay waits for a VM in transit to run somewhere before it calls it ended
FOLLOW_INTERVAL = 0.25      # seconds between two questions where the VM runs, while it is in transit
# The page's bounds for opening a moved console again (rendered into the page, read by its script,
# console-reconnect.js): at most RECONNECT_TRIES new relay tickets, the first at once, try n (from 1) RECONNECT_DELAY *
# 2**(n-1) seconds after the last, all within RECONNECT_WITHIN seconds of the close; then the page says the console is
# lost.
RECONNECT_TRIES = 5
RECONNECT_DELAY = 0.25
RECONNECT_WITHIN = 30

Relay = collections.namedtuple("Relay", "user vm console session expires")
# Where a relay's VM ran when the relay opened: the node and the QEMU there (the agent's ``instance``; None unknown).
Placement = collections.namedtuple("Placement", "node instance")


def placement_of(entry):
    """The :class:`Placement` of a VM entry of the portal's list of where VMs run (``node``, ``instance``)."""
    return Placement(entry["node"], entry.get("instance"))


def console_fate(before, entry):
    """What became of the VM a relay reached at ``before`` (:class:`Placement`) now that the console's end closed,
    by ``entry``, the VM in the portal's list of where VMs run now (None: no node lists it).

    - :data:`MOVED`: it runs on another node, or on the same node in another QEMU (a new ``instance``): a live
      migration (or a restart) took the console away; the browser opens it again.
    - :data:`STAYED`: it runs where it ran, in the same QEMU: a cut (``console_session``, "disconnect everyone") or
      the console itself closed the connection. No reconnection: a cut does not move the VM.
    - :data:`TRANSIT`: no node runs it, one holds it in a migration state: ask again in a moment.
    - :data:`ENDED`: it runs nowhere (stopped, or no node lists it).
    """
    if not entry:
        return ENDED
    if entry.get("here"):
        if entry.get("node") != before.node:
            return MOVED
        instance = entry.get("instance")
        if instance is not None and before.instance is not None and instance != before.instance:
            return MOVED
        return STAYED
    return TRANSIT if entry.get("state") in TRANSIT_STATES else ENDED


async def follow_console(where, before, within=FOLLOW_WITHIN, interval=FOLLOW_INTERVAL, clock=time.monotonic,
                         sleep=asyncio.sleep):
    """(fate, the VM's entry) of :func:`console_fate`, asking ``where()`` (a coroutine: the VM's entry now, None when
    no node lists it) again while the VM is in transit, at most ``within`` seconds; a VM still in transit then is
    :data:`ENDED`. A ``where`` that raises OSError, ValueError or a timeout (the nodes cannot be asked) is ENDED too:
    the page does not retry blind."""
    deadline = clock() + within
    while True:
        try:
            entry = await where()
        except (OSError, ValueError, asyncio.TimeoutError):
            return ENDED, None
        fate = console_fate(before, entry)
        if fate != TRANSIT:
            return fate, entry
        left = deadline - clock()
        if left <= 0:
            return ENDED, entry
        await sleep(min(interval, left))


def reconnect_bounds():
    """The page's bounds for opening a moved console again, as data attributes of its console element (text)."""
    return ('data-reconnect-tries="%d" data-reconnect-delay="%g" data-reconnect-within="%d"'
            % (RECONNECT_TRIES, RECONNECT_DELAY, RECONNECT_WITHIN))


def _key(ticket):
    return hashlib.sha256(ticket.encode("utf-8")).hexdigest()


class RelayTickets:
    """Single-use relay tickets: :meth:`mint` one for a page, :meth:`take` it once when its WebSocket opens."""

    def __init__(self, ttl=RELAY_TICKET_TTL, clock=time.monotonic, limit=RELAY_TICKETS_MAX):
        self.ttl, self.clock, self.limit = ttl, clock, limit
        self._tickets = collections.OrderedDict()
        self._lock = threading.Lock()

    def mint(self, user, vm, console, session):
        """A new ticket (text) for ``user``'s ``console`` of ``vm``, usable once within ``ttl`` s by ``session`` (its id)."""
        if console not in CONSOLES:
            raise ValueError("console must be one of %s" % ", ".join(CONSOLES))
        ticket = secrets.token_urlsafe(32)
        with self._lock:
            now = self.clock()
            while self._tickets and (len(self._tickets) >= self.limit or next(iter(self._tickets.values())).expires <= now):
                self._tickets.popitem(last=False)
            self._tickets[_key(ticket)] = Relay(user, vm, console, session, now + self.ttl)
        return ticket

    def take(self, ticket, session):
        """The :class:`Relay` of ``ticket`` when it is valid for ``session``; it is gone afterwards in any case.

        None for an unknown, used or expired ticket, or one minted for another session.
        """
        if not isinstance(ticket, str) or not 0 < len(ticket) <= 128:
            return None
        with self._lock:
            relay = self._tickets.pop(_key(ticket), None)
        if relay is None or relay.expires <= self.clock() or relay.session != session:
            return None
        return relay


class RelayLimits:
    """At most ``per_user`` relays of one person and ``per_vm`` relays to one VM at once."""

    def __init__(self, per_user=4, per_vm=8):
        self.per_user, self.per_vm = per_user, per_vm
        self._users = collections.Counter()
        self._vms = collections.Counter()
        self._lock = threading.Lock()

    def acquire(self, user, vm):
        """True (and counted) when one more relay of ``user`` to ``vm`` is within both limits, else False."""
        with self._lock:
            if self._users[user] >= self.per_user or self._vms[vm] >= self.per_vm:
                return False
            self._users[user] += 1
            self._vms[vm] += 1
            return True

    def release(self, user, vm):
        with self._lock:
            self._users[user] -= 1
            self._vms[vm] -= 1
            for counter, key in ((self._users, user), (self._vms, vm)):
                if counter[key] <= 0:
                    del counter[key]


class VncTurns:
    """One VNC relay of a VM at a time in this portal, from its VNC ticket to the end of its handshake (QEMU has one
    VNC password per display; the agent's lease, ``_portal_agent.VncLeases``, covers relays of other portals). A
    relay waiting for its turn holds no thread: :meth:`take` awaits an asyncio lock, :meth:`give` releases it."""

    def __init__(self):
        self._locks = {}

    async def take(self, vm):
        await self._locks.setdefault(vm, asyncio.Lock()).acquire()

    def give(self, vm):
        lock = self._locks.get(vm)
        if lock is not None and lock.locked():
            lock.release()


class RelayError(Exception):
    """The console cannot be reached: ``reason`` is a short word for the audit log, the text says why."""

    def __init__(self, reason, message):
        super().__init__(message)
        self.reason = reason


def connect_request(node, port, username, token):
    """The CONNECT request for ``node:port`` with the proxy token as Basic credentials (bytes)."""
    basic = base64.b64encode(("%s:%s" % (username, token)).encode("utf-8")).decode("ascii")
    target = "%s:%d" % ("[%s]" % node if ":" in node else node, port)
    return ("CONNECT %s HTTP/1.1\r\nHost: %s\r\nProxy-Authorization: Basic %s\r\n\r\n" % (target, target, basic)).encode()


async def open_through_proxy(proxy_host, proxy_port, node, port, username, token, context, timeout=10):
    """(reader, writer) of a TLS connection to ``node:port`` through the CONNECT proxy, the server certificate
    verified by ``context`` for the name ``node``. RelayError when the proxy refuses or TLS fails.

    ``context`` None: the tunnel as it is, for a console that starts TLS inside its own protocol (VNC's VeNCrypt,
    ``_relay_vnc``)."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(proxy_host, proxy_port,
                                                                        limit=RELAY_STREAM_LIMIT), timeout)
    except (OSError, asyncio.TimeoutError) as exc:
        raise RelayError("proxy_down", "the proxy %s:%s cannot be reached: %s" % (proxy_host, proxy_port, exc)) from None
    try:
        writer.write(connect_request(node, port, username, token))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        status = head.split(b" ", 2)[1] if head.startswith(b"HTTP/") else b""
        if status != b"200":
            raise RelayError("proxy_refused", "the proxy refused the console (%s)" % status.decode("ascii", "replace"))
        if context is not None:
            await asyncio.wait_for(writer.start_tls(context, server_hostname=node), timeout)
    except RelayError:
        writer.close()
        raise
    except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
        writer.close()
        raise RelayError("console_unreachable", "the console did not answer through the proxy: %s"
                         % (exc.__class__.__name__ if not str(exc) else exc)) from None
    return reader, writer
