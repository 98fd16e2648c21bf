# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The vendored xterm.js is the pinned npm release, byte for byte (roles/console_portal/files/static/xterm)."""

from __future__ import annotations

import hashlib
import json
import os

FOLDER = os.path.join(os.path.dirname(__file__), "..", "..", "roles", "console_portal", "files", "static", "xterm")


def test_every_vendored_file_has_the_recorded_sha256():
    with open(os.path.join(FOLDER, "vendor.json"), encoding="utf-8") as handle:
        manifest = json.load(handle)
    assert (manifest["package"], manifest["version"]) == ("@xterm/xterm", "5.5.0")
    assert manifest["integrity"].startswith("sha512-") and manifest["tarball"].endswith("/xterm-5.5.0.tgz")
    for name, digest in manifest["sha256"].items():
        with open(os.path.join(FOLDER, name), "rb") as handle:
            assert hashlib.sha256(handle.read()).hexdigest() == digest, name
    assert sorted(os.listdir(FOLDER)) == sorted(list(manifest["sha256"]) + ["vendor.json"])


def test_the_licence_ships_with_it():
    with open(os.path.join(FOLDER, "LICENSE"), encoding="utf-8") as handle:
        assert "Permission is hereby granted, free of charge" in handle.read()
