# -*- coding: utf-8 -*-
# Copyright (c) vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The lab's ``local``: ansible.builtin.local, with piped modules run by the lab's fork server.

The lab's tools put lab/plugins/connection on ANSIBLE_CONNECTION_PLUGINS (tools/env.sh), so
this plugin answers for ``local``: the connection of ``localhost``, where the scenarios sign
certificates (the pki role's CA host), drive podman and open viewers. Everything is
ansible.builtin.local's, except one case: a module piped into a Python interpreter, nothing
else on the command line and no privilege escalation, runs in a process forked from a warm
interpreter (lab/python/vmc_lab_forkserver.py) of that same interpreter, started with the same
PYTHON* settings, with this run's environment, folder and umask. The server imports the standard library and the modules
Ansible's crypto modules need (``cryptography``) once, and ends after two idle minutes. Its
socket is under /run/vmconsole-lab/forkserver/, named by the interpreter, its PYTHON* settings
and the server's code, so each checkout and each version of the server has its own.

``VMC_LAB_FORK_SERVER=0`` runs every module the usual way; a server that cannot be started
or reached is reported at -vvv and the module runs the usual way.

Lab only: not part of the collection (galaxy.yml leaves lab/ out).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import subprocess

import ansible.plugins.connection
from ansible.errors import AnsibleConnectionFailure
from ansible.module_utils.common.text.converters import to_native
from ansible.module_utils.parsing.convert_bool import boolean
from ansible.utils.display import Display

display = Display()


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# Ansible loads this file as ansible.plugins.connection.local, the builtin's own name: the
# builtin is loaded from its file under a name of its own.
_builtin = _load("vmc_lab_builtin_local", os.path.join(os.path.dirname(ansible.plugins.connection.__file__), "local.py"))
LocalConnection = _builtin.Connection

# The builtin's options (ansible-core 2.19-2.21; 2.16-2.18 have only pipelining), as a literal:
# ansible-lint reads plugin documentation from the source. tests/unit/test_lab_local_connection.py
# checks that every option of the installed builtin is here.
DOCUMENTATION = """
    name: local
    short_description: execute on controller (the lab's, with a fork server for piped modules)
    description:
        - ansible.builtin.local; a module piped into a Python interpreter runs in the lab's fork server.
    author: vmconsole.secure contributors
    options:
        become_success_timeout:
            type: int
            default: 10
            description:
                - Number of seconds to wait for become to succeed when enabled.
                - The default will be used if the configured value is less than 1.
            vars:
                - name: ansible_local_become_success_timeout
        become_strip_preamble:
            type: bool
            default: true
            description:
                - Strip internal become output preceding command execution. Disable for additional diagnostics.
            vars:
                - name: ansible_local_become_strip_preamble
    extends_documentation_fragment:
        - connection_pipelining
"""

FORKSERVER_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python", "vmc_lab_forkserver.py")
forkserver = _load("vmc_lab_forkserver", FORKSERVER_PATH)

SOCKET_DIR = "/run/vmconsole-lab/forkserver"
# How Ansible pipes a module: /bin/sh -c '<interpreter> && sleep 0'.
PIPELINED = re.compile(r"/bin/sh -c '(/[^\s'\"\\$`;&|<>()]+) && sleep 0'")
IDLE_SECONDS = 120
# Imported ahead besides the standard library: what community.crypto's modules load.
EXTRA = ("cryptography.x509", "cryptography.hazmat.primitives.serialization",
         "cryptography.hazmat.primitives.asymmetric.ec", "cryptography.hazmat.primitives.asymmetric.rsa",
         "cryptography.hazmat.primitives.asymmetric.ed25519", "cryptography.hazmat.primitives.hashes")


def socket_path(interpreter, source, environ=None):
    """The socket of the server for ``interpreter`` running server code ``source`` (bytes).

    The environment's PYTHON* settings (PYTHONPATH and the like) are part of the name: the
    interpreter reads them when it starts, so a run with others needs a server of its own.
    """
    environ = os.environ if environ is None else environ
    startup = sorted((k, v) for k, v in environ.items() if k.startswith("PYTHON"))
    digest = hashlib.sha256(repr((interpreter, startup)).encode() + b"\0" + source).hexdigest()[:24]
    return os.path.join(SOCKET_DIR, digest + ".sock")


def current_umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


class Connection(LocalConnection):
    """ansible.builtin.local; piped modules run by the lab's fork server."""

    def exec_command(self, cmd, in_data=None, sudoable=True):
        match = PIPELINED.fullmatch(to_native(cmd)) if isinstance(cmd, (str, bytes)) else None
        if (match is None or not in_data or (sudoable and self.become)
                or not boolean(os.environ.get("VMC_LAB_FORK_SERVER", "1"))):
            return super().exec_command(cmd, in_data=in_data, sudoable=sudoable)
        interpreter = match.group(1)
        with open(FORKSERVER_PATH, "rb") as f:
            source = f.read()
        path = socket_path(interpreter, source)

        def start_server():
            os.makedirs(SOCKET_DIR, mode=0o700, exist_ok=True)
            proc = subprocess.run([interpreter, "-", path, str(IDLE_SECONDS), ",".join(EXTRA)], input=source,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
            if proc.returncode != 0:
                return False, "did not start (rc %d): %s" % (proc.returncode, to_native(proc.stderr).strip())
            return True, to_native(proc.stdout).strip()

        display.vvv("FORK %s" % to_native(cmd), host=self._play_context.remote_addr)
        # self.cwd is relative (b"." by default): to this process's folder, as Popen(cwd=...) takes it.
        settings = {"env": dict(os.environ), "cwd": os.path.abspath(to_native(self.cwd or ".")), "umask": current_umask()}
        try:
            ran = forkserver.request_or_start(
                path, in_data, start_server, settings,
                log=lambda message: display.vvv("FORK SERVER local: %s" % message, host=self._play_context.remote_addr))
        except (EOFError, OSError) as exc:  # after the server took the run: never run it a second time
            raise AnsibleConnectionFailure("localhost: the fork server failed: %s" % exc) from exc
        if ran is None:
            return super().exec_command(cmd, in_data=in_data, sudoable=sudoable)
        return ran
