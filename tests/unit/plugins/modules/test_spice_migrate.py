# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""spice_migrate's five steps against a scripted QMP server, and console_ticket's ticket file."""

from __future__ import annotations

import datetime
import json
import os
import re
import stat
import time

import pytest

from ansible_collections.vmconsole.secure.plugins.module_utils import _migrate
from ansible_collections.vmconsole.secure.plugins.modules import console_ticket, spice_migrate
from ansible_collections.vmconsole.secure.tests.unit.fakeqmp import Error, qemu

TICKET = "T1cketT1cketT1cketT1cketT1cketT1cket0000"
SUBJECT = "C=XX,O=Example,CN=hv2"
URI = "tcp:10.89.7.12:60000"
RUNNING = {"status": "running", "singlestep": False, "running": True}
INMIGRATE = {"status": "inmigrate", "singlestep": False, "running": False}
POSTMIGRATE = {"status": "postmigrate", "singlestep": False, "running": False}
OBJECTS = [{"name": "type", "type": "string"}, {"name": "pc.ram", "type": "child<memory-backend-ram>"}]
WITH_CREDS = OBJECTS + [{"name": "vmconsole-migration-server", "type": "child<tls-creds-x509>"},
                        {"name": "vmconsole-migration-client", "type": "child<tls-creds-x509>"}]


def channel(kind, connection_id, port=40000):
    return {"port": str(port + kind), "family": "ipv4", "channel-type": kind, "connection-id": connection_id,
            "host": "127.0.0.1", "channel-id": 0, "tls": True}


def spice(*connection_ids, tls_port=61000):
    return {"migrated": False, "enabled": True, "auth": "spice", "compiled-version": "0.15.1", "tls-port": tls_port,
            "port": 61500, "host": "127.0.0.1", "mouse-mode": "server",
            "channels": [channel(kind, cid) for cid in connection_ids for kind in (1, 2, 3, 4)]}


SPICE_OFF = {"migrated": False, "enabled": False, "mouse-mode": "client"}
COMPLETED = {"status": "completed", "setup-time": 12, "downtime": 15, "total-time": 124,
             "ram": {"total": 201932800, "transferred": 1066362, "remaining": 0, "mbps": 85.1}}
ACTIVE = {"status": "active", "setup-time": 3, "total-time": 500, "expected-downtime": 300,
          "ram": {"total": 201932800, "transferred": 400000, "remaining": 150000000, "mbps": 2.1}}


def sequence(*answers):
    """A table entry answering with each of ``answers`` in turn, then repeating the last one."""
    answers = list(answers)

    def answer(peer, request):
        value = answers.pop(0) if len(answers) > 1 else answers[0]
        if isinstance(value, Error):
            peer.error(request, value.error_class, value.desc)
        else:
            peer.reply(request, value)
    return answer


def with_event(value, event):
    """Answer with ``value``, then send the event ``event``."""
    def answer(peer, request):
        peer.reply(request, value)
        peer.event(event)
    return answer


@pytest.fixture
def step(fake_qmp, run_module, monkeypatch):
    """``step(name, table, check_mode=False, **args)`` -> (result, server); result["warned"] lists the warnings."""
    count = []
    warned = []
    monkeypatch.setattr(spice_migrate.AnsibleModule, "warn", lambda self, text: warned.append(text))

    def run(name, table, check_mode=False, **args):
        count.append(1)
        server = fake_qmp(qemu(table), name="web%d.qmp" % len(count))
        params = dict(step=name, socket=server.path)
        params.update(args)
        del warned[:]
        result = run_module(spice_migrate.main, {k: v for k, v in params.items() if v is not None},
                            check_mode=check_mode)
        result["warned"] = list(warned)
        return result, server
    return run


def sent(server, command):
    return [r.get("arguments") for r in server.requests if r.get("execute") == command]


CHANGING = {"object-add", "migrate-set-parameters", "migrate-incoming", "set_password", "expire_password",
            "client_migrate_info", "migrate", "migrate_cancel"}


def assert_nothing_changed(server):
    assert not CHANGING & set(server.commands), server.commands


# --- step incoming (target) ------------------------------------------------------------------------

