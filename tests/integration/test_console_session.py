# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""console_session end to end: real QEMU, real squid with the connect_proxy helpers, a real remote-viewer.

A node: two VMs with SPICE TLS on console ports, squid in front of them (token auth reading the
revocations file the module writes), loopback only. The module runs through the real `ansible`
command, as root, like `become: true` on a hypervisor.
"""

from __future__ import annotations

import grp
import json
import os
import shutil
import ssl
import stat
import time

import pytest

from ansible_collections.vmconsole.secure.plugins.module_utils._spice import MAIN, SpiceLink, spice_link_probe
from ansible_collections.vmconsole.secure.plugins.module_utils._tickets import (
    mint_proxy_token, new_proxy_signer,
)
from ansible_collections.vmconsole.secure.plugins.module_utils._vv import proxy_url, render_vv
from ansible_collections.vmconsole.secure.tests.integration import _procs
from ansible_collections.vmconsole.secure.tests.integration.test_console_ticket import (
    JSON_OUTPUT, LOCAL, run, start_viewer,
)

TICKET = "Sess10nT1cketSess10nT1cketSess10nT1cket0"
SQUID_CREDENTIALS_TTL = _procs.CREDENTIALS_TTL   # how long the test squid keeps the helper's answer


def session(args, *flags):
    """`ansible localhost -m vmconsole.secure.console_session -a JSON`; returns the host's result."""
    argv = ["ansible", "localhost", *LOCAL, *flags, "-m", "vmconsole.secure.console_session", "-a", json.dumps(args)]
    proc = run(argv, env=JSON_OUTPUT)
    try:
        output = json.loads(proc.stdout)
    except ValueError:
        raise AssertionError("ansible printed no JSON (rc %d):\n%s\n%s" % (proc.returncode, proc.stdout, proc.stderr)) from None
    result = output["plays"][0]["tasks"][0]["hosts"]["localhost"]
    assert not result.get("failed"), "%s\n%s" % (result.get("msg"), proc.stderr)
    return result


class Node:
    """Two VMs behind one squid, with the cluster keys; everything on 127.0.0.1."""

    def __init__(self, vms, squid, keys, pki, folder):
        self.vms, self.squid, self.keys, self.pki, self.folder = vms, squid, keys, pki, folder
        self.name = pki.cn
        self.socket_dir = os.path.dirname(vms["vm1"].qmp_path)

    def set_ticket(self, vm, ticket=TICKET, ttl=120):
        with self.vms[vm].qmp() as qmp:
            qmp.execute("set_password", dict(protocol="spice", password=ticket))
            qmp.execute("expire_password", dict(protocol="spice", time="+%d" % ttl))

    def channels(self, vm):
        with self.vms[vm].qmp() as qmp:
            return qmp.execute("query-spice")["channels"]

    def token(self, user, vm, now=None, console="spice"):
        return mint_proxy_token(self.keys, user, vm, console, now=now)

    def proxy(self, token):
        return dict(host="127.0.0.1", port=self.squid.port, username=token.username, password=token.token)

    def probe(self, token, vm):
        """The SPICE link probe through squid with ``token``, to ``vm``'s console (INPUTS: nobody is disturbed)."""
        return spice_link_probe(self.name, self.vms[vm].tls_port, TICKET, ca_pem=self.pki.ca_pem,
                                host_subject=self.pki.subject, proxy=self.proxy(token), timeout=10)

    def held_main(self, token, vm):
        """A linked MAIN channel through squid: a live session, as remote-viewer's."""
        link = SpiceLink(self.name, self.vms[vm].tls_port, ca_pem=self.pki.ca_pem, host_subject=self.pki.subject,
                         proxy=self.proxy(token), timeout=10)
        assert link.link(MAIN, TICKET) == 0
        assert link.is_open(0.3)
        return link

    def args(self, **args):
        return dict(state="absent", socket_dir=self.socket_dir, revocations_file=self.squid.revocations_file,
                    proxy_fact_file=self.squid.proxy_fact, audit_log=os.path.join(self.folder, "audit.log"), **args)

    def tunnel(self, token, vm, port=None):
        """A CONNECT tunnel through squid to ``vm``'s SPICE TLS port (or ``port``), open and idle (a socket)."""
        return _procs.open_tunnel(self.squid.port, "%s:%d" % (self.name, port or self.vms[vm].tls_port),
                                  token.username, token.token)

    def tls_through(self, sock, vm):
        """Whether a TLS handshake with ``vm``'s SPICE server (its certificate checked) succeeds over ``sock``."""
        context = ssl.create_default_context(cadata=self.pki.ca_pem)
        context.check_hostname = False
        with context.wrap_socket(sock, server_hostname=self.name) as tls:
            return tls.version() is not None

    def wait_refused(self, token, vm):
        """squid answers 403 to ``token`` (at the latest after its cache of the helper's answer ran out)."""
        def refused():
            result = self.probe(token, vm)
            return result if result["http_status"] == 403 else None
        return _procs.wait_until(refused, SQUID_CREDENTIALS_TTL + 5, interval=0.5,
                                 what="squid to refuse the revoked token", logs=self.squid.logs)


