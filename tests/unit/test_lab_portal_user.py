# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""lab/portal_user.py: the demo lab's portal user."""

from __future__ import annotations

import importlib.util
import os
import stat

import pytest

from ansible_collections.vmconsole.secure.plugins.module_utils._portal_auth import verify_password

SPEC = importlib.util.spec_from_file_location(
    "portal_user", os.path.join(os.path.dirname(__file__), "..", "..", "lab", "portal_user.py"))
portal_user = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(portal_user)


def test_a_password_and_its_hash_made_once_and_kept(tmp_path, capsys):
    assert portal_user.main(["x", str(tmp_path), "demo"]) == 0
    password = (tmp_path / "portal-demo-password").read_text()
    hashed = (tmp_path / "portal-demo.hash").read_text()
    assert verify_password(hashed, password) and password not in capsys.readouterr().out
    for name in ("portal-demo-password", "portal-demo.hash"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o600
    portal_user.main(["x", str(tmp_path), "demo"])
    assert (tmp_path / "portal-demo-password").read_text() == password
    assert (tmp_path / "portal-demo.hash").read_text() == hashed            # still matching: kept


def test_a_hash_that_does_not_match_is_made_again(tmp_path):
    portal_user.portal_user(str(tmp_path), "demo")
    (tmp_path / "portal-demo-password").write_text("another password")
    portal_user.portal_user(str(tmp_path), "demo")
    assert verify_password((tmp_path / "portal-demo.hash").read_text(), "another password")


def test_a_bad_name_is_refused(tmp_path):
    with pytest.raises(ValueError, match="NAME must be a short lower-case user name"):
        portal_user.portal_user(str(tmp_path), "../x")
