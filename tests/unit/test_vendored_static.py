# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The portal's vendored npm releases are the pinned ones, byte for byte, with their licences
(roles/console_portal/files/static/xterm and .../novnc)."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

STATIC = os.path.join(os.path.dirname(__file__), "..", "..", "roles", "console_portal", "files", "static")
# folder: (npm package, version, tarball name, {licence file: a line it must hold})
VENDORED = {
    "xterm": ("@xterm/xterm", "5.5.0", "xterm-5.5.0.tgz",
              {"LICENSE": "Permission is hereby granted, free of charge"}),
    "novnc": ("@novnc/novnc", "1.7.0", "novnc-1.7.0.tgz",
              {"LICENSE.txt": "licensed under the MPL 2.0",
               "docs/LICENSE.MPL-2.0": "Mozilla Public License Version 2.0",
               "vendor/pako/LICENSE": "Permission is hereby granted, free of charge"}),      # pako: MIT
}


@pytest.mark.parametrize("folder", sorted(VENDORED))
def test_every_vendored_file_has_the_recorded_sha256_and_nothing_else_is_there(folder):
    package, version, tarball, _licences = VENDORED[folder]
    root = os.path.join(STATIC, folder)
    with open(os.path.join(root, "vendor.json"), encoding="utf-8") as handle:
        manifest = json.load(handle)
    assert (manifest["package"], manifest["version"]) == (package, version)
    assert manifest["integrity"].startswith("sha512-") and manifest["tarball"].endswith("/" + tarball)
    for name, digest in manifest["sha256"].items():
        with open(os.path.join(root, name), "rb") as handle:
            assert hashlib.sha256(handle.read()).hexdigest() == digest, name
    present = sorted(os.path.relpath(os.path.join(top, name), root).replace(os.sep, "/")
                     for top, dummy, names in os.walk(root) for name in names)
    assert present == sorted(list(manifest["sha256"]) + ["vendor.json"])     # nothing unrecorded beside them


@pytest.mark.parametrize("folder", sorted(VENDORED))
def test_the_licences_ship_with_it(folder):
    for name, line in VENDORED[folder][3].items():
        with open(os.path.join(STATIC, folder, name), encoding="utf-8") as handle:
            assert line in handle.read(), name
