#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: console_info
short_description: Read the run state and the SPICE and VNC console state of a QEMU VM or a libvirt domain
version_added: 0.1.0
description:
  - Asks a VM's QMP monitor for its run state (C(query-status)), its SPICE server and connected channels
    (C(query-spice)) and its VNC server and clients (C(query-vnc)).
  - A VM without SPICE or VNC, or a QEMU built without them, is reported with RV(spice.enabled) or
    RV(vnc.enabled) false rather than as a failure.
  - Only reads; nothing on the VM changes.
  - With O(libvirt_domain) the VM is a libvirt domain, whose QMP monitor libvirt owns; the module then asks libvirt
    instead (the domain state and the C(<graphics>) elements of the live domain XML) and returns the same keys.
    What only QEMU knows (SPICE channels, VNC clients, authentication scheme, mouse mode, spice-server version) is
    null or empty; RV(spice.password_set) and RV(vnc.password_set) tell whether libvirt holds a password.
requirements:
  - The Python binding of libvirt (C(import libvirt), Debian package C(python3-libvirt)) on the managed node, with
    O(libvirt_domain) only.
author:
  - vmconsole.secure developers (@vmconsole)
extends_documentation_fragment:
  - vmconsole.secure.qmp
  - vmconsole.secure.attributes
  - vmconsole.secure.attributes.ACTIONGROUP_QMP
  - vmconsole.secure.attributes.INFO_MODULE
options:
  libvirt_domain:
    description:
      - Name of a running libvirt domain to read through libvirt, instead of O(vm) or O(socket). Exactly one of
        O(vm), O(socket) and O(libvirt_domain) is needed; O(socket_dir) and O(timeout) are not used with it.
      - A libvirt domain name; it must not contain C(/) or control characters and is at most 200 bytes long.
    type: str
  libvirt_uri:
    description:
      - libvirt connection URI for O(libvirt_domain), checked like the C(vmconsole.secure.libvirt_uri) filter does.
    type: str
    default: qemu:///system
seealso:
  - module: vmconsole.secure.qmp_command
  - name: libvirt graphics devices
    description: The C(<graphics>) element read for O(libvirt_domain).
    link: https://libvirt.org/formatdomain.html#graphical-framebuffers
"""

EXAMPLES = r"""
- name: Read the console state of a VM
  vmconsole.secure.console_info:
    vm: web1
  become: true
  register: console

- name: Read the consoles of the libvirt domain lv1
  vmconsole.secure.console_info:
    libvirt_domain: lv1
  become: true
  register: lv1_console

- name: Show who is connected to the SPICE console
  ansible.builtin.debug:
    msg: "{{ console.spice.channels | map(attribute='host') | unique }}"
  when: console.spice.enabled
"""

RETURN = r"""
qemu_version:
  description:
    - Version of the QEMU that answered, from the QMP greeting.
    - For a O(libvirt_domain), the hypervisor version libvirt reports (its default QEMU binary), or null.
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
      description:
        - QEMU's run state, for example C(running), C(paused), C(inmigrate), C(postmigrate) or C(shutdown).
        - For a O(libvirt_domain), libvirt's domain state as C(virsh domstate) names it (C(running), C(paused),
          C(blocked), C(shutdown), C(crashed), C(pmsuspended)).
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
      description:
        - Authentication scheme; C(spice) means tickets (passwords) are checked, C(none) that anyone gets in.
        - Null for a O(libvirt_domain) (libvirt does not report it; see RV(spice.password_set)).
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
    autoport:
      description: Whether libvirt chose the ports (C(autoport='yes')); null without this console.
      returned: with O(libvirt_domain)
      type: bool
      sample: false
    password_set:
      description: Whether the domain's C(<graphics>) holds a password (never returned itself); null without this console.
      returned: with O(libvirt_domain)
      type: bool
      sample: true
    password_valid_to:
      description: When that password expires (C(passwdValidTo)), in seconds since the epoch; null when it does not.
      returned: with O(libvirt_domain)
      type: int
      sample: 1767225630
    channels:
      description: Connected SPICE channels, one entry per channel of every client (empty for a O(libvirt_domain)).
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
      description:
        - Authentication scheme, for example C(vnc) (password), C(vencrypt) or C(none).
        - Null for a O(libvirt_domain) (see RV(vnc.password_set)).
      type: str
      sample: vnc
    autoport:
      description: Like RV(spice.autoport), for the VNC console.
      returned: with O(libvirt_domain)
      type: bool
    password_set:
      description: Like RV(spice.password_set), for the VNC password.
      returned: with O(libvirt_domain)
      type: bool
    password_valid_to:
      description: Like RV(spice.password_valid_to), for the VNC password.
      returned: with O(libvirt_domain)
      type: int
    clients:
      description: Connected VNC clients (empty for a O(libvirt_domain)).
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

from ansible_collections.vmconsole.secure.plugins.module_utils._console import run_on_console
from ansible_collections.vmconsole.secure.plugins.module_utils._libvirt import (
    CONSOLE_MUTUALLY_EXCLUSIVE,
    CONSOLE_REQUIRED_ONE_OF,
    LIBVIRT_ARGUMENT_SPEC,
    check_libvirt_options,
)
from ansible_collections.vmconsole.secure.plugins.module_utils._qmp_module import QMP_ARGUMENT_SPEC


def main():
    module = AnsibleModule(
        argument_spec=dict(QMP_ARGUMENT_SPEC, **LIBVIRT_ARGUMENT_SPEC),
        mutually_exclusive=CONSOLE_MUTUALLY_EXCLUSIVE,
        required_one_of=CONSOLE_REQUIRED_ONE_OF,
        supports_check_mode=True,
    )
    if module.params["libvirt_domain"] is not None:
        try:
            for text in check_libvirt_options(module.params):
                module.warn(text)
        except ValueError as exc:
            module.fail_json(msg=str(exc))
    # libvirt_domain: the live domain XML and state, never QMP (libvirt owns the monitor).
    run_on_console(module, lambda console: dict(console.info(), changed=False))


if __name__ == "__main__":
    main()
