# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The execution environment: the collection's metadata for ansible-builder, and tools/ee.py's checks."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import yaml

from ansible_collections.vmconsole.secure.plugins.module_utils._vv import render_vv

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("vmc_ee", ROOT / "tools" / "ee.py")
ee = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ee)


def requirement_lines(path):
    return [line.split("#")[0].strip() for line in path.read_text().splitlines() if line.split("#")[0].strip()]


def test_the_collection_names_its_controller_requirements_for_ansible_builder():
    # ansible-builder's introspect reads meta/execution-environment.yml's dependencies, relative
    # to the collection's root; without the file it would take the root requirements.txt, which
    # is this repository's development pins (molecule, ansible-lint, ...), not the collection's.
    meta = yaml.safe_load((ROOT / "meta" / "execution-environment.yml").read_text())
    assert meta["version"] == 3
    python, system = meta["dependencies"]["python"], meta["dependencies"]["system"]
    assert not Path(python).is_absolute() and not Path(system).is_absolute()
    assert python.startswith("meta/") and system.startswith("meta/")   # meta/ ships in the Galaxy artifact
    assert [re.split(r"[<>=!~ ]", line)[0] for line in requirement_lines(ROOT / python)] == ["cryptography"]
    assert "openssh-client [platform:dpkg]" in requirement_lines(ROOT / system)


def test_the_ee_runs_the_pinned_controller():
    definition = yaml.safe_load((ROOT / "tools" / "ee" / "execution-environment.yml").read_text())
    pinned = re.search(r"^ansible-core==(\S+)", (ROOT / "requirements.txt").read_text(), re.M).group(1)
    assert definition["version"] == 3
    assert definition["dependencies"]["ansible_core"]["package_pip"] == "ansible-core==" + pinned
    assert definition["options"]["package_manager_path"] == "/usr/bin/apt-get"
    assert definition["images"]["base_image"]["name"].startswith("localhost/vmconsole-lab:trixie-base")


LAB_INVENTORY = {"all": {
    "vars": {"ansible_connection": "lab_podman", "ansible_user": "root", "lab_dir": "/w/.work/lab/vmc-ee",
             "pki_ca_dir": "{{ lab_dir }}/pki/ca"},
    "children": {
        "hypervisors": {"hosts": {"hv1": {"ansible_host": "vmc-ee-hv1", "vmconsole_cluster_address": "10.89.20.11",
                                          "vmconsole_public_address": "10.90.20.11"}}},
        "clients": {"hosts": {"client": {"ansible_host": "vmc-ee-client", "vmconsole_public_address": "10.90.20.5"}}}}}}


def test_the_ees_inventory_reaches_every_lab_host_over_ssh_and_keeps_the_labs_variables():
    inventory = ee.ee_inventory(LAB_INVENTORY, "/w/key")
    variables = inventory["all"]["vars"]
    assert variables["ansible_connection"] == "ssh" and variables["ansible_ssh_private_key_file"] == "/w/key"
    assert variables["pki_ca_dir"] == "{{ lab_dir }}/pki/ca" and variables["lab_dir"] == "/w/.work/lab/vmc-ee"
    hosts = inventory["all"]["children"]
    assert hosts["hypervisors"]["hosts"]["hv1"]["ansible_host"] == "10.89.20.11"   # the cluster address first
    assert hosts["clients"]["hosts"]["client"]["ansible_host"] == "10.90.20.5"
    assert LAB_INVENTORY["all"]["vars"]["ansible_connection"] == "lab_podman"      # the lab's own is untouched


def test_a_lab_host_without_an_address_is_refused():
    broken = {"all": {"children": {"hypervisors": {"hosts": {"hv1": {"ansible_host": "vmc-ee-hv1"}}}}}}
    with pytest.raises(ValueError, match="without an address"):
        ee.ee_inventory(broken, "/w/key")


def vv(**changes):
    args = dict(protocol="spice", host="hv1", password="T" * 40, tls_port=61001, proxy="http://demo:tok-en_1@hv1:3128",
                ca_pem="-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
                host_subject="C=XX,O=vmconsole,CN=hv1")
    args.update(changes)
    return render_vv(**args)


def test_a_vv_through_the_nodes_proxy_passes_the_check():
    assert ee.check_vv(vv(), {"hv1", "10.89.20.11"}) == []
    assert ee.check_vv(vv(proxy="http://demo:tok@10.89.20.11:3128"), {"hv1", "10.89.20.11"}) == []


def test_a_vv_that_does_not_go_through_the_nodes_proxy_or_lacks_the_ticket_fails_the_check():
    assert ee.check_vv(vv(proxy=None), {"hv1"}) == ["proxy is not a proxy token for port 3128 of hv1"]
    assert ee.check_vv(vv(proxy="http://demo:tok@hv2:3128"), {"hv1"})
    assert ee.check_vv(vv(proxy="http://hv1:3128"), {"hv1"})                      # no token
    assert ee.check_vv(vv(tls_port=None, port=5900), {"hv1"}) == ["no tls-port"]
    assert ee.check_vv("[virt-viewer]\ntype=vnc\n", {"hv1"})[0] == "type is 'vnc', not spice"
    assert ee.check_vv("not a vv", {"hv1"})


def test_the_vv_check_accepts_the_labs_node_by_name_or_address():
    names = ee.node_names(str(ROOT / "tools" / "ee" / "lab.yml"), "hv1")
    assert names == {"hv1", "10.89.20.11", "10.90.20.11"}
    spec_name = (ROOT / "tools" / "ee" / "lab.yml").read_text().split("lab_name: ", 1)[1].split()[0]
    assert spec_name == ee.LAB


RECAP = """PLAY [x] ***
TASK [y] ***
ok: [hv1]

PLAY RECAP *********************************************************************
\x1b[0;33mhv1\x1b[0m    : \x1b[0;32mok=120 \x1b[0m \x1b[0;33mchanged=40  \x1b[0m unreachable=0    failed=0    skipped=12   rescued=0
localhost                  : ok=3    changed=0    unreachable=0    failed=1    skipped=0    rescued=0    ignored=0
"""


def test_a_run_counts_only_when_it_reached_every_node_and_nothing_failed():
    hosts = ee.recap(RECAP)
    assert hosts["hv1"]["ok"] == 120 and hosts["hv1"]["changed"] == 40
    assert ee.check_recap({"hv1": hosts["hv1"]}, {"hv1"}) == []
    assert ee.check_recap(hosts, {"hv1"}) == ["localhost: %s" % hosts["localhost"]]
    # site.yml against an inventory that was not read: every play skipped, only localhost ran.
    only_localhost = ee.recap("PLAY RECAP ***\nlocalhost : ok=1 changed=0 unreachable=0 failed=0\n")
    assert ee.check_recap(only_localhost, {"hv1"}) == ["hv1 did not run"]
