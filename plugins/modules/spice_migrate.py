#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: spice_migrate
short_description: Live-migrate a QEMU VM over TLS while its SPICE clients follow it seamlessly
version_added: 0.1.0
description:
  - Moves a running VM to another node with QEMU live migration over TLS (C(tls-creds-x509)), so that a person
    whose C(remote-viewer) shows the VM's console keeps it, in the same process, without a new ticket or C(.vv).
  - A migration involves two QMP monitors on two nodes, and a module talks to the one of the node it runs on.
    So the migration is a chain of five O(step)s, each run on the node named below, in this order
    (C(playbooks/migrate.yml) runs them; see EXAMPLES).
  - O(step=incoming), B(on the target node), whose guest was started with C(-incoming defer) and the same device
    configuration (role C(vmconsole.secure.qemu_vm), state C(incoming)). Makes the migration TLS credentials
    available (C(tls-creds-x509), C(endpoint=server), C(verify-peer=on)), sets them with C(migrate-set-parameters),
    listens with C(migrate-incoming) on O(migration_uri), and sets the SPICE O(ticket) of the connected client
    with a short expiry (O(ticket_ttl)), writing it to the target's O(ticket_file) so a later migration back works.
    An expired ticket is armed only while a client is connected on the source (O(source_connected)), which needs
    it to follow; without one the ticket keeps its own expiry (O(ticket_expires)) and an expired one is not set.
  - O(step=announce), B(on the source node). C(client_migrate_info) tells every connected SPICE client where the VM
    goes, O(target_host) (the target node's console name as the proxies know it), O(target_port),
    O(target_tls_port) and O(target_cert_subject). The clients then link all their channels to the target.
    Returns RV(clients), the connected clients (connection id and number of channels).
  - O(step=wait_clients), B(on the target node). Waits, at most O(wait_clients_timeout) seconds, until the
    target's C(query-spice) lists all channels of every client in O(clients) (a migrating client links with the
    connection id it had on the source), then 0.25 s more (the client tells the source it is ready just after its
    last channel linked). QEMU does not wait for the clients itself; a client that has not linked when
    the migration completes cannot move seamlessly and reconnects after it instead (a short gap, the same process).
    Running out of time is therefore a warning, not a failure. With no O(clients) it returns at once.
  - O(step=migrate), B(on the source node). Sends C(migrate) to O(migration_uri) with the client TLS credentials,
    polls C(query-migrate) until the migration completes, fails, or O(migrate_timeout) passes, and then waits for
    QEMU's C(SPICE_MIGRATE_COMPLETED). A migration still running after O(migrate_timeout) is cancelled with
    C(migrate_cancel) (O(cancel_on_failure)). After a failed or cancelled migration the VM keeps running on the
    source, the clients stay connected to it, and the target QEMU exits. Returns the total time, downtime and bytes
    transferred.
  - O(step=confirm), B(on the target node). Waits until the target runs the VM (no longer C(inmigrate)) and
    reports whether every client of O(clients) is connected to it with its old connection id and all its channels
    (RV(seamless)).
  - The QMP sockets are root-only, so the tasks usually need C(become=true).
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
      - In check mode only queries are sent (C(query-status), C(query-migrate), C(query-spice), C(qom-list)); the
        result says in RV(actions) what would be sent. No file is written.
  diff_mode:
    support: none
  idempotent:
    support: partial
    details:
      - O(step=migrate) on a VM that has already migrated away (C(postmigrate) with a completed migration) reports no
        change. O(step=incoming) on a target that already listens on the same address does not listen again, but
        sets the ticket again (a change). O(step=announce) always announces again. O(step=wait_clients) and
        O(step=confirm) only read.
