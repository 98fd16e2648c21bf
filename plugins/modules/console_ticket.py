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


import socket
import time
from urllib.parse import urlsplit

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.vmconsole.secure.plugins.module_utils._console import (
    OptionError,
    open_audit_log,
    run_on_console,
    spice_tls,
    write_audit,
)
from ansible_collections.vmconsole.secure.plugins.module_utils._files import audit_record
from ansible_collections.vmconsole.secure.plugins.module_utils._libvirt import (
    CONSOLE_MUTUALLY_EXCLUSIVE,
    CONSOLE_REQUIRED_ONE_OF,
    LIBVIRT_ARGUMENT_SPEC,
    check_libvirt_options,
)
from ansible_collections.vmconsole.secure.plugins.module_utils._migrate import (
    check_ticket_file_writable,
    default_ticket_file,
    write_ticket_file,
)
from ansible_collections.vmconsole.secure.plugins.module_utils._qmp_module import QMP_ARGUMENT_SPEC, qmp_socket_path
from ansible_collections.vmconsole.secure.plugins.module_utils._serial import (
    DEFAULT_PROXY_PORT,
    default_client_files,
    serial_console_argv,
    serial_console_command,
)
from ansible_collections.vmconsole.secure.plugins.module_utils._serial_clients import common_names
from ansible_collections.vmconsole.secure.plugins.module_utils._subject import parse_subject
from ansible_collections.vmconsole.secure.plugins.module_utils._tunnels import read_proxy_fact
from ansible_collections.vmconsole.secure.plugins.module_utils._tickets import (
    check_proxy_user,
    client_address,
    load_proxy_signer,
    mint_proxy_token,
    proxy_username,
    validate_ticket,
    validate_token_ttl,
    validate_ttl,
)
from ansible_collections.vmconsole.secure.plugins.module_utils._vv import check_proxy_url, proxy_url, render_vv

# The returned values a ticket could hide in (Ansible's no_log masking would garble them), and what sets each.
_RETURNED_FROM = dict(protocol="protocol", host="console_host", proxy="proxy", ca_pem="the CA certificate in ca_file",
                      host_subject="host_subject (or server_cert_file)", title="title",
                      proxy_username="the proxy username (proxy_user and vm)")


def _checked(check, value, prefix=""):
    """``check(value)``, its ValueError turned into an OptionError (text after ``prefix``)."""
    try:
        return check(value)
    except ValueError as exc:
        raise OptionError(prefix + str(exc)) from None


def node_proxy_defaults(params):
    """``proxy`` (and ``proxy_user``) from the node's connect_proxy fact where they are not given; ``proxy=""``: none.

    Only for a qemu_vm guest (``vm``) and SPICE or serial: the proxy's destination check knows those guests only.
    """
    if params["proxy"] == "":
        params["proxy"] = None
        return
    if params["proxy"] is not None or params["vm"] is None or params["protocol"] == "vnc":
        return
    fact = _checked(read_proxy_fact, params["proxy_fact_file"], "proxy_fact_file: ")
    if fact is None:
        return
    if not isinstance(fact.get("url"), str):
        raise OptionError("proxy_fact_file: %s has no proxy url: run the connect_proxy role on this node"
                          % params["proxy_fact_file"])
    params["proxy"] = fact["url"]
    if fact.get("tokens") and params["proxy_user"] is None:
        if not params["controller_user"]:
            raise OptionError("proxy_user is missing: the node's proxy (%s) checks proxy tokens, and the login name "
                              "on the controller is unknown; name the person with proxy_user" % fact["url"])
        _checked(check_proxy_user, params["controller_user"],
                 "controller_user (the default of proxy_user, the login name on the controller): ")
        params["proxy_user"] = params["controller_user"]


def check_options(params, warn):
    """Validate everything that needs no QEMU; the ttl as int. ``warn(text)`` gets warnings."""
    protocol = params["protocol"]
    ttl = _checked(validate_ttl, params["ttl"])
    if protocol == "serial":
        check_serial_options(params)
    elif params["password"] is None:
        raise OptionError("password is missing: the console_ticket action plugin generates the ticket on the controller, "
                          "so run this module as vmconsole.secure.console_ticket through Ansible")
    else:
        _checked(lambda password: validate_ticket(protocol, password), params["password"], "password: ")
    if protocol == "vnc":
        for option in ("proxy", "host_subject"):
            if params[option] is not None:
                raise OptionError("%s is SPICE-only: remote-viewer cannot use it for a VNC console" % option)
        if params["connected"] != "keep":
            raise OptionError("connected=%s is SPICE-only: QEMU refuses it for VNC, use connected=keep with protocol=vnc"
                              % params["connected"])
    if params["proxy"] is not None:
        _checked(check_proxy_url, params["proxy"])
    if params["proxy_user"] is not None:
        check_proxy_token_options(params)
    if params["host_subject"] is not None:
        _checked(parse_subject, params["host_subject"], "host_subject: ")
    if params["libvirt_domain"] is None:
        _checked(qmp_socket_path, params)
    else:
        for text in _checked(check_libvirt_options, params):
            warn(text)
    return ttl


