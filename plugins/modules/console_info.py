#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: console_info
short_description: Read the run state and the SPICE and VNC console state of a QEMU VM
version_added: 0.1.0
description:
  - Asks a VM's QMP monitor for its run state (C(query-status)), its SPICE server and connected channels
    (C(query-spice)) and its VNC server and clients (C(query-vnc)).
  - A VM without SPICE or VNC, or a QEMU built without them, is reported with RV(spice.enabled) or
    RV(vnc.enabled) false rather than as a failure.
  - Only reads; nothing on the VM changes.
author:
  - vmconsole.secure developers (@vmconsole)
extends_documentation_fragment:
  - vmconsole.secure.qmp
  - vmconsole.secure.attributes
  - vmconsole.secure.attributes.ACTIONGROUP_QMP
  - vmconsole.secure.attributes.INFO_MODULE
options: {}
seealso:
  - module: vmconsole.secure.qmp_command
"""

EXAMPLES = r"""
- name: Read the console state of a VM
  vmconsole.secure.console_info:
    vm: web1
  become: true
  register: console

- name: Show who is connected to the SPICE console
  ansible.builtin.debug:
    msg: "{{ console.spice.channels | map(attribute='host') | unique }}"
  when: console.spice.enabled
"""

RETURN = r"""
qemu_version:
  description: Version of the QEMU that answered, from the QMP greeting.
  returned: success
  type: str
  sample: 7.2.22
status:
  description: Run state of the VM (C(query-status)).
  returned: success
  type: dict
  contains:
    running:
      description: Whether the guest CPUs run.
      type: bool
      sample: true
    status:
      description: QEMU's run state, for example C(running), C(paused), C(inmigrate), C(postmigrate) or C(shutdown).
      type: str
      sample: running