# The ticket of a client connected on the source: armed on the target for ticket_ttl, expired long ago or not.
ARMED = dict(ticket=TICKET, ticket_expires=1, source_connected=True)


def incoming_table(status=None, objects=None, listening=None, **extra):
    status, objects = status or INMIGRATE, objects or OBJECTS
    table = {"query-status": status, "query-spice": spice(), "qom-list": objects,
             "query-migrate": {"socket-address": listening} if listening else {},
             "object-add": {}, "migrate-set-parameters": {}, "migrate-incoming": {}, "set_password": {},
             "expire_password": {}}
    table.update(extra)
    return table


def test_incoming_listens_with_tls_and_sets_the_ticket(step, short_tmp):
    ticket_file = os.path.join(short_tmp, "web1.ticket")
    result, server = step("incoming", incoming_table(), migration_uri=URI, **ARMED, ticket_ttl=90)
    assert result["changed"] is True and not result.get("failed"), result
    assert server.commands == ["qmp_capabilities", "query-status", "query-spice", "query-migrate", "qom-list",
                               "object-add", "migrate-set-parameters", "migrate-incoming", "set_password",
                               "expire_password"]
    assert sent(server, "object-add") == [{"qom-type": "tls-creds-x509", "id": "vmconsole-migration-server",
                                           "dir": "/etc/pki/qemu", "endpoint": "server", "verify-peer": True}]
    assert sent(server, "migrate-set-parameters") == [{"tls-creds": "vmconsole-migration-server"}]
    assert sent(server, "migrate-incoming") == [{"uri": URI}]
    assert sent(server, "set_password") == [{"protocol": "spice", "password": TICKET, "connected": "keep"}]
    assert sent(server, "expire_password") == [{"protocol": "spice", "time": "+90"}]
    assert result["ticket_file"] == ticket_file and result["migration_uri"] == URI
    assert stat.S_IMODE(os.stat(ticket_file).st_mode) == 0o600
    record = _migrate.read_ticket_file(ticket_file)
    assert record["ticket"] == TICKET and record["expires"] == result["ticket_expires"]
    assert TICKET not in json.dumps(result)


def test_an_expired_ticket_without_a_connected_client_is_not_armed_again(step, short_tmp):
    """#17 finding 8: a ticket that expired (or was cut) never opens a new console after a migration."""
    result, server = step("incoming", incoming_table(), migration_uri=URI, ticket=TICKET,
                          ticket_expires=int(time.time()) - 1, source_connected=False)
    assert result["changed"] is True and not result.get("failed"), result
    assert "set_password" not in server.commands and "expire_password" not in server.commands
    assert (result["ticket_armed"], result["ticket_expires"], result["ticket_file"]) == (False, None, None)
    assert result["ticket_reason"] == "the ticket expired and no client is connected, it is not armed again"
    assert not os.path.exists(os.path.join(short_tmp, "web1.ticket"))


def test_a_live_ticket_without_a_connected_client_keeps_its_own_expiry(step):
    result, server = step("incoming", incoming_table(), migration_uri=URI, ticket=TICKET, ticket_ttl=90,
                          ticket_expires=int(time.time()) + 20, source_connected=False)
    assert result["ticket_armed"] is True and sent(server, "set_password")[0]["password"] == TICKET
    (expire,) = sent(server, "expire_password")
    assert expire["time"] in ("+20", "+19"), expire


def test_the_ticket_needs_its_expiry_and_whether_a_client_is_connected(step):
    result, server = step("incoming", incoming_table(), migration_uri=URI, ticket=TICKET)
    assert result["failed"] is True and "ticket, ticket_expires, source_connected" in result["msg"], result["msg"]
    assert server.connections == 0


def test_incoming_uses_the_objects_qemu_vm_loaded_and_host_port_options(step):
    result, server = step("incoming", incoming_table(objects=WITH_CREDS), migration_host="fd00::12",
                          migration_port=60001, ticket_file="")
    assert result["changed"] is True, result
    assert "object-add" not in server.commands and "set_password" not in server.commands
    assert sent(server, "migrate-incoming") == [{"uri": "tcp:[fd00::12]:60001"}]
    assert result["ticket_file"] is None and result["ticket_expires"] is None


