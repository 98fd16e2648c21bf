# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import json
import os
import stat

import pytest

from ansible_collections.vmconsole.secure.plugins.module_utils._files import AuditLog, audit_record, write_file_atomic


def test_write_file_atomic_replaces_with_mode_from_the_start(tmp_path):
    path = tmp_path / "r.json"
    path.write_text("old")
    os.chmod(str(path), 0o666)
    inode = os.stat(str(path)).st_ino
    write_file_atomic(str(path), "new\n", mode=0o640, owner=(os.getuid(), os.getgid()))
    st = os.stat(str(path))
    assert path.read_text() == "new\n" and stat.S_IMODE(st.st_mode) == 0o640 and st.st_ino != inode
    assert os.listdir(str(tmp_path)) == ["r.json"]


def test_write_file_atomic_is_private_by_default(tmp_path):
    path = tmp_path / "console.vv"
    write_file_atomic(str(path), "[virt-viewer]\n")
    assert stat.S_IMODE(os.stat(str(path)).st_mode) == 0o600


def test_write_file_atomic_leaves_nothing_when_it_fails(tmp_path):
    with pytest.raises(OSError):
        write_file_atomic(str(tmp_path / "missing" / "f"), "x")
    with pytest.raises(TypeError):
        write_file_atomic(str(tmp_path / "f"), 42)
    assert os.listdir(str(tmp_path)) == []


def test_audit_log_makes_its_folder_and_appends_json_lines(tmp_path):
    path = tmp_path / "log" / "tickets.log"
    for event in ("a", "b"):
        audit = AuditLog(str(path), check_mode=False)
        audit.write(audit_record(event, vm="vm1"))
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["event"] for line in lines] == ["a", "b"] and lines[0]["vm"] == "vm1"
    assert {"time", "epoch", "node", "run_by"} <= set(lines[0])
    assert stat.S_IMODE(os.stat(str(path)).st_mode) == 0o640
    assert stat.S_IMODE(os.stat(str(path.parent)).st_mode) == 0o750


def test_audit_log_check_mode_makes_nothing_but_refuses_what_would_fail(tmp_path):
    AuditLog(str(tmp_path / "new" / "tickets.log"), check_mode=True).write({"event": "x"})
    assert os.listdir(str(tmp_path)) == []
    with pytest.raises(OSError):
        AuditLog(str(tmp_path), check_mode=True)            # a folder is no log
    assert AuditLog("", check_mode=False).fd is None         # '' turns it off
