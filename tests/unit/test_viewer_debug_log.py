# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Every harness that starts remote-viewer --debug and reads its log also sets G_MESSAGES_DEBUG=all.

On Debian 13 (virt-viewer 11, GLib 2.84) ``remote-viewer --debug`` logs nothing unless G_MESSAGES_DEBUG=all is
in its environment: lab/console_check.yml timed out waiting for "main channel: opened" while the viewer was
connected (issue #16). Debian 12 logged without it, so only a run on Debian 13 showed it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Where the harnesses live: the scenarios' and the demo's shared tasks, the integration tests.
FILES = sorted(p for pattern in ("molecule/**/*.yml", "lab/*.yml", "tests/integration/*.py")
               for p in ROOT.glob(pattern))
_START = re.compile(r"""['"]remote-viewer['"]\s*,\s*['"]--debug['"]""")


def starts():
    return [p for p in FILES if _START.search(p.read_text())]


def test_the_harnesses_that_start_a_viewer_are_found():
    names = {str(p.relative_to(ROOT)) for p in starts()}
    assert "molecule/shared/tasks/viewer.yml" in names
    assert "tests/integration/test_console_ticket.py" in names


@pytest.mark.parametrize("path", starts(), ids=lambda p: str(p.relative_to(ROOT)))
def test_a_viewer_started_with_debug_logs_on_debian_13(path):
    assert re.search(r"""G_MESSAGES_DEBUG(=|["']?\s*[:=]\s*["'])all""", path.read_text()), (
        "%s starts remote-viewer --debug without G_MESSAGES_DEBUG=all: on Debian 13 its log stays empty"
        % path.relative_to(ROOT))
