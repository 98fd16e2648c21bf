# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import json
import os

import pytest

from ansible_collections.vmconsole.secure.plugins.modules import qmp_command
from ansible_collections.vmconsole.secure.tests.unit.fakeqmp import Error, qemu

TABLE = {
    "stop": {},
    "query-status": {"running": True, "status": "running", "singlestep": False},
    "set_password": {},
    "eject": Error("DeviceNotFound", "Device 'cd0' not found"),
}


def test_runs_a_command(fake_qmp, run_module):
    server = fake_qmp(qemu(TABLE))
    result = run_module(qmp_command.main, dict(socket=server.path, command="stop"))
    assert result["changed"] is True
    assert result["qmp_return"] == {}
    assert result["qemu_version"] == "7.2.22"
    assert server.commands == ["qmp_capabilities", "stop"]


def test_query_is_not_a_change(fake_qmp, run_module):
    server = fake_qmp(qemu(TABLE))
    result = run_module(qmp_command.main, dict(socket=server.path, command="query-status"))
    assert result["changed"] is False
    assert result["qmp_return"]["status"] == "running"


def test_vm_name_and_socket_dir(fake_qmp, run_module, short_tmp):
    server = fake_qmp(qemu(TABLE), name="web1.qmp")
    result = run_module(qmp_command.main, dict(vm="web1", socket_dir=short_tmp, command="query-status"))
    assert result["qmp_return"]["running"] is True
    assert server.connections == 1


def test_arguments_are_sent_but_not_echoed_and_passwords_masked(fake_qmp, run_module, capsys):
    server = fake_qmp(qemu(TABLE))
    secret = "Zq8-unique-secret-value"
    result = run_module(qmp_command.main, dict(socket=server.path, command="set_password",
                                               arguments={"protocol": "spice", "password": secret}))
    assert server.requests[-1]["arguments"] == {"protocol": "spice", "password": secret}
    assert "arguments" not in result
    assert secret not in json.dumps(result)


def test_a_password_in_the_arguments_never_reaches_the_journal(fake_qmp, run_module, module_log):
    server = fake_qmp(qemu(TABLE))
    secret = "Zq8-unique-secret-value"
    run_module(qmp_command.main, dict(socket=server.path, command="set_password",
                                      arguments={"protocol": "spice", "password": secret, "nested": [{"password": "Pw2"}]}))
    (invocation,) = [line for line in module_log if line.startswith("Invoked with ")]
    assert "set_password" in invocation and "spice" in invocation, "the invocation is still logged"
    assert secret not in invocation and "Pw2" not in invocation, invocation


@pytest.mark.parametrize("command, changed", [("stop", True), ("query-status", False)])
def test_check_mode_sends_nothing(fake_qmp, run_module, command, changed):
    server = fake_qmp(qemu(TABLE))
    result = run_module(qmp_command.main, dict(socket=server.path, command=command), check_mode=True)
    assert result["changed"] is changed
    assert "qmp_return" not in result
    assert server.connections == 0 and server.requests == []


def test_check_mode_still_validates(run_module):
    result = run_module(qmp_command.main, dict(vm="../../etc/passwd", command="stop"), check_mode=True)
    assert result["failed"] is True
    assert "not a valid VM name" in result["msg"]


def test_command_error(fake_qmp, run_module):
    server = fake_qmp(qemu(TABLE))
    result = run_module(qmp_command.main, dict(socket=server.path, command="eject", arguments={"id": "cd0"}))
    assert result["failed"] is True
    assert result["qmp_error"] == "QMPCommandError"
    assert result["qmp_error_class"] == "DeviceNotFound"
    assert result["qmp_error_desc"] == "Device 'cd0' not found"
    assert server.path in result["msg"]


def test_missing_socket(run_module, short_tmp):
    path = os.path.join(short_tmp, "web1.qmp")
    result = run_module(qmp_command.main, dict(vm="web1", socket_dir=short_tmp, command="stop"))
    assert result["failed"] is True
    assert result["msg"] == "QMP socket %s does not exist: is the VM running, and is vm/socket right?" % path
    assert result["qmp_error"] == "QMPSocketMissing"
    assert result["socket"] == path


@pytest.mark.parametrize("args, words", [
    (dict(command="stop"), "one of the following is required: vm, socket"),
    (dict(vm="a", socket="/x", command="stop"), "mutually exclusive"),
    (dict(vm="a"), "missing required arguments: command"),
    (dict(vm="a", command=" "), "command must not be empty"),
])
def test_bad_options(run_module, args, words):
    result = run_module(qmp_command.main, args)
    assert result["failed"] is True
    assert words in result["msg"]


def test_secret_values_finds_nested_passwords():
    value = {"password": "a", "x": [{"password": "b"}, {"y": {"password": "c"}}], "other": "d", "password2": "e"}
    assert qmp_command.secret_values(value) == {"a", "b", "c"}
    assert qmp_command.secret_values(None) == set()
