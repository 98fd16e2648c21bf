#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: console_session
short_description: Cut live console sessions of a VM or a person and revoke their proxy tokens
version_added: 0.1.0
description:
  - Ends console sessions early. A session exists because a ticket and a proxy token were handed out by
    M(vmconsole.secure.console_ticket); this module takes them away again, so O(state=absent) is its only state.
  - B(By VM) (O(vm)). On the node where the VM runs, its SPICE console gets a fresh random ticket that nobody
    knows, set with QMP C(set_password) and C(connected=disconnect), which makes spice-server drop every
    connected SPICE client (all channels); then C(expire_password) with C(now), so no later link gets in
    either, not even with a ticket handed out a moment ago. The VNC console, if the VM has one with password
    authentication, gets the same (a random password, expired at once). Every proxy token for the VM, of any
    person, issued at or before O(revoke_time) is revoked in O(revocations_file).
  - B(By person) (O(user)). Every proxy token of that person, for any VM, issued at or before O(revoke_time) is
    revoked in O(revocations_file). From then on squid refuses each new CONNECT with it (a new channel, a
    reconnection, the reconnection to the target node of a seamless migration), and the person's tunnels that are
    open through this node's proxy are cut (see B(Open tunnels)), for every console type. Other people's
    sessions, also on the same VMs, go on. With O(vms), those VMs are also locked as by O(vm), which drops
    B(whoever) is connected to them, while only the person's tokens are revoked.
  - B(By person on one VM) (O(user) and O(vm)). Only that person's tokens for that VM are revoked (an entry in
    C(pairs)) and only their tunnels to it are cut; the VM's console is not locked, so other people stay.
  - B(Open tunnels.) squid checks a token when a tunnel opens and never again, so revoking alone would leave
    open tunnels running for hours. Where P(vmconsole.secure.connect_proxy#role) runs (O(proxy_fact_file) exists), the
    module asks the node's squid for its open tunnels (the cache manager's C(active_requests) report, from this
    node, with the password only root can read) and destroys the client connection of each tunnel of what was
    revoked in the kernel (C(ss -K)); squid then closes the tunnel, whatever runs inside it (SPICE, VNC, a serial
    console). After a new revocation it watches the proxy as long as squid may still accept the revoked token from
    its cache of the helper's answers (C(connect_proxy_credentials_ttl), 5 s by default) and cuts any tunnel the
    person opens again in that time, so the task takes that long. A hop (the client's tunnel through another node's proxy) is
    cut on the node it passes, so run the task on every node.
  - B(Every node.) Each node's squid reads its own O(revocations_file), and a client can reach any node's
    proxy, so run the task on B(every hypervisor) of the cluster (a VM that does not run on a node is simply
    not there to cut). The proxy refuses a revoked token once squid's cached answer for that token (C(ttl) of the
    helper's C(external_acl_type), C(connect_proxy_credentials_ttl)) has run out.
  - >-
    B(The revocations file) maps names to a point in time, C({"users": {"alice": 1767225630},
    "vms": {"web1": 1767225630}, "pairs": {"bob__web1": 1767225630}}); tokens of that person (for that VM, of
    that person for that VM) issued at or before that epoch second are refused. It is replaced atomically, with
    mode C(0640), owner C(root) and group C(proxy) (C(root) where there is no group C(proxy)), so squid's helper
    running as C(proxy) reads it, and the helper notices the new file by itself. An entry is dropped when the
    file is next written after no token it refuses can still be valid: tokens live at most a week (604800 s), so
    no file grows beyond one entry per name and week.
  - B(Tickets and expiry.) Revoking is "issued at or before", so a new token minted in the same second as the
    revocation is refused as well; the next one works. Node clocks must agree (NTP), as for the tokens' own
    expiry.
  - Every change is appended to O(audit_log) as one JSON line (what was cut and revoked, by whom); it never
    holds a ticket or a token.
  - QMP sockets and C(/etc/vmconsole) are root's, so the task needs C(become=true).
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
      - In check mode the VMs are only queried (C(query-spice), C(query-vnc)) and nothing is written; the result
        says which sessions would be cut and which entries would be revoked.
  diff_mode:
    support: full
    details:
      - Shows the change of O(revocations_file).
  idempotent:
    support: full
    details:
      - The module reports a change when it disconnected a SPICE client or when it revoked more than
        O(revocations_file) already did. A VM with nobody connected still gets a fresh expired ticket each run
        (QEMU cannot tell whether the old one still worked); that alone is no change.
      - Without O(revoke_time) a run revokes up to the current second, so a second run in a later second
        moves the entry forward (tokens may have been issued meanwhile) and reports a change. Give the same
        O(revoke_time) to repeat a run without change.
