# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The order in which `make test` starts the Molecule scenarios, JOBS at a time.

tools/test.sh starts the next scenario whenever one of its JOBS slots is free. Longest first
is not always best: with the seconds of 2026-12-07 (migration 683, libvirt 565, proxy 549,
qemu 490, qemu_source 397, pki 323, firewall 200) it ends after 1,162 s, while the best
order ends after 1,080 s (the sum over three slots is 1,069). With few scenarios every order
is tried on the expected seconds (the last run's, else KNOWN): the order that ends first, and
of those the one closest to longest first (a long scenario that runs longer than expected
then delays the end least). More than MAX_EXACT scenarios: longest first.

Usage: python3 tools/molecule_order.py LAST_TIMES_TSV JOBS molecule/*/molecule.yml
(LAST_TIMES_TSV: lines ``scenario<TAB>seconds``; a missing file means a fresh clone.)
Prints the scenario names, one per line, in the order to start them.
"""

from __future__ import annotations

import itertools
import os
import sys

# Without a last run (a fresh clone): seconds of each scenario in CI's make test of 2026-12-07
# (7d1e3c6, three at a time, the compiler cache warm; portal's failed in its verify, whose
# other runs took about 250 s more under that load).
KNOWN = {"migration": 1291, "libvirt": 928, "proxy": 728, "qemu": 681, "qemu_source": 526, "pki": 391,
         "firewall": 286, "portal": 950}
# ... unless the machine never built QEMU from source for that release: no source tarball in the
# lab's cache, so no compiler cache either (2026-12-07, a new machine: 1,323 s, 1,096 s of it the
# compile). Started sixth, it ended last and the stage 350 s later than with it first.
COLD = {"qemu_source": 1323}
SOURCE_CACHE = "/var/cache/vmconsole-lab/qemu-source"


def cold(name, env=None, cache=SOURCE_CACHE):
    """True when scenario ``name`` will build from a cold cache on this machine (see COLD)."""
    if name != "qemu_source":
        return False
    release = (env if env is not None else os.environ).get("VMC_QEMU_SOURCE_RELEASE") or "bookworm"
    return not os.path.isfile(os.path.join(cache, release, "qemu-debian-source.tar.gz"))


def expected(name, last, env=None, cache=SOURCE_CACHE):
    """The seconds scenario ``name`` is expected to take: the last run's, else COLD or KNOWN."""
    if name in last:
        return last[name]
    if name in COLD and cold(name, env, cache):
        return COLD[name]
    return KNOWN.get(name, 0)


MAX_EXACT = 8  # 8! orders are tried in about a second


def ends(order, seconds, jobs):
    """When the last scenario ends, and each one's start, if each starts when a slot is free."""
    slots = [0] * jobs
    starts = {}
    for name in order:
        slot = slots.index(min(slots))
        starts[name] = slots[slot]
        slots[slot] += seconds[name]
    return max(slots), starts


def best_order(seconds, jobs):
    """The start order of the scenarios ``seconds`` names (their expected seconds), ``jobs`` at a time."""
    longest_first = sorted(seconds, key=lambda n: (-seconds[n], n))
    if len(seconds) > MAX_EXACT or jobs < 1:
        return longest_first
    # Permutations come in the order of their input's positions: of the orders that end
    # first, the first one found is the closest to longest first.
    best_end, best = None, longest_first
    for order in itertools.permutations(longest_first):
        end = ends(order, seconds, jobs)[0]
        if best_end is None or end < best_end:
            best_end, best = end, list(order)
    return best


def read_times(path):
    """``{scenario: seconds}`` of the last run, or {} (no file, or not the expected lines)."""
    last = {}
    try:
        with open(path) as handle:
            for line in handle:
                name, secs = line.rstrip("\n").split("\t")[:2]
                last[name] = int(secs)
    except (OSError, ValueError):
        return {}
    return last


def main(argv):
    if len(argv) < 3:
        sys.stderr.write(__doc__[__doc__.index("Usage:"):])
        return 2
    last = read_times(argv[1])
    jobs = int(argv[2])
    names = [os.path.basename(os.path.dirname(path)) for path in argv[3:]]
    seconds = dict((name, expected(name, last)) for name in names)
    for name in best_order(seconds, jobs):
        print(name)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