def check_serial_options(params):
    """What protocol=serial refuses, before anything is read or sent: it issues a proxy token and nothing else."""
    if params["libvirt_domain"] is not None:
        raise OptionError("protocol=serial is not supported for a libvirt_domain yet: libvirt names the serial chardev "
                          "differently and its TLS settings are libvirt's; use vm (a qemu_vm guest)")
    if params["proxy_user"] is None:
        raise OptionError("protocol=serial needs proxy_user: the serial console has no ticket, the proxy token for "
                          "that person is the only thing issued (the client certificate is the other credential)")
    if params["password"] is not None:
        raise OptionError("password does not apply to protocol=serial: QEMU's serial chardev has no password "
                          "(the client certificate and the proxy token are the credentials)")
    if params["connected"] != "keep":
        raise OptionError("connected=%s is SPICE-only: a serial console takes one client at a time"
                          % params["connected"])
    for option in ("host_subject", "title"):
        if params[option] is not None:
            raise OptionError("%s does not apply to protocol=serial: it is for a .vv file" % option)
    for option in ("client_cert_file", "client_key_file", "client_ca_file"):
        value = params[option]
        if value is not None and (not value or "\0" in value or "\n" in value or value.startswith("-")):
            raise OptionError("%s must be a file path on the client's machine, got %r" % (option, value))


def vm_name(params):
    """The name the proxy token and the audit log give the VM: ``vm`` or ``libvirt_domain`` (None with ``socket``)."""
    return params["vm"] or params["libvirt_domain"]


def check_proxy_token_options(params):
    """The options a proxy token needs, before anything is read or sent."""
    if params["protocol"] == "vnc":
        raise OptionError("proxy_user is for SPICE and serial consoles only: remote-viewer uses a proxy for SPICE "
                          "consoles only")
    if params["proxy"] is None and params["protocol"] == "spice":
        raise OptionError("proxy_user needs proxy (the URL of the CONNECT proxy the token is for)")
    parts = urlsplit(params["proxy"] or "")
    if parts.username is not None or parts.password is not None:
        raise OptionError("proxy must not hold credentials with proxy_user: the module puts the proxy username and "
                          "token there")
    if vm_name(params) is None:
        raise OptionError("proxy_user needs vm or libvirt_domain (the token names the VM), not socket")
    _checked(lambda user: proxy_username(user, vm_name(params)), params["proxy_user"])
    _checked(validate_token_ttl, params["proxy_token_ttl"])
    if params["proxy_client_address"] is not None:
        _checked(client_address, params["proxy_client_address"], "proxy_client_address: ")


def read_proxy_signer(params):
    """This node's proxy token signing key (a ``_tickets.ProxySigner``), or None without proxy_user."""
    if params["proxy_user"] is None:
        return None
    return _checked(load_proxy_signer, params["proxy_token_key_file"], "proxy_token_key_file: ")


def mint_token(params, signer):
    """A fresh proxy token for proxy_user and the VM (a ``_tickets.ProxyToken``)."""
    return mint_proxy_token(signer, params["proxy_user"], vm_name(params), params["protocol"],
                            ttl=params["proxy_token_ttl"], client=params["proxy_client_address"])


def ticket_file_path(params):
    """Where the SPICE ticket is kept for a migration, or None (VNC, ticket_file='', or a libvirt domain by default).

    libvirt migrates a domain's graphics password with the domain, so a libvirt domain keeps a file only when
    ``ticket_file`` names one. OptionError when the file could not be written.
    """
    if params["protocol"] != "spice" or params["ticket_file"] == "":
        return None
    path = params["ticket_file"]
    if not path and params["libvirt_domain"] is None:
        path = default_ticket_file(qmp_socket_path(params))
    if path is not None:
        try:
            check_ticket_file_writable(path)
        except OSError as exc:
            raise OptionError("ticket_file %s cannot be written: %s" % (path, exc.strerror or exc)) from None
    return path