options:
  state:
    description:
      - V(absent) cuts the sessions and revokes the tokens. Sessions come into being through tickets
        (M(vmconsole.secure.console_ticket)), so there is no V(present).
    type: str
    choices: [absent]
    required: true
  vm:
    description:
      - Name of the VM whose console sessions are cut and whose proxy tokens (of every person) are revoked.
      - With O(user), only that person's tokens for this VM are revoked and only their tunnels to it cut.
      - Its QMP socket is O(socket_dir)/C(<vm>.qmp), or O(socket).
      - At least one of O(vm) and O(user) is required.
    type: str
  socket:
    description:
      - Path of the QMP socket of O(vm), instead of O(socket_dir)/C(<vm>.qmp). Only with O(vm).
    type: path
  user:
    description:
      - The person whose proxy tokens are revoked, as given to M(vmconsole.secure.console_ticket) in
        C(proxy_user), for example V(alice@example.org).
      - Their tunnels open through this node's proxy are cut; see O(vms) to lock VMs for everybody as well.
    type: str
  vms:
    description:
      - With O(user), VMs whose console sessions are also cut (as with O(vm)), for example the VMs the person
        has open. This drops whoever is connected to them. Their proxy tokens are not revoked.
    type: list
    elements: str
  revoke_time:
    description:
      - Epoch second up to which tokens are revoked (tokens issued at or before it). Default is the current time
        on the node.
      - Give one value to every node of a play (for example a fact set once with C(run_once)) to write the same
        entry everywhere and to make a repeated run report no change. It must not lie in the future (60 s of
        clock difference are allowed); a time more than a week back revokes nothing, since such tokens have
        expired.
    type: int
  revocations_file:
    description:
      - The node's revocations file, which squid's token helper reads (C(vmconsole_proxy_helper.py check
        --revocations)). Its folder is created (mode C(0755)) when missing.
    type: path
    default: /etc/vmconsole/proxy-revoked.json
  proxy_fact_file:
    description:
      - The local fact P(vmconsole.secure.connect_proxy#role) writes on the node (the proxy's port, its cache manager
        password file, the console port ranges). Where it does not exist, no proxy runs on the node and no tunnel
        is cut (RV(tunnels.checked=false)).
    type: path
    default: /etc/ansible/facts.d/vmconsole_proxy.fact
  audit_log:
    description:
      - File on the node where each change is appended as one JSON line (mode C(0640), its folder created with
        mode C(0750)), the same log M(vmconsole.secure.console_ticket) writes. Checked before anything changes.
      - An empty string turns the log off.
    type: path
    default: /var/log/vmconsole/tickets.log
