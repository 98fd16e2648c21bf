# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""What every module of the collection writes to the managed node's journal: its invocation, never a secret."""

from __future__ import annotations

import pytest

from ansible_collections.vmconsole.secure.plugins.modules import (
    console_info, console_probe, console_session, console_ticket, qmp_command, spice_migrate,
)

SECRET = "J0urnalS3cretJ0urnalS3cret"

# (module, arguments holding SECRET wherever the module takes a secret); the socket does not exist, so
# each run fails after AnsibleModule logged its invocation.
CASES = [
    (console_ticket, dict(vm="web1", password=SECRET)),
    (console_ticket, dict(vm="web1", protocol="vnc", password=SECRET[:8])),
    (spice_migrate, dict(vm="web1", step="incoming", migration_uri="tcp:10.0.0.2:49152", ticket=SECRET,
                         ticket_expires=1, source_connected=True)),
    (qmp_command, dict(vm="web1", command="set_password", arguments={"protocol": "spice", "password": SECRET})),
    (qmp_command, dict(vm="web1", command="change-vnc-password", arguments={"password": SECRET[:8]})),
    (console_probe, dict(host="127.0.0.1", port=9, ticket=SECRET, timeout=0.5)),
    (console_probe, dict(host="127.0.0.1", port=9, ticket="T1cketT1cket", proxy="http://alice__web1:%s@127.0.0.1:9" % SECRET,
                         timeout=0.5)),
    (console_session, dict(state="absent", vm="web1")),
    (console_info, dict(vm="web1")),
]


@pytest.mark.parametrize("module, args", CASES, ids=lambda value: getattr(value, "__name__", "").rsplit(".", 1)[-1])
def test_the_journal_gets_the_invocation_and_no_secret(run_module, module_log, short_tmp, module, args):
    run_module(module.main, dict(args, **({"socket_dir": short_tmp} if "vm" in args else {})))
    assert any(line.startswith("Invoked with ") for line in module_log), module_log
    for line in module_log:
        assert SECRET not in line and SECRET[:8] not in line, line
