# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The demo lab's hosts for N hypervisors: ``lab_platforms`` for molecule/shared/create.yml.

``hv1`` .. ``hvN`` (group ``hypervisors``) on the cluster and the public network, each
with one small guest ``vm<i>``, and ``client`` (group ``clients``) on the public network
only. Addresses: hypervisor i is .(10+i) on both networks, the client is .5. Releases: the
hypervisors take RELEASES in turn (``bookworm,trixie``: hv1 Debian 12, hv2 Debian 13, ...), the
client the first one.

Usage: python3 lab/topology.py NODES [GUEST_MEMORY [RELEASES]]   prints YAML (JSON is YAML) on stdout.
"""

from __future__ import annotations

import json
import sys

MAX_NODES = 200  # .11 .. .210 in one /24
CLUSTER = "10.89.100."
PUBLIC = "10.90.100."
RELEASES = ("bookworm", "trixie")  # the Debian releases lab/build-image.sh builds
DEFAULT_RELEASES = ("trixie",)  # Debian's stable release: what a new cluster is installed with


def platforms(nodes, guest_memory="128M", releases=DEFAULT_RELEASES):
    """The lab_platforms list for ``nodes`` hypervisors and one client; the hypervisors take ``releases``
    (a list, or a comma-separated string) in turn, the client the first."""
    if not isinstance(nodes, int) or isinstance(nodes, bool) or not 1 <= nodes <= MAX_NODES:
        raise ValueError("NODES must be a whole number from 1 to %d, not %r" % (MAX_NODES, nodes))
    if isinstance(releases, str):
        releases = [r.strip() for r in releases.split(",")]
    if not releases or any(r not in RELEASES for r in releases):
        raise ValueError("RELEASES must name one or more of %s (comma-separated), not %r"
                         % (", ".join(RELEASES), releases))
    hosts = []
    for i in range(1, nodes + 1):
        hosts.append({
            "name": "hv%d" % i,
            "groups": ["hypervisors"],
            "release": releases[(i - 1) % len(releases)],
            "addresses": {"cluster": CLUSTER + str(10 + i), "public": PUBLIC + str(10 + i)},
            "vars": {"qemu_vm_guests": [{"name": "vm%d" % i, "memory": guest_memory, "cpus": 1}]},
        })
    hosts.append({"name": "client", "groups": ["clients"], "release": releases[0], "addresses": {"public": PUBLIC + "5"}})
    return hosts


def main(argv):
    if len(argv) not in (2, 3, 4):
        sys.stderr.write(__doc__.rsplit("\n\n", maxsplit=1)[-1] + "\n")
        return 2
    try:
        nodes = int(argv[1])
    except ValueError:
        nodes = argv[1]
    try:
        hosts = platforms(nodes, *argv[2:])
    except ValueError as exc:
        sys.stderr.write("lab/topology.py: %s\n" % exc)
        return 2
    json.dump({"lab_platforms": hosts}, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
