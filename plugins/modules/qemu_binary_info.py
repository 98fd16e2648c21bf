#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: qemu_binary_info
short_description: Ask a QEMU binary whether it has working SPICE, and its version
version_added: 0.2.0
description:
  - Starts a throwaway QEMU from O(binary) - paused, with TCG, without network, disk or TCP port, SPICE on a UNIX
    socket in a private temporary folder - and asks it C(query-version) and C(query-spice) over QMP with the
    collection's QMP client, then lets it quit. Nothing is left behind.
  - This proves more than the package list does - that the SPICE module loads (Debian 13 ships it in
    C(qemu-system-modules-spice)), that the firmware of the machine is found, and which spice-server the binary uses.
  - A binary that cannot answer is a result (RV(ok=false) with RV(error)), not a failure; the task fails only for bad
    options.
author:
  - vmconsole.secure developers (@vmconsole)
extends_documentation_fragment:
  - vmconsole.secure.attributes
  - vmconsole.secure.attributes.INFO_MODULE
options:
  binary:
    description: The QEMU system emulator to ask, for example C(/usr/bin/qemu-system-x86_64).
    type: path
    required: true
  machine:
    description:
      - The machine to start. Default - C(pc) for C(qemu-system-x86_64) and C(qemu-system-i386) (which also proves
        that the PC firmware is found), C(none) for other targets.
    type: str
  timeout:
    description: Seconds the QEMU has to answer.
    type: float
    default: 60
seealso:
  - module: vmconsole.secure.console_info
  - name: QEMU QMP reference (query-spice)
    description: The fields of RV(spice).
    link: https://www.qemu.org/docs/master/interop/qemu-qmp-ref.html
"""

EXAMPLES = r"""
- name: Ask the installed QEMU about SPICE
  vmconsole.secure.qemu_binary_info:
    binary: /usr/bin/qemu-system-x86_64
  register: qemu

- name: Stop when it has no working SPICE
  ansible.builtin.assert:
    that: qemu.ok
    fail_msg: "No SPICE: {{ qemu.error }}"
"""

RETURN = r"""
binary:
  description: The binary asked.
  returned: always
  type: str
  sample: /usr/bin/qemu-system-x86_64
machine:
  description: The machine it was started with.
  returned: always
  type: str
  sample: pc
ok:
  description: Whether C(query-spice) answered C(enabled), the SPICE server works.
  returned: always
  type: bool
  sample: true
error:
  description: Why RV(ok) is false - the binary is missing, QEMU refused to start (the end of its error output), or
    the QMP error; null when RV(ok).
  returned: always
  type: str
  sample: "qemu-system-x86_64: -spice unix=on,...: There is no option group 'spice'"
version:
  description: QEMU's version (C(query-version)), null when it did not answer.
  returned: always
  type: str
  sample: 7.2.22
package:
  description: The package string the build carries (Debian's version), empty for a plain build.
  returned: always
  type: str
  sample: Debian 1:7.2+dfsg-7+deb12u18
spice:
  description: The answer of C(query-spice) (C(enabled), C(compiled-version), ...), null when it did not answer.
  returned: always
  type: dict
  sample: {"enabled": true, "compiled-version": "0.15.1", "auth": "none", "migrated": false}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.vmconsole.secure.plugins.module_utils._qemu_binary import probe_binary


def main():
    module = AnsibleModule(
        argument_spec=dict(
            binary=dict(type="path", required=True),
            machine=dict(type="str"),
            timeout=dict(type="float", default=60),
        ),
        supports_check_mode=True,
    )
    if module.params["timeout"] <= 0:
        module.fail_json(msg="timeout must be a number of seconds above 0, got %g" % module.params["timeout"])
    if module.params["machine"] is not None and not module.params["machine"].replace("-", "").replace(".", "").replace(
            "_", "").isalnum():
        module.fail_json(msg="machine must be a QEMU machine name (letters, digits, '-', '.', '_'), got %r"
                         % module.params["machine"])
    result = probe_binary(module.params["binary"], module.params["machine"], module.params["timeout"])
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
