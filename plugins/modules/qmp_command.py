#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: qmp_command
short_description: Run a QMP command on a running QEMU VM
version_added: 0.1.0
description:
  - Sends one QMP (QEMU Machine Protocol) command to a VM's QMP monitor and returns QEMU's answer.
  - This is the low-level escape hatch. For console tickets use M(vmconsole.secure.console_ticket), and for
    reading console state use M(vmconsole.secure.console_info).
  - The module cannot know what an arbitrary command changes, so it always reports a change, except for
    C(query-*) commands, which only read.
  - The result does not repeat O(arguments). Values of keys called C(password) anywhere in O(arguments) are
    masked in all output, also in the module invocation shown at high verbosity and in the invocation the module
    logs to the node's journal. For console passwords use
    M(vmconsole.secure.console_ticket), which also sets their expiry.
author:
  - vmconsole.secure developers (@vmconsole)
extends_documentation_fragment:
  - vmconsole.secure.qmp
  - vmconsole.secure.attributes
  - vmconsole.secure.attributes.ACTIONGROUP_QMP
attributes:
  check_mode:
    support: full
    details:
      - In check mode nothing is sent to QEMU and no connection is made; RV(ignore:changed) is predicted from
        the command name.
  diff_mode:
    support: none
  idempotent:
    support: partial
    details:
      - Only C(query-*) commands report no change; every other command reports a change each time.
options:
  command:
    description:
      - Name of the QMP command, for example C(query-status), C(stop) or C(system_reset).
      - See the QEMU QMP reference for the commands and their arguments.
    type: str
    required: true
  arguments:
    description:
      - Arguments of the command, as QEMU expects them in the C(arguments) member of the request.
      - Omit for commands that take no arguments.
    type: dict
seealso:
  - module: vmconsole.secure.console_info
  - name: QEMU QMP reference manual
    description: Every QMP command with its arguments and return value.
    link: https://www.qemu.org/docs/master/interop/qemu-qmp-ref.html
"""

EXAMPLES = r"""
- name: Pause a VM
  vmconsole.secure.qmp_command:
    vm: web1
    command: stop
  become: true

- name: Ask QEMU which block devices a VM has
  vmconsole.secure.qmp_command:
    socket: /run/vmconsole/web1.qmp
    command: query-block
  become: true
  register: block

- name: Eject the CD of a VM
  vmconsole.secure.qmp_command:
    vm: web1
    command: eject
    arguments:
      id: cd0
      force: true
  become: true
"""

RETURN = r"""
qmp_return:
  description:
    - The C(return) member of QEMU's reply; its type depends on the command (often an empty dictionary).
  returned: success and not in check mode
  type: raw
  sample: {"running": true, "status": "running"}
qemu_version:
  description: Version of the QEMU that answered, from the QMP greeting.
  returned: success and not in check mode
  type: str
  sample: 7.2.22
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.vmconsole.secure.plugins.module_utils._qmp import QMPError
from ansible_collections.vmconsole.secure.plugins.module_utils._qmp_module import (
    QMP_ARGUMENT_SPEC,
    QMP_MUTUALLY_EXCLUSIVE,
    QMP_REQUIRED_ONE_OF,
    fail_qmp,
    open_qmp,
    qmp_socket_path,
)

SECRET_KEYS = frozenset(("password",))


def is_read_only(command):
    """QEMU names the commands that only read ``query-*``."""
    return command.startswith("query-")


def secret_values(value):
    """Every string found under a key in SECRET_KEYS, at any depth."""
    found = set()
    if isinstance(value, dict):
        for key, item in value.items():
            if key in SECRET_KEYS and isinstance(item, str) and item:
                found.add(item)
            else:
                found |= secret_values(item)
    elif isinstance(value, list):
        for item in value:
            found |= secret_values(item)
    return found


class QMPCommandModule(AnsibleModule):
    """AnsibleModule that logs its invocation to the node's journal only once the secrets in ``arguments`` are known.

    AnsibleModule logs "Invoked with ..." while it is being made, masking only the values of options
    declared no_log; the passwords inside ``arguments`` (a free-form dict) are found after that.
    """

    def _log_invocation(self):
        """Deferred: :func:`main` calls :meth:`log_invocation` once the secrets are in ``no_log_values``."""

    def log_invocation(self):
        super()._log_invocation()


def main():
    argument_spec = dict(QMP_ARGUMENT_SPEC)
    argument_spec.update(
        command=dict(type="str", required=True),
        arguments=dict(type="dict"),
    )
    module = QMPCommandModule(
        argument_spec=argument_spec,
        mutually_exclusive=QMP_MUTUALLY_EXCLUSIVE,
        required_one_of=QMP_REQUIRED_ONE_OF,
        supports_check_mode=True,
    )
    module.no_log_values.update(secret_values(module.params["arguments"]))
    if not module.no_log:
        module.log_invocation()
    command = module.params["command"]
    if not command.strip():
        module.fail_json(msg="command must not be empty")
    changed = not is_read_only(command)

    if module.check_mode:
        try:
            qmp_socket_path(module.params)  # still reject invalid options in a dry run
        except ValueError as exc:
            module.fail_json(msg=str(exc))
        module.exit_json(changed=changed)

    with open_qmp(module) as qmp:
        try:
            qmp_return = qmp.execute(command, module.params["arguments"])
        except QMPError as exc:
            fail_qmp(module, exc)
        qemu_version = qmp.version_string
    module.exit_json(changed=changed, qmp_return=qmp_return, qemu_version=qemu_version)


if __name__ == "__main__":
    main()