def test_incoming_again_on_the_same_address_only_sets_the_ticket(step, short_tmp):
    listening = [{"port": "60000", "ipv4": True, "host": "10.89.7.12", "type": "inet"}]
    result, server = step("incoming", incoming_table(listening=listening), migration_uri=URI)
    assert result["changed"] is False and result["actions"] == []
    result, server = step("incoming", incoming_table(listening=listening), migration_uri=URI, **ARMED)
    assert result["changed"] is True
    assert "migrate-incoming" not in server.commands and "set_password" in server.commands


def test_incoming_on_another_address_is_refused(step):
    listening = [{"port": "60005", "ipv4": True, "host": "10.89.7.12", "type": "inet"}]
    result, server = step("incoming", incoming_table(listening=listening), migration_uri=URI, **ARMED)
    assert result["failed"] is True
    assert result["msg"].startswith("the VM already listens for its migration on 10.89.7.12:60005, not on " + URI)
    assert_nothing_changed(server)


def test_incoming_needs_a_vm_started_with_incoming_defer(step):
    result, server = step("incoming", incoming_table(status=RUNNING), migration_uri=URI, **ARMED)
    assert result["failed"] is True
    assert result["msg"] == ("the VM is not waiting for an incoming migration (status running): start the target's "
                             "guest with -incoming defer (qemu_vm state incoming)")
    assert_nothing_changed(server)


def test_incoming_without_certificates(step):
    table = incoming_table(**{"object-add": Error("GenericError", "Unable to access credentials "
                                                                  "/etc/pki/qemu/ca-cert.pem: No such file or directory")})
    result, server = step("incoming", table, migration_uri=URI, **ARMED)
    assert result["failed"] is True
    assert result["msg"].startswith("QEMU has no TLS credentials object vmconsole-migration-server and cannot create it "
                                    "from tls_dir /etc/pki/qemu: Unable to access credentials")
    assert "migrate-incoming" not in server.commands and "set_password" not in server.commands


def test_incoming_check_mode_only_queries(step, short_tmp):
    result, server = step("incoming", incoming_table(), check_mode=True, migration_uri=URI, **ARMED)
    assert result["changed"] is True
    assert result["actions"] == [
        "object-add tls-creds-x509 id=vmconsole-migration-server dir=/etc/pki/qemu endpoint=server",
        "migrate-set-parameters tls-creds=vmconsole-migration-server", "migrate-incoming uri=" + URI,
        "set_password protocol=spice connected=keep (the client's ticket)", "expire_password protocol=spice time=+120",
        "write %s" % os.path.join(short_tmp, "web1.ticket")]
    assert_nothing_changed(server)
    assert not os.path.exists(os.path.join(short_tmp, "web1.ticket"))


def test_incoming_with_an_unwritable_ticket_file_changes_nothing(step, short_tmp):
    result, server = step("incoming", incoming_table(), migration_uri=URI, **ARMED,
                          ticket_file=os.path.join(short_tmp, "missing", "web1.ticket"))
    assert result["failed"] is True and "ticket_file" in result["msg"] and "does not exist" in result["msg"]
    assert_nothing_changed(server)


# --- step announce (source) ------------------------------------------------------------------------

ANNOUNCE = dict(target_host="hv2", target_tls_port=61003, target_port=61503, target_cert_subject=SUBJECT)


def test_announce_tells_the_clients_where_the_vm_goes(step):
    table = {"query-status": RUNNING, "query-spice": spice(1804289383, -25), "client_migrate_info": {}}
    result, server = step("announce", table, **ANNOUNCE)
    assert result["changed"] is True and result["channels"] == 8
    assert result["clients"] == [{"connection_id": -25, "channels": 4}, {"connection_id": 1804289383, "channels": 4}]
    assert sent(server, "client_migrate_info") == [{"protocol": "spice", "hostname": "hv2", "port": 61503,
                                                    "tls-port": 61003, "cert-subject": SUBJECT}]
    assert result["warned"] == []


