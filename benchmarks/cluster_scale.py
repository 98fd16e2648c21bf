# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""How the rollout grows with the cluster: site.yml on 2, 4 and 8 hypervisors.

Run from the repository root:  python3 benchmarks/cluster_scale.py [--sizes 2,4,8] [--guest-memory 64M]

For each size N it brings up the demo lab with N hypervisors (`tools/lab.sh up`, hosts
from lab/topology.py, one small guest each, the stack image), then measures:

1. `site.yml` wall time, first run (everything installed and started) and second run
   (must report changed=0 on every host), and the ratio second / first;
2. the proxy hop matrix (benchmarks/cluster_matrix.yml): from `client`, console_probe of
   every VM through every node's proxy, N x N, each must be accepted;
3. the size of each node's generated squid.conf and firewall rules.

Between sizes the lab is removed (`tools/lab.sh down`), so each size starts from new
containers. Prints a table with the slope per added node (seconds of the first run per
hypervisor added since the previous size): a slope that does not grow with N means the
rollout is linear in the number of nodes. Not part of `make test` (about 30 minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECAP = re.compile(r"^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def run(argv, env=None, check=True):
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          check=False)
    seconds = time.perf_counter() - start
    if check and proc.returncode != 0:
        raise SystemExit("%s failed (rc %d):\n%s" % (" ".join(argv), proc.returncode, proc.stdout[-4000:]))
    return seconds, proc.stdout


def recap(output):
    """{host: changed} from a PLAY RECAP; failed or unreachable hosts stop the benchmark."""
    changed = {}
    for host, _ok, chg, unreachable, failed in RECAP.findall(output):
        if int(unreachable) or int(failed):
            raise SystemExit("host %s failed or was unreachable:\n%s" % (host, output[-4000:]))
        changed[host] = int(chg)
    return changed


def measure(nodes, guest_memory, env):
    run(["bash", "tools/lab.sh", "down"], env=env)
    up = run(["bash", "tools/lab.sh", "up"], env=dict(env, NODES=str(nodes), GUEST_MEMORY=guest_memory))[0]
    first, out1 = run(["ansible-playbook", "playbooks/site.yml"], env=env)
    recap(out1)
    second, out2 = run(["ansible-playbook", "playbooks/site.yml"], env=env)
    changed = recap(out2)
    out3 = run(["ansible-playbook", "benchmarks/cluster_matrix.yml"], env=env)[1]
    matrix = json.loads(re.search(r"CLUSTER-MATRIX (\{.*\})", out3).group(1).replace('\\"', '"'))
    sizes = [json.loads(m.replace('\\"', '"')) for m in re.findall(r"CLUSTER-SIZE (\{[^}]*\})", out3)]
    return {"nodes": nodes, "lab_up": up, "first": first, "second": second,
            "changed_second": sum(changed.values()), "matrix": matrix, "sizes": sizes}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--sizes", default="2,4,8", help="hypervisor counts, comma-separated (default 2,4,8)")
    parser.add_argument("--guest-memory", default="64M", help="memory of each node's guest (default 64M)")
    parser.add_argument("--keep", action="store_true", help="leave the last lab running")
    args = parser.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    env = dict(os.environ)
    if "VMC_WORK" not in env:
        raise SystemExit("run `. tools/env.sh` first (and tools/bootstrap.sh once)")

    results = []
    try:
        for nodes in sizes:
            result = measure(nodes, args.guest_memory, env)
            results.append(result)
            print(json.dumps(result), flush=True)
    finally:
        if not args.keep:
            run(["bash", "tools/lab.sh", "down"], env=env, check=False)

    print()
    print("%5s %8s %9s %9s %8s %10s %10s %12s %10s" % ("nodes", "lab up", "site.yml", "2nd run", "2nd/1st",
                                                       "changed=", "slope s/n", "N x N ok", "squid.conf"))
    previous = None
    for r in results:
        slope = "" if previous is None else "%.1f" % ((r["first"] - previous["first"]) / (r["nodes"] - previous["nodes"]))
        squid = max(s["squid_conf_bytes"] for s in r["sizes"]) if r["sizes"] else 0
        print("%5d %7.0fs %8.0fs %8.0fs %8.2f %10d %10s %6d/%-5d %9dB" % (
            r["nodes"], r["lab_up"], r["first"], r["second"], r["second"] / r["first"], r["changed_second"], slope,
            r["matrix"]["accepted"], r["matrix"]["total"], squid))
        previous = r
    return 0


if __name__ == "__main__":
    sys.exit(main())
