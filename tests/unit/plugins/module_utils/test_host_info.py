# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""module_utils/_host_info.py and the module host_info: files, public contents (never a private
key), packages, Python modules, JSON files."""

from __future__ import annotations

import grp
import hashlib
import json
import os
import pwd
import subprocess

import pytest

from ansible_collections.vmconsole.secure.plugins.module_utils import _host_info
from ansible_collections.vmconsole.secure.plugins.modules import host_info

CERT = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUZm9v\n-----END CERTIFICATE-----\n"
KEY = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEG\n-----END PRIVATE KEY-----\n"


def write(path, text, mode):
    path.write_text(text)
    path.chmod(mode)
    return str(path)


def test_file_states(tmp_path):
    cert = write(tmp_path / "cert.pem", CERT, 0o644)
    key = write(tmp_path / "key.pem", KEY, 0o600)
    (tmp_path / "link").symlink_to(key)
    states = _host_info.file_states([str(tmp_path), cert, key, str(tmp_path / "link"), str(tmp_path / "missing")])
    me = (pwd.getpwuid(os.getuid())[0], grp.getgrgid(os.getgid())[0])
    assert states[cert] == {"mode": "0644", "owner": me[0], "group": me[1], "regular": True,
                            "sha256": hashlib.sha256(CERT.encode()).hexdigest()}
    assert states[key]["mode"] == "0600" and states[str(tmp_path)]["regular"] is False
    assert "sha256" not in states[str(tmp_path)]
    assert states[str(tmp_path / "link")]["regular"] is False  # the link itself, not its target
    assert str(tmp_path / "missing") not in states


def test_public_contents_never_a_private_key(tmp_path):
    cert = write(tmp_path / "cert.pem", CERT, 0o600)  # a certificate is public whatever its mode
    notes = write(tmp_path / "notes", "hello\n", 0o644)
    assert _host_info.public_contents([cert, notes, str(tmp_path / "none")]) == {
        cert: CERT, notes: "hello\n", str(tmp_path / "none"): None}
    key = write(tmp_path / "key.pem", KEY, 0o644)
    with pytest.raises(ValueError, match="key.pem holds a private key; host_info never returns one"):
        _host_info.public_contents([key])
    bundle = write(tmp_path / "bundle.pem", CERT + KEY, 0o600)
    with pytest.raises(ValueError, match="holds a private key"):
        _host_info.public_contents([bundle])
    secret = write(tmp_path / "passphrase", "hunter2\n", 0o600)
    with pytest.raises(ValueError, match="passphrase is not world-readable and holds more than certificates"):
        _host_info.public_contents([secret])
    with pytest.raises(ValueError, match="is not a regular file"):
        _host_info.public_contents([str(tmp_path)])


def test_package_states():
    def fake_run(argv, **kwargs):
        assert argv[:4] == ["dpkg-query", "-W", "-f", "${Package}\t${db:Status-Status}\n"]
        return subprocess.CompletedProcess(argv, 1, "squid\tinstalled\nlibfoo1\tconfig-files\n", "")
    assert _host_info.package_states(["squid", "libfoo1", "nosuch"], run=fake_run) == {
        "squid": "installed", "libfoo1": "config-files", "nosuch": "unknown"}
    assert _host_info.package_states([]) == {}


def test_package_states_with_this_machines_dpkg():
    if not os.path.exists("/usr/bin/dpkg-query"):
        pytest.skip("no dpkg")
    states = _host_info.package_states(["dpkg", "vmconsole-no-such-package"])
    assert states == {"dpkg": "installed", "vmconsole-no-such-package": "unknown"}


def test_python_modules():
    assert _host_info.python_modules(["json", "vmconsole_no_such_module", "os.path", ""]) == {
        "json": True, "vmconsole_no_such_module": False, "os.path": True, "": False}


def test_json_files_and_cpus(tmp_path):
    for name, text in (("qemu-9.2/stamp.json", '{"version": "9.2"}'), ("qemu-10.0/stamp.json", '{"version": "10.0"}'),
                       ("qemu-bad/stamp.json", "{not json")):
        (tmp_path / name).parent.mkdir()
        (tmp_path / name).write_text(text)
    found = _host_info.json_files(str(tmp_path / "qemu-*" / "stamp.json"))
    assert [f["data"] for f in found] == [{"version": "10.0"}, {"version": "9.2"}]
    assert all(isinstance(f["mtime"], float) for f in found)
    assert _host_info.cpus() >= 1


def test_the_module(run_module, tmp_path):
    cert = write(tmp_path / "cert.pem", CERT, 0o644)
    result = run_module(host_info.main, {"paths": [cert], "read": [cert], "python_modules": ["json"],
                                         "json_glob": str(tmp_path / "*.json")}, check_mode=True)
    assert result["changed"] is False and result["contents"] == {cert: CERT}
    assert result["files"][cert]["mode"] == "0644" and result["python_modules"] == {"json": True}
    key = write(tmp_path / "key.pem", KEY, 0o600)
    result = run_module(host_info.main, {"read": [key]})
    assert result["failed"] is True and result["msg"] == "read: %s holds a private key; host_info never returns one" % key
    assert "PRIVATE" not in json.dumps(result).replace("PRIVATE KEY", "") and "MIGHAgEA" not in json.dumps(result)
