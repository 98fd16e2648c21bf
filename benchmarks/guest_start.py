# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""What a test guest's start costs the machine with KVM and with TCG.

Run from the repository root after `. tools/env.sh`:  python benchmarks/guest_start.py [--runs N]

The guest the integration tests start (tests/integration/_procs.QemuVM: 64 MiB, qxl, SPICE over
TLS, no OS) is started --runs times with ``-accel kvm`` and as often with ``-accel tcg``,
interleaved, one at a time. For each start it reads the QEMU process's CPU time (user + system,
from /proc) --settle seconds after the start, then again --idle seconds later, and stops the
guest. Prints the medians and the ratio KVM / TCG. On a machine that is itself a VM, KVM is
nested: the firmware's start exits to the host kernel again and again, and that is the cost
measured here. The integration tests and the Molecule scenarios (all but portal) use TCG for it.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import statistics
import sys
import time

from ansible_collections.vmconsole.secure.tests.integration import _procs


def one_start(accel, workdir, pki, settle, idle):
    """(CPU seconds until settle, CPU seconds per second of idle after it) of one guest."""
    started = time.monotonic()
    vm = _procs.QemuVM("g-%s" % accel, workdir, pki_dir=pki.dir, accel=(accel,))
    try:
        time.sleep(max(0.0, started + settle - time.monotonic()))
        at_settle = _procs.cpu_seconds(vm.pid)
        time.sleep(idle)
        return at_settle, (_procs.cpu_seconds(vm.pid) - at_settle) / idle
    finally:
        vm.stop()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--runs", type=int, default=5, help="starts per accelerator (default 5)")
    parser.add_argument("--settle", type=float, default=6.0,
                        help="seconds from the start to the first CPU reading (default 6)")
    parser.add_argument("--idle", type=float, default=4.0,
                        help="seconds between the two CPU readings (default 4)")
    args = parser.parse_args()
    if args.runs < 1 or args.settle <= 0 or args.idle <= 0:
        parser.error("--runs must be at least 1, --settle and --idle above 0")
    if not _procs.have_qemu():
        sys.exit("%s is not installed" % _procs.QEMU_BINARY)
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        sys.exit("/dev/kvm is not usable here: there is no KVM to compare with")
    workdir = _procs.short_tmpdir("vmc-gs-")
    try:
        pki = _procs.make_pki(os.path.join(workdir, "pki"))
        results = {"kvm": [], "tcg": []}
        for _run in range(args.runs):
            for accel in ("kvm", "tcg"):
                results[accel].append(one_start(accel, workdir, pki, args.settle, args.idle))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    load = os.getloadavg()[0]
    print("%s, load %.1f, %d starts each, CPU read %.0f s after the start"
          % (datetime.date.today().isoformat(), load, args.runs, args.settle))
    medians = {}
    for accel, rows in results.items():
        start = statistics.median(r[0] for r in rows)
        rate = statistics.median(r[1] for r in rows)
        medians[accel] = start
        print("%-4s CPU in the first %.0f s %6.2f s   idle afterwards %5.1f %% of a core"
              % (accel, args.settle, start, 100 * rate))
    print("ratio kvm / tcg, CPU of a start  %6.1f" % (medians["kvm"] / max(medians["tcg"], 0.01)))


if __name__ == "__main__":
    main()
