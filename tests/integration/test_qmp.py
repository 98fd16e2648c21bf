# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The QMP client and the QMP modules against real QEMU processes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading

import pytest

from ansible_collections.vmconsole.secure.plugins.module_utils._qmp import (
    QMPClient,
    QMPCommandError,
    QMPConnectionRefused,
    QMPPermissionDenied,
    QMPProtocolError,
    QMPSocketMissing,
    QMPTimeout,
    QMPUnexpectedEOF,
)
from ansible_collections.vmconsole.secure.plugins.modules import console_info, qmp_command

try:
    from ansible.module_utils.testing import patch_module_args
except ImportError:  # ansible-core < 2.19
    patch_module_args = None

NOBODY = 65534


def run_main(main, args, capsys, check_mode=False):
    """Run a module's main() in-process and return its result."""
    if patch_module_args is None:
        pytest.skip("needs ansible-core >= 2.19 (ansible.module_utils.testing)")
    args = dict(args, _ansible_check_mode=check_mode)
    with patch_module_args(args):
        with pytest.raises(SystemExit):
            main()
    return json.loads(capsys.readouterr().out)


def run_adhoc(module, args, check=False):
    """Run ``ansible localhost -m vmconsole.secure.<module>`` and return (rc, result)."""
    argv = ["ansible", "localhost", "-i", "localhost,", "-c", "local", "-e",
            "ansible_python_interpreter=/usr/bin/python3", "-o", "-m", "vmconsole.secure." + module,
            "-a", json.dumps(args)]
    if check:
        argv.append("--check")
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("localhost |")), None)
    assert line is not None and "=>" in line, "no result from ansible:\n%s\n%s" % (proc.stdout, proc.stderr)
    return proc.returncode, json.loads(line.split("=>", 1)[1])


def status(vm):
    with vm.qmp() as qmp:
        return qmp.execute("query-status")["status"]


# --- the client -------------------------------------------------------------------------------

def test_client_queries(qemu_vm):
    with qemu_vm.qmp() as qmp:
        assert qmp.version["major"] >= 7
        assert qmp.version_string.count(".") == 2
        state = qmp.execute("query-status")
        assert (state["status"], state["running"]) == ("running", True)
        spice = qmp.execute("query-spice")
    assert spice["enabled"] is True
    assert spice["host"] == "127.0.0.1"
    assert spice["tls-port"] == qemu_vm.tls_port
    assert "port" not in spice  # TLS only: no plain port
    assert spice["auth"] == "spice"  # ticketing on
    assert spice["channels"] == []


def test_command_errors_keep_class_and_desc(qemu_vm):
    with qemu_vm.qmp() as qmp:
        with pytest.raises(QMPCommandError) as info:
            qmp.execute("no-such-command")
        assert info.value.error_class == "CommandNotFound"
        assert "no-such-command" in info.value.desc
        # No -vnc on this VM: QEMU 7.2 refuses with a GenericError.
        with pytest.raises(QMPCommandError) as info:
            qmp.execute("set_password", {"protocol": "vnc", "password": "abcdefgh"})
        assert (info.value.error_class, info.value.desc) == ("GenericError", "Could not set password")
        assert info.value.socket == qemu_vm.qmp_path
        # the monitor still answers after errors
        assert qmp.execute("query-status")["running"] is True


def test_events_are_buffered_and_awaited(qemu_vm):
    with qemu_vm.qmp() as qmp:
        qmp.execute("stop")
        qmp.execute("cont")  # STOP (and maybe RESUME) arrive while this waits for its reply
        assert qmp.wait_event("STOP", timeout=5)["event"] == "STOP"
        assert qmp.wait_event("RESUME", timeout=5)["event"] == "RESUME"
        with pytest.raises(QMPTimeout, match="event STOP"):
            qmp.wait_event("STOP", timeout=0.3)


def test_quit_then_eof(qemu_vm):
    with qemu_vm.qmp() as qmp:
        assert qmp.execute("quit") == {}
        event = qmp.wait_event("SHUTDOWN", timeout=10)
        assert event["data"]["reason"] == "host-qmp-quit"
        with pytest.raises(QMPUnexpectedEOF):
            qmp.execute("query-status")
    qemu_vm.proc.wait(10)
    with pytest.raises(QMPSocketMissing):  # QEMU removes its socket on a clean exit
        QMPClient(qemu_vm.qmp_path, timeout=2).connect()


def test_stale_socket_after_a_crash_is_refused(qemu_vm):
    os.kill(qemu_vm.pid, signal.SIGKILL)  # our own child, by PID
    qemu_vm.proc.wait(10)
    assert os.path.exists(qemu_vm.qmp_path)
    with pytest.raises(QMPConnectionRefused, match="nothing listens"):
        QMPClient(qemu_vm.qmp_path, timeout=2).connect()


def test_one_client_at_a_time(qemu_vm):
    with qemu_vm.qmp():
        with pytest.raises(QMPTimeout, match="one QMP client at a time"):
            QMPClient(qemu_vm.qmp_path, timeout=0.5).connect()
    with qemu_vm.qmp() as qmp:  # free again once the first client closed
        assert qmp.execute("query-status")["running"] is True


