# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""What the portal's WebSocket relay costs a browser console, against a direct TLS connection to the same QEMU port.

Run from the repository root after `. tools/env.sh`, as root:
    python benchmarks/browser_relay.py [--quick] [--rounds 5] [--pings 2000] [--upload-mib 32] [--frames 10]
                                       [--relays 100] [--hold 60]

Starts, of its own, one node as tests/integration/test_portal.py does (``guest_portal``): the boot-sector guest
with a VGA screen on VeNCrypt VNC (``VncGuest``: TLS with the test PKI, password=on), squid with the token helper,
the portal's root agent and its web process (HTTPS on a free loopback port). The console measured is VNC, because
it is the one whose QEMU end answers at once in both directions: QEMU consumes a client's messages as they come
and answers some at once, where the serial console's far end is the boot-sector guest polling a 16550 UART between
timer ticks (bytes to it wait up to 55 ms, a few hundred bytes a second: the guest, not the relay, would be
measured). Two viewers of the same VNC port, each an RFB client written here:

- direct: TCP to QEMU's VNC port, VeNCrypt X509VNC with a ticket set over QMP (``_vnc.vnc_connect``, the relay's own
  handshake code), then RFB inside that TLS session: the floor the relay stands on;
- relay: what noVNC does: a relay ticket from the portal's page, the WebSocket to ``/relay/v1`` offering
  permessage-deflate as Chromium does, the relay's RFB handshake (security type None), then the same RFB.
  Behind it: the agent's ticket, squid's CONNECT with the proxy token, VeNCrypt TLS to QEMU.

Measured, interleaved so that both see the same machine state:

1. added latency: a round trip through QEMU (SetEncodings with the ExtendedKeyEvent pseudo-encoding, which QEMU
   acknowledges at once), on the direct connection and on the relay, in pairs; relay minus direct per pair;
2. browser -> QEMU: ``--upload-mib`` MiB of ClientCutText messages (32 KiB each: one WebSocket message each, under
   the relay's 64 KiB message limit; QEMU copies each into its clipboard), closed by a round trip: MB/s;
3. QEMU -> browser: ``--frames`` full-screen FramebufferUpdates in raw 32-bit pixels (1.2 MB each). QEMU sends an
   update at its next display refresh (30 ms to 3 s apart), so the time counted is from the update's first bytes
   to its last: how fast the path carries what QEMU sends;
4. ``--relays`` relays opened at once by one person, to the one VM (the portal's limits and QEMU's limit of VNC
   clients, 32 by default, raised for it: with QEMU's default the 33rd and later were closed), held ``--hold`` s
   together, each doing a round trip every 100 ms; every refusal, close, timeout or wrong answer is an error. The
   portal's RSS (VmRSS) before and while they are held: memory per relay.

Goal (issue #19): ratio relay / direct at least 0.5 both ways, p99 added latency under 5 ms on loopback, 0 errors.
Prints a table; exits 1 on any error in (4). Every process is stopped by PID at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import secrets
import shutil
import ssl
import statistics
import struct
import sys
import time

from ansible_collections.vmconsole.secure.plugins.module_utils._relay_vnc import StreamBridge
from ansible_collections.vmconsole.secure.plugins.module_utils._vnc import vnc_connect
from ansible_collections.vmconsole.secure.tests.integration import _procs
from ansible_collections.vmconsole.secure.tests.integration.test_portal import (
    Browser, VncGuest, WSBytes, guest_portal, open_relay, vnc_relay_ticket,
)

EXT_KEY_EVENT = -258                    # QEMU's ExtendedKeyEvent pseudo-encoding: acknowledged at once
PING = struct.pack(">BxHii", 2, 2, 0, EXT_KEY_EVENT)            # SetEncodings [raw, ExtendedKeyEvent]
PIXEL_FORMAT = struct.pack(">B3xBBBBHHHBBB3x", 0, 32, 24, 0, 1, 255, 255, 255, 16, 8, 0)
CUT_MESSAGE = 32 * 1024                 # bytes per ClientCutText message (and per WebSocket message)
HOLD_INTERVAL = 0.1


def percentile(values, share):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(share * (len(ordered) - 1))))]