@pytest.fixture
def node(pki, squid_factory, tmp_path):
    if not _procs.have_qemu():
        pytest.skip("%s is not installed" % _procs.QEMU_BINARY)
    workdir = _procs.short_tmpdir("vmc-sess-")
    vms = {}
    # vm2 has a serial console as well (QEMU's chardev on a port of the serial range, as qemu_vm gives it).
    serial_port = _procs.free_console_port(62000, 62999)
    serial = ["-chardev", "socket,id=vmconsole-serial,host=127.0.0.1,port=%d,server=on,wait=off" % serial_port,
              "-serial", "chardev:vmconsole-serial"]
    try:
        for name in ("vm1", "vm2"):
            vms[name] = _procs.ConsoleRangeVM(name, workdir, pki_dir=pki.dir, extra_args=serial if name == "vm2" else ())
        keys = new_proxy_signer()
        squid = squid_factory([keys], self_name=pki.cn, vms={
            name: {"state": "started", "qmp": vm.qmp_path, "spice_tls_port": vm.tls_port, "vnc_port": None,
                   "serial_port": serial_port if name == "vm2" else None} for name, vm in vms.items()})
        n = Node(vms, squid, keys, pki, str(tmp_path))
        n.serial_port = serial_port
        for name in vms:
            n.set_ticket(name)
        yield n
    finally:
        for vm in vms.values():
            vm.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def test_vm_cut_ends_remote_viewers_session_and_its_token(node, xvfb, tmp_path):
    issued = int(time.time()) - 2
    token = node.token("alice", "vm1", now=issued)
    other_vm = node.token("alice", "vm2", now=issued)
    vv = tmp_path / "vm1.vv"
    vv.write_text(render_vv(protocol="spice", host=node.name, password=TICKET, tls_port=node.vms["vm1"].tls_port,
                            proxy=proxy_url("127.0.0.1", node.squid.port, token.username, token.token),
                            ca_pem=node.pki.ca_pem, host_subject=node.pki.subject, delete_this_file=False))
    log_path = str(tmp_path / "remote-viewer.log")
    viewer = None
    try:
        with node.vms["vm1"].qmp() as qmp:
            viewer = start_viewer(xvfb, str(vv), log_path)
            qmp.wait_event("SPICE_INITIALIZED", 30, match=lambda e: e["data"]["client"]["channel-type"] == MAIN)
        _procs.wait_until(lambda: "main channel: opened" in _procs.read_log(log_path), 10, what="remote-viewer's log")
        # remote-viewer opens main, display, inputs and cursor, one after the other.
        _procs.wait_until(lambda: {c["channel-type"] for c in node.channels("vm1")} >= {1, 2, 3, 4}, 15,
                          what="remote-viewer's four channels")
        before = len(node.channels("vm1"))

        # Check mode: reports the cut, cuts nothing, writes nothing.
        dry = session(node.args(vm="vm1"), "--check", "--diff")
        assert dry["changed"] is True and dry["sessions"]["vm1"]["spice"]["channels_before"] == before
        assert [t["vm"] for t in dry["tunnels"]["cut"]] == ["vm1"] * before, "one tunnel per channel, none cut yet"
        assert len(node.channels("vm1")) == before and viewer.poll() is None
        assert not os.path.exists(node.squid.revocations_file)

        result = session(node.args(vm="vm1"))
        assert result["changed"] is True
        spice = result["sessions"]["vm1"]["spice"]
        assert (spice["channels_before"], spice["clients_before"], spice["channels_after"], spice["clients_after"]) == (
            before, 1, 0, 0)
        assert result["revoked"] == {"users": {}, "vms": {"vm1": result["revoke_time"]}, "pairs": {}}
        # QEMU drops the channels first and squid then closes their tunnels; whichever squid still listed was cut.
        assert result["tunnels"]["checked"] is True and len(result["tunnels"]["cut"]) <= before

        # QEMU dropped every channel of remote-viewer's session, and remote-viewer saw it go.
        assert node.channels("vm1") == []
        _procs.wait_until(lambda: "main channel: closed" in _procs.read_log(log_path), 10,
                          what="remote-viewer to log the disconnect")
        _procs.wait_until(lambda: viewer.poll() is not None, 10, what="remote-viewer to give up the session")
        assert "display has disconnected" in _procs.read_log(log_path)
        assert node.channels("vm1") == [], "remote-viewer did not get back in"
    finally:
        if viewer is not None:
            _procs.stop_process(viewer)

    again = session(node.args(vm="vm1", revoke_time=result["revoke_time"]))
    assert again["changed"] is False and again["sessions"]["vm1"]["spice"]["channels_before"] == 0
    st = os.stat(node.squid.revocations_file)
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o640, 0, grp.getgrnam("proxy").gr_gid)
    # The proxy refuses the same token now, and every other person's token for vm1 issued before the cut;
    # alice's token for vm2 still passes, and reaches QEMU.
    assert node.probe(other_vm, "vm2")["status"] == "accepted"
    assert node.probe(node.token("bob", "vm1", now=issued), "vm1")["http_status"] == 403
    assert node.wait_refused(token, "vm1")["status"] == "proxy_refused"
    # A token issued after the cut (with a new ticket) opens vm1 again: the revocation is a point in time.
    _procs.wait_until(lambda: time.time() >= result["revoke_time"] + 1, 2, what="the next second")
    node.set_ticket("vm1")
    assert node.probe(node.token("alice", "vm1"), "vm1")["status"] == "accepted"


