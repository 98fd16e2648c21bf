# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The time table at the end of `make test`, from .work/test/times.tsv and the scenario logs.

Each line of times.tsv is ``name<TAB>seconds<TAB>rc``. A line ``molecule <scenario>`` is
followed by that scenario's phases (create, converge, verify, ...) with their seconds, read
from the ``Playbook run took`` lines of the ansible.posix.timer callback in its log.

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


def table(out_dir):
    lines = []
    with open(os.path.join(out_dir, "times.tsv")) as f:
        rows = [line.rstrip("\n").split("\t") for line in f if line.strip()]
    for name, seconds, rc in rows:
        lines.append("  %-30s %6d%s" % (name, int(seconds), "  (failed)" if rc != "0" else ""))
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