class CpuMeter:
    """CPU seconds spent by each of the processes a console's bytes cross, per phase."""

    def __init__(self, pids):
        self.pids = pids                        # {name: pid or None (this process: the viewers)}
        self.spent = {}

    def start(self):
        return {name: _procs.cpu_seconds(pid) for name, pid in self.pids.items()}

    def stop(self, phase, started):
        spent = self.spent.setdefault(phase, dict.fromkeys(self.pids, 0.0))
        for name, pid in self.pids.items():
            spent[name] += _procs.cpu_seconds(pid) - started[name]


def rss_kib(pid):
    with open("/proc/%d/status" % pid, encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS for %d" % pid)


class Rfb:
    """An RFB viewer after the security handshake: ``read(n)`` exact bytes, ``send(data)`` one write (async)."""

    def __init__(self, read, send, close):
        self.read, self.send, self.close = read, send, close
        self.width = self.height = None

    async def client_init(self):
        await self.send(b"\1")                                          # shared
        self.width, self.height = struct.unpack(">HH", await self.read(4))
        await self.read(16)
        await self.read(struct.unpack(">I", await self.read(4))[0])
        await self.send(PIXEL_FORMAT)

    async def _update(self, until_ack):
        """Read one server message; (pixel bytes, seconds from its first bytes to its last, whether it was the ack)."""
        kind = (await self.read(1))[0]
        if kind == 2:                                                   # Bell
            return 0, 0.0, False
        if kind != 0:
            raise RuntimeError("unexpected server message %d" % kind)
        start = time.perf_counter()
        count = struct.unpack(">xH", await self.read(3))[0]
        pixels, acked = 0, False
        for dummy in range(count):
            x, y, width, height, encoding = struct.unpack(">HHHHi", await self.read(12))
            if encoding == 0:
                await self.read(width * height * 4)
                pixels += width * height * 4
            elif encoding == EXT_KEY_EVENT:
                acked = True
            else:
                raise RuntimeError("unexpected encoding %d at %d,%d" % (encoding, x, y))
        if until_ack and not acked and pixels == 0:
            raise RuntimeError("an empty update")
        return pixels, time.perf_counter() - start, acked

    async def ping(self):
        """Seconds of one round trip through QEMU."""
        start = time.perf_counter()
        await self.send(PING)
        while not (await self._update(True))[2]:
            pass
        return time.perf_counter() - start

    async def upload(self, total):
        """Seconds to send ``total`` bytes of ClientCutText and have QEMU take them all (a round trip after)."""
        message = struct.pack(">B3xI", 6, CUT_MESSAGE - 8) + b"x" * (CUT_MESSAGE - 8)
        start = time.perf_counter()
        for dummy in range(total // CUT_MESSAGE):
            await self.send(message)
        await self.ping()
        return time.perf_counter() - start

    async def frame(self):
        """(bytes, seconds) of one full-screen update, timed from its first bytes to its last."""
        await self.send(struct.pack(">BBHHHH", 3, 0, 0, 0, self.width, self.height))
        while True:
            pixels, seconds, dummy = await self._update(False)
            if pixels:
                return pixels, seconds


async def direct_viewer(node):
    """An Rfb on a direct VeNCrypt connection to QEMU, with a ticket set over QMP and expired after the handshake."""
    password = secrets.token_urlsafe(6)[:8]
    with node.vm.qmp() as qmp:
        qmp.execute("set_password", {"protocol": "vnc", "password": password})
        qmp.execute("expire_password", {"protocol": "vnc", "time": "+10"})
    reader, writer = await asyncio.open_connection("127.0.0.1", node.vm.vnc_port)
    loop = asyncio.get_running_loop()
    context = ssl.create_default_context(cafile=node.pki.ca_file)
    await loop.run_in_executor(None, functools.partial(
        vnc_connect, StreamBridge(loop, reader, writer), password, address="127.0.0.1:%d" % node.vm.vnc_port,
        context=context, server_hostname=node.name, timeout=10))
    with node.vm.qmp() as qmp:
        qmp.execute("expire_password", {"protocol": "vnc", "time": "now"})

    async def send(data):
        writer.write(data)
        await writer.drain()

    async def close():
        writer.close()
    viewer = Rfb(reader.readexactly, send, close)
    await viewer.client_init()
    return viewer


async def relay_viewer(browser, deflate=True):
    """An Rfb through the portal's relay, as noVNC opens it (a relay ticket, the WebSocket, RFB with type None)."""
    loop = asyncio.get_running_loop()
    ticket = await loop.run_in_executor(None, vnc_relay_ticket, browser)
    sock, session = await open_relay(browser, ticket, compress=15 if deflate else 0)
    wire = WSBytes(sock)

    async def close():
        await sock.close()
        await session.close()
    try:
        if await wire.read(12) != b"RFB 003.008\n":
            raise RuntimeError("the relay does not offer RFB 3.8")
        await sock.send_bytes(b"RFB 003.008\n")
        await wire.read((await wire.read(1))[0])
        await sock.send_bytes(b"\1")                                    # None
        if await wire.read(4) != b"\0\0\0\0":
            raise RuntimeError("the relay's SecurityResult is not OK")
        viewer = Rfb(wire.read, sock.send_bytes, close)
        await viewer.client_init()
    except BaseException:
        await close()
        raise
    return viewer


async def measure(node, args):
    browser = Browser(node)
    browser.login("alice")
    direct, relay = await direct_viewer(node), await relay_viewer(browser, not args.no_deflate)
    for viewer in (direct, relay):                                      # warm: the first updates, the TLS sessions
        await viewer.ping()
        await viewer.frame()
    out = dict(direct_ping=[], relay_ping=[], added=[], up={"direct": [], "relay": []},
               down={"direct": [0, 0.0], "relay": [0, 0.0]}, moved={})
    meter = out["cpu"] = CpuMeter(dict(viewers=None, portal=node.portal.pid, squid=node.squid.proc.pid, qemu=node.vm.pid))
    total = args.upload_mib * 1024 * 1024
    per_round = max(1, args.pings // args.rounds)
    for dummy in range(args.rounds):
        for dummy in range(per_round):
            one = await direct.ping()
            two = await relay.ping()
            out["direct_ping"].append(one)
            out["relay_ping"].append(two)
            out["added"].append(two - one)
        for name, viewer in (("direct", direct), ("relay", relay)):
            started = meter.start()
            out["up"][name].append(total / await viewer.upload(total))
            meter.stop("up " + name, started)
            out["moved"]["up " + name] = out["moved"].get("up " + name, 0) + total
        for dummy in range(args.frames):
            for name, viewer in (("direct", direct), ("relay", relay)):
                started = meter.start()
                pixels, seconds = await viewer.frame()
                meter.stop("down " + name, started)
                out["down"][name][0] += pixels
                out["down"][name][1] += seconds
                out["moved"]["down " + name] = out["moved"].get("down " + name, 0) + pixels
    for viewer in (direct, relay):
        await viewer.close()
    return out, browser


async def hold(node, browser, count, seconds, at_once):
    """(relays held to the end, errors, opening seconds, RSS before, most RSS while held, load average)."""
    errors, viewers = [], []
    pid = node.portal.pid
    before = rss_kib(pid)
    started = time.perf_counter()
    gate = asyncio.Semaphore(count if at_once else 1)

    async def one():
        async with gate:
            try:
                viewers.append(await relay_viewer(browser))
            except Exception as exc:  # pylint: disable=broad-except
                errors.append("open: %s: %s" % (exc.__class__.__name__, exc))
    await asyncio.gather(*(one() for dummy in range(count)))
    opened = time.perf_counter() - started
    most, end = before, time.monotonic() + seconds
    held = []

    async def keep(viewer):
        try:
            while time.monotonic() < end:
                await asyncio.wait_for(viewer.ping(), 10)
                await asyncio.sleep(HOLD_INTERVAL)
            held.append(viewer)
        except Exception as exc:  # pylint: disable=broad-except
            errors.append("held: %s: %s" % (exc.__class__.__name__, exc))

    async def watch():
        nonlocal most
        while time.monotonic() < end:
            most = max(most, rss_kib(pid))
            await asyncio.sleep(1)
    load = os.getloadavg()[0]
    await asyncio.gather(watch(), *(keep(viewer) for viewer in viewers))
    for viewer in viewers:
        await viewer.close()
    return len(held), errors, opened, before, most, load


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs and a 10 s hold of 20 relays")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--pings", type=int, default=2000)
    parser.add_argument("--upload-mib", type=int, default=32)
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--relays", type=int, default=100)
    parser.add_argument("--hold", type=float, default=60)
    parser.add_argument("--no-deflate", action="store_true", help="the relay's client does not offer permessage-deflate")
    parser.add_argument("--open-one-by-one", action="store_true", help="open the held relays one after the other")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.pings, args.upload_mib, args.frames, args.relays, args.hold = 3, 300, 8, 4, 20, 10
    pki = _procs.make_pki(_procs.short_tmpdir("vmc-bench-pki-"))
    squids, folders = [], [pki.dir]

    def start_squid(signers, self_name, vms):
        folder = _procs.short_tmpdir("vmc-bench-squid-")
        folders.append(folder)
        squids.append(_procs.Squid(folder, signers, self_name=self_name, vms=vms))
        return squids[-1]
    limit = args.relays + 10
    try:
        with guest_portal(pki, start_squid, "vmc-bench-relay-",
                          lambda folder, disk: VncGuest("vm1", folder, disk=disk, pki_dir=pki.dir,
                                                        vnc_connections=limit),
                          relays=dict(per_user=limit, per_vm=limit)) as node:
            load = os.getloadavg()[0]
            out, browser = asyncio.run(measure(node, args))
            held, errors, opened, before, most, hold_load = asyncio.run(
                hold(node, browser, args.relays, args.hold, not args.open_one_by_one))
    finally:
        for squid in squids:
            squid.stop()
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)

    ms = 1000.0
    print("browser relay: VNC through the portal's relay against a direct VeNCrypt connection to the same QEMU port")
    print("Python %s, %d CPUs, load average %.2f at the start, %.2f at the hold" % (
        sys.version.split()[0], os.cpu_count(), load, hold_load))
    print("1. round trip through QEMU, %d pairs (ms)                    median       p99" % len(out["added"]))
    for label, values in (("direct", out["direct_ping"]), ("relay", out["relay_ping"]),
                          ("added by the relay (relay - direct, per pair)", out["added"])):
        print("  %-58s %7.3f   %7.3f" % (label, statistics.median(values) * ms, percentile(values, 0.99) * ms))
    up = {name: statistics.median(values) / 1e6 for name, values in out["up"].items()}
    down = {name: pixels / seconds / 1e6 for name, (pixels, seconds) in out["down"].items()}
    print("2. browser -> QEMU, %d MiB of ClientCutText, median of %d (MB/s)" % (args.upload_mib, args.rounds))
    print("  %-58s %7.0f" % ("direct", up["direct"]))
    print("  %-58s %7.0f" % ("relay", up["relay"]))
    print("  %-58s %7.2f" % ("ratio relay / direct", up["relay"] / up["direct"]))
    print("3. QEMU -> browser, %d full-screen raw updates each (MB/s, first to last byte)" % (args.frames * args.rounds))
    print("  %-58s %7.0f" % ("direct", down["direct"]))
    print("  %-58s %7.0f" % ("relay", down["relay"]))
    print("  %-58s %7.2f" % ("ratio relay / direct", down["relay"] / down["direct"]))
    print("   CPU per MB moved (ms), each process: %s" % ", ".join(out["cpu"].pids))
    for phase, spent in out["cpu"].spent.items():
        megabytes = out["moved"][phase] / 1e6
        print("  %-58s %s" % (phase, "  ".join("%6.2f" % (seconds * 1000 / megabytes) for seconds in spent.values())))
    print("4. %d relays %s, held %g s, a round trip each every %g s" % (
        args.relays, "opened one by one" if args.open_one_by_one else "opened at once", args.hold, HOLD_INTERVAL))
    print("  %-58s %7.2f s" % ("all relays open", opened))
    print("  %-58s %7d" % ("relays held to the end", held))
    print("  %-58s %7d" % ("errors", len(errors)))
    print("  %-58s %d -> %d KiB" % ("the portal's memory (RSS): before -> most while held", before, most))
    print("  %-58s %7.1f KiB" % ("memory per relay", (most - before) / max(1, args.relays)))
    shown = {}
    for error in errors:
        shown[error] = shown.get(error, 0) + 1
    for error, count in list(shown.items())[:5]:
        print("  error: %s (x%d)" % (error, count))
    return 1 if errors or held != args.relays else 0


if __name__ == "__main__":
    sys.exit(main())