def test_announce_reads_the_subject_from_the_target_certificate(step):
    from cryptography import x509
    from cryptography.x509.oid import NameOID
    from ansible_collections.vmconsole.secure.tests.unit.fakespice import issue_cert, make_ca, pem
    name = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "XX"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example, Inc"),
                      x509.NameAttribute(NameOID.COMMON_NAME, "hv2")])
    dummy, cert = issue_cert(make_ca(), name)
    table = {"query-status": RUNNING, "query-spice": spice(7), "client_migrate_info": {}}
    result, server = step("announce", table, **dict(ANNOUNCE, target_cert_subject=None, target_cert_pem=pem(cert)))
    assert sent(server, "client_migrate_info")[0]["cert-subject"] == "C=XX,O=Example\\, Inc,CN=hv2"


def test_announce_without_clients_still_announces(step):
    table = {"query-status": RUNNING, "query-spice": spice(), "client_migrate_info": {}}
    result, server = step("announce", table, **ANNOUNCE)
    assert result["clients"] == [] and "client_migrate_info" in server.commands


def test_announce_without_a_plain_port_warns(step):
    table = {"query-status": RUNNING, "query-spice": spice(7), "client_migrate_info": {}}
    result, server = step("announce", table, **dict(ANNOUNCE, target_port=None))
    assert "port" not in sent(server, "client_migrate_info")[0]
    assert any("no target_port" in w for w in result["warned"])


def test_announce_check_mode(step):
    table = {"query-status": RUNNING, "query-spice": spice(7), "client_migrate_info": {}}
    result, server = step("announce", table, check_mode=True, **ANNOUNCE)
    assert result["changed"] is True and result["clients"] == [{"connection_id": 7, "channels": 4}]
    assert result["actions"] == ["client_migrate_info cert-subject=%s hostname=hv2 port=61503 protocol=spice "
                                 "tls-port=61003" % SUBJECT]
    assert_nothing_changed(server)


@pytest.mark.parametrize("spice_answer", [SPICE_OFF, Error("CommandNotFound", "The command query-spice has not been found")])
def test_announce_on_a_vm_without_spice(step, spice_answer):
    result, server = step("announce", {"query-status": RUNNING, "query-spice": spice_answer}, **ANNOUNCE)
    assert result["failed"] is True and result["msg"].startswith("the VM has no SPICE")
    assert_nothing_changed(server)


def test_announce_tls_vm_needs_the_tls_port(step):
    result, server = step("announce", {"query-status": RUNNING, "query-spice": spice(7)},
                          **dict(ANNOUNCE, target_tls_port=None, target_cert_subject=None))
    assert result["failed"] is True
    assert result["msg"] == "the VM's SPICE uses TLS (tls-port 61000): give target_tls_port and target_cert_subject"
    assert_nothing_changed(server)


# --- step wait_clients (target) --------------------------------------------------------------------

def clients(*ids, channels=4):
    return [{"connection_id": cid, "channels": channels} for cid in ids]


def partly(connection_id, kinds):
    """query-spice with a client that has linked only the channels ``kinds``."""
    return dict(spice(), channels=[channel(kind, connection_id) for kind in kinds])


def test_wait_clients_until_every_channel_of_every_client_linked(step):
    table = {"query-status": INMIGRATE,
             "query-spice": sequence(spice(), spice(), partly(5, (1,)), spice(5), partly(9, (1, 3)), spice(5, 9))}
    started = time.monotonic()
    result, server = step("wait_clients", table, clients=clients(5) + clients(9))
    assert result["changed"] is False and result["seamless"] is True
    assert result["linked"] == [5, 9] and result["missing"] == [] and result["channels"] == 8
    assert server.commands.count("query-spice") == 6
    assert result["waited"] >= _migrate.LINK_SETTLE and time.monotonic() - started >= _migrate.LINK_SETTLE


def test_wait_clients_runs_out_of_time_with_a_warning(step):
    table = {"query-status": INMIGRATE, "query-spice": dict(spice(5), channels=spice(5)["channels"] + [channel(1, 9)])}
    result, server = step("wait_clients", table, clients=clients(5, 9), wait_clients_timeout=0.3)
    assert not result.get("failed") and result["seamless"] is False
    assert result["linked"] == [5] and result["missing"] == [9] and 0.3 <= result["waited"] < 2, "9 lacks 3 channels"
    assert any("1 of 2 SPICE clients did not link to the target within 0.3 s (connection ids 9)" in w
               for w in result["warned"])