options:
  step:
    description:
      - Which part of the migration to run, on which node; see the description.
    type: str
    required: true
    choices: [incoming, announce, wait_clients, migrate, confirm]
  migration_uri:
    description:
      - Where the migration stream goes, C(tcp:HOST:PORT) (IPv6 C(tcp:[ADDRESS]:PORT)). HOST is the target node's
        address on the cluster network, PORT one of the migration ports (C(vmconsole_migration_ports)).
      - The same value for O(step=incoming) (where the target listens) and O(step=migrate) (where the source sends).
      - Instead, O(migration_host) and O(migration_port) build it. One of the two ways is required by those steps,
        and only those take it.
    type: str
  migration_host:
    description:
      - The target node's cluster address, with O(migration_port) instead of O(migration_uri).
    type: str
  migration_port:
    description:
      - The migration port on the target node, with O(migration_host).
    type: int
  tls:
    description:
      - Encrypt and authenticate the migration stream with x509 certificates. Turn off only on a network where the
        guest's memory may travel in plain text.
    type: bool
    default: true
  tls_creds:
    description:
      - Id of the C(tls-creds-x509) object to use. Default V(vmconsole-migration-server) for O(step=incoming) and
        V(vmconsole-migration-client) for O(step=migrate), the objects the qemu_vm role loads at QEMU's start.
      - When QEMU has no object of that id, the module creates it with C(object-add) from O(tls_dir). That works only
        for a QEMU that can still read the keys (one that does not run as an unprivileged user).
    type: str
  tls_dir:
    description:
      - Folder with C(ca-cert.pem), C(server-cert.pem), C(server-key.pem), C(client-cert.pem), C(client-key.pem)
        on the node, for a C(tls-creds-x509) object the module creates.
    type: path
    default: /etc/pki/qemu
  tls_hostname:
    description:
      - Name the target's server certificate must carry, for O(step=migrate). Default is the host of the migration
        URI (QEMU's own default), so the certificate needs the cluster address in its subjectAltName (the pki role
        puts the host's addresses there).
    type: str
  ticket:
    description:
      - The SPICE ticket the connected client linked with, for O(step=incoming); C(migrate.yml) reads it from the
        source's ticket file (written by C(vmconsole.secure.console_ticket)). Without it no ticket is set.
      - A migrating client links to the target with this very ticket, so the target must accept it while the clients
        link and until the migration ends.
    type: str
  ticket_expires:
    description:
      - When O(ticket) itself expires (epoch seconds), as the source's ticket file records it. Required with O(ticket).
    type: int
  source_connected:
    description:
      - Whether a SPICE client is connected to the VM on the source now (C(migrate.yml) asks the source with
        M(vmconsole.secure.console_info)). Required with O(ticket).
      - V(true) arms O(ticket) on the target for O(ticket_ttl) seconds, expired or not, because the client links to
        the target with it. V(false) arms it only for what is left of its own life (at most O(ticket_ttl)), and an
        expired ticket not at all, so a ticket that expired or was cut never opens a new console after a migration.
    type: bool
  ticket_ttl:
    description:
      - Seconds the O(ticket) stays valid on the target, from O(step=incoming) on, a whole number from 1 to 86400. It
        must cover the announcement and the migration (a client that reconnects after the migration needs it too).
    type: int
    default: 120
  ticket_file:
    description:
      - Where O(step=incoming) records the ticket it set (root only, mode C(0600), replaced atomically), so that
        C(vmconsole.secure.console_ticket) and a later migration back find it. Default C(<vm>.ticket) next to the
        QMP socket. An empty string writes no file.
    type: path
  target_host:
    description:
      - The target node's console name as the proxies (and the clients' C(.vv) files) know it. Required by
        O(step=announce), and only that step takes it.
      - A client that reaches the VM through the cluster's CONNECT proxy asks its proxy for this name.
    type: str
  target_tls_port:
    description:
      - The target guest's SPICE TLS port, for O(step=announce), which needs O(target_tls_port) or O(target_port)
        (or both).
    type: int
  target_port:
    description:
      - The target guest's plain SPICE port, for O(step=announce). spice-gtk links to the plain port first (with
        C(tls-channel=default) QEMU answers it must use TLS and it switches to O(target_tls_port)); without a plain
        port the clients cannot link before the migration and reconnect after it instead (a warning says so).
    type: int
  target_cert_subject:
    description:
      - Subject of the target's SPICE server certificate in spice-gtk's form (C(C=XX,O=Example,CN=hv2)), from the
        PKI facts (C(vmconsole_pki_host_subject) of the target). With O(target_tls_port), this or
        O(target_cert_pem) is required.
    type: str
  target_cert_pem:
    description:
      - The target's SPICE server certificate (PEM text), instead of O(target_cert_subject) - the module reads the
        subject from it in spice-gtk's form, as the pki role does for C(vmconsole_pki_host_subject).
    type: str
  clients:
    description:
      - The SPICE clients to wait for (O(step=wait_clients)) or to look for (O(step=confirm)), as RV(clients) of
        O(step=announce) returned them.
    type: list
    elements: dict
    default: []
    suboptions:
      connection_id:
        description: The client's SPICE connection id (the same on source and target).
        type: int
        required: true
      channels:
        description: How many channels the client has open on the source; all of them must link to the target.
        type: int
        default: 1
  wait_clients_timeout:
    description:
      - Seconds O(step=wait_clients) waits for the clients to link to the target, O(step=confirm) waits for the target
        to run, and O(step=migrate) waits for C(SPICE_MIGRATE_COMPLETED) after the migration.
      - spice-server stops waiting for the clients' links after 10 s and falls back to a reconnection, so a longer
        wait gains nothing.
    type: float
    default: 8
  migrate_timeout:
    description:
      - Seconds O(step=migrate) lets the migration run (C(query-migrate) polled every 50 ms) before it gives up.
    type: float
    default: 600
  cancel_on_failure:
    description:
      - When the migration is still running after O(migrate_timeout), send C(migrate_cancel) and wait until QEMU has
        cancelled it, so that the VM keeps running on the source and its SPICE clients stay connected there.
      - A migration that fails by itself (target unreachable, target gone midway) needs no cancel, QEMU resumes the VM
        on the source; the task fails with QEMU's reason either way.
      - With V(false), a migration that runs out of time goes on; the task fails and says so.
    type: bool
    default: true