def test_missing_and_regular_file(tmp_path):
    with pytest.raises(QMPSocketMissing):
        QMPClient(str(tmp_path / "nothere.qmp"), timeout=2).connect()
    regular = tmp_path / "file.qmp"
    regular.write_text("")
    with pytest.raises(QMPConnectionRefused, match="not a UNIX socket"):
        QMPClient(str(regular), timeout=2).connect()


def test_a_socket_that_is_not_qmp(tmp_path):
    path = str(tmp_path / "http.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)

    def serve():
        conn, _addr = listener.accept()
        with conn:
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with pytest.raises(QMPProtocolError, match="not JSON") as info:
            QMPClient(path, timeout=5).connect()
        assert path in str(info.value)
    finally:
        thread.join(5)
        listener.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to nobody")
def test_permission_denied_for_an_unprivileged_user(qemu_vm):
    # The VM's socket folder is 0700 root, like /run/vmconsole. The child imports the client
    # as root, then drops to nobody and connects.
    assert os.stat(os.path.dirname(qemu_vm.qmp_path)).st_mode & 0o777 == 0o700
    code = (
        "import os, sys\n"
        "from ansible_collections.vmconsole.secure.plugins.module_utils._qmp import QMPClient, QMPError\n"
        "os.setgroups([]); os.setgid(%d); os.setuid(%d)\n"
        "try:\n"
        "    QMPClient(sys.argv[1], timeout=5).connect()\n"
        "except QMPError as exc:\n"
        "    print(type(exc).__name__); print(exc)\n"
    ) % (NOBODY, NOBODY)
    proc = subprocess.run([sys.executable, "-c", code, qemu_vm.qmp_path], capture_output=True, text=True,
                          timeout=30, check=True)
    name, message = proc.stdout.splitlines()[:2]
    assert name == QMPPermissionDenied.__name__
    assert qemu_vm.qmp_path in message and "root" in message


# --- the modules ------------------------------------------------------------------------------

def test_console_info_main(qemu_factory, capsys):
    vm = qemu_factory(plain_port=True, vnc=True)
    result = run_main(console_info.main, dict(socket=vm.qmp_path), capsys)
    assert result["changed"] is False
    assert result["status"] == {"running": True, "status": "running"}
    spice = result["spice"]
    assert (spice["enabled"], spice["host"], spice["tls_port"], spice["port"], spice["auth"]) == \
        (True, "127.0.0.1", vm.tls_port, vm.plain_port, "spice")
    assert spice["channels"] == []
    vnc = result["vnc"]
    assert (vnc["enabled"], vnc["host"], vnc["port"], vnc["auth"], vnc["clients"]) == \
        (True, "127.0.0.1", vm.vnc_port, "vnc", [])


def test_console_info_without_spice(qemu_factory, capsys):
    vm = qemu_factory(spice=False)
    result = run_main(console_info.main, dict(socket=vm.qmp_path), capsys, check_mode=True)
    assert result["spice"]["enabled"] is False and result["spice"]["channels"] == []
    assert result["vnc"]["enabled"] is False


def test_qmp_command_main(qemu_vm, capsys):
    result = run_main(qmp_command.main, dict(socket=qemu_vm.qmp_path, command="stop"), capsys)
    assert result["changed"] is True and result["qmp_return"] == {}
    assert status(qemu_vm) == "paused"
    result = run_main(qmp_command.main, dict(socket=qemu_vm.qmp_path, command="query-status"), capsys)
    assert result["changed"] is False and result["qmp_return"]["status"] == "paused"


def test_qmp_command_error_main(qemu_vm, capsys):
    result = run_main(qmp_command.main, dict(socket=qemu_vm.qmp_path, command="set_password",
                                             arguments={"protocol": "vnc", "password": "Secr3tVnc"}), capsys)
    assert result["failed"] is True
    assert result["qmp_error_class"] == "GenericError"
    assert qemu_vm.qmp_path in result["msg"]
    assert "Secr3tVnc" not in json.dumps(result)


def test_adhoc_console_info(qemu_vm):
    rc, result = run_adhoc("console_info", {"socket": qemu_vm.qmp_path})
    assert rc == 0, result
    assert result["spice"]["tls_port"] == qemu_vm.tls_port
    assert result["status"]["running"] is True


def test_adhoc_qmp_command_check_mode_sends_nothing(qemu_vm):
    rc, result = run_adhoc("qmp_command", {"socket": qemu_vm.qmp_path, "command": "stop"}, check=True)
    assert rc == 0, result
    assert result["changed"] is True and "qmp_return" not in result
    assert status(qemu_vm) == "running"
    rc, result = run_adhoc("qmp_command", {"socket": qemu_vm.qmp_path, "command": "stop"})
    assert rc == 0 and result["changed"] is True, result
    assert status(qemu_vm) == "paused"


def test_adhoc_missing_socket_fails_cleanly(tmp_path):
    rc, result = run_adhoc("console_info", {"vm": "web1", "socket_dir": str(tmp_path)})
    assert rc != 0
    assert result["msg"] == ("QMP socket %s/web1.qmp does not exist: is the VM running, and is vm/socket right?"
                             % tmp_path)
    assert result["qmp_error"] == "QMPSocketMissing"
