# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Shared unit-test fixtures: ``fake_qmp`` (a scripted QMP server) and ``run_module``."""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import threading

import pytest

from ansible.module_utils import basic

from ansible_collections.vmconsole.secure.tests.unit.fakeqmp import FakeQMPServer

try:
    from ansible.module_utils.testing import patch_module_args  # ansible-core >= 2.19
except ImportError:  # older ansible-core: the classic way
    import contextlib

    from unittest import mock

    @contextlib.contextmanager
    def patch_module_args(args=None):
        data = json.dumps({"ANSIBLE_MODULE_ARGS": args or {}}).encode("utf-8")
        with mock.patch.object(basic, "_ANSIBLE_ARGS", data):
            yield


@pytest.fixture(autouse=True)
def module_log(monkeypatch):
    """Every line a module run here would write to the node's journal or syslog, in a list.

    In place of journald and syslog for every unit test, so the tests never write to this machine's
    log, and a test can look at exactly what a managed node's journal would get.
    """
    lines = []
    monkeypatch.setattr(basic, "has_journal", False)
    monkeypatch.setattr(basic.AnsibleModule, "_log_to_syslog", lambda self, msg: lines.append(msg))
    return lines


@pytest.fixture
def short_tmp():
    """A fresh folder under /tmp with a short path (UNIX socket paths are limited to 108 bytes)."""
    path = tempfile.mkdtemp(prefix="vmc-u-", dir="/tmp")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def fake_qmp(short_tmp):
    """``fake_qmp(script, name="vm.qmp", tcp=False)`` -> a started FakeQMPServer.

    The socket is ``server.path`` (``<short_tmp>/<name>``), or ``127.0.0.1:server.port`` for
    TCP. Servers are stopped after the test; an assertion that failed inside a script
    fails the test there.
    """
    servers = []

    def start(script, name="vm.qmp", tcp=False):
        server = FakeQMPServer(script, path=None if tcp else os.path.join(short_tmp, name)).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def run_module(capsys):
    """``run_module(main, args, check_mode=False)`` -> the module's result dict.

    Runs a module's ``main()`` in-process with ``args``, catches its exit and parses the
    JSON it printed. A failed module returns ``failed: true`` like in a playbook.
    """
    def run(main, args, check_mode=False):
        args = dict(args)
        if check_mode:
            args["_ansible_check_mode"] = True
        with patch_module_args(args):
            with pytest.raises(SystemExit):
                main()
        return json.loads(capsys.readouterr().out)

    return run


@pytest.fixture
def manager():
    """``manager(answer)`` -> (port, the requests received): a one-shot HTTP server on 127.0.0.1 (squid's cache manager)."""
    servers = []

    def start(answer):
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        seen = []

        def serve():
            conn, dummy = listener.accept()
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(4096)
                seen.append(data.decode())
                conn.sendall(answer)
            listener.close()
        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        servers.append(thread)
        return listener.getsockname()[1], seen
    yield start
    for thread in servers:
        thread.join(5)