notes:
  - C(console_ticket) keeps the ticket it sets in C(<vm>.ticket) next to the QMP socket. C(migrate.yml) reads it on the
    source (C(no_log)), passes it as O(ticket) to O(step=incoming) on the target, which sets it with a short expiry and
    writes the target's ticket file, and removes the source's file after a successful migration.
  - The target's guest needs a plain SPICE port (qemu_vm C(spice_port)) for a seamless move, and the proxies must
    allow the client to reach the target's ports under O(target_host).
  - A failed migration is cleaned up by the caller. The target QEMU exits on its own; its unit is stopped and its
    ticket file removed by C(migrate.yml).
seealso:
  - module: vmconsole.secure.console_ticket
  - module: vmconsole.secure.console_info
  - name: QEMU QMP client_migrate_info, migrate, migrate-incoming, query-migrate
    description: The QMP commands this module sends.
    link: https://www.qemu.org/docs/master/interop/qemu-qmp-ref.html
"""

EXAMPLES = r"""
# The chain migrate.yml runs for vm=web1 from hv1 to hv2 (hv2 runs web1 in state incoming,
# with the same devices, spice_port set, started by vmconsole.secure.qemu_vm).
- name: Read the ticket of the connected client on the source
  ansible.builtin.slurp:
    src: /run/vmconsole/web1.ticket
  delegate_to: hv1
  become: true
  register: source_ticket
  failed_when: false
  no_log: true

- name: Target - listen for the migration and accept the client's ticket
  vmconsole.secure.spice_migrate:
    step: incoming
    vm: web1
    migration_uri: "tcp:{{ hostvars['hv2'].vmconsole_cluster_address }}:{{ web1_migration_port }}"
    ticket: "{{ (source_ticket.content | b64decode | from_json).ticket if source_ticket.content is defined else omit }}"
    ticket_ttl: 120
  delegate_to: hv2
  become: true

- name: Source - tell the clients where web1 goes
  vmconsole.secure.spice_migrate:
    step: announce
    vm: web1
    target_host: hv2
    target_port: "{{ hv2_web1.spice_port }}"
    target_tls_port: "{{ hv2_web1.spice_tls_port }}"
    target_cert_subject: "{{ hostvars['hv2'].vmconsole_pki_host_subject }}"
  delegate_to: hv1
  become: true
  register: announced

- name: Target - wait until the clients have linked
  vmconsole.secure.spice_migrate:
    step: wait_clients
    vm: web1
    clients: "{{ announced.clients }}"
  delegate_to: hv2
  become: true

- name: Source - migrate over TLS
  vmconsole.secure.spice_migrate:
    step: migrate
    vm: web1
    migration_uri: "tcp:{{ hostvars['hv2'].vmconsole_cluster_address }}:{{ web1_migration_port }}"
  delegate_to: hv1
  become: true
  register: migrated

- name: Target - the VM runs and the clients are there
  vmconsole.secure.spice_migrate:
    step: confirm
    vm: web1
    clients: "{{ announced.clients }}"
  delegate_to: hv2
  become: true
  register: confirmed

- name: Report
  ansible.builtin.debug:
    msg: >-
      web1 moved in {{ migrated.total_time }} ms (downtime {{ migrated.downtime }} ms,
      {{ migrated.transferred }} bytes); clients moved seamlessly: {{ confirmed.seamless }}
# Then: stop vmconsole-qemu@web1 on hv1 and remove /run/vmconsole/web1.ticket there;
# on failure: stop the target's unit and remove its ticket file (the source runs on).
"""

RETURN = r"""
step:
  description: The step that ran.
  returned: always
  type: str
  sample: migrate
actions:
  description: What the step sent, or in check mode would send (QMP commands, without the ticket).
  returned: success
  type: list
  elements: str
  sample: ["migrate-set-parameters tls-creds=vmconsole-migration-client", "migrate uri=tcp:10.89.7.12:60000"]
status:
  description: The VM's run state (C(query-status)) at the end of the step, e.g. C(inmigrate), C(running), C(postmigrate).
  returned: success
  type: str
  sample: postmigrate
migration_uri:
  description: The migration address used (O(step=incoming) and O(step=migrate)).
  returned: success, step incoming or migrate
  type: str
  sample: tcp:10.89.7.12:60000