def test_user_revocation_cuts_her_open_tunnels_on_every_vm_and_leaves_other_people_theirs(node):
    issued = int(time.time()) - 2
    alice, bob = node.token("alice", "vm1", now=issued), node.token("bob", "vm1", now=issued)
    alice_vm2 = node.token("alice", "vm2", now=issued)
    alice_serial = node.token("alice", "vm2", now=issued, console="serial")
    with node.held_main(alice, "vm1") as link:
        her_vm2 = node.tunnel(alice_vm2, "vm2")          # another console of hers, idle
        her_serial = node.tunnel(alice_serial, "vm2", port=node.serial_port)   # and vm2's serial console
        his_vm1 = node.tunnel(bob, "vm1")                 # another person on the same VM
        started = time.monotonic()
        result = session(node.args(user="alice"))
        took = time.monotonic() - started
        assert result["changed"] is True and result["sessions"] == {}
        assert result["revoked"] == {"users": {"alice": result["revoke_time"]}, "vms": {}, "pairs": {}}
        cut = sorted((t["user"], t["vm"], t["console"]) for t in result["tunnels"]["cut"])
        assert cut == [("alice", "vm1", "spice"), ("alice", "vm2", "serial"), ("alice", "vm2", "spice")], \
            result["tunnels"]
        assert result["tunnels"]["checked"] is True and result["tunnels"]["by_console"]["spice"] == 2
        assert result["tunnels"]["by_console"]["serial"] == 1
        # Cut at once; the module then watches squid for its credentials cache time (a reconnect with the
        # token squid checked before would open a new tunnel in that time).
        assert not link.is_open(0.1), "her SPICE session through the proxy is cut"
        assert _procs.tunnel_closed(her_vm2, 1), "her idle tunnel to vm2 is cut"
        assert _procs.tunnel_closed(her_serial, 1), "her serial console is cut"
        assert SQUID_CREDENTIALS_TTL <= took < SQUID_CREDENTIALS_TTL + 8, took
        assert node.tls_through(his_vm1, "vm1"), "bob's tunnel to the same VM still carries bytes"
        assert node.probe(alice_vm2, "vm2")["http_status"] == 403, "all her VMs, new connections too"
        assert node.probe(bob, "vm1")["status"] == "accepted", "other people keep their tokens"

    # With vms, vm1's consoles are locked for everybody: bob's new tunnel to vm1 is cut as well.
    his_again = node.tunnel(bob, "vm1")
    again = session(node.args(user="alice", vms=["vm1"], revoke_time=result["revoke_time"]))
    assert again["changed"] is True and again["revoked"] == {"users": {}, "vms": {}, "pairs": {}}
    assert [(t["user"], t["vm"]) for t in again["tunnels"]["cut"]] == [("bob", "vm1")]
    assert _procs.tunnel_closed(his_again, 1)
    assert node.probe(bob, "vm1")["status"] == "refused", "vm1's ticket is now random and expired"
    node.set_ticket("vm1")
    assert node.probe(bob, "vm1")["status"] == "accepted", "bob's token was not revoked"
    third = session(node.args(user="alice", vms=["vm1"], revoke_time=result["revoke_time"]))
    assert third["changed"] is False and third["tunnels"]["cut"] == []
    record = [json.loads(line) for line in open(node.args()["audit_log"])]
    assert [(r["event"], r["user"]) for r in record] == [("console_session", "alice")] * 2
    for folder, dummy, names in os.walk(node.folder):
        for name in names:
            with open(os.path.join(folder, name), "rb") as f:
                data = f.read()
            assert TICKET.encode() not in data and alice.token.encode() not in data, name
