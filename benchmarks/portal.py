# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""What a .vv costs through the console portal, against the ad-hoc console_ticket it replaces.

Run from the repository root after `. tools/env.sh`, as root:
    python benchmarks/portal.py [--runs 200] [--ansible-runs 200] [--users 50] [--per-user 20]

Starts, of its own, one node as tests/integration/test_portal.py does: a QEMU guest (SPICE with
TLS, test PKI), squid with the token helpers, the portal's root agent and its web process
(aiohttp, HTTPS on a free loopback port). Then measures, interleaved so that both sides see the
same machine state:

1. one `.vv` through the portal's API with a client certificate (`GET /api/v1/vms/vm1/spice.vv`
   on a kept-alive HTTPS connection: where the VM runs, the ACL, the agent's ticket over QMP,
   the proxy token, the audit lines) against `ansible localhost -m vmconsole.secure.console_ticket`
   for the same VM (ad hoc, a .vv with a proxy token): median and p95 of each;
2. --users people at once, each on a connection of their own asking --per-user `.vv` files:
   .vv per second and errors.

Goal (issue #18): median under 50 ms, at least 100 .vv per second, 0 errors. Prints a table;
exits 1 on any error. Every process is stopped by PID at the end.
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import ssl
import statistics
import subprocess
import sys
import threading
import time

from ansible_collections.vmconsole.secure.plugins.module_utils._tickets import new_proxy_signer
from ansible_collections.vmconsole.secure.tests.integration import _procs
from ansible_collections.vmconsole.secure.tests.integration.test_portal import PortalNode

LOCAL = ["-i", "localhost,", "-c", "local", "-e", "ansible_python_interpreter=/usr/bin/python3"]


def percentile(values, share):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(share * (len(ordered) - 1))))]


class ApiClient:
    """One person's kept-alive HTTPS connection with a client certificate."""

    def __init__(self, node, cert, key):
        context = ssl.create_default_context(cafile=node.pki.ca_file)
        context.load_cert_chain(cert, key)
        self.conn = http.client.HTTPSConnection("127.0.0.1", node.port, context=context, timeout=30)

    def vv(self):
        self.conn.request("GET", "/api/v1/vms/vm1/spice.vv")
        response = self.conn.getresponse()
        body = response.read()
        if response.status != 200 or not body.startswith(b"[virt-viewer]"):
            raise RuntimeError("portal answered %d: %s" % (response.status, body[:200]))

    def close(self):
        self.conn.close()


def ansible_ticket(node, dest):
    proc = subprocess.run(["ansible", "localhost", *LOCAL, "-m", "vmconsole.secure.console_ticket", "-a",
                           "vm=vm1 socket_dir=%s dest=%s proxy_user=alice proxy_fact_file=%s proxy_token_key_file=%s "
                           "console_host=%s ca_file=%s server_cert_file=%s audit_log=%s ttl=60"
                           % (os.path.dirname(node.vm.qmp_path), dest, node.squid.proxy_fact, node.squid.signing_file,
                              node.name, node.pki.ca_file, node.pki.server_cert_file, node.tickets_log)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError("console_ticket failed: %s" % (proc.stdout[-2000:] + proc.stderr[-2000:]))


def timed(func):
    start = time.perf_counter()
    func()
    return time.perf_counter() - start


def concurrent(node, cert, key, users, per_user):
    """(.vv per second, errors) with ``users`` clients asking ``per_user`` each at once."""
    errors, barrier = [], threading.Barrier(users + 1)
    clients = [ApiClient(node, cert, key) for dummy in range(users)]

    def person(client):
        barrier.wait()
        for dummy in range(per_user):
            try:
                client.vv()
            except Exception as exc:  # pylint: disable=broad-except
                errors.append(str(exc))
    threads = [threading.Thread(target=person, args=(c,)) for c in clients]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    for client in clients:
        client.close()
    return users * per_user / elapsed, errors


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--ansible-runs", type=int, default=200)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--per-user", type=int, default=20)
    args = parser.parse_args()
    pki = _procs.make_pki(_procs.short_tmpdir("vmc-bench-pki-"))
    workdir = _procs.short_tmpdir("vmc-bench-portal-")
    squid_dir = _procs.short_tmpdir("vmc-bench-squid-")
    things = []
    try:
        vm = _procs.ConsoleRangeVM("vm1", workdir, pki_dir=pki.dir)
        things.append(vm)
        vms = {"vm1": {"state": "started", "qmp": vm.qmp_path, "spice_tls_port": vm.tls_port, "vnc_port": None,
                       "serial_port": None}}
        squid = _procs.Squid(squid_dir, [new_proxy_signer()], self_name=pki.cn, vms=vms)
        things.append(squid)
        node = PortalNode(workdir, name=pki.cn, pki=pki, squid=squid, vm=vm, port=_procs.free_port())
        things.append(node)
        cert, key = pki.issue([("CN", "alice")], client=True)
        cert_file, key_file = os.path.join(workdir, "alice.pem"), os.path.join(workdir, "alice.key")
        _procs._write(cert_file, cert.encode(), 0o644)
        _procs._write(key_file, key.encode(), 0o600)
        client = ApiClient(node, cert_file, key_file)
        client.vv()                                                     # warm: imports, the first TLS session
        portal, adhoc = [], []
        dest = os.path.join(workdir, "adhoc.vv")
        for index in range(max(args.runs, args.ansible_runs)):
            if index < args.runs:
                portal.append(timed(client.vv))
            if index < args.ansible_runs:
                adhoc.append(timed(lambda: ansible_ticket(node, dest)))
        client.close()
        rate, errors = concurrent(node, cert_file, key_file, args.users, args.per_user)
        print("%-44s %10s %10s" % ("one .vv", "median ms", "p95 ms"))
        print("%-44s %10.1f %10.1f" % ("portal (API, client certificate)", statistics.median(portal) * 1000,
                                       percentile(portal, 0.95) * 1000))
        print("%-44s %10.1f %10.1f" % ("ansible ad hoc console_ticket", statistics.median(adhoc) * 1000,
                                       percentile(adhoc, 0.95) * 1000))
        print("%-44s %10.1f" % ("ratio ad hoc / portal (median)", statistics.median(adhoc) / statistics.median(portal)))
        print("%-44s %10.1f  (%d users x %d, %d errors)" % (".vv per second, concurrent", rate, args.users,
                                                            args.per_user, len(errors)))
        for error in errors[:5]:
            print("  error: %s" % error)
        return 1 if errors else 0
    finally:
        for thing in reversed(things):
            thing.stop()
        for folder in (workdir, squid_dir, pki.dir):
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
