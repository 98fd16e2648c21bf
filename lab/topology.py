# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The demo lab's hosts for N hypervisors: ``lab_platforms`` for molecule/shared/create.yml.

``hv1`` .. ``hvN`` (group ``hypervisors``) on the cluster and the public network, each
with one small guest ``vm<i>``, and ``client`` (group ``clients``) on the public network
only. Addresses: hypervisor i is .(10+i) on both networks, the client is .5.

Usage: python3 lab/topology.py NODES [GUEST_MEMORY]   prints YAML (JSON is YAML) on stdout.
"""

from __future__ import annotations

import json
import sys

MAX_NODES = 200  # .11 .. .210 in one /24
CLUSTER = "10.89.100."
PUBLIC = "10.90.100."


def platforms(nodes, guest_memory="128M"):
    """The lab_platforms list for ``nodes`` hypervisors and one client."""
    if not isinstance(nodes, int) or isinstance(nodes, bool) or not 1 <= nodes <= MAX_NODES:
        raise ValueError("NODES must be a whole number from 1 to %d, not %r" % (MAX_NODES, nodes))
    hosts = []
    for i in range(1, nodes + 1):
        hosts.append({
            "name": "hv%d" % i,
            "groups": ["hypervisors"],
            "addresses": {"cluster": CLUSTER + str(10 + i), "public": PUBLIC + str(10 + i)},
            "vars": {"qemu_vm_guests": [{"name": "vm%d" % i, "memory": guest_memory, "cpus": 1}]},
        })
    hosts.append({"name": "client", "groups": ["clients"], "addresses": {"public": PUBLIC + "5"}})
    return hosts


def main(argv):
    if len(argv) not in (2, 3):
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
