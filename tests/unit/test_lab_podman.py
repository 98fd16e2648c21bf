# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""lab/plugins/connection/lab_podman.py: a command joins the container's cgroups, then runs as nsenter."""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

PLUGIN = Path(__file__).resolve().parents[2] / "lab" / "plugins" / "connection" / "lab_podman.py"
_spec = importlib.util.spec_from_file_location("lab_podman", PLUGIN)
lab_podman = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lab_podman)


def test_the_command_line_joins_the_cgroups_then_becomes_nsenter():
    container = lab_podman.Container("vmc-x-hv1", 4242, 1, ["/cg/a/cgroup.procs", "/cg/b/cgroup.procs"], ["A=1"])
    argv = container.argv(["python3", "-c", "pass"])
    assert argv[:4] == ["/bin/sh", "-c", lab_podman.JOIN_CGROUPS, "sh"]
    assert argv[4:7] == ["/cg/a/cgroup.procs", "/cg/b/cgroup.procs", "--"]
    assert argv[7:] == ["nsenter", "--target=4242", "--all", "--root", "--wd", "--",
                        "/usr/bin/env", "-i", "A=1", "python3", "-c", "pass"]


def test_the_shell_writes_its_pid_where_it_may_and_execs_the_command_in_its_place(tmp_path):
    procs = tmp_path / "cgroup.procs"
    procs.write_text("")
    out = subprocess.run(
        ["/bin/sh", "-c", lab_podman.JOIN_CGROUPS, "sh", str(tmp_path / "no" / "such"), str(procs), "--",
         "/bin/sh", "-c", 'echo "$$"; printf "%s|" "$@"', "sh", "a b", "--", "c"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=True, text=True)
    pid, args = out.stdout.splitlines()
    assert procs.read_text().strip() == pid  # the same process, after exec
    assert args == "a b|--|c|"  # arguments after the first -- pass unchanged
    assert out.stderr == ""  # a cgroup file it may not write is skipped silently


def test_without_cgroups_the_command_runs_as_given():
    out = subprocess.run(["/bin/sh", "-c", lab_podman.JOIN_CGROUPS, "sh", "--", "echo", "ok"],
                         stdout=subprocess.PIPE, check=True, text=True)
    assert out.stdout == "ok\n"
