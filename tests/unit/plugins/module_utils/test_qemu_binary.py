# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""module_utils/_qemu_binary.py against stand-in QEMU binaries: small Python programs that take
the monitor socket the probe hands them (-chardev socket,fd=N) and answer QMP as scripted, or
fail to start as a QEMU without SPICE does. tests/integration/test_qemu_binary_info.py asks a
real QEMU."""

from __future__ import annotations

import os
import sys
import textwrap
import time

import pytest

from ansible_collections.vmconsole.secure.plugins.module_utils import _qemu_binary

FAKE = textwrap.dedent('''\
    import json, os, re, socket, sys
    mode = %(mode)r
    args = sys.argv[1:]
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "argv.json"), "w") as f:
        json.dump(args, f)
    if mode == "no-spice":
        sys.stderr.write("qemu-system-x86_64: -spice unix=on: There is no option group 'spice'\\n"
                         "Perhaps you want to install qemu-system-modules-spice package?\\n")
        sys.exit(1)
    fd = int(re.search(r"fd=([0-9]+)", args[args.index("-chardev") + 1]).group(1))
    listener = socket.socket(fileno=fd)
    conn, _ = listener.accept()
    if mode == "silent":
        import time
        time.sleep(60)  # never greets (the probe kills it)
    files = conn.makefile("rwb")
    def send(obj):
        files.write(json.dumps(obj).encode() + b"\\r\\n"); files.flush()
    send({"QMP": {"version": {"qemu": {"major": 10, "minor": 0, "micro": 3}, "package": " Debian 1:10.0.3+ds-1 "},
                  "capabilities": []}})
    for line in files:
        cmd = json.loads(line)
        name, rid = cmd["execute"], cmd.get("id")
        if name == "query-version":
            send({"return": {"qemu": {"major": 10, "minor": 0, "micro": 3}, "package": " Debian 1:10.0.3+ds-1 "}, "id": rid})
        elif name == "query-spice" and mode == "disabled":
            send({"return": {"enabled": False, "migrated": False}, "id": rid})
        elif name == "query-spice" and mode == "no-command":
            send({"error": {"class": "CommandNotFound", "desc": "The command query-spice has not been found"}, "id": rid})
        elif name == "query-spice":
            send({"return": {"enabled": True, "compiled-version": "0.15.2", "auth": "none", "migrated": False}, "id": rid})
        elif name == "quit":
            send({"return": {}, "id": rid}); break
        else:
            send({"return": {}, "id": rid})
    ''')


def fake_qemu(tmp_path, mode, name="qemu-system-x86_64"):
    path = tmp_path / name
    path.write_text("#!%s\n%s" % (sys.executable, FAKE % {"mode": mode}))
    path.chmod(0o755)
    return str(path)


def test_a_qemu_with_spice(tmp_path):
    out = _qemu_binary.probe_binary(fake_qemu(tmp_path, "spice"), timeout=10)
    assert out == {"binary": str(tmp_path / "qemu-system-x86_64"), "machine": "pc", "ok": True, "error": None,
                   "version": "10.0.3", "package": "Debian 1:10.0.3+ds-1",
                   "spice": {"enabled": True, "compiled-version": "0.15.2", "auth": "none", "migrated": False}}
    import json
    argv = json.loads((tmp_path / "argv.json").read_text())
    assert argv[:4] == ["-machine", "pc", "-accel", "tcg"] and "-S" in argv
    assert "-netdev" not in argv and "-drive" not in argv and not any("port=" in a for a in argv)
    # The temporary folder is gone.
    spice = argv[argv.index("-spice") + 1]
    assert not os.path.exists(spice.split("addr=")[1].split("/spice.sock")[0])


def test_spice_disabled_or_unknown(tmp_path):
    out = _qemu_binary.probe_binary(fake_qemu(tmp_path, "disabled"), timeout=10)
    assert out["ok"] is False and out["version"] == "10.0.3"
    assert out["error"] == "query-spice did not answer enabled (exit 0)"
    out = _qemu_binary.probe_binary(fake_qemu(tmp_path, "no-command"), timeout=10)
    assert out["ok"] is False and out["error"] == "CommandNotFound: The command query-spice has not been found"


def test_a_qemu_without_the_spice_module_says_why(tmp_path):
    out = _qemu_binary.probe_binary(fake_qemu(tmp_path, "no-spice"), timeout=10)
    assert out["ok"] is False and out["version"] is None
    assert out["error"] == ("qemu-system-x86_64: -spice unix=on: There is no option group 'spice'; "
                            "Perhaps you want to install qemu-system-modules-spice package?")


def test_a_qemu_that_does_not_answer(tmp_path):
    started = time.monotonic()
    out = _qemu_binary.probe_binary(fake_qemu(tmp_path, "silent"), timeout=1)
    assert out["ok"] is False and "timed out" in out["error"], out["error"]
    assert time.monotonic() - started < 30  # killed, not waited for


def test_a_missing_binary(tmp_path):
    out = _qemu_binary.probe_binary(str(tmp_path / "qemu-system-aarch64"))
    assert out["ok"] is False and out["machine"] == "none"
    assert out["error"] == "%s does not exist or is not executable" % (tmp_path / "qemu-system-aarch64")


@pytest.mark.parametrize("binary, machine", [
    ("/usr/bin/qemu-system-x86_64", "pc"), ("/opt/vmconsole/qemu/bin/qemu-system-i386", "pc"),
    ("/usr/bin/qemu-system-aarch64", "none"), ("/usr/bin/qemu-system-x86_64-spice", "none"),
])
def test_default_machine(binary, machine):
    assert _qemu_binary.default_machine(binary) == machine


def test_a_comma_in_the_folder_is_written_twice():
    argv = _qemu_binary.probe_argv("/q", "pc", "/tmp/a,b", 7)
    assert argv[argv.index("-spice") + 1] == "unix=on,addr=/tmp/a,,b/spice.sock,disable-ticketing=on"
    assert argv[argv.index("-chardev") + 1] == "socket,id=vmconsole-probe,fd=7,server=on,wait=off"


# --- What each QEMU version takes ---------------------------------------------------------

@pytest.mark.parametrize("text, version", [
    ("7.2.22", (7, 2, 22)),
    ("10.0.13", (10, 0, 13)),
    ("9.1", (9, 1, 0)),
    ("QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18)", (7, 2, 22)),
    ("QEMU emulator version 10.0.13 (Debian 1:10.0.13+ds-0+deb13u1)\nCopyright (c) 2003-2025", (10, 0, 13)),
    ("", None), ("qemu", None), (None, None), ("1.2.3.4.x", None),
])
def test_parse_version(text, version):
    assert _qemu_binary.parse_version(text) == version


@pytest.mark.parametrize("version, argv", [
    ((7, 2, 22), ["-runas", "qemu"]),       # Debian 12: no -run-with user= yet
    ((9, 0, 0), ["-runas", "qemu"]),
    ((9, 1, 0), ["-run-with", "user=qemu"]),  # from 9.1
    ((10, 0, 13), ["-run-with", "user=qemu"]),  # Debian 13: -runas is gone
    (None, ["-run-with", "user=qemu"]),
])
def test_run_as_args(version, argv):
    assert _qemu_binary.run_as_args(version, "qemu") == argv


# --- Migration between QEMU versions (a Debian 12 and a Debian 13 node) --------------------

HV1 = {"host": "hv1", "machine": "pc-i440fx-7.2-machine", "version": "7.2.22"}
HV2 = {"host": "hv2", "machine": "pc-i440fx-10.0-machine", "version": "10.0.13"}


@pytest.mark.parametrize("machine, version, resolved", [
    ("pc", (7, 2, 22), "pc-i440fx-7.2"), ("pc", (10, 0, 13), "pc-i440fx-10.0"), ("q35", (10, 0, 0), "pc-q35-10.0"),
    ("pc-i440fx-7.2", (10, 0, 13), "pc-i440fx-7.2"), ("pc-i440fx-7.2-machine", None, "pc-i440fx-7.2"),
    ("pc", None, None),
])
def test_machine_type(machine, version, resolved):
    assert _qemu_binary.machine_type(machine, version) == resolved


def test_a_pinned_machine_type_migrates_both_ways_between_qemu_7_2_and_10_0():
    pinned = "pc-i440fx-7.2"
    assert _qemu_binary.migration_errors("vm1", HV1, dict(HV2, machine=pinned)) == []
    assert _qemu_binary.migration_errors("vm1", dict(HV2, machine="pc-i440fx-7.2-machine"), dict(HV1, machine=pinned)) == []
    # Nodes of one QEMU version migrate with the alias.
    assert _qemu_binary.migration_errors("vm1", HV1, {"host": "hv3", "machine": "pc", "version": "7.2.20"}) == []


def test_the_alias_pc_between_qemu_7_2_and_10_0_is_refused_with_the_fix():
    assert _qemu_binary.migration_errors("vm1", HV1, dict(HV2, machine="pc")) == [
        "vm1 runs machine type pc-i440fx-7.2 on hv1 (QEMU 7.2.22), but hv2 would start it as pc-i440fx-10.0 "
        "(qemu_vm_machine 'pc', QEMU 10.0.13): QEMU migrates only between equal machine types. Nothing was moved; "
        "set qemu_vm_machine to a machine type every QEMU of the cluster has, the oldest one's (pc-i440fx-7.2), for "
        "the guests of a cluster that mixes QEMU versions (they restart once with it)"]


def test_a_machine_type_newer_than_the_target_qemu_is_named():
    (msg,) = _qemu_binary.migration_errors("vm1", HV2, dict(HV1, machine="pc"))
    assert "QEMU 7.2.22 on hv1 has no machine type pc-i440fx-10.0 (it is newer)" in msg
    assert "the oldest one's (pc-i440fx-7.2)" in msg
