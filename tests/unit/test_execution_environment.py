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


SECOND_RUN = """PLAY [Roll out] ***
TASK [vmconsole.secure.qemu_spice : Install QEMU] ******************************
ok: [hv1]

TASK [vmconsole.secure.connect_proxy : Write squid.conf] ***********************
\x1b[0;33mchanged: [hv1]\x1b[0m

RUNNING HANDLER [vmconsole.secure.connect_proxy : Reload squid] ****************
changed: [hv1] => (item=squid)

PLAY RECAP *********************************************************************
hv1                        : ok=90   changed=2    unreachable=0    failed=0    skipped=30   rescued=0    ignored=0
"""


def test_a_second_run_counts_only_with_nothing_changed_and_names_what_changed():
    hosts = ee.recap(SECOND_RUN)
    errors = ee.check_unchanged(hosts, SECOND_RUN)
    assert errors == ["hv1: changed=2", "changed: vmconsole.secure.connect_proxy : Write squid.conf (hv1)",
                      "changed: vmconsole.secure.connect_proxy : Reload squid (hv1)"]
    quiet = SECOND_RUN.replace("changed=2 ", "changed=0 ")
    assert ee.check_unchanged(ee.recap(quiet), quiet) == []


def test_the_image_key_follows_every_input_and_nothing_else():
    inputs = {"execution-environment.yml": b"version: 3\n", "vmconsole-secure.tar.gz:FILES.json": b'{"files": []}'}
    key = ee.image_key("localhost/vmconsole-lab:trixie-base-0123456789ab", inputs)
    assert re.fullmatch(r"[0-9a-f]{12}", key)
    assert ee.image_key("localhost/vmconsole-lab:trixie-base-0123456789ab", dict(inputs)) == key
    assert ee.image_key("localhost/vmconsole-lab:trixie-base-ba9876543210", inputs) != key      # a new base image
    assert ee.image_key("localhost/vmconsole-lab:trixie-base-0123456789ab",
                        dict(inputs, **{"vmconsole-secure.tar.gz:FILES.json": b'{"files": [1]}'})) != key  # a changed file


def test_the_image_key_reads_what_a_collection_tarball_holds_not_its_timestamps(tmp_path):
    import io
    import tarfile

    def tarball(name, mtime, files=b'{"files": []}'):
        path = tmp_path / name
        with tarfile.open(path, "w:gz") as tar:
            for member, data in (("MANIFEST.json", b"{}"), ("FILES.json", files)):
                info = tarfile.TarInfo(member)
                info.size, info.mtime = len(data), mtime
                tar.addfile(info, io.BytesIO(data))
        return str(path)

    first = ee.tarball_listing(tarball("a-vmconsole-secure.tar.gz", 1))
    assert set(first) == {"a-vmconsole-secure.tar.gz:MANIFEST.json", "a-vmconsole-secure.tar.gz:FILES.json"}
    assert ee.tarball_listing(tarball("a-vmconsole-secure.tar.gz", 2)) == first
    assert ee.tarball_listing(tarball("a-vmconsole-secure.tar.gz", 2, b'{"files": [1]}')) != first


def test_a_build_removes_only_the_ee_images_other_tags():
    tags = ["localhost/vmconsole-ee:aaaaaaaaaaaa", "localhost/vmconsole-ee:bbbbbbbbbbbb", "localhost/vmconsole-ee:test",
            "localhost/vmconsole-lab:trixie-base-aaaaaaaaaaaa", "localhost/vmconsole-ee-other:x"]
    assert ee.stale_images(tags, "localhost/vmconsole-ee:bbbbbbbbbbbb") == [
        "localhost/vmconsole-ee:aaaaaaaaaaaa", "localhost/vmconsole-ee:test"]


def test_what_is_left_behind_is_this_tests_lab_and_jobs_only():
    containers = ["vmc-ee-hv1", "ansible_runner_vmc-ee-site", "vmc-demo-hv1", "ansible_runner_other", "vmc-eex-hv1"]
    networks = ["podman", "vmc-ee-cluster", "vmc-demo-public"]
    assert ee.left_behind(containers, networks) == [
        "container ansible_runner_vmc-ee-site", "container vmc-ee-hv1", "network vmc-ee-cluster"]
    assert ee.left_behind(["vmc-demo-hv1"], ["podman"]) == []


def test_the_artifact_scan_names_the_files_that_hold_a_secret_without_printing_it(tmp_path):
    (tmp_path / "artifacts" / "vmc-ee-console").mkdir(parents=True)
    (tmp_path / "artifacts" / "vmc-ee-console" / "stdout").write_text("ok: [hv1]\n")
    (tmp_path / "artifacts" / "vmc-ee-console" / "job_events").mkdir()
    (tmp_path / "artifacts" / "vmc-ee-console" / "job_events" / "1.json").write_text('{"password": "TICKET123"}')
    assert ee.files_holding(str(tmp_path), ["TICKET123", "tok-en"]) == ["artifacts/vmc-ee-console/job_events/1.json"]
    assert ee.files_holding(str(tmp_path), ["tok-en"]) == []
