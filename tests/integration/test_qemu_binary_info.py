# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""qemu_binary_info against this machine's real QEMU: the module through Ansible, and the
probe with a SPICE option QEMU refuses (what a QEMU without its SPICE module does)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from ansible_collections.vmconsole.secure.plugins.module_utils import _qemu_binary
from ansible_collections.vmconsole.secure.tests.integration import _procs

pytestmark = pytest.mark.skipif(not _procs.have_qemu(), reason="needs %s" % _procs.QEMU_BINARY)
COLLECTION_ROOT = _procs.COLLECTION_ROOT


def run_module(args):
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
               ANSIBLE_STDOUT_CALLBACK="ansible.builtin.default", ANSIBLE_CONFIG=os.path.join(COLLECTION_ROOT, "ansible.cfg"))
    argv = ["ansible", "localhost", "-i", "localhost,", "-c", "local", "-e", "ansible_python_interpreter=/usr/bin/python3",
            "-m", "vmconsole.secure.qemu_binary_info", "-a", json.dumps(args), "-v"]
    proc = subprocess.run(argv, cwd=COLLECTION_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          timeout=120, check=False)
    output = proc.stdout.decode("utf-8", "replace")
    return proc.returncode, json.JSONDecoder().raw_decode(output, output.index("=> {") + 3)[0]


def qemu_pids():
    found = subprocess.run(["pgrep", "-f", "vmconsole-spice-probe-"], stdout=subprocess.PIPE, check=False)
    return found.stdout.split()


def test_the_real_qemu_has_spice():
    binary = shutil.which(_procs.QEMU_BINARY)
    rc, result = run_module({"binary": binary})
    assert rc == 0 and result["changed"] is False
    assert result["ok"] is True and result["error"] is None and result["machine"] == "pc"
    real = subprocess.run([binary, "--version"], stdout=subprocess.PIPE, check=True).stdout.decode()
    assert result["version"] in real.splitlines()[0]
    assert result["spice"]["enabled"] is True and result["spice"]["compiled-version"]
    assert qemu_pids() == []  # the throwaway QEMU is gone


def test_a_qemu_refusing_the_spice_option_is_reported(tmp_path):
    # A wrapper that adds an option group QEMU does not know, as a QEMU without SPICE
    # refuses -spice: the probe reports QEMU's own words.
    wrapper = tmp_path / "qemu-system-x86_64"
    wrapper.write_text('#!/bin/sh\nexec %s -no-such-option "$@"\n' % shutil.which(_procs.QEMU_BINARY))
    wrapper.chmod(0o755)
    out = _qemu_binary.probe_binary(str(wrapper), timeout=30)
    assert out["ok"] is False and out["version"] is None
    assert "-no-such-option: invalid option" in out["error"]


def test_bad_options_fail_naming_the_option():
    rc, result = run_module({"binary": "/usr/bin/qemu-system-x86_64", "timeout": 0})
    assert rc != 0 and result["msg"] == "timeout must be a number of seconds above 0, got 0"
    rc, result = run_module({"binary": "/usr/bin/qemu-system-x86_64", "machine": "pc,accel=kvm"})
    assert rc != 0 and result["msg"].startswith("machine must be a QEMU machine name")