spice:
  description: The SPICE server (C(query-spice)).
  returned: success
  type: dict
  contains:
    enabled:
      description: Whether the VM has a SPICE server. When false, the other keys are null or empty.
      type: bool
      sample: true
    host:
      description: Address the SPICE server listens on.
      type: str
      sample: 127.0.0.1
    port:
      description: Plain (unencrypted) SPICE port, or null when there is none.
      type: int
      sample: 61001
    tls_port:
      description: TLS SPICE port, or null when there is none.
      type: int
      sample: 61000
    auth:
      description: Authentication scheme; C(spice) means tickets (passwords) are checked, C(none) that anyone gets in.
      type: str
      sample: spice
    mouse_mode:
      description: Current mouse mode, C(client) or C(server).
      type: str
      sample: server
    migrated:
      description: Whether the client was told to follow a finished migration (seamless migration).
      type: bool
      sample: false
    compiled_version:
      description: Version of the spice-server library QEMU was built with.
      type: str
      sample: 0.15.1
    channels:
      description: Connected SPICE channels, one entry per channel of every client.
      type: list
      elements: dict
      contains:
        host:
          description: Address of the client (as seen by QEMU; the proxy's address when it comes through one).
          type: str
          sample: 127.0.0.1
        port:
          description: TCP port of the client.
          type: int
          sample: 47654
        family:
          description: Address family, C(ipv4), C(ipv6) or C(unix).
          type: str
          sample: ipv4
        connection_id:
          description: SPICE connection id; all channels of one client share it.
          type: int
          sample: 1804289383
        channel_type:
          description: SPICE channel type (1 main, 2 display, 3 inputs, 4 cursor, 5 playback, 6 record, ...).
          type: int
          sample: 1
        channel_id:
          description: Index of the channel among channels of the same type.
          type: int
          sample: 0
        tls:
          description: Whether the channel is encrypted.
          type: bool
          sample: true
vnc:
  description: The VNC server (C(query-vnc)).
  returned: success
  type: dict
  contains:
    enabled:
      description: Whether the VM has a VNC server. When false, the other keys are null or empty.
      type: bool
      sample: true
    host:
      description: Address the VNC server listens on.
      type: str
      sample: 127.0.0.1
    service:
      description: Service (port) the VNC server listens on, as QEMU reports it.
      type: str
      sample: "5901"
    port:
      description: C(service) as a number, or null when it is not numeric.
      type: int
      sample: 5901
    family:
      description: Address family, C(ipv4), C(ipv6) or C(unix).
      type: str
      sample: ipv4
    auth:
      description: Authentication scheme, for example C(vnc) (password), C(vencrypt) or C(none).
      type: str
      sample: vnc
    clients:
      description: Connected VNC clients.
      type: list
      elements: dict
      contains:
        host:
          description: Address of the client.
          type: str
          sample: 127.0.0.1
        service:
          description: Source port of the client, as QEMU reports it.
          type: str
          sample: "50422"
        port:
          description: C(service) as a number, or null when it is not numeric.
          type: int
          sample: 50422
        family:
          description: Address family.
          type: str
          sample: ipv4
        websocket:
          description: Whether the client came through the WebSocket listener.
          type: bool
          sample: false
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.vmconsole.secure.plugins.module_utils._qmp import QMPError
from ansible_collections.vmconsole.secure.plugins.module_utils._qmp_module import (
    QMP_ARGUMENT_SPEC,
    QMP_MUTUALLY_EXCLUSIVE,
    QMP_REQUIRED_ONE_OF,
    fail_qmp,
    open_qmp,
    query_optional,
)


def _port(value):
    """QMP reports ports as strings ("service"); return an int, or None if not numeric."""
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def spice_info(raw):
    """Normalize a ``query-spice`` return value (None: QEMU without SPICE)."""
    raw = raw or {}
    enabled = bool(raw.get("enabled", False))
    return dict(
        enabled=enabled,
        host=raw.get("host"),
        port=raw.get("port"),
        tls_port=raw.get("tls-port"),
        auth=raw.get("auth"),
        mouse_mode=raw.get("mouse-mode") if enabled else None,
        migrated=bool(raw.get("migrated", False)),
        compiled_version=raw.get("compiled-version"),
        channels=[
            dict(
                host=ch.get("host"),
                port=_port(ch.get("port")),
                family=ch.get("family"),
                connection_id=ch.get("connection-id"),
                channel_type=ch.get("channel-type"),
                channel_id=ch.get("channel-id"),
                tls=bool(ch.get("tls", False)),
            )
            for ch in raw.get("channels") or []
        ],
    )


def vnc_info(raw):
    """Normalize a ``query-vnc`` return value (None: QEMU without VNC)."""
    raw = raw or {}
    return dict(
        enabled=bool(raw.get("enabled", False)),
        host=raw.get("host"),
        service=raw.get("service"),
        port=_port(raw.get("service")),
        family=raw.get("family"),
        auth=raw.get("auth"),
        clients=[
            dict(
                host=cl.get("host"),
                service=cl.get("service"),
                port=_port(cl.get("service")),
                family=cl.get("family"),
                websocket=bool(cl.get("websocket", False)),
            )
            for cl in raw.get("clients") or []
        ],
    )


def main():
    module = AnsibleModule(
        argument_spec=dict(QMP_ARGUMENT_SPEC),
        mutually_exclusive=QMP_MUTUALLY_EXCLUSIVE,
        required_one_of=QMP_REQUIRED_ONE_OF,
        supports_check_mode=True,
    )
    with open_qmp(module) as qmp:
        try:
            status = qmp.execute("query-status")
            spice = query_optional(qmp, "query-spice")
            vnc = query_optional(qmp, "query-vnc")
        except QMPError as exc:
            fail_qmp(module, exc)
        qemu_version = qmp.version_string
    module.exit_json(
        changed=False,
        qemu_version=qemu_version,
        status=dict(running=bool(status.get("running")), status=status.get("status")),
        spice=spice_info(spice),
        vnc=vnc_info(vnc),
    )


if __name__ == "__main__":
    main()
