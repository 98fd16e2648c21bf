# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The controller half of console_ticket, with the module replaced by a recorder."""

from __future__ import annotations

import os
import re
import stat
from unittest import mock

import pytest

from ansible_collections.vmconsole.secure.plugins.action import console_ticket as action
from ansible_collections.vmconsole.secure.plugins.module_utils._tickets import TICKET_ALPHABET

VV = dict(protocol="spice", host="hv1", tls_port=61001, port=None, proxy=None,
          ca_pem="-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", host_subject="CN=hv1", title=None)


def module_result(**extra):
    result = dict(changed=True, protocol="spice", ttl=30, expires=1767225630, tls_port=61001, port=None,
                  console_host="hv1", host_subject="CN=hv1", vv=dict(VV),
                  invocation=dict(module_args=dict(password="VALUE_SPECIFIED_IN_NO_LOG_PARAMETER")))
    result.update(extra)
    return result


def run(args, check_mode=False, delegate_to=None, reply=None, task_vars=None):
    """Run the action plugin; returns (result, the args the module got or None)."""
    task = mock.MagicMock()
    task.args = args
    task.async_val = 0
    task.check_mode = check_mode
    task.delegate_to = delegate_to
    connection = mock.MagicMock()
    connection._shell.tmpdir = None
    plugin = action.ActionModule(task, connection, mock.MagicMock(), loader=None, templar=None, shared_loader_obj=None)
    sent = {}

    def execute_module(module_name, module_args, task_vars):
        sent.update(name=module_name, args=dict(module_args))
        return module_result() if reply is None else reply

    with mock.patch.object(plugin, "_execute_module", side_effect=execute_module), \
            mock.patch.object(plugin, "_remove_tmp_path"):
        result = plugin.run(task_vars=task_vars if task_vars is not None else {"inventory_hostname": "hv1"})
    return result, sent.get("args"), sent.get("name")


def read_vv(path):
    with open(path) as f:
        return dict(line.split("=", 1) for line in f.read().splitlines()[1:])


def test_generates_ticket_writes_private_vv_and_hides_ticket(tmp_path):
    dest = tmp_path / "web1.vv"
    result, sent, name = run(dict(vm="web1", dest=str(dest)))
    assert name == "vmconsole.secure.console_ticket"
    ticket = sent["password"]
    assert len(ticket) == 40 and set(ticket) <= set(TICKET_ALPHABET)
    assert sent["console_host"] == "hv1" and sent["dest"] == str(dest)
    assert stat.S_IMODE(os.stat(dest).st_mode) == 0o600
    values = read_vv(dest)
    assert values["password"] == ticket and values["tls-port"] == "61001" and values["host"] == "hv1"
    assert ticket not in repr(result)
    assert "ticket" not in result and "vv" not in result and "_ansible_no_log" not in result
    assert result["dest"] == str(dest) and result["changed"] is True
    assert os.listdir(tmp_path) == ["web1.vv"], "no temporary file left behind"


def test_vnc_ticket_is_8_chars(tmp_path):
    reply = module_result(protocol="vnc", tls_port=None, port=5901,
                          vv=dict(protocol="vnc", host="hv1", tls_port=None, port=5901, proxy=None, ca_pem=None,
                                  host_subject=None, title=None))
    result, sent, dummy = run(dict(vm="web1", protocol="vnc", dest=str(tmp_path / "a.vv")), reply=reply)
    assert len(sent["password"]) == 8
    assert read_vv(tmp_path / "a.vv")["port"] == "5901"


def test_return_secret_marks_result_no_log():
    result, sent, dummy = run(dict(vm="web1", return_secret=True))
    assert result["ticket"] == sent["password"]
    assert result["_ansible_no_log"] is True
    assert result["dest"] is None


def test_return_secret_string_is_parsed():
    result, dummy, dummy2 = run(dict(vm="web1", return_secret="yes"))
    assert result["_ansible_no_log"] is True
    result, dummy, dummy2 = run(dict(vm="web1", return_secret="maybe"))
    assert result["failed"] and result["msg"].startswith("return_secret:")


def test_user_password_is_used_even_though_module_masks_it(tmp_path):
    result, sent, dummy = run(dict(vm="web1", password="MyT1cket", dest=str(tmp_path / "a.vv"), return_secret=True))
    assert sent["password"] == "MyT1cket"
    assert read_vv(tmp_path / "a.vv")["password"] == "MyT1cket"
    assert result["ticket"] == "MyT1cket"


def test_numeric_vnc_password_from_yaml(tmp_path):
    dummy, sent, dummy2 = run(dict(vm="web1", protocol="vnc", password=12345678, dest=str(tmp_path / "a.vv")),
                              reply=module_result(vv=dict(VV, protocol="vnc", tls_port=None, port=5901, ca_pem=None,
                                                          host_subject=None)))
    assert sent["password"] == "12345678"
    assert read_vv(tmp_path / "a.vv")["password"] == "12345678"


def test_user_password_without_dest_is_fine():
    result, sent, dummy = run(dict(vm="web1", password="MyT1cket"))
    assert sent is not None and "ticket" not in result


def test_ticket_that_reaches_nobody_is_refused_before_the_module():
    result, sent, dummy = run(dict(vm="web1"))
    assert sent is None
    assert result["failed"] and "reach nobody" in result["msg"]


