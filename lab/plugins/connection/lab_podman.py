# -*- coding: utf-8 -*-
# Copyright (c) vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The lab's connection: containers.podman.podman with modules piped over stdin.

containers.podman.podman runs four podman commands for every task (mount, mkdir,
copy and chmod + run, rm), because its ``podman exec`` has no stdin. Attached
(``podman exec --interactive``) a module can be piped into the interpreter instead,
as ssh does with pipelining: one ``podman exec`` per task, and the container's
file system is mounted only when a file is copied (copy, template, fetch, script).
Measured on the lab (20 ``command`` tasks on one host): 17.5 s with
containers.podman.podman, 7.0 s with this plugin.

Lab only: it is not part of the collection (galaxy.yml ignores lab/).
"""

from __future__ import annotations

import shlex

from ansible.module_utils.common.text.converters import to_native
from ansible.plugins.connection import ConnectionBase, ensure_connect
from ansible_collections.containers.podman.plugins.connection.podman import Connection as PodmanConnection

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
"""


class Connection(PodmanConnection):
    """podman exec --interactive, one command per task."""

    transport = "lab_podman"
    has_pipelining = True
    # Always pipe new-style modules, whatever ANSIBLE_PIPELINING says: the podman
    # connection has no sudo password prompt or tty requirement to work around.
    always_pipeline_modules = True

    def _connect(self):
        # No `podman mount` up front: most tasks never copy a file.
        ConnectionBase._connect(self)  # pylint: disable=protected-access
        self._connected = True
        return self

    def _mount(self):
        # Once per connection (the parent copies with `podman cp` when it has no mount).
        if not getattr(self, "_mount_tried", False):
            self._mount_tried = True
            PodmanConnection._connect(self)  # mounts the container's file system

    @ensure_connect
    def exec_command(self, cmd, in_data=None, sudoable=False):
        ConnectionBase.exec_command(self, cmd, in_data=in_data, sudoable=sudoable)
        args = ["exec"]
        if in_data is not None:
            args.append("--interactive")
        if self.user:
            args.extend(("--user", self.user))
        return self._podman(args, shlex.split(to_native(cmd, errors="surrogate_or_strict")), in_data)

    def put_file(self, in_path, out_path):
        self._mount()
        return super().put_file(in_path, out_path)

    def fetch_file(self, in_path, out_path):
        self._mount()
        return super().fetch_file(in_path, out_path)
