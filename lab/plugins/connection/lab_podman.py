# -*- coding: utf-8 -*-
# Copyright (c) vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The lab's connection: a podman container's namespaces entered directly, modules piped in.

containers.podman.podman runs four podman commands for every task (mount, mkdir,
copy and chmod + run, rm), because its ``podman exec`` has no stdin. Each ``podman
exec`` costs about 0.15 s and 65 ms of CPU on the controller (podman, conmon and runc
start for every call), and a `make test` makes some 13,000 of them.

This connection looks the container up once (``podman inspect``: its init's PID, cgroup
and environment, cached under /run/vmconsole-lab/connection and checked against the
init's start time on every use), then runs each command with ``nsenter --all`` into
that init's namespaces, root and working directory, in the container's cgroups and with
the container's environment: what ``podman exec`` does, for about 3 ms. New-style
modules are piped into the interpreter (pipelining: one process per task); files are
copied with ``cat`` inside the container, so paths and symlinks resolve as the
container sees them. Another remote user than root goes through ``podman exec --user``.

A module piped into ``/usr/bin/python3`` (the form Ansible pipelines with, nothing else on
the command line) runs in a process forked from a warm interpreter instead: the lab's fork
server (lab/python/vmc_lab_forkserver.py), which this connection starts in the container
the way it runs any command, the first time a host needs it. It saves the host about half
of what such a task costs it (the interpreter's start and the standard library's imports).
Option ``fork_server`` (``VMC_LAB_FORK_SERVER=0``) turns it off; a server that cannot be
started or reached is reported at -vvv and the module runs the usual way.

Lab only: it is not part of the collection (galaxy.yml ignores lab/).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import subprocess

from ansible.errors import AnsibleConnectionFailure, AnsibleError
from ansible.module_utils.common.text.converters import to_bytes, to_native
from ansible.module_utils.parsing.convert_bool import boolean
from ansible.plugins.connection import ConnectionBase, ensure_connect
from ansible.utils.display import Display
from ansible_collections.containers.podman.plugins.connection.podman import Connection as PodmanConnection

display = Display()

CACHE_DIR = "/run/vmconsole-lab/connection"
CGROUP_ROOT = "/sys/fs/cgroup"
# sh -c JOIN_CGROUPS sh PROCS... -- COMMAND...: write the shell's PID into each cgroup.procs
# file, then exec COMMAND in its place (same PID, so it stays in those cgroups).
JOIN_CGROUPS = 'for f do [ "$f" = -- ] && break; { echo $$ >"$f"; } 2>/dev/null; shift; done; shift; exec "$@"'

# The lab's fork server: loaded from lab/python (its code also runs in the containers).
FORKSERVER_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python", "vmc_lab_forkserver.py")
_spec = importlib.util.spec_from_file_location("vmc_lab_forkserver", FORKSERVER_PATH)
forkserver = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(forkserver)
# The one interpreter the server stands in for, and the command line Ansible pipes a module with.
FORK_PYTHON = "/usr/bin/python3"
PIPELINED = ["/bin/sh", "-c", FORK_PYTHON + " && sleep 0"]

# The options of containers.podman.podman (1.18), which this plugin reads through it.
DOCUMENTATION = """
    name: lab_podman
    short_description: containers.podman.podman with modules piped over stdin (the lab's connection)
    description:
      - Runs commands in an existing podman container like containers.podman.podman, but pipes
        new-style modules into C(podman exec --interactive) instead of copying them in, and
        mounts the container's file system only when a file is copied.
    options:
      remote_addr:
        description: The name or ID of the container.
        default: inventory_hostname
        vars:
          - name: ansible_host
          - name: inventory_hostname
          - name: ansible_podman_host
      remote_user:
        description: The user that runs commands inside the container.
        ini:
          - section: defaults
            key: remote_user
        env:
          - name: ANSIBLE_REMOTE_USER
        vars:
          - name: ansible_user
      podman_extra_args:
        description: Extra arguments of the podman command line.
        default: ''
        ini:
          - section: defaults
            key: podman_extra_args
        vars:
          - name: ansible_podman_extra_args
        env:
          - name: ANSIBLE_PODMAN_EXTRA_ARGS
      podman_executable:
        description: The podman executable.
        default: podman
        vars:
          - name: ansible_podman_executable
        env:
          - name: ANSIBLE_PODMAN_EXECUTABLE
      fork_server:
        description: Run modules piped into /usr/bin/python3 through the lab's fork server.
        type: bool
        default: true
        env:
          - name: VMC_LAB_FORK_SERVER
"""


def start_time(pid):
    """The start time of process ``pid`` (clock ticks after boot), or None if it is gone."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as stat:
            # Field 22; the command name (field 2) may hold spaces and parentheses.
            return int(stat.read().rsplit(b")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def cgroup_procs(cgroup_path, root=CGROUP_ROOT):
    """The ``cgroup.procs`` files of the container's cgroup, one per mounted hierarchy."""
    found = []
    relative = cgroup_path.strip("/")
    try:
        hierarchies = sorted(os.listdir(root))
    except OSError:
        return found
    for hierarchy in [""] + hierarchies:
        procs = os.path.realpath(os.path.join(root, hierarchy, relative, "cgroup.procs"))
        if relative and os.path.isfile(procs) and procs not in found:
            found.append(procs)
    return found


class Container:
    """What entering a container takes: its init's PID and start time, cgroups, environment."""

    def __init__(self, name, pid, start, procs, env):
        self.name, self.pid, self.start, self.procs, self.env = name, pid, start, procs, env

    @classmethod
    def load(cls, name, podman):
        """From the cache if its PID still is the same process, else from ``podman inspect``."""
        cache = os.path.join(CACHE_DIR, name.replace("/", "_") + ".json")
        try:
            with open(cache) as f:
                data = json.load(f)
            if data["pid"] > 0 and start_time(data["pid"]) == data["start"]:
                return cls(name, data["pid"], data["start"], data["procs"], data["env"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
        proc = subprocess.run(
            [podman, "inspect", "--type=container", "--format",
             "{{json .State.Pid}} {{json .State.CgroupPath}} {{json .Config.Env}}", name],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
        if proc.returncode != 0:
            raise AnsibleConnectionFailure("container %s: podman inspect failed: %s"
                                           % (name, to_native(proc.stderr).strip()))
        pid_json, cgroup_json, env_json = to_native(proc.stdout).strip().split(" ", 2)
        pid = json.loads(pid_json)
        start = start_time(pid) if pid else None
        if start is None:
            raise AnsibleConnectionFailure("container %s is not running" % name)
        data = {"pid": pid, "start": start, "procs": cgroup_procs(json.loads(cgroup_json)),
                "env": json.loads(env_json) or []}
        os.makedirs(CACHE_DIR, mode=0o700, exist_ok=True)
        tmp = "%s.%d" % (cache, os.getpid())
        with open(tmp, "w") as f:
            json.dump(data, f)
        os.replace(tmp, cache)
        return cls(name, pid, start, data["procs"], data["env"])

    def fork_socket(self):
        """The fork server's socket as this machine reaches it: through the init's root."""
        return "/proc/%d/root%s" % (self.pid, forkserver.SOCKET)

    def fork_run(self, in_data):
        """Run the script ``in_data`` with the container's fork server, starting it when none answers.

        Returns (rc, stdout, stderr), or None when no server can be started or reached (the
        caller runs the script the usual way; nothing ran).
        """
        def start_server():
            with open(FORKSERVER_PATH, "rb") as f:
                rc, out, err = self.run([FORK_PYTHON, "-", forkserver.SOCKET], in_data=f.read())
            if rc != 0:
                return False, "did not start (rc %d): %s" % (rc, to_native(err).strip())
            return True, to_native(out).strip()

        return forkserver.request_or_start(
            self.fork_socket(), in_data, start_server,
            log=lambda message: display.vvv("FORK SERVER %s: %s" % (self.name, message), host=self.name))

    def argv(self, args):
        """The command line that runs ``args`` inside the container as root, in its cgroups.

        A small shell joins the container's cgroups first (as `podman exec` does; a hierarchy
        it may not write is skipped: the command still runs, accounted to us), then becomes
        nsenter. Not a ``preexec_fn``: with one, Python forks the whole Ansible worker (its page
        tables, then copy-on-write faults) instead of a vfork, about 10 ms of CPU per task.
        """
        return (["/bin/sh", "-c", JOIN_CGROUPS, "sh"] + list(self.procs) + ["--"]
                + ["nsenter", "--target=%d" % self.pid, "--all", "--root", "--wd", "--",
                   "/usr/bin/env", "-i"] + list(self.env) + list(args))

    def run(self, args, in_data=None, stdin=None, stdout=subprocess.PIPE):
        proc = subprocess.Popen(  # pylint: disable=consider-using-with
            [to_bytes(a, errors="surrogate_or_strict") for a in self.argv(args)],
            stdin=stdin if stdin is not None else subprocess.PIPE, stdout=stdout, stderr=subprocess.PIPE,
            close_fds=True)
        out, err = proc.communicate(input=in_data)
        # The container went away between the check and the run: say so, not "rc 1".
        if proc.returncode != 0 and start_time(self.pid) != self.start:
            raise AnsibleConnectionFailure("container %s stopped while a command ran" % self.name)
        return proc.returncode, out if out is not None else b"", err


class Connection(PodmanConnection):
    """nsenter into the container, one process per task."""

    transport = "lab_podman"
    has_pipelining = True
    # Always pipe new-style modules, whatever ANSIBLE_PIPELINING says: there is no sudo
    # password prompt or tty requirement to work around.
    always_pipeline_modules = True

    def _connect(self):
        # No `podman mount`: files are copied through the container's own `cat`.
        ConnectionBase._connect(self)  # pylint: disable=protected-access
        if not self._connected:
            self._container = None
            self._connected = True
        return self

    def _as_root(self):
        return self.user in (None, "", "root", "0")

    def _target(self):
        if self._container is None:
            self._container = Container.load(self._container_id, self.get_option("podman_executable"))
        return self._container

    @ensure_connect
    def exec_command(self, cmd, in_data=None, sudoable=False):
        ConnectionBase.exec_command(self, cmd, in_data=in_data, sudoable=sudoable)
        args = shlex.split(to_native(cmd, errors="surrogate_or_strict"))
        if not self._as_root():
            return self._podman(["exec", "--interactive", "--user", self.user], args, in_data)
        container = self._target()
        if args == PIPELINED and in_data and boolean(self.get_option("fork_server")):
            display.vvv("FORK %s %r" % (self._container_id, args), host=self._container_id)
            try:
                ran = container.fork_run(in_data)
            except (EOFError, OSError) as exc:
                if start_time(container.pid) != container.start:
                    raise AnsibleConnectionFailure("container %s stopped while a command ran" % self._container_id) from exc
                raise AnsibleConnectionFailure("container %s: the fork server failed: %s" % (self._container_id, exc)) from exc
            if ran is not None:
                return ran
        display.vvv("NSENTER %s %r" % (self._container_id, args), host=self._container_id)
        return container.run(args, in_data=in_data)

    @ensure_connect
    def put_file(self, in_path, out_path):
        if not self._as_root():
            return super().put_file(in_path, out_path)
        ConnectionBase.put_file(self, in_path, out_path)
        display.vvv("PUT %s TO %s" % (in_path, out_path), host=self._container_id)
        with open(to_bytes(in_path, errors="surrogate_or_strict"), "rb") as src:
            rc, _out, err = self._target().run(["/bin/sh", "-c", 'cat > "$1"', "sh", out_path], stdin=src)
        if rc != 0:
            raise AnsibleError("copying %s to %s in container %s failed: %s"
                               % (in_path, out_path, self._container_id, to_native(err).strip()))
        return None

    @ensure_connect
    def fetch_file(self, in_path, out_path):
        if not self._as_root():
            return super().fetch_file(in_path, out_path)
        ConnectionBase.fetch_file(self, in_path, out_path)
        display.vvv("FETCH %s TO %s" % (in_path, out_path), host=self._container_id)
        with open(to_bytes(out_path, errors="surrogate_or_strict"), "wb") as dst:
            rc, _out, err = self._target().run(["cat", "--", in_path], stdout=dst)
        if rc != 0:
            raise AnsibleError("fetching %s from container %s failed: %s"
                               % (in_path, self._container_id, to_native(err).strip()))
        return None
