# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""spice_migrate between two real QEMUs on loopback, with a real remote-viewer that must follow.

The source runs SPICE over TLS with a ticket issued by console_ticket (which keeps it in the
ticket file); the target is started with ``-incoming defer`` and the same devices. Every step
runs through the real ``ansible`` command, in the order migrate.yml runs them. The migration
runs over TLS with x509 credentials of the test PKI on both ends.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time

import pytest

from ansible_collections.vmconsole.secure.plugins.module_utils._migrate import read_ticket_file
from ansible_collections.vmconsole.secure.plugins.module_utils._spice import MAIN, spice_link_probe
from ansible_collections.vmconsole.secure.tests.integration import _procs

LOCAL = ["-i", "localhost,", "-c", "local", "-e", "ansible_python_interpreter=/usr/bin/python3"]
JSON_OUTPUT = {"ANSIBLE_LOAD_CALLBACK_PLUGINS": "1", "ANSIBLE_STDOUT_CALLBACK": "json", "ANSIBLE_NOCOLOR": "1"}
SEAMLESS_LOG = ("migration (seamless): connections all ok", "migration: all channel migrated, success")


def module(name, args, check=False):
    """Start ``ansible localhost -m vmconsole.secure.NAME``; returns the Popen (see :func:`result`)."""
    argv = ["ansible", "localhost", *LOCAL, *(["--check"] if check else []), "-m", "vmconsole.secure." + name,
            "-a", json.dumps(args)]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, **JSON_OUTPUT))


def result(proc, timeout=120):
    stdout, stderr = proc.communicate(timeout=timeout)
    try:
        return json.loads(stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]
    except (ValueError, KeyError, IndexError):
        raise AssertionError("ansible printed no result (rc %d):\n%s\n%s" % (proc.returncode, stdout, stderr)) from None


def run(name, args, check=False, ok=True):
    outcome = result(module(name, args, check=check))
    if ok:
        assert not outcome.get("failed"), outcome
    return outcome


def migrate_step(step, vm, **args):
    return dict(step=step, socket=vm.qmp_path, **args)


def channels(vm):
    with vm.qmp() as qmp:
        return qmp.execute("query-spice")["channels"]


def status(vm):
    with vm.qmp() as qmp:
        return qmp.execute("query-status")["status"]


class Lab:
    """A source VM with a remote-viewer connected through a console_ticket .vv, and its PKI."""

    def __init__(self, qemu_factory, pki, display, folder):
        self.qemu_factory, self.pki, self.folder = qemu_factory, pki, folder
        self.source = qemu_factory("src", plain_port=True)
        self.log = os.path.join(folder, "remote-viewer.log")
        issued = run("console_ticket", dict(socket=self.source.qmp_path, console_host="127.0.0.1", ttl=30,
                                            ca_file=pki.ca_file, server_cert_file=pki.server_cert_file,
                                            dest=os.path.join(folder, "src.vv"), audit_log=os.path.join(folder, "a.log")))
        self.ticket_file = issued["ticket_file"]
        env = dict(os.environ, DISPLAY=display, GDK_BACKEND="x11", NO_AT_BRIDGE="1", G_MESSAGES_DEBUG="all", SPICE_DEBUG="1")
        self.viewer = _procs.start_process(["remote-viewer", "--debug", issued["dest"]], self.log, env=env)
        _procs.wait_until(lambda: len(channels(self.source)) >= 4 or self.viewer.poll() is not None, 30,
                          what="remote-viewer's channels on the source")
        assert self.viewer.poll() is None, _procs.read_log(self.log)
        on_source = channels(self.source)
        self.connection_id = on_source[0]["connection-id"]
        self.clients = [dict(connection_id=self.connection_id, channels=len(on_source))]
        assert [c["channel-type"] for c in on_source if c["connection-id"] == self.connection_id].count(MAIN) == 1

    def target(self, name):
        """A target guest with the same devices, waiting with -incoming defer; listening and holding the ticket."""
        vm = self.qemu_factory(name, plain_port=True, extra_args=["-incoming", "defer"])
        uri = "tcp:127.0.0.1:%d" % _procs.free_port()
        record = read_ticket_file(self.ticket_file)
        done = run("spice_migrate", migrate_step("incoming", vm, migration_uri=uri, ticket=record["ticket"],
                                                 ticket_expires=record["expires"], source_connected=True,
                                                 ticket_ttl=60, tls_dir=self.pki.dir))
        assert done["changed"] is True and done["status"] == "inmigrate"
        return vm, uri, done

    def announce(self, vm):
        done = run("spice_migrate", migrate_step("announce", self.source, target_host="127.0.0.1",
                                                 target_port=vm.plain_port, target_tls_port=vm.tls_port,
                                                 target_cert_subject=self.pki.subject))
        assert done["clients"] == self.clients
        return done

    def still_on_the_source(self):
        assert status(self.source) == "running"
        assert self.viewer.poll() is None, "remote-viewer must still run"
        assert {c["connection-id"] for c in channels(self.source)} == {self.connection_id}, \
            "remote-viewer must still be connected to the source, with the same connection"
        assert "switching host" not in _procs.read_log(self.log, limit=10 ** 7)


