# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import pytest

from ansible_collections.vmconsole.secure.plugins.module_utils._qmp import (
    QMPCommandError,
    QMPConnectionRefused,
    QMPError,
    QMPPermissionDenied,
    QMPProtocolError,
    QMPSocketMissing,
    QMPTimeout,
    QMPUnexpectedEOF,
)
from ansible_collections.vmconsole.secure.plugins.module_utils._qmp_module import fail_qmp, qmp_socket_path

SOCK = "/run/vmconsole/web1.qmp"


def params(**kwargs):
    base = dict(vm=None, socket=None, socket_dir="/run/vmconsole", timeout=10.0)
    base.update(kwargs)
    return base


@pytest.mark.parametrize("vm", ["web1", "a", "Web_1.prod-2", "0vm", "x" * 64])
def test_socket_path_from_vm(vm):
    assert qmp_socket_path(params(vm=vm)) == "/run/vmconsole/%s.qmp" % vm
    assert qmp_socket_path(params(vm=vm, socket_dir="/srv/q")) == "/srv/q/%s.qmp" % vm


@pytest.mark.parametrize("vm", ["../etc/x", "a/b", ".hidden", "-rf", "web 1", "web1\n", "", "x" * 65, "vm:1"])
def test_invalid_vm_names(vm):
    with pytest.raises(ValueError):
        qmp_socket_path(params(vm=vm))


def test_explicit_socket_wins():
    assert qmp_socket_path(params(socket="/tmp/x.qmp")) == "/tmp/x.qmp"


@pytest.mark.parametrize("timeout", [0, -1.5])
def test_timeout_must_be_positive(timeout):
    with pytest.raises(ValueError, match="timeout"):
        qmp_socket_path(params(vm="web1", timeout=timeout))


class FakeModule:
    def fail_json(self, **kwargs):
        self.result = kwargs
        raise SystemExit(1)


@pytest.mark.parametrize("exc, words", [
    (QMPSocketMissing("x", SOCK), ["does not exist", "is the VM running", "vm/socket"]),
    (QMPPermissionDenied("x", SOCK), ["Permission denied", "become"]),
    (QMPConnectionRefused("connection refused by QMP socket %s: nothing listens" % SOCK, SOCK), ["refused", "vm/socket"]),
    (QMPTimeout("timed out waiting for the reply to 'stop' from QMP %s" % SOCK, SOCK), ["'stop'", "timeout option"]),
    (QMPUnexpectedEOF("QMP %s closed the connection" % SOCK, SOCK), ["closed the connection"]),
    (QMPProtocolError("%s is not a QMP peer" % SOCK, SOCK), ["not a QMP peer", "vm/socket"]),
    (QMPError("cannot connect to QMP socket %s: odd" % SOCK, SOCK), ["odd"]),
])
def test_fail_qmp_says_what_and_where(exc, words):
    module = FakeModule()
    with pytest.raises(SystemExit):
        fail_qmp(module, exc, extra_key=1)
    msg = module.result["msg"]
    assert SOCK in msg
    for word in words:
        assert word in msg
    assert module.result["socket"] == SOCK
    assert module.result["qmp_error"] == type(exc).__name__
    assert module.result["extra_key"] == 1


def test_fail_qmp_command_error_details():
    module = FakeModule()
    exc = QMPCommandError("QMP command 'set_password' failed on %s: GenericError: Could not set password" % SOCK, SOCK,
                          command="set_password", error_class="GenericError", desc="Could not set password")
    with pytest.raises(SystemExit):
        fail_qmp(module, exc)
    assert module.result["qmp_error"] == "QMPCommandError"
    assert module.result["qmp_error_class"] == "GenericError"
    assert module.result["qmp_error_desc"] == "Could not set password"
    assert "set_password" in module.result["msg"] and SOCK in module.result["msg"]