ticket_expires:
  description: When the ticket set on the target expires (epoch seconds); null without O(ticket).
  returned: success, step incoming
  type: int
ticket_armed:
  description:
    - Whether the target accepts O(ticket) (false without O(ticket), and for an expired ticket with no client
      connected on the source).
  returned: success, step incoming
  type: bool
ticket_reason:
  description: Why O(ticket) was armed on the target for how long, or not at all.
  returned: success, step incoming with O(ticket)
  type: str
  sample: the ticket expired and no client is connected, it is not armed again
ticket_file:
  description: The ticket file written on the target; null when none was written.
  returned: success, step incoming
  type: str
  sample: /run/vmconsole/web1.ticket
clients:
  description:
    - The SPICE clients connected to the source (O(step=announce), O(step=migrate) at its start), or the ones looked
      for (O(step=wait_clients), O(step=confirm)), each with its connection id and number of channels.
  returned: success
  type: list
  elements: dict
  sample: [{"connection_id": 1294128202, "channels": 4}]
channels:
  description: Number of SPICE channels connected to this VM at the end of the step.
  returned: success
  type: int
  sample: 4
linked:
  description: The connection ids of O(clients) that the target lists with all their channels.
  returned: success, step wait_clients or confirm
  type: list
  elements: int
missing:
  description: The connection ids of O(clients) the target does not list, or not with all their channels.
  returned: success, step wait_clients or confirm
  type: list
  elements: int
waited:
  description: Seconds O(step=wait_clients) waited.
  returned: success, step wait_clients
  type: float
seamless:
  description:
    - O(step=wait_clients) - every client of O(clients) has linked to the target, so all of them will move seamlessly.
    - O(step=confirm) - every client of O(clients) is connected to the target with its old connection id and all its
      channels, so it moved without reconnecting. Null when O(clients) is empty.
  returned: success, step wait_clients or confirm
  type: bool
migration:
  description: C(query-migrate) at the end of O(step=migrate), for the numbers below and C(status).
  returned: step migrate
  type: str
  sample: completed
total_time:
  description: Milliseconds from the start of the migration to its end, as QEMU measured it.
  returned: step migrate, when QEMU reports it
  type: int
  sample: 124
