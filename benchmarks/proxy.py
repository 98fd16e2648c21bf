# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""What the console proxy costs: squid with the connect_proxy helpers against going without.

Run from the repository root after `. tools/env.sh`:  python benchmarks/proxy.py [--quick]

Loopback only, as root (squid drops to user proxy). Starts, of its own:
- a TCP server standing in for a console port (a port in 61000-61999, the only range squid
  lets a CONNECT reach), in a child process so that it does not share the client's GIL;
- squid exactly as tests/integration configures it (CONNECT only, console ports, cluster node
  names, token auth helper, external ACL helper reading a VM map that lists the stand-in port);
- a second squid with the same configuration minus the helpers: `http_access allow CONNECT
  console_ports` and no auth.

and measures, interleaved so that both sides see the same machine state:

1. bulk throughput through a CONNECT tunnel of the token squid against a direct loopback
   connection to the same server, both directions;
2. CONNECT setup (TCP connect + CONNECT + "200" read) through the token squid against the
   squid without auth: with a fresh token per request (squid's ACL cache misses, the helper is
   asked: token, client binding, destination) and with the same token again (the cache answers);
3. N tunnels (default 200; --tunnels 1000 for a node's load) through the token squid, each
   with its own token, held open together for --hold seconds and echoing 1 KiB every 100 ms;
   every error is counted, and squid's memory (and its helpers') is read before and while
   they are held: the memory per tunnel.

--helper-queue N sets queue-size=N on the helper (with squid's default queue, a burst of 200
new tokens overflows the external ACL queue and squid refuses them; see benchmarks/README.md).

Prints a table; exits 1 if (3) had an error or squid died. Every process is stopped by PID at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import multiprocessing
import os
import resource
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from unittest import mock

from ansible_collections.vmconsole.secure.plugins.module_utils._tickets import (
    mint_proxy_token, new_proxy_signer,
)
from ansible_collections.vmconsole.secure.tests.integration import _procs

NODE = "vmc-bench-node"          # this node's name; squid's hosts_file resolves it to 127.0.0.1
VM = "bench"
CHUNK = 1 << 20
LENGTH = struct.Struct("!Q")
ECHO_SIZE = 1024
ECHO_INTERVAL = 0.1
REFERENCE_CONF = _procs.squid_conf


# --- the stand-in console: a threaded TCP server in a child process ------------------------------

def recv_exact(sock, size):
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("peer closed after %d of %d bytes" % (len(data), size))
        data += chunk
    return bytes(data)


def serve_one(conn, payload):
    """One connection. First byte: D<len> send len bytes, U<len> read len bytes then b"K",
    E echo until EOF. EOF before the first byte (a latency probe) just closes."""
    with conn:
        try:
            command = conn.recv(1)
            if command == b"D":
                left = LENGTH.unpack(recv_exact(conn, LENGTH.size))[0]
                while left:
                    piece = payload[:min(left, len(payload))]
                    conn.sendall(piece)
                    left -= len(piece)
            elif command == b"U":
                left = LENGTH.unpack(recv_exact(conn, LENGTH.size))[0]
                buf = bytearray(CHUNK)
                while left:
                    got = conn.recv_into(buf, min(left, CHUNK))
                    if not got:
                        return
                    left -= got
                conn.sendall(b"K")
            elif command == b"E":
                while True:
                    data = conn.recv(65536)
                    if not data:
                        return
                    conn.sendall(data)
        except OSError:
            return


def serve(listener):
    payload = memoryview(os.urandom(CHUNK))
    while True:
        conn = listener.accept()[0]
        threading.Thread(target=serve_one, args=(conn, payload), daemon=True).start()


def start_server():
    """(process, port): the stand-in console listening on 127.0.0.1, a port in 61000-61999."""
    for dummy in range(10):
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            listener.bind(("127.0.0.1", _procs.free_console_port()))
        except OSError:          # taken between the check and the bind
            listener.close()
            continue
        listener.listen(1024)
        proc = multiprocessing.get_context("fork").Process(target=serve, args=(listener,), daemon=True)
        proc.start()
        port = listener.getsockname()[1]
        listener.close()
        return proc, port
    raise RuntimeError("no free port in 61000-61999")


def stop_server(proc):
    proc.terminate()
    proc.join(5)
    if proc.is_alive():
        proc.kill()
        proc.join(5)


# --- the two squids -------------------------------------------------------------------------

def without_helpers(text):
    """The test configuration without the helpers: any CONNECT to a console port of a node."""
    drop = ("external_acl_type ", "acl console_dest ", "http_access allow console_dest")
    lines = [line for line in text.split("\n") if not line.startswith(drop)]
    lines.insert(lines.index("http_access deny all"), "http_access allow CONNECT console_ports")
    return "\n".join(lines)


