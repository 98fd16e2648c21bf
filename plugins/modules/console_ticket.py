#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: console_ticket
short_description: Issue a short-lived SPICE or VNC console ticket (.vv file), or a serial console's proxy token
version_added: 0.1.0
description:
  - Sets a one-time password (a I(ticket)) on a running VM's SPICE or VNC console over QMP, with QMP
    C(set_password), and makes it expire after O(ttl) seconds with C(expire_password). Both are always
    sent, because C(set_password) keeps whatever expiry an earlier ticket had.
  - On the controller, writes a virt-viewer connection file (C(.vv)) to O(dest) that C(remote-viewer FILE.vv)
    opens. For SPICE the file pins the CA certificate (C(ca=)) and the server certificate subject
    (C(host-subject=)), so the console host name in C(host=) need not match the certificate, and makes
    every channel use TLS (C(secure-channels=all)). The file is written with mode C(0600) and asks
    remote-viewer to delete it after reading it.
  - A web service that hands out C(.vv) files serves them with the MIME type C(application/x-virt-viewer),
    which browsers pass to remote-viewer.
  - The ticket is never shown. Unless O(return_secret=true) it is not part of the result either. It is
    random (40 letters and digits for SPICE, 8 for VNC) unless O(password) gives one.
  - Everything is checked before anything is sent to the VM (options, the files, whether the VM has that
    console and ticketing, whether O(dest) can be written), so a failed task leaves the VM's current
    ticket as it was.
  - With O(proxy_user), the C(.vv) also carries a I(proxy token) for the cluster's CONNECT proxy (role
    C(vmconsole.secure.connect_proxy)). The C(proxy=) URL becomes C(http://USERNAME:TOKEN@host:port), where
    USERNAME names the person and the VM (it is not secret, squid logs it) and TOKEN carries an Ed25519 signature
    over user, VM, console (O(protocol)), issue time, expiry and client address (O(proxy_client_address)) made
    with this node's own signing key (O(proxy_token_key_file)); every node's proxy verifies it with public
    keys only. squid's helper lets that token open only this console of this VM
    (a SPICE token not the VM's serial console), wherever the VM runs, and, where the proxy binds tokens
    (C(connect_proxy_token_binding), the default), only from the client address it is first used from.
  - B(Lifetime rule.) The SPICE ticket only has to outlive the start of remote-viewer (O(ttl), default 30 s),
    because QEMU checks it once per connection. The proxy token must outlive the whole session (O(proxy_token_ttl),
    default 8 h), because spice-gtk sends the same proxy credentials again for every channel it opens later
    (USB redirection, a display added by the guest) and for every reconnection, above all the one to the
    target node during seamless migration. A token that expires during a session lets the open channels run
    but fails the next one. Cut a session early with C(vmconsole.secure.console_session) (revocation).
  - Each issuance is appended to O(audit_log) on the node as one JSON line (when, node, VM, protocol, ticket
    expiry, proxy user and username, token key id and expiry, the account that ran the task). It never holds a
    ticket or a token.
  - The QMP socket is root-only, so the task usually needs C(become=true).
  - B(libvirt domains.) With O(libvirt_domain) the VM is a libvirt domain, whose QMP monitor libvirt owns, so the
    module does not talk QMP. It reads the live domain XML, takes the domain's C(<graphics type='spice'>) (or
    C(vnc)) element, sets C(passwd), C(passwdValidTo) (the expiry, in UTC) and, for SPICE, C(connected) on it, and
    hands it to libvirt as a live device update (C(virDomainUpdateDeviceFlags) with C(VIR_DOMAIN_AFFECT_LIVE)); libvirt
    then sends C(set_password) and C(expire_password) to QEMU. Everything else (the C(.vv), the proxy token, the
    audit log, check mode) is the same as for a QMP guest.
  - libvirt starts QEMU with ticketing only when the domain has a C(passwd) on its C(<graphics>) (or C(qemu.conf)
    sets C(spice_password) / C(vnc_password)). Define such domains with a password, for example a random one whose
    C(passwdValidTo) lies in the past.
  - B(Serial console.) With O(protocol=serial) nothing is set in QEMU and no ticket exists (the serial chardev has no
    password; the client certificate is the credential, see C(docs/serial-console.md)). The module sends QMP
    C(query-chardev) only, to read the TCP port of the chardev C(vmconsole-serial) that C(vmconsole.secure.qemu_vm)
    gives a guest, mints a proxy token for O(proxy_user) and O(vm) (needed; the only thing issued), logs the
    issuance (protocol C(serial)) and returns the client command RV(command), C(openssl s_client) through the proxy
    with the person's client certificate. The command never holds the token; with O(dest) the token is written
    there (mode C(0600)) and the command reads it with C(-proxy_pass file:DEST); without, it reads the environment
    variable C(VMC_PROXY_TOKEN), and O(return_secret=true) must hand the token over as RV(proxy_token).
  - O(protocol=serial) is not supported for a O(libvirt_domain) yet.
requirements:
  - The Python binding of libvirt (C(import libvirt), Debian package C(python3-libvirt)) on the managed node, with
    O(libvirt_domain) only.
author:
  - vmconsole.secure developers (@vmconsole)
extends_documentation_fragment:
  - vmconsole.secure.qmp
  - vmconsole.secure.attributes
  - vmconsole.secure.attributes.ACTIONGROUP_QMP
attributes:
  action:
    description: Has an action plugin that runs on the controller, creates the ticket and writes O(dest) there.
    support: full
  check_mode:
    support: full
    details:
      - In check mode the options, files and the VM's console are checked (QMP queries only, or for a libvirt
        domain its live XML), no ticket is set and no file is written; the task reports a change.
      - With O(protocol=serial), check mode reads the port and returns RV(command), and mints no proxy token.
  diff_mode:
    support: none
  idempotent:
    support: none
    details:
      - A ticket cannot be read back from QEMU, and every run issues a new one (which replaces the old one),
        so the module always reports a change.