def test_an_expired_ticket_opens_the_target_only_for_a_connected_client(qemu_factory, pki):
    """#17 finding 8: the stored ticket of the source, long expired, is armed on the target only while a
    client is connected on the source (it follows the VM with it); otherwise the target refuses it."""
    target = qemu_factory("expired", plain_port=True, extra_args=["-incoming", "defer"])
    uri = "tcp:127.0.0.1:%d" % _procs.free_port()
    ticket = "Exp1redT1cketExp1redT1cketExp1redT1cket1"

    def probe():
        return spice_link_probe("127.0.0.1", target.tls_port, ticket, ca_pem=pki.ca_pem, host_subject=pki.subject,
                                timeout=10)["status"]

    expired = dict(migration_uri=uri, ticket=ticket, ticket_expires=int(time.time()) - 3600, ticket_ttl=60,
                   tls_dir=pki.dir, ticket_file="")
    done = run("spice_migrate", migrate_step("incoming", target, source_connected=False, **expired))
    assert (done["ticket_armed"], done["status"]) == (False, "inmigrate")
    assert probe() == "refused", "nobody connected: the expired ticket opens nothing on the target"
    done = run("spice_migrate", migrate_step("incoming", target, source_connected=True, **expired))
    assert done["ticket_armed"] is True
    assert probe() == "accepted", "a connected client's ticket is armed for the migration window"


@pytest.fixture
def lab(qemu_factory, pki, xvfb, tmp_path):
    if not shutil.which("remote-viewer"):
        pytest.skip("remote-viewer is not installed")
    lab = Lab(qemu_factory, pki, xvfb, str(tmp_path))
    try:
        yield lab
    finally:
        _procs.stop_process(lab.viewer)


