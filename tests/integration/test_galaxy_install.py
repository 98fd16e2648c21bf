# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The Galaxy artifact as a user gets it: built, installed into an empty collections path, run.

`ansible-galaxy collection build` makes the tarball from this checkout; `ansible-galaxy collection
install --offline` puts it into an empty folder together with its dependencies (each packed from
the copy tools/bootstrap.sh installed, as its own tarball: galaxy.yml's dependencies are resolved
for real, and a dependency galaxy.yml forgets is missing). Then `ansible-playbook
vmconsole.secure.console` runs from that folder alone, against a real QEMU guest: no path of this
checkout is on Ansible's or Python's search path, so a file the tarball lacks fails the run.
"""

from __future__ import annotations

import io
import json
import os
import re
import stat
import subprocess
import tarfile

import pytest

from ansible_collections.vmconsole.secure.plugins.module_utils._spice import spice_link_probe

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# What this checkout sets up for itself (tools/env.sh) and a user's controller does not have.
CHECKOUT_ENV = ("ANSIBLE_COLLECTIONS_PATH", "ANSIBLE_COLLECTIONS_PATHS", "ANSIBLE_CONFIG", "ANSIBLE_CONNECTION_PLUGINS",
                "PYTHONPATH", "VMC_ROOT", "VMC_WORK", "VMC_VENV", "VMC_COLLECTIONS")


def run(argv, env, cwd, timeout=300):
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env, check=False)


def pack_installed(name, search_path, dest):
    """An artifact of collection ``name`` (``ns.coll``) packed from an installed copy.

    The copies tools/bootstrap.sh takes from the ``ansible`` wheel lack some files their FILES.json
    names (CI scripts): the artifact's FILES.json lists what the copy has, so the install's checksum
    check passes for every file that is there.
    """
    namespace, coll = name.split(".")
    for base in search_path.split(os.pathsep):
        folder = os.path.join(base, "ansible_collections", namespace, coll)
        if os.path.isfile(os.path.join(folder, "MANIFEST.json")):
            break
    else:
        pytest.skip("collection %s is not installed on %s (run tools/bootstrap.sh)" % (name, search_path))
    with open(os.path.join(folder, "MANIFEST.json")) as f:
        version = json.load(f)["collection_info"]["version"]
    with open(os.path.join(folder, "FILES.json")) as f:
        files = json.load(f)
    files["files"] = [e for e in files["files"] if e["name"] == "." or os.path.lexists(os.path.join(folder, e["name"]))]
    listing = json.dumps(files).encode("utf-8")
    path = os.path.join(dest, "%s-%s-%s.tar.gz" % (namespace, coll, version))
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        tar.add(os.path.join(folder, "MANIFEST.json"), arcname="MANIFEST.json")
        info = tarfile.TarInfo("FILES.json")
        info.size, info.mode = len(listing), 0o644
        tar.addfile(info, io.BytesIO(listing))
        for entry in files["files"]:
            if entry["name"] != ".":
                tar.add(os.path.join(folder, entry["name"]), arcname=entry["name"], recursive=False)
    return path


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """``(collections folder, env)``: the artifact and its dependencies installed, and the environment
    of a controller that has nothing but them."""
    work = tmp_path_factory.mktemp("galaxy")
    dist, collections, cwd = work / "dist", work / "collections", work / "cwd"
    for folder in (dist, collections, cwd):
        folder.mkdir()
    search_path = os.environ.get("ANSIBLE_COLLECTIONS_PATH", "")
    env = {k: v for k, v in os.environ.items() if k not in CHECKOUT_ENV}
    env.update(ANSIBLE_NOCOLOR="1", ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="false")

    proc = run(["ansible-galaxy", "collection", "build", "--output-path", str(dist), ROOT], env, str(cwd))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [artifact] = dist.glob("vmconsole-secure-*.tar.gz")
    with tarfile.open(str(artifact)) as tar:
        manifest = json.load(tar.extractfile("MANIFEST.json"))
    dependencies = sorted(manifest["collection_info"]["dependencies"])
    tarballs = [pack_installed(name, search_path, str(dist)) for name in dependencies]

    proc = run(["ansible-galaxy", "collection", "install", "--offline", "-p", str(collections), str(artifact)] + tarballs,
               env, str(cwd))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    have = sorted("%s.%s" % (ns, coll) for ns in os.listdir(str(collections / "ansible_collections"))
                  for coll in os.listdir(str(collections / "ansible_collections" / ns)))
    assert have == sorted(dependencies + ["vmconsole.secure"])
    assert not os.path.islink(str(collections / "ansible_collections" / "vmconsole" / "secure"))
    env["ANSIBLE_COLLECTIONS_PATH"] = str(collections)
    return collections, env


def test_console_playbook_from_the_installed_collection(installed, qemu_vm, pki, tmp_path):
    collections, env = installed
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    proc = run(["ansible-playbook", "-i", "localhost,", "-c", "local", "-vvv",
                "-e", "ansible_python_interpreter=/usr/bin/python3", "-e", "ansible_become=false",
                "vmconsole.secure.console", "-e", "vm=%s" % qemu_vm.name, "-e", "target=localhost",
                "-e", "socket_dir=%s" % os.path.dirname(qemu_vm.qmp_path), "-e", "console_host=127.0.0.1",
                "-e", "ca_file=%s" % pki.ca_file, "-e", "server_cert_file=%s" % pki.server_cert_file,
                "-e", "audit_log=%s" % (tmp_path / "tickets.log")], env, str(cwd))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # The playbook, the action plugin and the module all came from the installed copy.
    installed_copy = str(collections / "ansible_collections" / "vmconsole" / "secure")
    used = [path for path in re.findall(r"Using module file (\S+)", proc.stdout) if "/vmconsole/secure/" in path]
    assert used and all(path.startswith(installed_copy + os.sep) for path in used), used
    # Nothing of this checkout (its .work/venv holds the ansible-core that runs the test).
    assert not re.search(re.escape(ROOT + os.sep) + r"(?!\.work/venv/)", proc.stdout + proc.stderr)

    dest = cwd / ("%s.vv" % qemu_vm.name)
    assert stat.S_IMODE(os.stat(str(dest)).st_mode) == 0o600
    vv = dict(line.split("=", 1) for line in dest.read_text().splitlines()[1:])
    assert vv["password"] not in proc.stdout + proc.stderr
    result = spice_link_probe("127.0.0.1", qemu_vm.tls_port, vv["password"], ca_pem=pki.ca_pem,
                              host_subject=pki.subject, timeout=10)
    assert result["status"] == "accepted", result