def test_wait_clients_without_clients_returns_at_once(step):
    result, server = step("wait_clients", {"query-status": INMIGRATE, "query-spice": spice()})
    assert result["seamless"] is None and result["waited"] == 0 and result["linked"] == []


# --- step migrate (source) -------------------------------------------------------------------------

def migrate_table(*progress, status=None, objects=None, event=True, **extra):
    status, objects = status or RUNNING, objects or WITH_CREDS
    table = {"query-status": status, "query-spice": spice(5), "qom-list": objects, "migrate-set-parameters": {},
             "query-migrate": sequence({}, *progress), "migrate_cancel": {},
             "migrate": with_event({}, "SPICE_MIGRATE_COMPLETED") if event else {}}
    table.update(extra)
    return table


def test_migrate_completes_and_reports(step):
    result, server = step("migrate", migrate_table(ACTIVE, COMPLETED, status=sequence(RUNNING, POSTMIGRATE)),
                          migration_uri=URI, tls_hostname="hv2.cluster")
    assert result["changed"] is True and not result.get("failed"), result
    assert sent(server, "migrate-set-parameters") == [{"tls-creds": "vmconsole-migration-client",
                                                      "tls-hostname": "hv2.cluster"}]
    assert sent(server, "migrate") == [{"uri": URI}]
    assert (result["migration"], result["total_time"], result["downtime"], result["setup_time"],
            result["transferred"]) == ("completed", 124, 15, 12, 1066362)
    assert result["spice_migrate_completed"] is True and result["clients"] == clients(5)
    assert result["status"] == "postmigrate" and result["cancelled"] is False
    assert "migrate_cancel" not in server.commands


def test_migrate_adds_client_credentials_when_missing(step):
    result, server = step("migrate", migrate_table(COMPLETED, objects=OBJECTS, **{"object-add": {}}), migration_uri=URI,
                          tls_dir="/srv/pki")
    assert sent(server, "object-add") == [{"qom-type": "tls-creds-x509", "id": "vmconsole-migration-client",
                                           "dir": "/srv/pki", "endpoint": "client"}]


def test_migrate_without_tls_clears_the_credentials(step):
    result, server = step("migrate", migrate_table(COMPLETED), migration_uri=URI, tls=False)
    assert sent(server, "migrate-set-parameters") == [{"tls-creds": ""}] and "qom-list" not in server.commands


def test_migrate_warns_without_spice_migrate_completed(step):
    result, server = step("migrate", migrate_table(COMPLETED, event=False), migration_uri=URI, wait_clients_timeout=0.2)
    assert result["spice_migrate_completed"] is False
    assert any("no SPICE_MIGRATE_COMPLETED" in w for w in result["warned"])


def test_migrate_check_mode_only_queries(step):
    result, server = step("migrate", migrate_table(COMPLETED), check_mode=True, migration_uri=URI)
    assert result["changed"] is True
    assert result["actions"] == ["migrate-set-parameters tls-creds=vmconsole-migration-client", "migrate uri=" + URI]
    assert_nothing_changed(server)


def test_migrate_after_a_completed_migration_changes_nothing(step):
    table = migrate_table(status=POSTMIGRATE, **{"query-migrate": COMPLETED})
    result, server = step("migrate", table, migration_uri=URI)
    assert result["changed"] is False and result["downtime"] == 15
    assert_nothing_changed(server)


def test_migrate_refuses_while_another_migration_runs(step):
    result, server = step("migrate", migrate_table(**{"query-migrate": ACTIVE}), migration_uri=URI)
    assert result["failed"] is True and result["msg"] == "a migration of this VM is already running (status active)"
    assert_nothing_changed(server)


