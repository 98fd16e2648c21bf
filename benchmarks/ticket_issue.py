# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""How long issuing a console ticket takes, against what it cannot be faster than.

Run from the repository root after `. tools/env.sh`:  python benchmarks/ticket_issue.py [--runs N]

Starts one QEMU (SPICE with TLS, test PKI) of its own and measures, interleaved so that
both sides see the same machine state:

1. `ansible localhost -m vmconsole.secure.console_ticket` (ad hoc, writes a .vv) against
   `ansible localhost -m ansible.builtin.ping`: the cost of the module beyond Ansible's own.
2. The module's QMP work (connect + greeting + qmp_capabilities + set_password +
   expire_password, with the collection's QMPClient) against a bare UNIX socket round trip
   to the same QEMU (connect + read the greeting): the cost of the protocol beyond the socket.

Prints medians and their ratios. QEMU is stopped by PID at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from ansible_collections.vmconsole.secure.plugins.module_utils._qmp import QMPClient
from ansible_collections.vmconsole.secure.plugins.module_utils._tickets import new_ticket
from ansible_collections.vmconsole.secure.tests.integration import _procs

LOCAL = ["-i", "localhost,", "-c", "local", "-e", "ansible_python_interpreter=/usr/bin/python3"]


def timed(func):
    start = time.perf_counter()
    func()
    return time.perf_counter() - start


def ansible(module, args):
    def call():
        proc = subprocess.run(["ansible", "localhost", *LOCAL, "-m", module, "-a", args],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, check=False)
        if proc.returncode != 0:
            raise SystemExit("%s failed (rc %d):\n%s%s" % (module, proc.returncode, proc.stdout, proc.stderr))
    return call


def qmp_ticket(path):
    def call():
        with QMPClient(path, timeout=10) as qmp:
            qmp.execute("set_password", dict(protocol="spice", password=new_ticket("spice"), connected="keep"))
            qmp.execute("expire_password", dict(protocol="spice", time="+30"))
    return call


def bare_greeting(path):
    def call():
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect(path)
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(4096)
                if not chunk:
                    raise SystemExit("QEMU closed the QMP socket before its greeting")
                data += chunk
    return call


def compare(runs, first, second):
    """Interleaved timings of two callables; returns (median first, median second)."""
    a, b = [], []
    for dummy in range(runs):
        a.append(timed(first))
        b.append(timed(second))
    return statistics.median(a), statistics.median(b)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--runs", type=int, default=10, help="Ansible runs per side (default 10, at least 10)")
    parser.add_argument("--qmp-runs", type=int, default=200, help="QMP round trips per side (default 200)")
    options = parser.parse_args()
    if options.runs < 10 or options.qmp_runs < 10:
        parser.error("a median needs at least 10 runs per side")
    if shutil.which(_procs.QEMU_BINARY) is None:
        raise SystemExit("%s is not installed" % _procs.QEMU_BINARY)

    work = tempfile.mkdtemp(prefix="vmc-bench-", dir="/tmp")
    vm = None
    try:
        pki = _procs.make_pki(os.path.join(work, "pki"))
        vm = _procs.QemuVM("bench", work, pki_dir=pki.dir)
        with vm.qmp() as qmp:
            version = qmp.version_string
        ticket_args = json.dumps(dict(socket=vm.qmp_path, dest=os.path.join(work, "bench.vv"), console_host="127.0.0.1",
                                      ca_file=pki.ca_file, server_cert_file=pki.server_cert_file))
        ansible("ansible.builtin.ping", "")()          # warm the caches both sides use
        ansible_ticket, ansible_ping = compare(options.runs, ansible("vmconsole.secure.console_ticket", ticket_args),
                                               ansible("ansible.builtin.ping", ""))
        qmp_time, bare_time = compare(options.qmp_runs, qmp_ticket(vm.qmp_path), bare_greeting(vm.qmp_path))
    finally:
        if vm is not None:
            vm.stop()
        shutil.rmtree(work, ignore_errors=True)

    print("ticket_issue: QEMU %s, Python %s, medians of interleaved runs" % (version, sys.version.split()[0]))
    print("  %-56s %9.3f s" % ("ansible -m vmconsole.secure.console_ticket (%d runs)" % options.runs, ansible_ticket))
    print("  %-56s %9.3f s" % ("ansible -m ansible.builtin.ping (%d runs)" % options.runs, ansible_ping))
    print("  %-56s %9.2f" % ("ratio console_ticket / ping", ansible_ticket / ansible_ping))
    print("  %-56s %9.3f ms" % ("QMP connect + set_password + expire_password (%d runs)" % options.qmp_runs, qmp_time * 1e3))
    print("  %-56s %9.3f ms" % ("bare UNIX socket connect + greeting (%d runs)" % options.qmp_runs, bare_time * 1e3))
    print("  %-56s %9.2f" % ("ratio QMP ticket / bare round trip", qmp_time / bare_time))


if __name__ == "__main__":
    main()
