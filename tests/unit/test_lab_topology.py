# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""lab/topology.py: the demo lab's hosts for N hypervisors."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[2] / "lab" / "topology.py"
_spec = importlib.util.spec_from_file_location("lab_topology", _PATH)
topology = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(topology)


def test_two_nodes_are_the_standard_lab():
    hosts = topology.platforms(2)
    assert [h["name"] for h in hosts] == ["hv1", "hv2", "client"]
    assert hosts[0]["addresses"] == {"cluster": "10.89.100.11", "public": "10.90.100.11"}
    assert hosts[1]["vars"]["qemu_vm_guests"] == [{"name": "vm2", "memory": "128M", "cpus": 1}]
    assert hosts[2] == {"name": "client", "groups": ["clients"], "release": "trixie",
                        "addresses": {"public": "10.90.100.5"}}
    # make demo stays on one release, Debian 13.
    assert {h["release"] for h in hosts} == {"trixie"}


def test_the_hypervisors_take_the_releases_in_turn():
    hosts = topology.platforms(3, "64M", "bookworm,trixie")
    assert [(h["name"], h["release"]) for h in hosts] == [
        ("hv1", "bookworm"), ("hv2", "trixie"), ("hv3", "bookworm"), ("client", "bookworm")]
    assert [h["release"] for h in topology.platforms(2, "64M", ["trixie", "bookworm"])] == ["trixie", "bookworm", "trixie"]


@pytest.mark.parametrize("releases", ["", "sid", "bookworm,", [], ["bookworm", "jessie"]])
def test_an_unknown_release_is_refused(releases):
    with pytest.raises(ValueError, match="RELEASES must name one or more of bookworm, trixie"):
        topology.platforms(2, "64M", releases)


def test_eight_nodes_have_unique_names_addresses_and_guests():
    hosts = topology.platforms(8, "64M")
    hvs = [h for h in hosts if "hypervisors" in h["groups"]]
    assert len(hvs) == 8 and len(hosts) == 9
    addresses = [a for h in hosts for a in h["addresses"].values()]
    assert len(addresses) == len(set(addresses))
    guests = [g["name"] for h in hvs for g in h["vars"]["qemu_vm_guests"]]
    assert guests == ["vm%d" % i for i in range(1, 9)]
    assert {g["memory"] for h in hvs for g in h["vars"]["qemu_vm_guests"]} == {"64M"}


@pytest.mark.parametrize("nodes", [0, -1, 201, "8", 2.0, True, None])
def test_a_bad_node_count_is_refused(nodes):
    with pytest.raises(ValueError, match="NODES must be a whole number from 1 to 200"):
        topology.platforms(nodes)


def test_the_command_prints_the_platforms_and_refuses_bad_input(capsys):
    assert topology.main(["topology.py", "3"]) == 0
    assert [h["name"] for h in json.loads(capsys.readouterr().out)["lab_platforms"]] == ["hv1", "hv2", "hv3", "client"]
    assert topology.main(["topology.py", "eight"]) == 2
    assert "NODES must be a whole number" in capsys.readouterr().err
    assert topology.main(["topology.py", "2", "64M", "bookworm,trixie"]) == 0
    assert [h["release"] for h in json.loads(capsys.readouterr().out)["lab_platforms"]] == ["bookworm", "trixie", "bookworm"]
    assert topology.main(["topology.py", "2", "64M", "buster"]) == 2
    assert "RELEASES must name" in capsys.readouterr().err