notes:
  - QEMU 7.2 has no QMP command that disconnects a VNC client (C(set_password) takes only C(connected=keep) for
    VNC); a VNC client connected through the node's proxy is cut with its tunnel. One that stays connected (it
    did not come through this node's proxy) is reported in RV(sessions) with a warning; no new VNC link succeeds,
    because the password is replaced and expired.
  - Cutting tunnels needs C(ss) (iproute2) and a kernel with C(CONFIG_INET_DIAG_DESTROY) (Debian's has it).
  - SPICE allows one client per VM at a time; the C(channels) of RV(sessions) count that client's channels
    (main, display, inputs, cursor, ...).
seealso:
  - module: vmconsole.secure.console_ticket
  - module: vmconsole.secure.console_info
  - name: QEMU QMP set_password and expire_password
    description: The QMP commands this module sends (C(connected) is SPICE only).
    link: https://www.qemu.org/docs/master/interop/qemu-qmp-ref.html
"""

EXAMPLES = r"""
- name: Take web1's console away from everybody, on every hypervisor
  vmconsole.secure.console_session:
    state: absent
    vm: web1
  become: true
  delegate_to: "{{ item }}"
  loop: "{{ groups['hypervisors'] }}"

- name: One point in time for the whole cluster, so that a repeated run changes nothing
  ansible.builtin.set_fact:
    revoke_time: "{{ now(utc=true).timestamp() | int }}"
  run_once: true

- name: Alice may no longer open consoles; also cut the two she has open
  vmconsole.secure.console_session:
    state: absent
    user: alice@example.org
    vms: [web1, db2]
    revoke_time: "{{ revoke_time }}"
  become: true
  register: cut

- name: Bob may no longer open web1's console; his other consoles and other people's stay
  vmconsole.secure.console_session:
    state: absent
    user: bob
    vm: web1
  become: true

- name: Show what was cut here
  ansible.builtin.debug:
    msg: "{{ item.key }}: {{ item.value.spice.channels_before }} SPICE channels before, {{ item.value.spice.channels_after }} after"
  loop: "{{ cut.sessions | dict2items | selectattr('value.running') }}"
"""

RETURN = r"""
sessions:
  description:
    - The VMs whose sessions were (in check mode, would be) cut, by name. A VM that does not run on this node
      has C(running=false) and zero counts.
  returned: success
  type: dict
  contains:
    running:
      description: Whether the VM's QEMU answered on this node.
      type: bool
      sample: true
    locked:
      description: Whether its consoles now hold a random, expired ticket (false in check mode and when not running).
      type: bool
      sample: true
    ticket_file_removed:
      description:
        - Whether the ticket M(vmconsole.secure.console_ticket) kept for a migration (C(<vm>.ticket) beside the QMP
          socket) was removed, so that C(playbooks/migrate.yml) cannot set the cut ticket on the target node.
      type: bool
      sample: true
    spice:
      description: The SPICE console, from C(query-spice) before and after.
      type: dict
      contains:
        enabled:
          description: Whether the VM has a SPICE server.
          type: bool
        channels_before:
          description: Connected SPICE channels before.
          type: int
          sample: 4
        channels_after:
          description: Connected SPICE channels after (in check mode, the same as before).
          type: int
          sample: 0
        clients_before:
          description: Connected SPICE clients before (distinct connection ids).
          type: int
          sample: 1
        clients_after:
          description: Connected SPICE clients after.
          type: int
          sample: 0
    vnc:
      description: The VNC console, from C(query-vnc) before and after.
      type: dict
      contains:
        enabled:
          description: Whether the VM has a VNC server.
          type: bool
        clients_before:
          description: Connected VNC clients before.
          type: int
          sample: 0
        clients_after:
          description: Connected VNC clients after (QEMU cannot disconnect them, see the notes).
          type: int
          sample: 0
  sample:
    web1:
      running: true
      locked: true
      ticket_file_removed: true
      spice: {enabled: true, channels_before: 4, channels_after: 0, clients_before: 1, clients_after: 0}
      vnc: {enabled: false, clients_before: 0, clients_after: 0}
tunnels:
  description: The tunnels through this node's proxy that were (in check mode, would be) cut.
  returned: success
  type: dict
  contains:
    checked:
      description: Whether a proxy runs on this node (O(proxy_fact_file) exists) and was asked.
      type: bool
    cut:
      description: One entry per tunnel cut, with the person, the VM, the destination, the console type (by port
        range) and the client's address.
      type: list
      elements: dict
    by_console:
      description: How many tunnels of each console type were cut (C(other) for a port outside the console ranges).
      type: dict
  sample:
    checked: true
    cut: [{user: alice, vm: web1, destination: "hv1:61000", console: spice, client: "10.90.6.21:41518"},
          {user: alice, vm: web1, destination: "hv1:62000", console: serial, client: "10.90.6.21:41520"}]
    by_console: {spice: 1, vnc: 0, serial: 1, other: 0}
revoked:
  description:
    - >-
      The entries this run added to O(revocations_file) or moved forward (in check mode, would), as
      C({"users": {NAME: EPOCH}, "vms": {NAME: EPOCH}, "pairs": {USER__VM: EPOCH}}). Empty when the file already
      revoked as much.
  returned: success
  type: dict
  sample: {"users": {}, "vms": {"web1": 1767225630}, "pairs": {}}
pruned:
  description: Entries dropped from O(revocations_file) because every token they refused has expired.
  returned: success
  type: dict
  sample: {"users": {"bob": 1766000000}, "vms": {}, "pairs": {}}
revoke_time:
  description: Tokens issued at or before this epoch second are revoked.
  returned: success
  type: int
  sample: 1767225630
revocations_file:
  description: The revocations file on the node.
  returned: success
  type: str
  sample: /etc/vmconsole/proxy-revoked.json
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.vmconsole.secure.plugins.module_utils._sessions import (
    SESSION_ARGUMENT_SPEC,
    SESSION_MUTUALLY_EXCLUSIVE,
    SESSION_REQUIRED_BY,
    SESSION_REQUIRED_ONE_OF,
    cut_sessions,
)


def main():
    module = AnsibleModule(argument_spec=SESSION_ARGUMENT_SPEC, mutually_exclusive=SESSION_MUTUALLY_EXCLUSIVE,
                           required_one_of=SESSION_REQUIRED_ONE_OF, required_by=SESSION_REQUIRED_BY,
                           supports_check_mode=True)
    module.exit_json(**cut_sessions(module))


if __name__ == "__main__":
    main()