options:
  libvirt_domain:
    description:
      - Name of a running libvirt domain whose console the ticket is for, instead of O(vm) or O(socket).
        Exactly one of O(vm), O(socket) and O(libvirt_domain) is needed.
      - The ticket is set through libvirt (see the description); O(socket_dir) and O(timeout) are not used.
      - A libvirt domain name; it must not contain C(/) or control characters and is at most 200 bytes long.
    type: str
  libvirt_uri:
    description:
      - libvirt connection URI for O(libvirt_domain), checked like the C(vmconsole.secure.libvirt_uri) filter
        does; a parameter libvirt's remote driver does not know gives a warning.
    type: str
    default: qemu:///system
  protocol:
    description:
      - Which console of the VM the ticket is for.
      - V(serial) issues only a proxy token for the guest's TLS serial console and returns the client command (see
        the description); it needs O(vm) and O(proxy_user), and O(password), O(connected), O(title), O(host_subject)
        do not apply.
    type: str
    choices: [spice, vnc, serial]
    default: spice
  password:
    description:
      - The ticket to set, instead of a random one.
      - Letters and digits only (C([A-Za-z0-9])); for SPICE 1 to 59 characters, for VNC 1 to 8 (VNC
        authentication uses only 8).
      - It must not occur inside the other values the module returns (console host, certificate subject,
        ...), because Ansible would mask it there; a random ticket never does.
    type: str
  ttl:
    description:
      - Seconds until the ticket expires, a whole number from 1 to 86400.
      - A client must open the console within this time; an open connection stays open after it.
      - Not used with O(protocol=serial) (no ticket; O(proxy_token_ttl) sets how long the token is valid).
    type: raw
    default: 30
  connected:
    description:
      - What happens to a client that is connected when the new ticket is set. SPICE only; for VNC only
        V(keep) is allowed.
      - V(keep) leaves it connected; V(disconnect) drops it; V(fail) fails the task and sets no ticket.
      - For a O(libvirt_domain), V(fail) is checked by QEMU when libvirt sets the ticket (libvirt lists no SPICE
        clients), so check mode cannot tell whether it would fail.
    type: str
    choices: [keep, disconnect, fail]
    default: keep
  console_host:
    description:
      - Host name or address that the C(.vv) file tells remote-viewer to connect to (C(host=)).
      - With a O(proxy), the proxy resolves this name, so it is the cluster node's name as the proxy knows it.
      - With O(protocol=serial), the C(-connect) target of the command and the name the client verifies in the
        node's certificate (C(-verify_hostname), or C(-verify_ip) for an address).
      - Default is the inventory name of the host the task runs on (or is delegated to).
    type: str
  proxy:
    description:
      - Public URL of the HTTP CONNECT proxy that remote-viewer tunnels through, for example
        V(http://hv1.example.org:3128) (port 3128 when none is given). SPICE only.
      - With O(proxy_user) it must not hold credentials, because the module puts the proxy username and token there.
      - With O(protocol=serial), where the client reaches the proxy (C(-proxy HOST:PORT) of the command).
      - Default, for a O(vm) (a qemu_vm guest) with O(protocol=spice) or O(protocol=serial) where
        P(vmconsole.secure.connect_proxy#role) runs on the node (O(proxy_fact_file) exists), the node's proxy (the
        fact's C(url)), so that a C(.vv) made ad hoc works from a workstation. V("") goes without a proxy. Without
        that fact, no proxy for SPICE, and O(console_host) on port 3128 for a serial console.
    type: str
  proxy_user:
    description:
      - The person the console is for. Makes the module mint a proxy token for this person and O(vm) and put
        it into the C(.vv) as the O(proxy) credentials. Needs O(vm) or O(libvirt_domain) (not O(socket)), and for SPICE
        O(proxy). SPICE and serial only.
      - Required with O(protocol=serial), which issues nothing but this token.
      - Default, when O(proxy) comes from the node's fact and that proxy checks tokens, the login name of the person
        running Ansible on the controller.
      - At most 64 printable characters, e.g. V(alice) or V(alice@example.org). It appears in the proxy
        username (C(alice_40example_2Eorg__web1) for V(alice@example.org) and VM V(web1)) and in the logs.
    type: str
  controller_user:
    description:
      - The login name of the person running Ansible on the controller, set by the action plugin when O(proxy_user)
        is not given; the default of O(proxy_user) where the node's proxy checks tokens (see O(proxy)).
    type: str
  proxy_fact_file:
    description:
      - The local fact P(vmconsole.secure.connect_proxy#role) writes on the node; the default of O(proxy) and
        O(proxy_user) comes from it.
    type: path
    default: /etc/ansible/facts.d/vmconsole_proxy.fact
  proxy_token_key_file:
    description:
      - This node's proxy token signing keys file, as the connect_proxy role makes it (module
        M(vmconsole.secure.proxy_token_key); 0600 root, so the module needs root); the key named C(current)
        signs. Private keys never leave the node.
      - Read only with O(proxy_user).
    type: path
    default: /etc/vmconsole/proxy-signing.json
  proxy_client_address:
    description:
      - The one client address the proxy token works from (the address the person's machine reaches the proxy
        from, as the proxy sees it). Used only with O(proxy_user).
      - Default any address; where the proxy binds tokens (C(connect_proxy_token_binding), the default) the token
        then works only from the address it is first used from.
    type: str
  proxy_token_ttl:
    description:
      - Seconds the proxy token stays valid, a whole number from 60 to 604800. It must cover the whole console
        session including migrations (see the lifetime rule above); the default is 8 hours.
      - Used only with O(proxy_user).
    type: raw
    default: 28800
  audit_log:
    description:
      - File on the managed node where each issuance is appended as one JSON line (mode C(0640), its folder
        created with mode C(0750)). Checked before anything is sent to the VM; if the line cannot be written the
        task fails and hands nothing out.
      - The connect_proxy role rotates the default file. An empty string turns the log off.
    type: path
    default: /var/log/vmconsole/tickets.log
  ca_file:
    description:
      - CA certificate (PEM) on the managed node that signed the SPICE server certificate; written to the
        C(.vv) as C(ca=). SPICE only.
    type: path
    default: /etc/pki/libvirt-spice/ca-cert.pem
  server_cert_file:
    description:
      - SPICE server certificate (PEM) on the managed node; its subject becomes the C(.vv) C(host-subject=).
      - Not read when O(host_subject) is given. SPICE only.
    type: path
    default: /etc/pki/libvirt-spice/server-cert.pem
  host_subject:
    description:
      - Certificate subject remote-viewer requires of the SPICE server, in spice-gtk's form
        (C(C=XX,O=Example,CN=hv1), in the certificate's order, C(,) and C(\\) escaped with C(\\)).
      - Default is the subject of O(server_cert_file). SPICE only.
    type: str
  title:
    description:
      - Window title remote-viewer shows.
    type: str
  dest:
    description:
      - Path on the B(controller) where the C(.vv) file is written, with mode C(0600), replacing an existing
        file atomically. A relative path is relative to the current directory of C(ansible-playbook).
      - The folder must exist. Omit to write no file.
      - At least one of O(dest), O(return_secret=true) and O(password) is needed, or the ticket would reach
        nobody.
      - With O(protocol=serial), the file on the controller that gets the proxy token (one line, mode C(0600)),
        which RV(command) reads with C(-proxy_pass file:DEST); O(dest) or O(return_secret=true) is needed.
    type: path
  ticket_file:
    description:
      - File on the managed node where a SPICE ticket is kept after it is set, so that a live migration can give the
        connected client's ticket to the target (C(vmconsole.secure.spice_migrate)); a migrating client links to the
        target with the ticket it linked with. JSON with the ticket and its expiry, root only (mode C(0600)), replaced
        atomically; never logged or returned. Checked before anything is sent to the VM.
      - Default C(<vm>.ticket) next to the QMP socket (C(/run/vmconsole/web1.ticket)). An empty string keeps no file.
      - With O(libvirt_domain) no file is kept unless this option names one, because libvirt carries a domain's graphics
        password along when it migrates the domain.
      - C(playbooks/migrate.yml) reads it on the source, sets the ticket on the target with a short expiry, writes it
        there (so a later migration back works) and removes it from the source.
      - SPICE only; nothing is kept for VNC (a VNC client cannot follow a migration).
    type: path
  return_secret:
    description:
      - Return the ticket as RV(ticket), for a later task (for example one that hands the C(.vv) to a web
        service). The whole result is then marked C(no_log), so no callback prints it, while C(register)
        still gets it.
      - With O(protocol=serial), returns the proxy token as RV(proxy_token) the same way.
    type: bool
    default: false
  client_cert_file:
    description:
      - With O(protocol=serial), the person's client certificate (PEM) B(on the client's machine), for C(-cert) in
        RV(command). Only used to write the command; nothing reads it.
      - Default C(~/.vmconsole/pki/default/clients/<proxy_user>/clientcert.pem), where C(playbooks/client_cert.yml)
        (role C(vmconsole.secure.pki), C(client_certificate)) puts it for cluster C(default). A leading C(~/) stays
        unquoted in RV(command), so the client's shell expands it (not in RV(argv)).
    type: str
  client_key_file:
    description:
      - With O(protocol=serial), the client certificate's private key on the client's machine (C(-key)).
      - Default C(~/.vmconsole/pki/default/clients/<proxy_user>/clientkey.pem).
    type: str
  client_ca_file:
    description:
      - With O(protocol=serial), the cluster's CA bundle on the client's machine (C(-CAfile)), that the node's
        certificate must verify against.
      - Default C(~/.vmconsole/pki/default/clients/<proxy_user>/cacert.pem).
    type: str
notes:
  - The ticket goes to the managed node as a C(no_log) module option and is masked in the module's
    invocation and output.
seealso:
  - name: remote-viewer connection file
    description: The C(.vv) keys, in the CONNECTION FILE section of remote-viewer(1).
    link: https://gitlab.com/virt-viewer/virt-viewer/-/blob/master/docs/remote-viewer.pod
  - name: The serial console
    description: docs/serial-console.md, the client command and the security notes.
    link: https://github.com/vmconsole/secure/blob/main/docs/serial-console.md
  - name: The connect_proxy role
    description: The squid proxy and the helpers that check proxy tokens.
    link: https://github.com/vmconsole/secure/tree/main/roles/connect_proxy
  - name: QEMU QMP set_password and expire_password
    description: The QMP commands this module sends.
    link: https://www.qemu.org/docs/master/interop/qemu-qmp-ref.html
  - name: libvirt graphics devices
    description: The C(<graphics>) element and its C(passwd), C(passwdValidTo) and C(connected) attributes.
    link: https://libvirt.org/formatdomain.html#graphical-framebuffers
"""

EXAMPLES = r"""
- name: Let a person open web1's console for 30 seconds
  vmconsole.secure.console_ticket:
    vm: web1
    dest: "{{ playbook_dir }}/web1.vv"
  become: true
  register: console

- name: Tell them until when the file works
  ansible.builtin.debug:
    msg: "{{ console.dest }} opens the console until {{ '%H:%M:%S' | strftime(console.expires) }}"

- name: Through the cluster's proxy, taking the console from whoever has it
  vmconsole.secure.console_ticket:
    vm: web1
    proxy: http://hv1.example.org:3128
    connected: disconnect
    ttl: 60
    title: web1 (production)
    dest: /srv/consoles/web1.vv
  become: true

- name: For alice, through the proxy of the node that runs web1, with a proxy token valid for 8 hours
  vmconsole.secure.console_ticket:
    vm: web1
    proxy: http://hv1.example.org:3128
    proxy_user: alice
    dest: "{{ playbook_dir }}/web1.vv"
  become: true

- name: A VNC ticket for a web service that builds its own .vv
  vmconsole.secure.console_ticket:
    vm: legacy1
    protocol: vnc
    return_secret: true
  become: true
  register: vnc_ticket  # vnc_ticket.ticket holds it; no callback prints this result

- name: Alice's serial console of web1, the token in a 0600 file the command reads
  vmconsole.secure.console_ticket:
    vm: web1
    protocol: serial
    proxy: http://hv1.example.org:3128
    proxy_user: alice
    dest: "{{ playbook_dir }}/web1.token"
  become: true
  register: serial

- name: Show the command (no secret in it)
  ansible.builtin.debug:
    msg: "{{ serial.command }}"  # openssl s_client -quiet -proxy hv1.example.org:3128 ... -proxy_pass file:/.../web1.token ...

- name: A SPICE ticket for the libvirt domain lv1, set through libvirt (not QMP)
  vmconsole.secure.console_ticket:
    libvirt_domain: lv1
    proxy: http://hv1.example.org:3128
    proxy_user: alice
    dest: "{{ playbook_dir }}/lv1.vv"
  become: true
"""

RETURN = r"""
protocol:
  description: The console the ticket is for.
  returned: success
  type: str
  sample: spice
ttl:
  description: Lifetime of the ticket in seconds (with O(protocol=serial), of the proxy token).
  returned: success
  type: int
  sample: 30
expires:
  description:
    - When the ticket expires, in whole seconds since the epoch (QEMU's own resolution).
    - With O(protocol=serial), when the proxy token expires.
    - In check mode, when it would expire.
  returned: success
  type: int
  sample: 1767225630
tls_port:
  description: The VM's SPICE TLS port on the console host, or null if SPICE has none (and for VNC).
  returned: success, for SPICE and VNC
  type: int
  sample: 61001
port:
  description: The VM's plain SPICE port, or its VNC port; null if there is none.
  returned: success, for SPICE and VNC
  type: int
  sample: 5901
console_host:
  description: The host name written to the C(.vv) as C(host=).
  returned: success
  type: str
  sample: hv1.example.org
host_subject:
  description: The server certificate subject written to the C(.vv) as C(host-subject=); null for VNC.
  returned: success, for SPICE and VNC
  type: str
  sample: C=XX,O=Example,CN=hv1.example.org
dest:
  description:
    - Absolute path of the C(.vv) file on the controller; null without O(dest). Not written in check mode.
    - With O(protocol=serial), of the file holding the proxy token.
  returned: success
  type: str
  sample: /home/alice/web1.vv
ticket_file:
  description: The file on the managed node that keeps the SPICE ticket for a migration; null when none is kept.
  returned: success, for SPICE and VNC
  type: str
  sample: /run/vmconsole/web1.ticket
ticket:
  description: The ticket. The result that holds it is marked C(no_log).
  returned: success, when O(return_secret=true)
  type: str
proxy_username:
  description: The proxy username in the C(.vv) (names user and VM; not a secret, squid logs it).
  returned: success, with O(proxy_user)
  type: str
  sample: alice__web1
proxy_token_expires:
  description: When the proxy token expires, in seconds since the epoch.
  returned: success, with O(proxy_user)
  type: int
  sample: 1767254400
proxy_token_key_id:
  description: Id of the node key that signed the proxy token (12 hex digits).
  returned: success, with O(proxy_user)
  type: str
  sample: 3f2a9c0d51be
proxy_token:
  description: The proxy token (the proxy password). The result that holds it is marked C(no_log).
  returned: success, with O(proxy_user) and O(return_secret=true), not in check mode
  type: str
serial_port:
  description: The TCP port of the VM's serial console on the node (QEMU's chardev C(vmconsole-serial), 127.0.0.1 only).
  returned: success, with O(protocol=serial)
  type: int
  sample: 62000
command:
  description:
    - The client command as one shell line (C(openssl s_client) through the proxy, see C(docs/serial-console.md)).
    - It holds no secret; the token comes from O(dest) (C(-proxy_pass file:DEST)) or, without O(dest), from the
      environment variable C(VMC_PROXY_TOKEN) (C(-proxy_pass env:VMC_PROXY_TOKEN)).
  returned: success, with O(protocol=serial)
  type: str
  sample: >-
    openssl s_client -quiet -proxy hv1.example.org:3128 -proxy_user alice__web1 -proxy_pass file:/home/alice/web1.token
    -connect hv1:62000 -cert ~/.vmconsole/pki/default/clients/alice/clientcert.pem
    -key ~/.vmconsole/pki/default/clients/alice/clientkey.pem -CAfile ~/.vmconsole/pki/default/clients/alice/cacert.pem
    -verify_return_error -verify_hostname hv1
argv:
  description: The same command as a list of arguments, for a process without a shell (a C(~) is not expanded there).
  returned: success, with O(protocol=serial)
  type: list
  elements: str
"""


from ansible.module_utils.basic import AnsibleModule

from ansible_collections.vmconsole.secure.plugins.module_utils._console import OptionError, run_on_console
from ansible_collections.vmconsole.secure.plugins.module_utils._issue import (
    ISSUE_ARGUMENT_SPEC,
    ISSUE_MUTUALLY_EXCLUSIVE,
    ISSUE_REQUIRED_ONE_OF,
    issue,
    prepare,
)


def main():
    module = AnsibleModule(argument_spec=ISSUE_ARGUMENT_SPEC, mutually_exclusive=ISSUE_MUTUALLY_EXCLUSIVE,
                           required_one_of=ISSUE_REQUIRED_ONE_OF, supports_check_mode=True)
    try:
        prepared = prepare(module)
    except OptionError as exc:
        module.fail_json(msg=str(exc))
    run_on_console(module, lambda console: issue(module, console, prepared))


if __name__ == "__main__":
    main()
