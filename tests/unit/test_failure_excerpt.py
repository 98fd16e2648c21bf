# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""tools/failure_excerpt.py: which task failed, in the last lines of make test."""

from __future__ import annotations

import importlib.util
from pathlib import Path

_PATH = Path(__file__).resolve().parents[2] / "tools" / "failure_excerpt.py"
_spec = importlib.util.spec_from_file_location("failure_excerpt", _PATH)
failure_excerpt = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(failure_excerpt)

# As Molecule prints it: colours, the frame, long lines folded and indented by two spaces.
F = "  \x1b[2m\x1b[31m│\x1b[0m "
P = "  \x1b[2m│\x1b[0m "
LOG = "\n".join([
    P + "TASK [Wait until remote-viewer has opened the] ***",
    P + "FAILED - RETRYING: [client]: Wait until remote-viewer has opened the",
    P + "ok: [client]",
    P + "TASK [Probe something that may fail] ***",
    F + "\x1b[31mfatal: [hv2]: FAILED! => {\"msg\": \"ignored\"}\x1b[0m",
    P + "...ignoring",
    P + "TASK [The browser script ran through (else its last words, never a",
    P + "  secret)] ***",
    F + "\x1b[0;31m[ERROR]: Task failed: Action failed: ['browser.py: timed out waiting for\x1b[0m",
    F + "\x1b[0;31m  the serial line']\x1b[0m",
    F + "\x1b[0;31mOrigin: /tmp/x/molecule/portal/verify.yml:106:7\x1b[0m",
    F + "\x1b[31mfatal: [client]: FAILED! => {\"assertion\": \"__alice_page.rc == 0\",\x1b[0m",
    F + "\x1b[31m  \"changed\": false}\x1b[0m",
    P + "",
    P + "PLAY RECAP",
])


def test_the_failed_task_its_place_and_message_and_not_a_retry_or_an_ignored_failure():
    assert failure_excerpt.excerpt(LOG) == [
        "TASK The browser script ran through (else its last words, never a secret)",
        "  at /tmp/x/molecule/portal/verify.yml:106:7",
        "  client: Task failed: Action failed: ['browser.py: timed out waiting for the serial line']; "
        "{\"assertion\": \"__alice_page.rc == 0\", \"changed\": false}",
    ]


def test_a_log_without_a_failed_task_gives_nothing_and_long_messages_are_cut():
    assert failure_excerpt.excerpt(P + "TASK [x] ***\n" + P + "ok: [hv1]\n") == []
    long = P + "TASK [x] ***\n" + F + "fatal: [hv1]: FAILED! => " + "y" * 1000 + "\n"
    assert failure_excerpt.excerpt(long, width=50)[-1] == "  hv1: " + "y" * 47 + "..."


def test_only_the_last_blocks_are_kept(tmp_path, capsys):
    log = "".join(P + "TASK [t%d] ***\n" % i + F + "failed: [hv1]: FAILED! => m%d\n" % i for i in range(5))
    assert [line for line in failure_excerpt.excerpt(log, blocks=2) if line.startswith("TASK")] == ["TASK t3", "TASK t4"]
    path = tmp_path / "molecule-x.log"
    path.write_text(log, encoding="utf-8")
    assert failure_excerpt.main([str(path), "--blocks", "1"]) == 0
    assert capsys.readouterr().out == "TASK t4\n  hv1: m4\n"
    assert failure_excerpt.main([str(tmp_path / "missing.log")]) == 0
    assert "no log" in capsys.readouterr().out