def test_migrate_that_fails_reports_qemus_reason(step):
    failed = {"status": "failed", "error-desc": "Failed to connect to '10.89.7.12:60000': Connection refused"}
    result, server = step("migrate", migrate_table(failed), migration_uri=URI)
    assert result["failed"] is True
    assert result["msg"] == ("the migration to %s failed: Failed to connect to '10.89.7.12:60000': Connection refused; "
                             "the VM keeps running on the source (status running)" % URI)
    assert result["error"].endswith("Connection refused") and result["cancelled"] is False
    assert "migrate_cancel" not in server.commands


def test_migrate_that_runs_out_of_time_is_cancelled(step):
    table = migrate_table(ACTIVE, **{"migrate_cancel": {}})
    table["query-migrate"] = sequence({}, ACTIVE, ACTIVE, ACTIVE, ACTIVE, ACTIVE, ACTIVE, ACTIVE, ACTIVE, ACTIVE,
                                      {"status": "cancelling"}, {"status": "cancelled"})
    result, server = step("migrate", table, migration_uri=URI, migrate_timeout=0.2)
    assert result["failed"] is True and result["cancelled"] is True
    assert re.match(r"the migration to %s did not complete within migrate_timeout 0.2 s \(400000 of 201932800 bytes "
                    r"sent\); migrate_cancel sent, the VM keeps running on the source \(status running\)$" % URI,
                    result["msg"]), result["msg"]
    assert result["migration"] == "cancelled" and server.commands.count("migrate_cancel") == 1


def test_migrate_that_runs_out_of_time_goes_on_without_cancel_on_failure(step):
    result, server = step("migrate", migrate_table(ACTIVE), migration_uri=URI, migrate_timeout=0.2,
                          cancel_on_failure=False)
    assert result["failed"] is True and result["cancelled"] is False
    assert result["msg"].endswith("; it goes on (cancel_on_failure=false)")
    assert "migrate_cancel" not in server.commands


def test_migrate_refused_by_qemu(step):
    table = migrate_table(**{"migrate": Error("GenericError", "Guest is not running, cannot migrate")})
    result, server = step("migrate", table, migration_uri=URI)
    assert result["failed"] is True
    assert result["msg"] == "QEMU refused to start the migration to %s: Guest is not running, cannot migrate" % URI


# --- step confirm (target) -------------------------------------------------------------------------

def test_confirm_the_clients_moved_seamlessly(step):
    table = {"query-status": sequence(INMIGRATE, INMIGRATE, RUNNING), "query-spice": spice(5, 9)}
    result, server = step("confirm", table, clients=clients(5, 9))
    assert result["status"] == "running" and result["seamless"] is True and result["channels"] == 8


def test_confirm_a_client_that_reconnected_is_not_seamless(step):
    result, server = step("confirm", {"query-status": RUNNING, "query-spice": spice(77)}, clients=clients(5))
    assert result["seamless"] is False and result["missing"] == [5] and not result.get("failed")
    result, server = step("confirm", {"query-status": RUNNING, "query-spice": partly(5, (1, 2))}, clients=clients(5))
    assert result["seamless"] is False and result["missing"] == [5], "two of its four channels are missing"


def test_confirm_fails_when_the_migration_did_not_arrive(step):
    result, server = step("confirm", {"query-status": INMIGRATE, "query-spice": spice()}, wait_clients_timeout=0.2)
    assert result["failed"] is True
    assert result["msg"] == "the migration has not arrived on the target (status inmigrate after 0.2 s)"


# --- bad options: a clear error, and nothing is sent -----------------------------------------------