def issuance_record(params, result):
    """One issuance for the audit log: who, which VM, when, until when. Never a ticket or a token."""
    target = dict(vm=params["vm"], socket=None if params["vm"] else params["socket"])
    if params["libvirt_domain"] is not None:
        target.update(libvirt_domain=params["libvirt_domain"], libvirt_uri=params["libvirt_uri"])
    return audit_record(
        "console_ticket",
        protocol=result["protocol"],
        connected=params["connected"] if result["protocol"] == "spice" else None,
        ticket_expires=result["expires"] if result["protocol"] != "serial" else None,   # serial: no ticket
        proxy_user=params["proxy_user"],
        proxy_username=result.get("proxy_username"),
        proxy_token_key_id=result.get("proxy_token_key_id"),
        proxy_token_expires=result.get("proxy_token_expires"),
        **target
    )


def masked_somewhere(password, result):
    """Where a returned value contains the ticket, or None."""
    values = dict(result["vv"], protocol=result["protocol"], proxy_username=result.get("proxy_username"))
    for name, value in values.items():
        if isinstance(value, str) and password in value:
            return _RETURNED_FROM[name]
    return None


def client_command(params, node, serial_port, username):
    """(argv, one shell line) of the client command; the token comes from dest's file or VMC_PROXY_TOKEN."""
    defaults = default_client_files(params["proxy_user"])
    proxy = urlsplit(params["proxy"]) if params["proxy"] else None
    args = dict(
        node=node,
        port=serial_port,
        proxy_username=username,
        cert_file=params["client_cert_file"] or defaults[0],
        key_file=params["client_key_file"] or defaults[1],
        ca_file=params["client_ca_file"] or defaults[2],
        proxy_host=proxy.hostname if proxy else None,
        proxy_port=(proxy.port or DEFAULT_PROXY_PORT) if proxy else DEFAULT_PROXY_PORT,
        token_file=params["dest"],
    )
    return _checked(lambda kwargs: (serial_console_argv(**kwargs), serial_console_command(**kwargs)), args,
                    "cannot build the client command: ")


def issue_ticket(module, console, *, ttl, ca_pem, host_subject, keys, kept):
    """protocol=spice or vnc: check the console, set the ticket (and keep it), log it; the result with "vv"."""
    params = module.params
    protocol = params["protocol"]
    password = params["password"]
    tls_port, port = console.ports(protocol, params["connected"])
    result = dict(changed=True, protocol=protocol, ttl=ttl, expires=int(time.time()) + ttl, tls_port=tls_port,
                  port=port, console_host=params["console_host"] or socket.gethostname(), host_subject=host_subject,
                  ticket_file=kept)
    proxy = params["proxy"]
    if keys is not None:
        # The token leaves the node only inside "vv", which the action plugin drops.
        token = mint_token(params, keys)
        parts = urlsplit(proxy)
        proxy = proxy_url(parts.hostname, parts.port or 3128, token.username, token.token)
        result.update(proxy_username=token.username, proxy_token_expires=token.expires,
                      proxy_token_key_id=token.key_id)
    # What the .vv holds besides the ticket; the action plugin renders it and drops this key. With TLS the
    # file offers only the TLS port: every channel is secure anyway.
    result["vv"] = dict(protocol=protocol, host=result["console_host"], tls_port=tls_port,
                        port=port if tls_port is None else None, proxy=proxy, ca_pem=ca_pem,
                        host_subject=host_subject, title=params["title"])
    _checked(lambda vv: render_vv(password=password, **vv), result["vv"], "cannot write a .vv with these options: ")
    clash = masked_somewhere(password, result)
    if clash:
        raise OptionError("password: it occurs in %s, which the module returns and Ansible's no_log masking "
                          "would garble; choose another, or let the module generate one" % clash)
    if protocol == "spice" and tls_port is None:
        module.warn("SPICE of this VM has no TLS port: the console, and its ticket, travel in plain text")
    audit = open_audit_log(params["audit_log"], module.check_mode)   # after the queries, before any change
    try:
        if not module.check_mode:
            result["expires"] = console.set_ticket(protocol, password, ttl, params["connected"])
            if kept is not None:
                try:
                    write_ticket_file(kept, password, result["expires"])
                except OSError as exc:
                    raise OptionError("ticket_file %s cannot be written: %s; the ticket is set but not handed out"
                                      % (kept, exc.strerror or exc)) from None
            write_audit(audit, issuance_record(params, result), "the ticket is set but not handed out")
    finally:
        audit.close()
    return result


