# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The vendored noVNC is the pinned npm release, byte for byte (roles/console_portal/files/static/novnc)."""

from __future__ import annotations

import hashlib
import json
import os

FOLDER = os.path.join(os.path.dirname(__file__), "..", "..", "roles", "console_portal", "files", "static", "novnc")


def test_every_vendored_file_has_the_recorded_sha256():
    with open(os.path.join(FOLDER, "vendor.json"), encoding="utf-8") as handle:
        manifest = json.load(handle)
    assert (manifest["package"], manifest["version"]) == ("@novnc/novnc", "1.7.0")
    assert manifest["integrity"].startswith("sha512-") and manifest["tarball"].endswith("/novnc-1.7.0.tgz")
    for name, digest in manifest["sha256"].items():
        with open(os.path.join(FOLDER, name), "rb") as handle:
            assert hashlib.sha256(handle.read()).hexdigest() == digest, name
    present = sorted(os.path.relpath(os.path.join(root, name), FOLDER).replace(os.sep, "/")
                     for root, dummy, names in os.walk(FOLDER) for name in names)
    assert present == sorted(list(manifest["sha256"]) + ["vendor.json"])     # nothing unrecorded beside them


def test_the_licences_ship_with_it():
    with open(os.path.join(FOLDER, "LICENSE.txt"), encoding="utf-8") as handle:
        assert "licensed under the MPL 2.0" in handle.read()
    with open(os.path.join(FOLDER, "docs", "LICENSE.MPL-2.0"), encoding="utf-8") as handle:
        assert "Mozilla Public License Version 2.0" in handle.read()
    with open(os.path.join(FOLDER, "vendor", "pako", "LICENSE"), encoding="utf-8") as handle:
        assert "Permission is hereby granted, free of charge" in handle.read()      # pako: MIT