@pytest.mark.parametrize("step_name, args, message", [
    ("migrate", dict(), r"^step is migrate but any of the following are missing: migration_uri, migration_host$"),
    ("incoming", dict(), r"^step is incoming but any of the following are missing: migration_uri, migration_host$"),
    ("incoming", dict(migration_host="hv2"), r"^parameters are required together: migration_host, migration_port$"),
    ("migrate", dict(migration_uri="exec:cat > /tmp/x"), r"^migration_uri 'exec:cat > /tmp/x' is not tcp:HOST:PORT"),
    ("migrate", dict(migration_uri="tcp:hv2:99999"), r"port 99999 is not between 1 and 65535"),
    ("migrate", dict(migration_uri=URI, migration_port=1), r"^parameters are mutually exclusive: migration_uri\|migration_port"),
    ("migrate", dict(migration_uri=URI, migration_host="hv2", migration_port=1),
     r"^parameters are mutually exclusive: migration_uri\|migration_host"),
    ("migrate", dict(migration_uri=URI, **ARMED), r"^ticket is used only with step=incoming, not with step=migrate$"),
    ("announce", dict(ANNOUNCE, migration_uri=URI), r"^migration_uri is used only with step=incoming or step=migrate"),
    ("migrate", dict(migration_uri=URI, target_host="hv2"), r"^target_host is used only with step=announce"),
    ("wait_clients", dict(clients=[{"connection_id": 1, "channels": 0}]), r"^clients\[0\]\.channels must be 1 or more"),
    ("wait_clients", dict(clients=[{"channels": 4}]), r"missing required arguments: connection_id found in clients"),
    ("announce", dict(ANNOUNCE, clients=clients(1)), r"^clients is used only with step=wait_clients or step=confirm"),
    ("incoming", dict(migration_uri=URI, ticket="bad:ticket", ticket_expires=1, source_connected=True), r"^ticket: a SPICE ticket may contain only letters"),
    ("incoming", dict(migration_uri=URI, ticket_ttl=0), r"^ticket_ttl: ttl must be between 1 and 86400 seconds"),
    ("announce", dict(ANNOUNCE, target_host=None), r"^step is announce but all of the following are missing: target_host$"),
    ("announce", dict(ANNOUNCE, target_host=""), r"^target_host must not be empty"),
    ("announce", dict(target_host="hv2"),
     r"^step is announce but any of the following are missing: target_tls_port, target_port$"),
    ("announce", dict(ANNOUNCE, target_cert_subject=None), r"^target_tls_port needs target_cert_subject or target_cert_pem"),
    ("announce", dict(ANNOUNCE, target_cert_subject=None, target_cert_pem="not a certificate"),
     r"^target_cert_pem is not a PEM certificate: no PEM certificate"),
    ("announce", dict(ANNOUNCE, target_cert_pem="x"), r"parameters are mutually exclusive: target_cert_subject\|target_cert_pem"),
    ("announce", dict(ANNOUNCE, target_tls_port=70000), r"^target_tls_port must be a port number from 1 to 65535"),
    ("announce", dict(ANNOUNCE, target_cert_subject="CN=a,X=b"), r"^target_cert_subject: host subject: unknown attribute"),
    ("wait_clients", dict(wait_clients_timeout=-1), r"^wait_clients_timeout must be 0 or more seconds"),
    ("confirm", dict(socket=None, vm="../x"), r"^vm '\.\./x' is not a valid VM name"),
])
def test_bad_options(step, step_name, args, message):
    result, server = step(step_name, {"query-status": RUNNING}, **args)
    assert result["failed"] is True and re.search(message, result["msg"]), result["msg"]
    assert "bad:ticket" not in result["msg"]
    assert server.connections == 0, "nothing may reach QEMU before the options are checked"


def test_unknown_vm(run_module, short_tmp):
    result = run_module(spice_migrate.main, dict(step="announce", vm="nosuchvm", socket_dir=short_tmp, **ANNOUNCE))
    assert result["failed"] is True
    assert result["msg"] == ("QMP socket %s/nosuchvm.qmp does not exist: is the VM running, and is vm/socket right?"
                             % short_tmp)


# --- the helpers --------------------------------------------------------------------------------------

@pytest.mark.parametrize("uri, parsed", [
    ("tcp:10.89.7.12:60000", ("10.89.7.12", 60000)),
    ("tcp:hv2.example.org:1", ("hv2.example.org", 1)),
    ("tcp:[fd00::12]:60000", ("fd00::12", 60000)),
])
def test_parse_migration_uri(uri, parsed):
    assert _migrate.parse_migration_uri(uri) == parsed


@pytest.mark.parametrize("uri", ["unix:/tmp/x", "tcp:fd00::12:60000", "tcp:hv2", "tcp:hv2:0", "tcp:hv 2:1", "", None])
def test_parse_migration_uri_refuses(uri):
    with pytest.raises(ValueError):
        _migrate.parse_migration_uri(uri)


