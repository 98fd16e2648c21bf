# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""What seamless SPICE migration costs the migration, and what it saves the person at the console.

Run from the repository root after `. tools/env.sh`:  python benchmarks/spice_migrate.py [--runs N]

Two guests of the same configuration (SPICE over TLS with a plain port, 64 MiB, qxl) hop from
QEMU to QEMU on loopback (each hop: a fresh target with -incoming defer, TLS migration with the
test PKI's x509 credentials), interleaved:

- "seamless": a real remote-viewer (under Xvfb) is connected; the hop runs the spice_migrate
  chain (ticket on the target, client_migrate_info with the plain port, wait until the client
  linked to the target, migrate, SPICE_MIGRATE_COMPLETED);
- "switch host": the same guest and viewer, announced without the plain port, so the client
  cannot link first and reconnects to the target after the migration;
- "plain": the other guest, no client and no announcement: a bare TLS migration.

Prints medians of QEMU's total time and downtime (query-migrate) and their ratios, and the
client's reconnection gap from remote-viewer's own log: for a seamless hop from its first
"migrating channel" to "all channel migrated", for a switch-host hop from "migrate-switch-host"
to the main channel opened again. Every process is stopped by PID at the end.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import shutil
import statistics
import sys
import time

from ansible_collections.vmconsole.secure.plugins.module_utils._migrate import (
    poll_migration, spice_clients, tls_creds_arguments, wait_for_clients,
)
from ansible_collections.vmconsole.secure.plugins.module_utils._vv import render_vv
from ansible_collections.vmconsole.secure.tests.integration import _procs

TICKET = "BenchT1cketBenchT1cketBenchT1cket"
_STAMP = re.compile(r": (\d\d):(\d\d):(\d\d)\.(\d{3}): ")


class Chain:
    """A guest that hops from QEMU to QEMU; ``vm`` is where it runs now."""

    def __init__(self, name, workdir, pki):
        self.name, self.workdir, self.pki, self.hops = name, workdir, pki, 0
        self.link_waits = []
        self.vm = self._start(incoming=False)
        self.old = []

    def _start(self, incoming):
        vm = _procs.QemuVM("%s%d" % (self.name, self.hops), self.workdir, pki_dir=self.pki.dir, plain_port=True,
                           extra_args=["-incoming", "defer"] if incoming else [])
        with vm.qmp() as qmp:
            qmp.execute("object-add", tls_creds_arguments("tls", self.pki.dir, "server" if incoming else "client"))
            if not incoming:
                qmp.execute("set_password", dict(protocol="spice", password=TICKET))
                qmp.execute("expire_password", dict(protocol="spice", time="+3600"))
        return vm

    def hop(self, announce, plain_port=True):
        """Migrate to a fresh target; returns query-migrate at the end."""
        self.hops += 1
        target = self._start(incoming=True)
        uri = "tcp:127.0.0.1:%d" % _procs.free_port()
        with target.qmp() as dst, self.vm.qmp() as src:
            dst.execute("object-add", tls_creds_arguments("tlsc", self.pki.dir, "client"))  # for the next hop
            dst.execute("migrate-set-parameters", {"tls-creds": "tls"})
            dst.execute("migrate-incoming", {"uri": uri})
            dst.execute("set_password", dict(protocol="spice", password=TICKET))
            dst.execute("expire_password", dict(protocol="spice", time="+3600"))
            clients = spice_clients(src.execute("query-spice")["channels"])
            if announce:
                args = {"protocol": "spice", "hostname": "127.0.0.1", "tls-port": target.tls_port,
                        "cert-subject": self.pki.subject}
                if plain_port:
                    args["port"] = target.plain_port
                announced = time.perf_counter()
                src.execute("client_migrate_info", args)
                if plain_port:
                    missing, dummy, dummy2 = wait_for_clients(dst, clients, 8, settle=0)
                    self.link_waits.append(time.perf_counter() - announced)
                    if missing:
                        raise SystemExit("the client did not link to the target")
            src.execute("migrate-set-parameters", {"tls-creds": "tlsc" if self.hops > 1 else "tls"})
            src.execute("migrate", {"uri": uri})
            info, ended = poll_migration(src, 120, interval=0.01)
            if info.get("status") != "completed":
                raise SystemExit("migration %s: %s" % (info.get("status"), info.get("error-desc")))
            if announce:
                src.wait_event("SPICE_MIGRATE_COMPLETED", 10)
        self.old.append(self.vm)
        self.vm = target
        return info

    def stop(self):
        for vm in self.old + [self.vm]:
            vm.stop()


def stamp(line):
    match = _STAMP.search(line)
    if not match:
        return None
    h, m, s, ms = (int(g) for g in match.groups())
    return datetime.timedelta(hours=h, minutes=m, seconds=s, milliseconds=ms).total_seconds()


def gap(log_lines, start_marker, end_marker):
    """Seconds from the first line with ``start_marker`` to the next one with ``end_marker``."""
    start = None
    for line in log_lines:
        if start is None and start_marker in line:
            start = stamp(line)
        elif start is not None and end_marker in line:
            return stamp(line) - start
    return None


class Viewer:
    def __init__(self, workdir, display, vm, pki):
        self.path = os.path.join(workdir, "remote-viewer.log")
        vv = os.path.join(workdir, "bench.vv")
        with open(vv, "w") as f:
            f.write(render_vv(protocol="spice", host="127.0.0.1", password=TICKET, tls_port=vm.tls_port,
                              ca_pem=pki.ca_pem, host_subject=pki.subject))
        env = dict(os.environ, DISPLAY=display, GDK_BACKEND="x11", NO_AT_BRIDGE="1", SPICE_DEBUG="1")
        self.proc = _procs.start_process(["remote-viewer", "--debug", vv], self.path, env=env)
        self.offset = 0

    def new_lines(self):
        """The complete lines written since the last call."""
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        data = data[:data.rfind(b"\n") + 1]
        self.offset += len(data)
        return data.decode("utf-8", "replace").splitlines()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--runs", type=int, default=5, help="hops of each kind (default 5)")
    args = parser.parse_args()
    for tool in (_procs.QEMU_BINARY, "remote-viewer", "Xvfb"):
        if not shutil.which(tool):
            raise SystemExit("%s is not installed" % tool)

    workdir = _procs.short_tmpdir("vmc-bench-")
    pki = _procs.make_pki(os.path.join(workdir, "pki"))
    xvfb = _procs.Xvfb(workdir)
    console, plain, viewer = None, None, None
    numbers = {"seamless": [], "switch host": [], "plain": []}
    gaps = {"seamless": [], "switch host": []}
    try:
        console = Chain("c", workdir, pki)
        plain = Chain("p", workdir, pki)
        viewer = Viewer(workdir, xvfb.display, console.vm, pki)
        _procs.wait_until(lambda: any(c["channel-type"] == 4 for c in _channels(console.vm)), 30,
                          what="remote-viewer's channels")
        time.sleep(1)
        viewer.new_lines()
        for run in range(args.runs):
            for kind in ("seamless", "plain", "switch host"):
                if kind == "plain":
                    numbers[kind].append(plain.hop(announce=False))
                    continue
                numbers[kind].append(console.hop(announce=True, plain_port=kind == "seamless"))
                # The client's log: read on until it says it has settled on the target.
                markers = (("migrating channel", "all channel migrated, success") if kind == "seamless"
                           else ("migrate-switch-host", "main channel: opened"))
                lines = []
                _procs.wait_until(lambda: lines.extend(viewer.new_lines()) or gap(lines, *markers) is not None, 15,
                                  what="remote-viewer to log its %s migration" % kind)
                gaps[kind].append(gap(lines, *markers))
            if viewer.proc.poll() is not None:
                raise SystemExit("remote-viewer exited:\n" + _procs.read_log(viewer.path))
        report(args.runs, numbers, gaps, viewer, console.link_waits)
    finally:
        if viewer is not None:
            _procs.stop_process(viewer.proc)
        for chain in (console, plain):
            if chain is not None:
                chain.stop()
        xvfb.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def _channels(vm):
    with vm.qmp() as qmp:
        return qmp.execute("query-spice")["channels"]


def report(runs, numbers, gaps, viewer, link_waits):
    def med(kind, key):
        return statistics.median(info[key] for info in numbers[kind])

    print("%d hops of each kind, 64 MiB guest, TLS migration on loopback, QEMU's own numbers (ms):" % runs)
    print("%-34s %10s %10s %10s" % ("", "total", "downtime", "setup"))
    for kind in ("seamless", "switch host", "plain"):
        print("%-34s %10.0f %10.0f %10.0f" % (kind, med(kind, "total-time"), med(kind, "downtime"), med(kind, "setup-time")))
    for key, label in (("total-time", "total"), ("downtime", "downtime")):
        print("ratio seamless / plain, %-10s %10.2f" % (label, med("seamless", key) / max(med("plain", key), 1)))
    print("client's reconnection gap (remote-viewer log, ms):")
    for kind in ("seamless", "switch host"):
        values = [g for g in gaps[kind] if g is not None]
        if values:
            print("  %-32s %10.0f   (min %.0f, max %.0f, %d of %d hops)" % (
                kind, statistics.median(values) * 1000, min(values) * 1000, max(values) * 1000, len(values), runs))
        else:
            print("  %-32s %10s" % (kind, "not seen"))
    print("announce -> all channels linked on the target (wall clock, ms, plus the module's 250 ms settle):")
    waits_ms = [w * 1000 for w in link_waits]
    print("  %-32s %10.0f   (min %.0f, max %.0f)" % ("seamless", statistics.median(waits_ms), min(waits_ms), max(waits_ms)))
    print("remote-viewer: one process (pid %d) through all %d hops" % (viewer.proc.pid, 2 * runs))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
