# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""tools/time_table.py: the time table at the end of make test."""

from __future__ import annotations

import importlib.util
from pathlib import Path

_PATH = Path(__file__).resolve().parents[2] / "tools" / "time_table.py"
_spec = importlib.util.spec_from_file_location("time_table", _PATH)
time_table = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(time_table)

LOG = """\x1b[36mINFO    \x1b[0m \x1b[32mpki\x1b[0m ➜ \x1b[33mcreate\x1b[0m: \x1b[36mExecuting\x1b[0m
  │ Playbook run took 0 days, 0 hours, 0 minutes, 14 seconds
INFO     pki ➜ syntax: Executing
INFO     pki ➜ converge: Executing
  │ TASK [x]
  │ Playbook run took 0 days, 1 hours, 2 minutes, 3 seconds
INFO     pki ➜ cleanup: Executing
INFO     pki ➜ cleanup: Executed: Missing playbook
INFO     pki ➜ destroy: Executing
  │ Playbook run took 0 days, 0 hours, 0 minutes, 5 seconds
"""


def test_phases_are_read_in_order_and_phases_without_a_playbook_are_left_out():
    assert time_table.phases(LOG) == [("create", 14), ("converge", 3723), ("destroy", 5)]


def test_the_table_puts_each_scenario_s_phases_under_it(tmp_path):
    (tmp_path / "times.tsv").write_text("unit\t25\t0\nmolecule pki\t3742\t1\nmolecule (wall)\t3800\t0\n")
    (tmp_path / "molecule-pki.log").write_text(LOG)
    assert time_table.table(str(tmp_path)).splitlines() == [
        "  unit                               25",
        "  molecule pki                     3742  (failed)",
        "      create 14  converge 3723  destroy 5",
        "  molecule (wall)                  3800",
    ]


def test_each_timed_line_shows_how_busy_the_cores_were_meanwhile(tmp_path):
    # Two cores: 200 jiffies a second. Busy 50 % over 0..10, 100 % over 10..20.
    (tmp_path / "cpu.tsv").write_text("0 0 0\n5 500 1000\nnot a sample\n10 1000 2000\n20 3000 4000\n")
    (tmp_path / "times.tsv").write_text(
        "bootstrap\t3\t0\n"            # no start and end: no share
        "unit\t10\t0\t0\t10\n"
        "lint\t10\t1\t10\t20\n"
        "late\t5\t0\t18\t25\n")        # the samples end before it did: no share
    assert time_table.table(str(tmp_path)).splitlines() == [
        "  bootstrap                           3",
        "  unit                               10  cpu  50%",
        "  lint                               10  cpu 100%  (failed)",
        "  late                                5",
    ]


def test_busy_share_takes_the_samples_around_the_interval():
    samples = time_table.cpu_samples("0 0 0\n10 1000 2000\n20 1500 4000\n")
    assert time_table.busy_share(samples, 2, 12) == 1500 / 4000
    assert time_table.busy_share(samples, 10, 20) == 500 / 2000
    assert time_table.busy_share(samples, -1, 5) is None
    assert time_table.busy_share(time_table.cpu_samples("5 1 1\n"), 5, 5) is None