def test_console_host_defaults(tmp_path):
    dummy, sent, dummy2 = run(dict(vm="web1", return_secret=True), task_vars={"inventory_hostname": "hv7"})
    assert sent["console_host"] == "hv7"
    dummy, sent, dummy2 = run(dict(vm="web1", return_secret=True), delegate_to="hv9")
    assert sent["console_host"] == "hv9"
    dummy, sent, dummy2 = run(dict(vm="web1", return_secret=True, console_host="hv1.example.org"))
    assert sent["console_host"] == "hv1.example.org"


def test_the_controller_login_name_is_handed_over_as_the_default_person(monkeypatch):
    monkeypatch.setattr(action.getpass, "getuser", lambda: "carol")
    dummy, sent, dummy2 = run(dict(vm="web1", return_secret=True))
    assert sent["controller_user"] == "carol"
    dummy, sent, dummy2 = run(dict(vm="web1", return_secret=True, proxy_user="dave"))
    assert "controller_user" not in sent, "an explicit person needs no default"
    dummy, sent, dummy2 = run(dict(vm="web1", return_secret=True, protocol="vnc"))
    assert "controller_user" not in sent, "no proxy for VNC"

    def unknown():
        raise KeyError("getpwuid(): uid not found: 4711")
    monkeypatch.setattr(action.getpass, "getuser", unknown)
    dummy, sent, dummy2 = run(dict(vm="web1", return_secret=True))
    assert sent["controller_user"] is None


def test_relative_dest_is_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result, sent, dummy = run(dict(vm="web1", dest="web1.vv"))
    assert sent["dest"] == result["dest"] == str(tmp_path / "web1.vv")
    assert (tmp_path / "web1.vv").exists()


@pytest.mark.parametrize("dest, message", [
    ("missing/web1.vv", "folder .*missing does not exist on the controller"),
    ("", "is a folder"),
    ("file/web1.vv", "file is not a folder"),
])
def test_bad_dest_fails_before_the_module(tmp_path, dest, message):
    (tmp_path / "file").write_text("x")
    result, sent, dummy = run(dict(vm="web1", dest=str(tmp_path / dest)))
    assert sent is None, "the module must not run"
    assert result["failed"] and result["msg"].startswith("dest")
    assert re.search(message, result["msg"])


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_dest_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o500)
    result, sent, dummy = run(dict(vm="web1", dest=str(folder / "a.vv")))
    assert sent is None and "not writable" in result["msg"]


def test_check_mode_writes_nothing(tmp_path):
    dest = tmp_path / "web1.vv"
    result, sent, dummy = run(dict(vm="web1", dest=str(dest)), check_mode=True)
    assert sent is not None and result["changed"] is True
    assert not dest.exists()


def test_module_failure_is_passed_through_and_writes_nothing(tmp_path):
    dest = tmp_path / "web1.vv"
    result, dummy, dummy2 = run(dict(vm="web1", dest=str(dest), return_secret=True),
                                reply=dict(failed=True, msg="QEMU has no SPICE"))
    assert result["failed"] and result["msg"] == "QEMU has no SPICE"
    assert "ticket" not in result and not dest.exists()


def test_existing_vv_is_replaced_and_becomes_private(tmp_path):
    dest = tmp_path / "web1.vv"
    dest.write_text("old")
    os.chmod(dest, 0o644)
    run(dict(vm="web1", dest=str(dest)))
    assert stat.S_IMODE(os.stat(dest).st_mode) == 0o600
    assert dest.read_text().startswith("[virt-viewer]\n")


def test_write_failure_leaves_no_temp_file(tmp_path, monkeypatch):
    dest = tmp_path / "web1.vv"

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(action.os, "replace", broken_replace)
    result, dummy, dummy2 = run(dict(vm="web1", dest=str(dest)))
    assert result["failed"] and "the ticket is set on the VM, but writing dest" in result["msg"]
    assert os.listdir(tmp_path) == []


def test_unknown_protocol_left_to_the_module():
    dummy, sent, dummy2 = run(dict(vm="web1", protocol="rdp", return_secret=True),
                              reply=dict(failed=True, msg="value of protocol must be one of: spice, vnc, got: rdp"))
    assert "password" not in sent


# --- proxy tokens: minted by the module, handed over inside vv, dropped from the result ------------

TOKEN = "v3_0123456789ab_spice_1767225600_1767254400_n_0badcafe_" + "M" * 85 + "A"
PROXY = "http://alice__web1:%s@hv1:3128" % TOKEN


def proxy_result():
    return module_result(vv=dict(VV, proxy=PROXY), proxy_username="alice__web1", proxy_token_expires=1767254400,
                         proxy_token_key_id="0123456789ab")


def test_proxy_token_goes_into_the_vv_only(tmp_path):
    dest = tmp_path / "web1.vv"
    result, sent, dummy = run(dict(vm="web1", dest=str(dest), proxy="http://hv1:3128", proxy_user="alice"),
                              reply=proxy_result())
    assert sent["proxy_user"] == "alice"
    assert read_vv(dest)["proxy"] == PROXY
    assert TOKEN not in repr(result) and "proxy_token" not in result
    assert result["proxy_username"] == "alice__web1"


def test_proxy_token_with_return_secret():
    result, dummy, dummy2 = run(dict(vm="web1", return_secret=True, proxy="http://hv1:3128", proxy_user="alice"),
                                reply=proxy_result())
    assert result["proxy_token"] == TOKEN and result["_ansible_no_log"] is True


def test_vv_is_dropped_from_a_failed_result():
    reply = dict(proxy_result(), failed=True, msg="boom")
    result, dummy, dummy2 = run(dict(vm="web1", return_secret=True), reply=reply)
    assert result["failed"] and "vv" not in result and TOKEN not in repr(result)