def warn_unlisted(module, clients, user, vm):
    """Warn when the serial console's client list names no certificate of ``user`` (its CN): QEMU would refuse the
    TLS handshake of that person's certificate, although the token works."""
    if clients is None or any(user in common_names(identity) for identity in clients):
        return
    module.warn("proxy_user %s is not on the serial console's client list of %s (no certificate with CN=%s among %d "
                "admitted; qemu_vm_serial_clients or the guest's serial_clients): QEMU will refuse that certificate's "
                "TLS handshake" % (user, vm, user, len(clients)))


def issue_serial(module, console, keys):
    """protocol=serial: read the port (query-chardev only), mint and log a proxy token; nothing is set in QEMU."""
    params = module.params
    token_ttl = validate_token_ttl(params["proxy_token_ttl"])
    port = console.serial_port()
    warn_unlisted(module, console.serial_clients(), params["proxy_user"], vm_name(params))
    node = params["console_host"] or socket.gethostname()
    username = proxy_username(params["proxy_user"], vm_name(params))
    argv, command = client_command(params, node, port, username)
    result = dict(changed=True, protocol="serial", ttl=token_ttl, expires=int(time.time()) + token_ttl,
                  serial_port=port, console_host=node, proxy_username=username, proxy_token_key_id=keys.key_id,
                  command=command, argv=argv)
    audit = open_audit_log(params["audit_log"], module.check_mode)   # after the query, before the token
    try:
        if module.check_mode:
            result["proxy_token_expires"] = result["expires"]   # when a token would expire
            return result
        token = mint_token(params, keys)
        result.update(expires=token.expires, proxy_token_expires=token.expires, proxy_token_key_id=token.key_id)
        write_audit(audit, issuance_record(params, result), "the ticket is set but not handed out")
    finally:
        audit.close()
    # The token leaves the node only here; the action plugin drops this key from every result.
    result["serial_handover"] = dict(proxy_token=token.token)
    return result


def main():
    argument_spec = dict(QMP_ARGUMENT_SPEC, **LIBVIRT_ARGUMENT_SPEC)
    argument_spec.update(
        protocol=dict(type="str", choices=["spice", "vnc", "serial"], default="spice"),
        password=dict(type="str", no_log=True),
        ttl=dict(type="raw", default=30),
        connected=dict(type="str", choices=["keep", "disconnect", "fail"], default="keep"),
        console_host=dict(type="str"),
        proxy=dict(type="str"),
        ca_file=dict(type="path", default="/etc/pki/libvirt-spice/ca-cert.pem"),
        server_cert_file=dict(type="path", default="/etc/pki/libvirt-spice/server-cert.pem"),
        host_subject=dict(type="str"),
        title=dict(type="str"),
        proxy_user=dict(type="str"),
        proxy_token_key_file=dict(type="path", default="/etc/vmconsole/proxy-signing.json", no_log=False),
        proxy_token_ttl=dict(type="raw", default=28800, no_log=False),
        proxy_client_address=dict(type="str"),
        audit_log=dict(type="path", default="/var/log/vmconsole/tickets.log"),
        ticket_file=dict(type="path", no_log=False),
        dest=dict(type="path"),
        return_secret=dict(type="bool", default=False, no_log=False),
        client_cert_file=dict(type="str"),
        client_key_file=dict(type="str"),
        client_ca_file=dict(type="str"),
        proxy_fact_file=dict(type="path", default="/etc/ansible/facts.d/vmconsole_proxy.fact"),
        controller_user=dict(type="str"),
    )
    module = AnsibleModule(argument_spec=argument_spec, mutually_exclusive=CONSOLE_MUTUALLY_EXCLUSIVE,
                           required_one_of=CONSOLE_REQUIRED_ONE_OF, supports_check_mode=True)
    params = module.params
    try:
        node_proxy_defaults(params)
        ttl = check_options(params, module.warn)
        ca_pem, host_subject = spice_tls(params) if params["protocol"] == "spice" else (None, None)
        keys = read_proxy_signer(params)
        kept = ticket_file_path(params)
    except OptionError as exc:
        module.fail_json(msg=str(exc))
    if params["protocol"] == "serial":
        run_on_console(module, lambda console: issue_serial(module, console, keys))
    else:
        run_on_console(module, lambda console: issue_ticket(module, console, ttl=ttl, ca_pem=ca_pem,
                                                            host_subject=host_subject, keys=keys, kept=kept))


if __name__ == "__main__":
    main()