def with_queue_size(queue_size):
    """An edit of the test configuration setting ``queue-size`` on the helper (None: no edit)."""
    def edit(text):
        if queue_size is None:
            return text

        def one(line):
            if not line.startswith("external_acl_type "):
                return line
            words = [word for word in line.split(" ") if not word.startswith("queue-size=")]
            words.insert(words.index("concurrency=8") + 1, "queue-size=%d" % queue_size)
            return " ".join(words)
        return "\n".join(one(line) for line in text.split("\n"))
    return edit


def start_squid(signer, vms, edit):
    """(:class:`_procs.Squid`, its folder): squid.conf is the tests' ``squid_conf`` text passed through ``edit``."""
    def conf(*, workdir, port, helper, keys_file, facts_file, self_name, **options):
        return edit(REFERENCE_CONF(workdir=workdir, port=port, helper=helper, keys_file=keys_file,
                                   facts_file=facts_file, self_name=self_name, **options))

    folder = _procs.short_tmpdir("vmc-bench-squid-")
    try:
        # _procs.Squid writes its configuration with _procs.squid_conf: swap in this one for this start.
        with mock.patch.object(_procs, "squid_conf", conf):
            return _procs.Squid(folder, [signer], self_name=NODE, vms=vms), folder
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


# --- clients ------------------------------------------------------------------------------

def connect_request(port, token=None):
    target = "%s:%d" % (NODE, port)
    lines = ["CONNECT %s HTTP/1.1" % target, "Host: %s" % target]
    if token is not None:
        basic = base64.b64encode(("%s:%s" % (token.username, token.token)).encode()).decode()
        lines.append("Proxy-Authorization: Basic %s" % basic)
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_status(sock):
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("squid closed the connection (%r)" % answer[:80])
        answer += chunk
    status = answer.split(b" ", 2)[1]
    if status != b"200":
        raise RuntimeError("squid answered %r" % answer.split(b"\r\n", 1)[0])
    if not answer.endswith(b"\r\n\r\n"):
        raise RuntimeError("bytes after squid's 200 before the client sent anything")


def open_tunnel(squid_port, console_port, token):
    sock = socket.create_connection(("127.0.0.1", squid_port), timeout=30)
    sock.sendall(connect_request(console_port, token))
    read_status(sock)
    return sock


def timed_connect(squid_port, console_port, token=None):
    start = time.perf_counter()
    with socket.create_connection(("127.0.0.1", squid_port), timeout=30) as sock:
        sock.sendall(connect_request(console_port, token))
        read_status(sock)
        return time.perf_counter() - start


def transfer(sock, direction, size):
    """Seconds to move ``size`` bytes over a connected socket, D (server to client) or U."""
    buf = bytearray(CHUNK)
    start = time.perf_counter()
    sock.sendall(direction + LENGTH.pack(size))
    if direction == b"D":
        left = size
        while left:
            got = sock.recv_into(buf, min(left, CHUNK))
            if not got:
                raise ConnectionError("closed with %d bytes to go" % left)
            left -= got
    else:
        view, left = memoryview(buf), size
        while left:
            piece = view[:min(left, CHUNK)]
            sock.sendall(piece)
            left -= len(piece)
        if recv_exact(sock, 1) != b"K":
            raise RuntimeError("no acknowledgement from the server")
    return time.perf_counter() - start