def test_default_ticket_file():
    assert _migrate.default_ticket_file("/run/vmconsole/web1.qmp") == "/run/vmconsole/web1.ticket"
    assert _migrate.default_ticket_file("/tmp/monitor") == "/tmp/monitor.ticket"


def test_ticket_file_roundtrip_and_refusals(short_tmp):
    path = os.path.join(short_tmp, "web1.ticket")
    _migrate.write_ticket_file(path, TICKET, 1767225630)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert _migrate.read_ticket_file(path)["expires"] == 1767225630
    assert os.listdir(short_tmp) == ["web1.ticket"], "no temporary file may stay behind"
    with open(path, "w") as f:
        f.write('{"ticket": 1}')
    with pytest.raises(ValueError, match="is not a ticket file"):
        _migrate.read_ticket_file(path)


# --- console_ticket keeps the SPICE ticket for a migration ---------------------------------------

@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hv1.example.org")])
    now = datetime.datetime.now(datetime.timezone.utc)
    pem = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
           .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
           .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
    path = tmp_path_factory.mktemp("pki") / "cert.pem"
    path.write_bytes(pem)
    return str(path)


@pytest.fixture
def issue(fake_qmp, run_module, cert, tmp_path):
    count = []

    def run(check_mode=False, **args):
        count.append(1)
        server = fake_qmp(qemu({"query-spice": spice(), "query-vnc": {"enabled": True, "auth": "vnc", "service": "5901"},
                                "set_password": {}, "expire_password": {}}), name="web%d.qmp" % len(count))
        params = dict(socket=server.path, password=TICKET, console_host="hv1", ca_file=cert, server_cert_file=cert,
                      audit_log=str(tmp_path / "tickets.log"))
        params.update(args)
        return run_module(console_ticket.main, params, check_mode=check_mode), server
    return run


def test_console_ticket_keeps_the_spice_ticket_next_to_the_socket(issue, short_tmp):
    result, server = issue()
    path = os.path.join(short_tmp, "web1.ticket")
    assert result["ticket_file"] == path
    record = _migrate.read_ticket_file(path)
    assert (record["protocol"], record["ticket"], record["expires"]) == ("spice", TICKET, result["expires"])
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert TICKET not in json.dumps(result)


def test_console_ticket_ticket_file_options(issue, short_tmp, tmp_path):
    other = str(tmp_path / "kept.ticket")
    result, server = issue(ticket_file=other)
    assert result["ticket_file"] == other and _migrate.read_ticket_file(other)["ticket"] == TICKET
    result, server = issue(ticket_file="")
    assert result["ticket_file"] is None
    result, server = issue(protocol="vnc", password="Vnc12345")
    assert result["ticket_file"] is None
    result, server = issue(check_mode=True)
    assert result["ticket_file"] == os.path.join(short_tmp, "web4.ticket")
    assert sorted(os.listdir(short_tmp)) == ["web1.qmp", "web2.qmp", "web3.qmp", "web4.qmp"], \
        "no ticket file with ticket_file='', for VNC, or in check mode"


def test_console_ticket_with_an_unwritable_ticket_file_sets_nothing(issue, tmp_path):
    result, server = issue(ticket_file=str(tmp_path / "missing" / "web1.ticket"))
    assert result["failed"] is True and result["msg"].startswith("ticket_file %s cannot be written"
                                                                 % (tmp_path / "missing" / "web1.ticket"))
    assert "set_password" not in server.commands


@pytest.mark.parametrize("expires, connected, seconds", [
    (900, True, 60),     # expired long ago, a client follows the VM with it: the migration window
    (1100, True, 60),
    (1000, False, 0),    # expired at this very second, nobody connected: never again
    (999, False, 0),
    (1030, False, 30),   # alive, nobody connected: what is left of its own life
    (5000, False, 60),   # ... at most the window
])
def test_ticket_lifetime_on_the_target(expires, connected, seconds):
    assert _migrate.ticket_lifetime(expires, connected, 60, now=1000)[0] == seconds
