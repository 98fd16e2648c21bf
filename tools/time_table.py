# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The time table at the end of `make test`, from .work/test/times.tsv and the scenario logs.

Each line of times.tsv is ``name<TAB>seconds<TAB>rc`` and, where known, ``<TAB>start<TAB>end``
(epoch seconds). A line ``molecule <scenario>`` is followed by that scenario's phases (create,
converge, verify, ...) with their seconds, read from the ``Playbook run took`` lines of the
ansible.posix.timer callback in its log.

Where cpu.tsv exists (``epoch busy total`` per line: the machine's CPU jiffies from /proc/stat,
sampled every few seconds through the run), each line with a start and an end also shows how
busy the machine's cores were meanwhile, e.g. ``cpu 97%``: near 100 % the stage waited for the
cores and only less work makes it faster; well below, it waited on something else.

Usage: python3 tools/time_table.py TEST_OUTPUT_DIR
"""

from __future__ import annotations

import os
import re
import sys

ANSI = re.compile(r"\x1b\[[0-9;]*m")
PHASE = re.compile(r"➜ (\w+): Executing")
TOOK = re.compile(r"Playbook run took (\d+) days, (\d+) hours, (\d+) minutes, (\d+) seconds")


def phases(log_text):
    """[(phase, seconds)] in the order Molecule ran them (phases without a playbook left out)."""
    text = ANSI.sub("", log_text)
    marks = list(PHASE.finditer(text))
    out = []
    for i, mark in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        took = TOOK.search(text, mark.end(), end)
        if took:
            days, hours, minutes, seconds = (int(x) for x in took.groups())
            out.append((mark.group(1), ((days * 24 + hours) * 60 + minutes) * 60 + seconds))
    return out


def cpu_samples(text):
    """[(epoch, busy, total)] from cpu.tsv's text, in time order; malformed lines left out."""
    samples = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) == 3 and all(f.isdigit() for f in fields):
            samples.append(tuple(int(f) for f in fields))
    return sorted(samples)


def busy_share(samples, start, end):
    """The share (0..1) of the cores' time spent busy between start and end, from the last sample
    at or before start to the first at or after end; None when the samples do not cover it."""
    before = [s for s in samples if s[0] <= start]
    after = [s for s in samples if s[0] >= end]
    if not before or not after:
        return None
    first, last = before[-1], after[0]
    total = last[2] - first[2]
    if total <= 0:
        return None
    return (last[1] - first[1]) / total


def table(out_dir):
    lines = []
    with open(os.path.join(out_dir, "times.tsv")) as f:
        rows = [line.rstrip("\n").split("\t") for line in f if line.strip()]
    try:
        with open(os.path.join(out_dir, "cpu.tsv")) as f:
            samples = cpu_samples(f.read())
    except OSError:
        samples = []
    for row in rows:
        name, seconds, rc = row[:3]
        share = None
        if len(row) >= 5 and row[3].isdigit() and row[4].isdigit():
            share = busy_share(samples, int(row[3]), int(row[4]))
        lines.append("  %-30s %6d%s%s" % (
            name, int(seconds),
            "  cpu %3d%%" % round(share * 100) if share is not None else "",
            "  (failed)" if rc != "0" else ""))
        if name.startswith("molecule ") and name != "molecule (wall)":
            try:
                with open(os.path.join(out_dir, "molecule-%s.log" % name.split(" ", 1)[1]), errors="replace") as f:
                    steps = phases(f.read())
            except OSError:
                steps = []
            if steps:
                lines.append("      " + "  ".join("%s %d" % step for step in steps))
    return "\n".join(lines)


def main(argv):
    if len(argv) != 2:
        sys.stderr.write(__doc__.rsplit("\n\n", maxsplit=1)[-1] + "\n")
        return 2
    print(table(argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