def test_remote_viewer_follows_the_vm_seamlessly(lab):
    target, uri, prepared = lab.target("dst")
    assert read_ticket_file(prepared["ticket_file"])["ticket"] == read_ticket_file(lab.ticket_file)["ticket"]

    # Check mode: only queries; the source keeps running with its client.
    checked = run("spice_migrate", migrate_step("migrate", lab.source, migration_uri=uri, tls_dir=lab.pki.dir), check=True)
    assert checked["changed"] is True and checked["actions"][-1] == "migrate uri=" + uri
    assert status(lab.source) == "running" and status(target) == "inmigrate"

    lab.announce(target)
    waited = run("spice_migrate", migrate_step("wait_clients", target, clients=lab.clients))
    assert waited["seamless"] is True and waited["linked"] == [lab.connection_id] and waited["status"] == "inmigrate"

    migrated = run("spice_migrate", migrate_step("migrate", lab.source, migration_uri=uri, tls_dir=lab.pki.dir))
    assert migrated["migration"] == "completed" and migrated["status"] == "postmigrate", migrated
    assert migrated["spice_migrate_completed"] is True and migrated["clients"] == lab.clients
    assert migrated["transferred"] > 0 and migrated["total_time"] >= migrated["downtime"] >= 0

    confirmed = run("spice_migrate", migrate_step("confirm", target, clients=lab.clients))
    assert confirmed["status"] == "running" and confirmed["seamless"] is True, confirmed

    # The same remote-viewer process, connected to the target with its old connection, and it says it moved seamlessly.
    assert lab.viewer.poll() is None
    on_target = channels(target)
    assert {c["channel-type"] for c in on_target} >= {1, 2, 3, 4} and all(c["tls"] for c in on_target)
    assert {c["connection-id"] for c in on_target} == {lab.connection_id} and len(on_target) == lab.clients[0]["channels"]
    log = _procs.read_log(lab.log, limit=10 ** 7)
    assert all(line in log for line in SEAMLESS_LOG), log[-3000:]
    assert "switching host" not in log
    assert channels(lab.source) == [] and status(lab.source) == "postmigrate"

    # Again: the source has migrated away, so nothing changes.
    again = run("spice_migrate", migrate_step("migrate", lab.source, migration_uri=uri, tls_dir=lab.pki.dir))
    assert again["changed"] is False


def test_failed_migrations_leave_the_vm_and_its_client_on_the_source(lab):
    # 1. The target dies in the middle of the migration: QEMU reports the failure and resumes the source.
    target, uri, dummy = lab.target("dst1")
    lab.announce(target)
    run("spice_migrate", migrate_step("wait_clients", target, clients=lab.clients))
    with lab.source.qmp() as qmp:          # about 1 MiB to send at 256 KiB/s: the migration lasts seconds
        qmp.execute("migrate-set-parameters", {"max-bandwidth": 256 * 1024})
    running = module("spice_migrate", migrate_step("migrate", lab.source, migration_uri=uri, tls_dir=lab.pki.dir))
    _procs.wait_until(lambda: _established(uri), 30, what="the migration connection")
    time.sleep(0.5)
    target.stop()
    failed = result(running)
    assert failed["failed"] is True and failed["cancelled"] is False, failed
    assert failed["msg"].startswith("the migration to %s failed: " % uri)
    assert failed["msg"].endswith("the VM keeps running on the source (status running)")
    lab.still_on_the_source()

    # 2. The migration outlasts migrate_timeout: the module cancels it, the source keeps running.
    target, uri, dummy = lab.target("dst2")
    lab.announce(target)
    run("spice_migrate", migrate_step("wait_clients", target, clients=lab.clients))
    failed = run("spice_migrate", migrate_step("migrate", lab.source, migration_uri=uri, tls_dir=lab.pki.dir,
                                               migrate_timeout=1), ok=False)
    assert failed["failed"] is True and failed["cancelled"] is True and failed["migration"] == "cancelled", failed
    assert "migrate_cancel sent, the VM keeps running on the source (status running)" in failed["msg"]
    _procs.wait_until(lambda: target.proc.poll() is not None, 15, what="the target QEMU to exit")
    lab.still_on_the_source()

    # 3. Nobody listens on the target's port: refused at once.
    failed = run("spice_migrate", migrate_step("migrate", lab.source, tls_dir=lab.pki.dir,
                                               migration_uri="tcp:127.0.0.1:%d" % _procs.free_port()), ok=False)
    assert "Connection refused" in failed["msg"] and failed["error"]
    lab.still_on_the_source()


def _established(uri):
    """Whether a TCP connection to the migration port is established (from /proc/net/tcp)."""
    port = int(uri.rsplit(":", 1)[1])
    with open("/proc/net/tcp") as f:
        rows = [line.split() for line in f.readlines()[1:]]
    return any(int(row[2].split(":")[1], 16) == port and row[3] == "01" for row in rows)