async def hold_tunnel(squid_port, console_port, token, established, deadline):
    """One tunnel: CONNECT, then echo ECHO_SIZE bytes every ECHO_INTERVAL until ``deadline``.
    Returns (bytes echoed, error or None)."""
    echoed, writer = 0, None
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", squid_port), 30)
        writer.write(connect_request(console_port, token))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        if head.split(b" ", 2)[1] != b"200":
            raise RuntimeError("squid answered %r" % head.split(b"\r\n", 1)[0])
        writer.write(b"E")
        established.append(time.monotonic())
        message = os.urandom(ECHO_SIZE)
        while time.monotonic() < deadline():
            writer.write(message)
            if await asyncio.wait_for(reader.readexactly(ECHO_SIZE), 30) != message:
                raise RuntimeError("echo differs from what was sent")
            echoed += ECHO_SIZE
            await asyncio.sleep(ECHO_INTERVAL)
        return echoed, None
    except (OSError, RuntimeError, asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
        return echoed, "%s: %s" % (type(exc).__name__, exc)
    finally:
        if writer is not None:
            writer.close()


async def hold(squid_port, console_port, tokens, seconds, squid_pid):
    """All tunnels at once; the hold starts when every one is up (or has failed), at most 120 s.
    Returns (seconds until then, [(bytes echoed, error or None)], squid's memory in KiB:
    before the first tunnel, and the most seen while all were held)."""
    established, state = [], {"deadline": float("inf")}
    before = memory_kib(squid_pid)
    tasks = [asyncio.ensure_future(hold_tunnel(squid_port, console_port, token, established,
                                               lambda: state["deadline"])) for token in tokens]
    start = time.monotonic()
    while len(established) + sum(task.done() for task in tasks) < len(tasks) and time.monotonic() - start < 120:
        await asyncio.sleep(0.05)
    setup = time.monotonic() - start
    state["deadline"] = time.monotonic() + seconds
    peak = {"squid": 0, "helpers": 0}
    gathered = asyncio.ensure_future(asyncio.gather(*tasks))
    while not gathered.done():
        now = memory_kib(squid_pid)
        for key in peak:
            peak[key] = max(peak[key], now[key])
        await asyncio.wait([gathered], timeout=1.0)
    return setup, gathered.result(), before, peak


def memory_kib(squid_pid):
    """{"squid": RSS of squid's own process, "helpers": the summed RSS of its helper children} (KiB)."""
    def rss(pid):
        try:
            with open("/proc/%d/status" % pid) as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
        except OSError:
            pass
        return 0
    return {"squid": rss(squid_pid), "helpers": sum(rss(pid) for pid in _procs._children(squid_pid))}  # pylint: disable=protected-access


def raise_fd_limit(tunnels):
    """Every tunnel is a socket here and two in squid (which inherits this limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 2 * tunnels + 1024
    if soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            raise SystemExit("--tunnels %d needs %d open files; the hard limit is %d" % (tunnels, need, hard))
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


# --- measurements -------------------------------------------------------------------------

def pct(values, percent):
    return statistics.quantiles(values, n=100, method="inclusive")[percent - 1]


def measure_throughput(squid, console_port, keys, rounds, size):
    """{(path, direction): [MB/s]}: direct and tunnelled connections, interleaved."""
    rates = {}
    for index in range(rounds):
        for direction in (b"D", b"U"):
            token = mint_proxy_token(keys, "bulk-%d" % index, VM, "spice")
            for path in ("direct", "proxy"):
                if path == "direct":
                    sock = socket.create_connection(("127.0.0.1", console_port), timeout=30)
                else:
                    sock = open_tunnel(squid.port, console_port, token)
                with sock:
                    seconds = transfer(sock, direction, size)
                rates.setdefault((path, direction), []).append(size / seconds / 1e6)
    return rates


def measure_connects(token_squid, plain_squid, console_port, keys, runs):
    """Interleaved per round: no auth; a fresh token (caches miss); the same token again (hit)."""
    times = {"plain": [], "cold": [], "warm": []}
    for index in range(runs):
        times["plain"].append(timed_connect(plain_squid.port, console_port))
        token = mint_proxy_token(keys, "lat-%d-%d" % (os.getpid(), index), VM, "spice")
        times["cold"].append(timed_connect(token_squid.port, console_port, token))
        times["warm"].append(timed_connect(token_squid.port, console_port, token))
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--quick", action="store_true",
                        help="smaller run: --hold 5, --rounds 3, --mib 32, --connects 100")
    parser.add_argument("--hold", type=float, help="seconds the concurrent tunnels stay open (default 60)")
    parser.add_argument("--tunnels", type=int, default=200, help="concurrent tunnels (default 200)")
    parser.add_argument("--rounds", type=int, help="bulk transfers per path and direction (default 7)")
    parser.add_argument("--mib", type=int, help="MiB per bulk transfer (default 128)")
    parser.add_argument("--connects", type=int, help="CONNECTs per kind (default 500)")
    parser.add_argument("--helper-queue", type=int, metavar="N",
                        help="set queue-size=N on the helper line (default: the test configuration as it is)")
    options = parser.parse_args()
    defaults = dict(hold=5, rounds=3, mib=32, connects=100) if options.quick else \
        dict(hold=60, rounds=7, mib=128, connects=500)
    for name, value in defaults.items():
        if getattr(options, name) is None:
            setattr(options, name, value)
    if options.connects < 20 or options.rounds < 1 or options.tunnels < 1 or options.hold <= 0:
        parser.error("needs --connects >= 20 (for a p95), --rounds >= 1, --tunnels >= 1, --hold > 0")
    if not _procs.have_squid():
        raise SystemExit("%s is not installed" % _procs.SQUID_BINARY)
    if os.geteuid() != 0:
        raise SystemExit("run as root: squid drops to user %s" % _procs.SQUID_USER)

    raise_fd_limit(options.tunnels)
    keys = new_proxy_signer()       # the node's signing key; squid's helper verifies with its public key
    server, squids, folders = None, [], []
    try:
        server, console_port = start_server()
        vms = {VM: {"state": "started", "unit": "vmconsole-qemu@%s.service" % VM, "spice_tls_port": console_port,
                    "vnc_port": None, "serial_port": None, "migration_port": None}}
        for edit in (with_queue_size(options.helper_queue), without_helpers):
            squid, folder = start_squid(keys, vms, edit)
            squids.append(squid)
            folders.append(folder)
        token_squid, plain_squid = squids
        # Warm up: the helpers have started and answered, every path works, before anything is timed.
        for index in range(5):
            timed_connect(plain_squid.port, console_port)
            timed_connect(token_squid.port, console_port, mint_proxy_token(keys, "warmup-%d" % index, VM, "spice"))
        rates = measure_throughput(token_squid, console_port, keys, options.rounds, options.mib << 20)
        times = measure_connects(token_squid, plain_squid, console_port, keys, options.connects)
        tokens = [mint_proxy_token(keys, "hold-%d" % index, VM, "spice") for index in range(options.tunnels)]
        load_before = os.getloadavg()[0]
        setup, results, mem_before, mem_peak = asyncio.run(
            hold(token_squid.port, console_port, tokens, options.hold, token_squid.proc.pid))
        squid_alive = token_squid.proc.poll() is None
    finally:
        for squid in squids:
            squid.stop()
        if server is not None:
            stop_server(server)
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)

    errors = [error for dummy, error in results if error is not None]
    echoed = [count for count, error in results if error is None]
    print("proxy: squid %s, Python %s, %d CPUs, load average %.2f at the start of (3), helpers' queue-size %s"
          % (squid_version(), sys.version.split()[0], os.cpu_count(), load_before,
             "as tests/integration (and the role) configure it" if options.helper_queue is None else options.helper_queue))
    print("1. bulk throughput, %d MiB per transfer, median of %d (MB/s)" % (options.mib, options.rounds))
    for direction, label in ((b"D", "server -> client"), (b"U", "client -> server")):
        direct = statistics.median(rates[("direct", direction)])
        proxied = statistics.median(rates[("proxy", direction)])
        print("  %-56s %9.0f" % ("direct loopback, %s" % label, direct))
        print("  %-56s %9.0f" % ("squid CONNECT tunnel, %s" % label, proxied))
        print("  %-56s %9.2f" % ("ratio tunnel / direct, %s" % label, proxied / direct))
    print("2. CONNECT setup: TCP connect + CONNECT + 200 (%d each, interleaved; ms)   median       p95"
          % options.connects)
    rows = (("plain", "squid without auth"), ("cold", "token squid, fresh token (caches miss)"),
            ("warm", "token squid, same token again (caches hit)"))
    for kind, label in rows:
        print("  %-56s %9.2f %9.2f" % (label, statistics.median(times[kind]) * 1e3, pct(times[kind], 95) * 1e3))
    for kind, label in rows[1:]:
        print("  %-56s %9.2f %9.2f" % ("ratio %s / without auth" % kind, statistics.median(times[kind])
                                       / statistics.median(times["plain"]), pct(times[kind], 95) / pct(times["plain"], 95)))
    print("3. %d concurrent tunnels through the token squid, held %g s, %d B echoed every %g s"
          % (options.tunnels, options.hold, ECHO_SIZE, ECHO_INTERVAL))
    print("  %-56s %9.2f s" % ("all tunnels up (connect + CONNECT + the helper)", setup))
    print("  %-56s %9d" % ("tunnels held to the end", len(echoed)))
    print("  %-56s %9d" % ("errors", len(errors)))
    if echoed:
        print("  %-56s %9d / %d / %d" % ("bytes echoed per tunnel: min / median / max", min(echoed),
                                         statistics.median(echoed), max(echoed)))
    print("  %-56s %9s" % ("squid still running afterwards", "yes" if squid_alive else "NO"))
    held = max(len(echoed), 1)
    print("  %-56s %9d -> %d KiB" % ("squid's memory (RSS): before -> most while held", mem_before["squid"], mem_peak["squid"]))
    print("  %-56s %9d -> %d KiB" % ("its helpers' memory (RSS, summed)", mem_before["helpers"], mem_peak["helpers"]))
    print("  %-56s %9.1f KiB" % ("memory per tunnel (squid and helpers)",
                                 (mem_peak["squid"] + mem_peak["helpers"] - mem_before["squid"] - mem_before["helpers"]) / held))
    for error in sorted(set(errors))[:10]:
        print("  error: %s (x%d)" % (error, errors.count(error)))
    if errors or not squid_alive:
        sys.exit(1)


def squid_version():
    out = subprocess.run([_procs.SQUID_BINARY, "-v"], capture_output=True, text=True, check=False).stdout
    return out.split("Version ", 1)[-1].split("\n", 1)[0]


if __name__ == "__main__":
    main()
