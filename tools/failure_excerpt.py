# SPDX-License-Identifier: GPL-3.0-or-later
"""What failed in a Molecule scenario's log, in a few lines: the failing task, where it is, and its message.

tools/test.sh prints this for each failed scenario after the time table, so that the last lines of a
`make test` (often all a CI page keeps) say which task failed and why, not only which scenario.

Usage: failure_excerpt.py LOG [--blocks N] [--width N]

Reads Molecule's log (ANSI colours and its "│ " frame stripped; Ansible's folded lines joined), finds
each task failure (ansible-core's "[ERROR]: ..." report and the "fatal: [host]: FAILED! => ..." line,
not the "FAILED - RETRYING" of a task that retries, not a failure followed by "...ignoring"), and prints
the last N of them: "TASK name", "  at FILE:LINE", "  host: message". The message is Ansible's own
output, which the scenarios' no_log already censors; this adds nothing a log does not hold.
"""

import argparse
import re
import sys

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
FRAME = re.compile(r"^\s*[│└┌├]\s?")
TASK = re.compile(r"^(?:TASK|RUNNING HANDLER) \[(?P<name>.*)\]")
FATAL = re.compile(r"^(?:fatal|failed): \[(?P<host>[^\]]+)\]: (?:FAILED! => )?(?P<msg>.*)")
ORIGIN = re.compile(r"^Origin: (?P<where>\S+)")
ERROR = re.compile(r"^\[ERROR\]: (?P<msg>.*)")


def logical_lines(text):
    """The log's lines without colours and frame, Ansible's indented continuation lines joined to theirs."""
    lines = []
    for raw in text.splitlines():
        line = FRAME.sub("", ANSI.sub("", raw)).rstrip()
        # Molecule folds long lines at its width and indents the rest by two spaces.
        if lines and line.startswith("  ") and lines[-1] and not line.strip().startswith(("*", "=")):
            lines[-1] = lines[-1] + " " + line.strip()
        else:
            lines.append(line)
    return lines


def failures(text):
    """[(task, where, host, message)] of every task failure in the log, in order."""
    found = []
    task, where, error = "", "", ""
    lines = logical_lines(text)
    for i, line in enumerate(lines):
        match = TASK.match(line)
        if match:
            task, where, error = match.group("name").rstrip(" *"), "", ""
            continue
        match = ERROR.match(line)
        if match:
            error = match.group("msg")
            continue
        match = ORIGIN.match(line)
        if match:
            where = match.group("where")
            continue
        match = FATAL.match(line)
        if match:
            rest = [x.strip() for x in lines[i + 1:i + 3]]
            if "...ignoring" in rest:
                continue
            message = match.group("msg")
            if error and error not in message:
                message = "%s; %s" % (error, message)
            found.append((task, where, match.group("host"), message))
    return found


def excerpt(text, blocks=3, width=400):
    """The lines to print for the last ``blocks`` failures (an empty list when none is found)."""
    out = []
    for task, where, host, message in failures(text)[-blocks:]:
        out.append("TASK %s" % task)
        if where:
            out.append("  at %s" % where)
        if len(message) > width:
            message = message[:width - 3] + "..."
        out.append("  %s: %s" % (host, message))
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("log")
    parser.add_argument("--blocks", type=int, default=3)
    parser.add_argument("--width", type=int, default=400)
    args = parser.parse_args(argv)
    try:
        with open(args.log, encoding="utf-8", errors="replace") as handle:
            text = handle.read()
    except OSError as exc:
        print("(no log: %s)" % exc)
        return 0
    lines = excerpt(text, args.blocks, args.width)
    print("\n".join(lines) if lines else "(no failed task in the log: see its end)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
