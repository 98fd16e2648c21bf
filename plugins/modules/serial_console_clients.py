#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: serial_console_clients
short_description: Set which client certificates may open a running guest's serial console
version_added: 0.1.0
description:
  - A guest of the P(vmconsole.secure.qemu_vm#role) role checks every client of its serial console against the
    cluster CA and then against QEMU's TLS authorization list C(vmconsole-serial-authz) (an C(authz-list) object,
    deny unless listed). This module makes that list of the running QEMU hold exactly O(clients), over QMP
    (C(qom-get), then C(qom-set) of the list's C(rules) in one step), without restarting the guest.
  - QEMU looks the list up at every TLS handshake, so the next connection sees the change; sessions already open
    stay open (M(vmconsole.secure.console_session) cuts them).
  - The list only lives as long as the QEMU process. The role writes the same list into the guest's unit
    (C(serial-clients.conf)) for its next start; use the role (O(vmconsole.secure.qemu_vm#role:main:qemu_vm_serial_clients))
    rather than this module alone.
  - Fails when the guest has no such list (it started from a command line without one, written before the role
    managed the list); restart it with the role's configuration.
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
      - In check mode the module reads the list (C(qom-get)) and changes nothing.
  diff_mode:
    support: full
  idempotent:
    support: full
options:
  clients:
    description:
      - The client certificate subjects to admit, exactly as QEMU compares them (GnuTLS's
        C(gnutls_x509_crt_get_dn) - the certificate's own attribute order, joined by C(,) without spaces, RFC 4514
        escapes), for example C(O=vmconsole.secure,CN=alice). Matched exactly.
      - An empty list admits nobody.
    type: list
    elements: str
    required: true
seealso:
  - module: vmconsole.secure.console_ticket
  - name: QEMU TLS authorization (authz-list)
    description: How QEMU checks a TLS client's distinguished name against an authorization object.
    link: https://www.qemu.org/docs/master/system/tls.html#tls-client-authorization
"""

EXAMPLES = r"""
- name: Let alice and bob open web1's serial console from their next connection on
  vmconsole.secure.serial_console_clients:
    vm: web1
    clients:
      - O=vmconsole.secure,CN=alice
      - O=vmconsole.secure,CN=bob
  become: true

- name: Lock web1's serial console for every new connection
  vmconsole.secure.serial_console_clients:
    vm: web1
    clients: []
  become: true
"""

RETURN = r"""
clients:
  description: The identities the list admits after the module (in check mode - would admit).
  returned: success
  type: list
  elements: str
  sample: [O=vmconsole.secure,CN=alice]
previous_clients:
  description:
    - The identities the list admitted before, or null when its rules were not all exact C(allow) rules (set by
      something else than this module).
  returned: success
  type: list
  elements: str
  sample: []
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
from ansible_collections.vmconsole.secure.plugins.module_utils._serial_clients import (
    AUTHZ_ID,
    AuthzMissing,
    apply_identities,
    identities_errors,
)


def main():
    argument_spec = dict(QMP_ARGUMENT_SPEC)
    argument_spec.update(clients=dict(type="list", elements="str", required=True))
    module = AnsibleModule(
        argument_spec=argument_spec,
        mutually_exclusive=QMP_MUTUALLY_EXCLUSIVE,
        required_one_of=QMP_REQUIRED_ONE_OF,
        supports_check_mode=True,
    )
    clients = module.params["clients"]
    errors = identities_errors("clients", clients)
    if errors:
        module.fail_json(msg="; ".join(errors))
    try:
        path = qmp_socket_path(module.params)
    except ValueError as exc:
        module.fail_json(msg=str(exc))

    with open_qmp(module) as qmp:
        try:
            result = apply_identities(qmp, clients, check_mode=module.check_mode)
        except AuthzMissing:
            module.fail_json(msg="the guest behind %s has no serial client list (object %s): it started without one; "
                                 "restart it with the qemu_vm role's configuration" % (path, AUTHZ_ID), socket=path)
        except QMPError as exc:
            fail_qmp(module, exc)
    out = dict(changed=result["changed"], clients=result["after"], previous_clients=result["before"])
    if module._diff:
        out["diff"] = dict(before="".join("%s\n" % c for c in result["before"] or []) if result["before"] is not None
                           else "(rules not set by this module)\n",
                           after="".join("%s\n" % c for c in result["after"]))
    module.exit_json(**out)


if __name__ == "__main__":
    main()