downtime:
  description: Milliseconds the guest was stopped (QEMU's measurement).
  returned: step migrate, when QEMU reports it
  type: int
  sample: 15
setup_time:
  description: Milliseconds QEMU needed to set the migration up (TLS handshake included).
  returned: step migrate, when QEMU reports it
  type: int
transferred:
  description: Bytes of guest memory sent.
  returned: step migrate, when QEMU reports it
  type: int
  sample: 1066362
elapsed:
  description: Seconds the step took from C(migrate) to the end, as the module saw it.
  returned: step migrate
  type: float
spice_migrate_completed:
  description:
    - Whether QEMU sent C(SPICE_MIGRATE_COMPLETED) (it did its part of moving the SPICE clients). QEMU sends it only
      after O(step=announce).
  returned: step migrate
  type: bool
cancelled:
  description: Whether the module sent C(migrate_cancel) because the migration failed or ran out of time.
  returned: step migrate
  type: bool
error:
  description: QEMU's reason for a failed migration (C(error-desc)).
  returned: step migrate, when it failed
  type: str
  sample: "Failed to connect to '10.89.7.12:60000': Connection refused"
"""

import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.vmconsole.secure.plugins.module_utils._migrate import (
    TLS_CREDS_CLIENT,
    TLS_CREDS_SERVER,
    build_migration_uri,
    check_ticket_file_writable,
    default_ticket_file,
    has_object,
    migration_stats,
    missing_clients,
    parse_migration_uri,
    poll_migration,
    spice_clients,
    ticket_lifetime,
    tls_creds_arguments,
    wait_for_clients,
    write_ticket_file,
)
from ansible_collections.vmconsole.secure.plugins.module_utils._qmp import QMPCommandError, QMPError, QMPTimeout
from ansible_collections.vmconsole.secure.plugins.module_utils._qmp_module import (
    QMP_ARGUMENT_SPEC,
    QMP_MUTUALLY_EXCLUSIVE,
    QMP_REQUIRED_ONE_OF,
    fail_qmp,
    open_qmp,
    qmp_socket_path,
)
from ansible_collections.vmconsole.secure.plugins.module_utils._subject import parse_subject, subject_from_pem
from ansible_collections.vmconsole.secure.plugins.module_utils._tickets import validate_ticket, validate_ttl

SOURCE_STEPS = ("announce", "migrate")
# Options without a default, and the steps that use them: given to any other step, they are a mistake.
# (AnsibleModule's required_if says what a step needs; it has no rule for what a step must not get.)
STEP_OPTIONS = dict(
    migration_uri=("incoming", "migrate"),
    migration_host=("incoming", "migrate"),
    migration_port=("incoming", "migrate"),
    tls_creds=("incoming", "migrate"),
    tls_hostname=("migrate",),
    ticket=("incoming",),
    ticket_expires=("incoming",),
    source_connected=("incoming",),
    ticket_file=("incoming",),
    target_host=("announce",),
    target_tls_port=("announce",),
    target_port=("announce",),
    target_cert_subject=("announce",),
    target_cert_pem=("announce",),
)


class StepError(Exception):
    """The step cannot run (bad option, wrong VM state); the text says which and why. Nothing was changed."""


class MigrationFailed(Exception):
    """The migration failed; ``result`` holds what is known (numbers, whether it was cancelled)."""

    def __init__(self, message, result):
        super().__init__(message)
        self.result = result


def check_options(params):
    """Validate what needs no QEMU; returns the migration URI (or None) and the ticket file path (or None)."""
    step = params["step"]
    for option, steps in STEP_OPTIONS.items():
        if params[option] is not None and step not in steps:
            raise StepError("%s is used only with step=%s, not with step=%s" % (option, " or step=".join(steps), step))
    if params["clients"] and step not in ("wait_clients", "confirm"):
        raise StepError("clients is used only with step=wait_clients or step=confirm, not with step=%s" % step)
    for index, client in enumerate(params["clients"]):
        if client["channels"] < 1:
            raise StepError("clients[%d].channels must be 1 or more, got %d" % (index, client["channels"]))
    try:
        qmp_socket_path(params)
    except ValueError as exc:
        raise StepError(str(exc)) from None
    for option in ("wait_clients_timeout", "migrate_timeout"):
        if not params[option] >= 0:
            raise StepError("%s must be 0 or more seconds, got %r" % (option, params[option]))

    uri = None
    if step in ("incoming", "migrate"):
        uri = migration_uri(params)
    if step == "incoming":
        if params["ticket"] is not None:
            try:
                validate_ticket("spice", params["ticket"])
            except ValueError as exc:
                raise StepError("ticket: %s" % exc) from None
        try:
            validate_ttl(params["ticket_ttl"])
        except ValueError as exc:
            raise StepError("ticket_ttl: %s" % exc) from None
    if step == "announce":
        check_announce_options(params)
    return uri, ticket_file(params)


def migration_uri(params):
    """migration_uri, or tcp:migration_host:migration_port (AnsibleModule checked that one of them is given)."""
    try:
        if params["migration_uri"] is not None:
            parse_migration_uri(params["migration_uri"])
            return params["migration_uri"]
        return build_migration_uri(params["migration_host"], params["migration_port"])
    except ValueError as exc:
        raise StepError(str(exc)) from None


def check_announce_options(params):
    if not params["target_host"]:
        raise StepError("target_host must not be empty: the target node's console name as the proxies know it")
    for option in ("target_tls_port", "target_port"):
        port = params[option]
        if port is not None and not 1 <= port <= 65535:
            raise StepError("%s must be a port number from 1 to 65535, got %d" % (option, port))
    if params["target_cert_pem"]:
        try:
            params["target_cert_subject"] = subject_from_pem(params["target_cert_pem"])
        except ValueError as exc:
            raise StepError("target_cert_pem is not a PEM certificate: %s" % exc) from None
    if params["target_tls_port"] is not None:
        if not params["target_cert_subject"]:
            raise StepError("target_tls_port needs target_cert_subject or target_cert_pem: the clients check the "
                            "target's SPICE certificate against it (vmconsole_pki_host_subject of the target)")
    if params["target_cert_subject"]:
        try:
            parse_subject(params["target_cert_subject"])
        except ValueError as exc:
            raise StepError("target_cert_subject: %s" % exc) from None


def ticket_file(params):
    """The ticket file path for step=incoming, or None."""
    if params["step"] != "incoming" or params["ticket"] is None or params["ticket_file"] == "":
        return None
    if params["ticket_file"]:
        return params["ticket_file"]
    return default_ticket_file(qmp_socket_path(params))


# --- the steps ------------------------------------------------------------------------------------

class Step:
    """One run of the module: the QMP client, check mode, and what was (or would be) sent."""

    def __init__(self, module, qmp):
        self.module = module
        self.params = module.params
        self.qmp = qmp
        self.check_mode = module.check_mode
        self.actions = []

    def send(self, action, command, arguments=None):
        """Record ``action`` and send ``command`` unless in check mode."""
        self.actions.append(action)
        if not self.check_mode:
            return self.qmp.execute(command, arguments)
        return None

    def status(self):
        return self.qmp.execute("query-status").get("status")

    def spice(self, required):
        """``query-spice``; None for a VM (or QEMU) without SPICE unless ``required``."""
        try:
            info = self.qmp.execute("query-spice")
        except QMPCommandError as exc:
            if exc.error_class != "CommandNotFound":
                raise
            info = {"enabled": False}
        if not info.get("enabled"):
            if required:
                raise StepError("the VM has no SPICE (started without -spice, or QEMU built without it): there is "
                                "no SPICE client to move (step=%s)" % self.params["step"])
            return None
        return info

    def tls_creds(self, default, endpoint):
        """Make sure the TLS credentials object exists; returns its id."""
        object_id = self.params["tls_creds"] or default
        if not has_object(self.qmp, object_id):
            arguments = tls_creds_arguments(object_id, self.params["tls_dir"], endpoint)
            try:
                self.send("object-add tls-creds-x509 id=%s dir=%s endpoint=%s" % (object_id, self.params["tls_dir"], endpoint),
                          "object-add", arguments)
            except QMPCommandError as exc:
                raise StepError("QEMU has no TLS credentials object %s and cannot create it from tls_dir %s: %s (the "
                                "qemu_vm role loads them at start; a QEMU that runs as an unprivileged user cannot read "
                                "the keys later)" % (object_id, self.params["tls_dir"], exc.desc)) from None
        return object_id

    def migration_parameters(self, default_creds, endpoint):
        if self.params["tls"]:
            creds = self.tls_creds(default_creds, endpoint)
            arguments = {"tls-creds": creds}
            if self.params["tls_hostname"]:
                arguments["tls-hostname"] = self.params["tls_hostname"]
        else:
            arguments = {"tls-creds": ""}
        self.send("migrate-set-parameters " + " ".join("%s=%s" % item for item in sorted(arguments.items())),
                  "migrate-set-parameters", arguments)

    # --- target ---

    def incoming(self, uri, path):
        status = self.status()
        if status != "inmigrate":
            raise StepError("the VM is not waiting for an incoming migration (status %s): start the target's guest "
                            "with -incoming defer (qemu_vm state incoming)" % status)
        spice = self.spice(required=self.params["ticket"] is not None)
        if path is not None:
            try:
                check_ticket_file_writable(path)
            except OSError as exc:
                raise StepError("ticket_file %s cannot be written: %s" % (path, exc.strerror or exc)) from None
        host, port = parse_migration_uri(uri)
        listening = self.qmp.execute("query-migrate").get("socket-address")
        result = dict(migration_uri=uri, ticket_expires=None, ticket_file=None, ticket_armed=False)
        if listening:
            if not any(str(a.get("port")) == str(port) and a.get("host") == host for a in listening):
                where = ", ".join("%s:%s" % (a.get("host"), a.get("port")) for a in listening)
                raise StepError("the VM already listens for its migration on %s, not on %s: restart the target's guest "
                                "to change the address" % (where, uri))
        else:
            self.migration_parameters(TLS_CREDS_SERVER, "server")
            self.send("migrate-incoming uri=%s" % uri, "migrate-incoming", {"uri": uri})
        ttl = 0
        if self.params["ticket"] is not None:
            ttl, why = ticket_lifetime(self.params["ticket_expires"], self.params["source_connected"],
                                       validate_ttl(self.params["ticket_ttl"]))
            result["ticket_reason"] = why
        if ttl:
            result["ticket_armed"] = True
            self.send("set_password protocol=spice connected=keep (the client's ticket)", "set_password",
                      dict(protocol="spice", password=self.params["ticket"], connected="keep"))
            result["ticket_expires"] = int(time.time()) + ttl
            self.send("expire_password protocol=spice time=+%d" % ttl, "expire_password",
                      dict(protocol="spice", time="+%d" % ttl))
            if path is not None:
                self.actions.append("write %s" % path)
                if not self.check_mode:
                    try:
                        write_ticket_file(path, self.params["ticket"], result["ticket_expires"])
                    except OSError as exc:
                        raise StepError("the target accepts the ticket, but ticket_file %s cannot be written: %s (a "
                                        "migration back would not carry the console)" % (path, exc.strerror or exc)) from None
                    result["ticket_file"] = path
        result.update(changed=bool(self.actions), status=status, channels=len((spice or {}).get("channels") or ()))
        return result

    def wait_clients(self):
        clients = self.params["clients"]
        spice = self.spice(required=bool(clients)) or {}
        missing, waited = [], 0.0
        if clients:
            missing, spice, waited = wait_for_clients(self.qmp, clients, self.params["wait_clients_timeout"])
        linked = sorted(c["connection_id"] for c in clients if c["connection_id"] not in missing)
        if missing:
            self.module.warn("%d of %d SPICE clients did not link to the target within %g s (connection ids %s): they "
                             "will reconnect after the migration instead of moving seamlessly"
                             % (len(missing), len(clients), self.params["wait_clients_timeout"],
                                ", ".join(str(c) for c in missing)))
        return dict(changed=False, status=self.status(), clients=list(clients), linked=linked, missing=missing,
                    waited=round(waited, 3), seamless=not missing if clients else None,
                    channels=len(spice.get("channels") or ()))

    def confirm(self):
        deadline = time.monotonic() + self.params["wait_clients_timeout"]
        status = self.status()
        while status == "inmigrate" and time.monotonic() < deadline:
            time.sleep(0.05)
            status = self.status()
        if status in ("inmigrate", "shutdown", "internal-error", "guest-panicked"):
            raise StepError("the migration has not arrived on the target (status %s after %g s)"
                            % (status, self.params["wait_clients_timeout"]))
        clients = self.params["clients"]
        info = self.spice(required=False) or {}
        missing = missing_clients(clients, info.get("channels"))
        linked = sorted(c["connection_id"] for c in clients if c["connection_id"] not in missing)
        return dict(changed=False, status=status, clients=list(clients), linked=linked, missing=missing,
                    seamless=not missing if clients else None, channels=len(info.get("channels") or ()))

    # --- source ---

    def announce(self):
        params = self.params
        status = self.status()
        if status in ("inmigrate", "postmigrate", "shutdown"):
            raise StepError("the VM cannot migrate from here (status %s): step=announce runs on the source" % status)
        info = self.spice(required=True)
        if info.get("tls-port") and params["target_tls_port"] is None:
            raise StepError("the VM's SPICE uses TLS (tls-port %s): give target_tls_port and target_cert_subject"
                            % info.get("tls-port"))
        if params["target_port"] is None:
            self.module.warn("no target_port: spice-gtk links to the target's plain port first, so the clients will not "
                             "move seamlessly but reconnect after the migration")
        arguments = dict(protocol="spice", hostname=params["target_host"])
        if params["target_port"] is not None:
            arguments["port"] = params["target_port"]
        if params["target_tls_port"] is not None:
            arguments["tls-port"] = params["target_tls_port"]
        if params["target_cert_subject"]:
            arguments["cert-subject"] = params["target_cert_subject"]
        self.send("client_migrate_info " + " ".join("%s=%s" % (k, arguments[k]) for k in sorted(arguments)),
                  "client_migrate_info", arguments)
        channels = info.get("channels") or []
        return dict(changed=True, status=status, clients=spice_clients(channels), channels=len(channels))

    def migrate(self, uri):
        params = self.params
        status = self.status()
        current = self.qmp.execute("query-migrate")
        if status == "postmigrate" and current.get("status") == "completed":
            return dict(changed=False, status=status, migration_uri=uri, clients=[], channels=0, cancelled=False,
                        spice_migrate_completed=None, elapsed=0.0, **numbers(current))
        if status in ("inmigrate", "postmigrate", "shutdown", "internal-error"):
            raise StepError("the VM cannot migrate from here (status %s): step=migrate runs on the source" % status)
        if current.get("status") not in (None, "none", "completed", "failed", "cancelled"):
            raise StepError("a migration of this VM is already running (status %s)" % current.get("status"))
        spice = self.spice(required=False)
        clients = spice_clients(spice.get("channels")) if spice else []
        self.migration_parameters(TLS_CREDS_CLIENT, "client")
        self.actions.append("migrate uri=%s" % uri)
        base = dict(status=status, migration_uri=uri, clients=clients, channels=len((spice or {}).get("channels") or ()),
                    cancelled=False, spice_migrate_completed=None, elapsed=0.0)
        if self.check_mode:
            return dict(base, changed=True, **numbers({}))
        self.qmp.pop_events("SPICE_MIGRATE_COMPLETED")      # an old one must not count
        start = time.monotonic()
        try:
            self.qmp.execute("migrate", {"uri": uri})
        except QMPCommandError as exc:
            raise MigrationFailed("QEMU refused to start the migration to %s: %s" % (uri, exc.desc),
                                  dict(base, changed=False, **numbers({"status": "failed", "error-desc": exc.desc}))) from None
        info, ended = poll_migration(self.qmp, params["migrate_timeout"])
        elapsed = time.monotonic() - start
        if info.get("status") == "completed":
            completed = None
            if spice:
                completed = self.spice_migrate_completed()
            result = dict(base, changed=True, elapsed=round(elapsed, 3), spice_migrate_completed=completed,
                          status=self.status(), **numbers(info))
            if spice and not completed:
                self.module.warn("QEMU sent no SPICE_MIGRATE_COMPLETED within %g s: was step=announce run? The SPICE "
                                 "clients may have lost the VM" % params["wait_clients_timeout"])
            return result
        return self.failed(base, info, ended, elapsed)

    def spice_migrate_completed(self):
        try:
            self.qmp.wait_event("SPICE_MIGRATE_COMPLETED", self.params["wait_clients_timeout"])
        except QMPTimeout:
            return False
        return True

    def failed(self, base, info, ended, elapsed):
        """The migration failed (QEMU resumed the source itself) or is still running after migrate_timeout."""
        params = self.params
        cancelled = False
        if not ended and params["cancel_on_failure"]:
            self.actions.append("migrate_cancel")
            self.qmp.execute("migrate_cancel")
            cancelled = True
            final, dummy = poll_migration(self.qmp, max(params["timeout"], 5))
            info = dict(info, status=final.get("status"))   # the numbers of the run that timed out
        result = dict(base, changed=True, elapsed=round(elapsed, 3), cancelled=cancelled, status=self.status(),
                      **numbers(info))
        if ended:
            what = "failed: %s" % (info.get("error-desc") or "QEMU gave no reason")
        else:
            what = "did not complete within migrate_timeout %g s (%s of %s bytes sent)" % (
                params["migrate_timeout"], result["transferred"], (info.get("ram") or {}).get("total"))
        if ended or cancelled:
            then = "; %sthe VM keeps running on the source (status %s)" % (
                "migrate_cancel sent, " if cancelled else "", result["status"])
        else:
            then = "; it goes on (cancel_on_failure=false)"
        raise MigrationFailed("the migration to %s %s%s" % (base["migration_uri"], what, then), result)


def numbers(info):
    stats = migration_stats(info)
    return dict(migration=stats["status"], total_time=stats["total_time"], downtime=stats["downtime"],
                setup_time=stats["setup_time"], transferred=stats["transferred"], error=stats["error"])


def main():
    argument_spec = dict(QMP_ARGUMENT_SPEC)
    argument_spec.update(
        step=dict(type="str", required=True, choices=["incoming", "announce", "wait_clients", "migrate", "confirm"]),
        migration_uri=dict(type="str"),
        migration_host=dict(type="str"),
        migration_port=dict(type="int"),
        tls=dict(type="bool", default=True),
        tls_creds=dict(type="str"),
        tls_dir=dict(type="path", default="/etc/pki/qemu"),
        tls_hostname=dict(type="str"),
        ticket=dict(type="str", no_log=True),
        ticket_ttl=dict(type="int", default=120),
        ticket_expires=dict(type="int"),
        source_connected=dict(type="bool"),
        ticket_file=dict(type="path", no_log=False),
        target_host=dict(type="str"),
        target_tls_port=dict(type="int"),
        target_port=dict(type="int"),
        target_cert_subject=dict(type="str"),
        target_cert_pem=dict(type="str"),
        clients=dict(type="list", elements="dict", default=[],
                     options=dict(connection_id=dict(type="int", required=True), channels=dict(type="int", default=1))),
        wait_clients_timeout=dict(type="float", default=8),
        migrate_timeout=dict(type="float", default=600),
        cancel_on_failure=dict(type="bool", default=True),
    )
    module = AnsibleModule(
        argument_spec=argument_spec,
        mutually_exclusive=QMP_MUTUALLY_EXCLUSIVE + [("target_cert_subject", "target_cert_pem"),
                                                     ("migration_uri", "migration_host"),
                                                     ("migration_uri", "migration_port")],
        required_one_of=QMP_REQUIRED_ONE_OF,
        required_together=[("migration_host", "migration_port"), ("ticket", "ticket_expires", "source_connected")],
        # What each step needs; what a step does not use is refused by check_options (STEP_OPTIONS).
        required_if=[
            ("step", "incoming", ("migration_uri", "migration_host"), True),
            ("step", "migrate", ("migration_uri", "migration_host"), True),
            ("step", "announce", ("target_host",)),
            ("step", "announce", ("target_tls_port", "target_port"), True),
        ],
        supports_check_mode=True,
    )
    step_name = module.params["step"]
    try:
        uri, path = check_options(module.params)
    except StepError as exc:
        module.fail_json(msg=str(exc), step=step_name)

    with open_qmp(module) as qmp:
        step = Step(module, qmp)
        try:
            if step_name == "incoming":
                result = step.incoming(uri, path)
            elif step_name == "announce":
                result = step.announce()
            elif step_name == "wait_clients":
                result = step.wait_clients()
            elif step_name == "migrate":
                result = step.migrate(uri)
            else:
                result = step.confirm()
        except StepError as exc:
            module.fail_json(msg=str(exc), step=step_name, actions=step.actions)
        except MigrationFailed as exc:
            module.fail_json(msg=str(exc), step=step_name, actions=step.actions, **exc.result)
        except QMPError as exc:
            fail_qmp(module, exc, step=step_name, actions=step.actions)
    result.update(step=step_name, actions=step.actions)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
