# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

from ansible_collections.vmconsole.secure.plugins.module_utils._serial_clients import authz_rules
from ansible_collections.vmconsole.secure.plugins.modules import serial_console_clients
from ansible_collections.vmconsole.secure.tests.unit.fakeqmp import Error, qemu
from ansible_collections.vmconsole.secure.tests.unit.plugins.module_utils.test_serial_clients import AuthzList

ALICE, BOB = "O=vmconsole.secure,CN=alice", "O=vmconsole.secure,CN=bob"


def test_sets_the_list_and_then_reports_no_change(fake_qmp, run_module):
    authz = AuthzList(authz_rules([ALICE]))
    server = fake_qmp(qemu(authz.table()))
    result = run_module(serial_console_clients.main, dict(socket=server.path, clients=[ALICE, BOB]))
    assert (result["changed"], result["clients"], result["previous_clients"]) == (True, [ALICE, BOB], [ALICE])
    assert authz.props["rules"] == authz_rules([ALICE, BOB])
    again = run_module(serial_console_clients.main, dict(socket=server.path, clients=[ALICE, BOB]))
    assert again["changed"] is False


def test_check_mode_reads_only_and_diff_shows_the_identities(fake_qmp, run_module):
    authz = AuthzList(authz_rules([ALICE]))
    server = fake_qmp(qemu(authz.table()))
    args = dict(socket=server.path, clients=[BOB], _ansible_diff=True)
    result = run_module(serial_console_clients.main, args, check_mode=True)
    assert result["changed"] is True and result["diff"] == {"before": ALICE + "\n", "after": BOB + "\n"}
    assert "qom-set" not in server.commands and authz.props["rules"] == authz_rules([ALICE])


def test_a_malformed_identity_fails_before_any_connection(fake_qmp, run_module):
    server = fake_qmp(qemu(AuthzList([]).table()))
    result = run_module(serial_console_clients.main, dict(socket=server.path, clients=["CN=alice, O=x"]))
    assert result["failed"] is True
    assert result["msg"].startswith('clients[0] "CN=alice, O=x" is not a client certificate subject as QEMU compares it')
    assert server.connections == 0


def test_a_guest_without_the_list_says_to_restart_it(fake_qmp, run_module):
    server = fake_qmp(qemu(AuthzList([], exists=False).table()))
    result = run_module(serial_console_clients.main, dict(socket=server.path, clients=[ALICE]))
    assert result["failed"] is True and "has no serial client list (object vmconsole-serial-authz)" in result["msg"]
    assert "restart it" in result["msg"]


def test_qmp_errors_are_described(fake_qmp, run_module, short_tmp):
    server = fake_qmp(qemu({"qom-get": Error("GenericError", "boom")}))
    result = run_module(serial_console_clients.main, dict(socket=server.path, clients=[]))
    assert result["failed"] is True and result["qmp_error_desc"] == "boom"
    missing = run_module(serial_console_clients.main, dict(vm="nosuch", socket_dir=short_tmp, clients=[]))
    assert missing["failed"] is True and "does not exist" in missing["msg"]
