# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""console_ticket against real QEMU, through the real `ansible` / `ansible-playbook` commands.

Tickets are proven with the SPICE link probe (INPUTS channel: accepted or refused), a held
MAIN channel, a real RFB VNC-auth handshake, and a real remote-viewer under Xvfb.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import stat
import subprocess
import threading
import time

import pytest

from ansible_collections.vmconsole.secure.plugins.module_utils._spice import MAIN, SpiceLink, spice_link_probe
from ansible_collections.vmconsole.secure.plugins.module_utils._vnc import vnc_auth_probe
from ansible_collections.vmconsole.secure.tests.integration import _procs

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LOCAL = ["-i", "localhost,", "-c", "local", "-e", "ansible_python_interpreter=/usr/bin/python3"]
JSON_OUTPUT = {"ANSIBLE_LOAD_CALLBACK_PLUGINS": "1", "ANSIBLE_STDOUT_CALLBACK": "json"}


# --- running Ansible ---------------------------------------------------------------------------

def run(argv, env=None, cwd=None, timeout=120, **kwargs):
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", **(env or {}))
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env, check=False, **kwargs)


def adhoc(args, *flags, env=None, cwd=None, **kwargs):
    """`ansible localhost -m vmconsole.secure.console_ticket`; returns (result dict, CompletedProcess)."""
    argv = ["ansible", "localhost", *LOCAL, *flags, "-m", "vmconsole.secure.console_ticket",
            "-a", args if isinstance(args, str) else json.dumps(args)]
    proc = run(argv, env=dict(JSON_OUTPUT, **(env or {})), cwd=cwd, **kwargs)
    try:
        output = json.loads(proc.stdout)
    except ValueError:
        raise AssertionError("ansible printed no JSON (rc %d):\n%s\n%s" % (proc.returncode, proc.stdout, proc.stderr)) from None
    return output["plays"][0]["tasks"][0]["hosts"]["localhost"], proc


def read_vv(path):
    with open(path) as f:
        lines = f.read().splitlines()
    assert lines[0] == "[virt-viewer]"
    return dict(line.split("=", 1) for line in lines[1:])


class Console:
    """One VM plus what a test needs to ask for its console and to probe tickets."""

    def __init__(self, vm, pki, folder):
        self.vm, self.pki, self.folder = vm, pki, folder

    def args(self, **overrides):
        args = dict(socket=self.vm.qmp_path, console_host="127.0.0.1", ca_file=self.pki.ca_file,
                    server_cert_file=self.pki.server_cert_file, dest=os.path.join(self.folder, "%s.vv" % self.vm.name),
                    audit_log=os.path.join(self.folder, "tickets.log"))
        args.update(overrides)
        return {k: v for k, v in args.items() if v is not None}

    def issue(self, **overrides):
        """A successful ticket; returns (result, the .vv as a dict)."""
        args = self.args(**overrides)
        result, proc = adhoc(args)
        assert not result.get("failed"), "%s\n%s" % (result.get("msg"), proc.stderr)
        return result, read_vv(args["dest"])

    def fail(self, **overrides):
        """A call that must fail; returns its message."""
        result, dummy = adhoc(self.args(**overrides))
        assert result.get("failed") is True, result
        return result["msg"]

    def probe(self, ticket):
        result = spice_link_probe("127.0.0.1", self.vm.tls_port, ticket, ca_pem=self.pki.ca_pem,
                                  host_subject=self.pki.subject, timeout=10)
        assert result["status"] in ("accepted", "refused"), result
        return result["status"]

    def set_known_tickets(self, ttl=300):
        """Tickets set behind the module's back, straight over QMP; returns {protocol: ticket}."""
        known = {}
        with self.vm.qmp() as qmp:
            for protocol, ticket in (("spice", "Kn0wnSp1ceT1cket"), ("vnc", "Kn0wnVn")):
                if (protocol == "spice" and self.vm.tls_port) or (protocol == "vnc" and self.vm.vnc_port):
                    qmp.execute("set_password", dict(protocol=protocol, password=ticket))
                    qmp.execute("expire_password", dict(protocol=protocol, time="+%d" % ttl))
                    known[protocol] = ticket
        return known

    def assert_unchanged(self, known):
        if "spice" in known:
            assert self.probe(known["spice"]) == "accepted"
        if "vnc" in known:
            assert vnc_auth_probe("127.0.0.1", self.vm.vnc_port, known["vnc"])["status"] == "accepted"


@pytest.fixture
def console(qemu_vm, pki, tmp_path):
    return Console(qemu_vm, pki, str(tmp_path))


@pytest.fixture
def both(qemu_factory, pki, tmp_path):
    """A VM with SPICE (TLS) and VNC (password auth), both holding known tickets."""
    c = Console(qemu_factory(vnc=True), pki, str(tmp_path))
    c.known = c.set_known_tickets()
    return c


# --- tickets work, expire and replace each other -----------------------------------------------

def test_ticket_is_accepted_at_once_and_refused_after_ttl(console):
    result, vv = console.issue(ttl=1)
    assert console.probe(vv["password"]) == "accepted"
    assert result["ttl"] == 1 and abs(result["expires"] - (time.time() + 1)) < 5
    time.sleep(max(0.0, result["expires"] + 2 - time.time()))   # the expiry itself: QEMU counts whole seconds
    assert console.probe(vv["password"]) == "refused"


def test_result_and_vv_file(console, pki):
    result, vv = console.issue(title="web1 on hv1")
    assert {k: result[k] for k in ("protocol", "ttl", "tls_port", "port", "console_host", "host_subject", "dest")} == dict(
        protocol="spice", ttl=30, tls_port=console.vm.tls_port, port=None, console_host="127.0.0.1",
        host_subject=pki.subject, dest=console.args()["dest"])
    assert "ticket" not in result and "vv" not in result and result["changed"] is True
    assert len(vv["password"]) == 40 and vv["password"].isalnum()
    assert vv["ca"].replace("\\n", "\n") == pki.ca_pem
    assert (vv["type"], vv["host"], vv["tls-port"], vv["host-subject"], vv["secure-channels"], vv["title"]) == (
        "spice", "127.0.0.1", str(console.vm.tls_port), pki.subject, "all", "web1 on hv1")
    assert "port" not in vv, "a TLS console offers only its TLS port"
    assert stat.S_IMODE(os.stat(result["dest"]).st_mode) == 0o600


def test_second_ticket_replaces_the_first(console):
    dummy, first = console.issue()
    assert console.probe(first["password"]) == "accepted"
    dummy, second = console.issue()
    assert second["password"] != first["password"]
    assert console.probe(first["password"]) == "refused"
    assert console.probe(second["password"]) == "accepted"


def test_user_given_password(console):
    result, vv = console.issue(password="MyOwnT1cket")
    assert vv["password"] == "MyOwnT1cket"
    assert console.probe("MyOwnT1cket") == "accepted"


def test_check_mode_sends_nothing_and_writes_nothing(both):
    dest = both.args()["dest"]
    result, dummy = adhoc(both.args(), "--check")
    assert result["changed"] is True and not result.get("failed")
    assert not os.path.exists(dest)
    both.assert_unchanged(both.known)
    result, dummy = adhoc(both.args(protocol="vnc"), "--check")
    assert result["changed"] is True and result["port"] == both.vm.vnc_port
    both.assert_unchanged(both.known)


def held_main_channel(console, ticket):
    link = SpiceLink("127.0.0.1", console.vm.tls_port, ca_pem=console.pki.ca_pem, host_subject=console.pki.subject,
                     timeout=10)
    assert link.link(MAIN, ticket) == 0, "the MAIN channel must link with a valid ticket"
    assert link.is_open(0.3)
    return link


def test_connected_disconnect_drops_the_client_and_keep_does_not(console):
    dummy, vv = console.issue(ttl=60)
    with held_main_channel(console, vv["password"]) as link:
        console.issue(connected="keep")
        assert link.is_open(0.5), "connected=keep must leave the client connected"
        console.issue(connected="disconnect")
        _procs.wait_until(lambda: not link.is_open(0.1), 10, what="QEMU to drop the MAIN channel")


def test_connected_fail_fails_while_a_client_is_connected(console):
    dummy, vv = console.issue(ttl=60)
    with held_main_channel(console, vv["password"]) as link:
        message = console.fail(connected="fail", dest=os.path.join(console.folder, "other.vv"))
        assert "connected=fail: a SPICE client is connected" in message
        assert link.is_open(0.3)
        assert console.probe(vv["password"]) == "accepted", "the old ticket must still be the one set"
        assert not os.path.exists(os.path.join(console.folder, "other.vv"))
    _procs.wait_until(lambda: not channels(console.vm), 10, what="QEMU to see the MAIN channel closed")
    console.issue(connected="fail")


def channels(vm):
    with vm.qmp() as qmp:
        return qmp.execute("query-spice")["channels"]


def test_vnc_ticket_passes_a_real_vnc_handshake(qemu_factory, pki, tmp_path):
    vnc = Console(qemu_factory(spice=False, vnc=True), pki, str(tmp_path))
    result, vv = vnc.issue(protocol="vnc")
    assert (result["protocol"], result["port"], result["tls_port"], result["host_subject"]) == ("vnc", vnc.vm.vnc_port, None, None)
    assert (vv["type"], vv["port"], len(vv["password"])) == ("vnc", str(vnc.vm.vnc_port), 8)
    assert not {"ca", "host-subject", "tls-port", "secure-channels", "proxy"} & set(vv)
    assert vnc_auth_probe("127.0.0.1", vnc.vm.vnc_port, vv["password"])["status"] == "accepted"
    wrong = "x" + vv["password"][1:] if vv["password"][0] != "x" else "y" + vv["password"][1:]
    assert vnc_auth_probe("127.0.0.1", vnc.vm.vnc_port, wrong)["status"] == "refused"


# --- a real remote-viewer ------------------------------------------------------------------------

def start_viewer(display, vv_path, log_path):
    env = dict(os.environ, DISPLAY=display, GDK_BACKEND="x11", NO_AT_BRIDGE="1", G_MESSAGES_DEBUG="all")
    return _procs.start_process(["remote-viewer", "--debug", vv_path], log_path, env=env)


def test_remote_viewer_opens_the_vv(console, xvfb, tmp_path):
    result, dummy = console.issue(ttl=60)
    log_path = str(tmp_path / "remote-viewer.log")
    with console.vm.qmp() as qmp:
        viewer = start_viewer(xvfb, result["dest"], log_path)
        try:
            event = qmp.wait_event("SPICE_INITIALIZED", 30, match=lambda e: e["data"]["client"]["channel-type"] == MAIN)
            assert event["data"]["client"]["tls"] is True
            assert any(c["channel-type"] == MAIN and c["tls"] for c in qmp.execute("query-spice")["channels"])
            _procs.wait_until(lambda: "main channel: opened" in _procs.read_log(log_path), 10, what="remote-viewer's log")
            _procs.wait_until(lambda: not os.path.exists(result["dest"]), 10, what="remote-viewer to delete the .vv")
        finally:
            _procs.stop_process(viewer)


def test_remote_viewer_is_refused_with_an_expired_vv(console, xvfb, tmp_path):
    result, dummy = console.issue(ttl=1)
    time.sleep(max(0.0, result["expires"] + 2 - time.time()))
    log_path = str(tmp_path / "remote-viewer.log")
    with console.vm.qmp() as qmp:
        viewer = start_viewer(xvfb, result["dest"], log_path)
        try:
            _procs.wait_until(lambda: "auth failure" in _procs.read_log(log_path), 30, what="remote-viewer's auth failure")
            assert qmp.execute("query-spice")["channels"] == []
            assert qmp.pop_events("SPICE_INITIALIZED") == []
        finally:
            _procs.stop_process(viewer)


# --- the README's ad-hoc form: vm=NAME under /run/vmconsole ----------------------------------------

def test_vm_name_form_under_run_vmconsole(qemu_factory, pki, tmp_path):
    os.makedirs("/run/vmconsole", mode=0o700, exist_ok=True)
    name = "vmc-test-%d-%s" % (os.getpid(), secrets.token_hex(3))
    path = "/run/vmconsole/%s.qmp" % name
    vm = qemu_factory(name=name, extra_args=["-qmp", "unix:%s,server=on,wait=off" % path])
    try:
        c = Console(vm, pki, str(tmp_path))
        dest = str(tmp_path / ("%s.vv" % name))
        result, dummy = adhoc("vm=%s dest=%s ca_file=%s server_cert_file=%s"
                              % (name, dest, pki.ca_file, pki.server_cert_file))
        assert not result.get("failed"), result
        assert result["console_host"] == "localhost" and result["dest"] == dest
        assert c.probe(read_vv(dest)["password"]) == "accepted"
    finally:
        vm.stop()
        if os.path.exists(path):
            os.unlink(path)


# --- bad input: a clear error and no change on the VM ---------------------------------------------

@pytest.mark.parametrize("overrides, message", [
    (dict(password="S3cret" * 10), r"^password: a SPICE ticket must be 1 to 59 characters long, this one has 60$"),
    (dict(password="S3cret:pw"), r"^password: a SPICE ticket may contain only letters and digits"),
    (dict(password="S3cret pw"), r"^password: a SPICE ticket may contain only letters and digits"),
    (dict(password="S3cretpw9", protocol="vnc"), r"^password: a VNC ticket must be 1 to 8 characters long"),
    (dict(password="127"), r"^password: it occurs in console_host, which the module returns"),
    (dict(ttl=0), r"^ttl must be between 1 and 86400 seconds, got 0$"),
    (dict(ttl=-5), r"^ttl must be between 1 and 86400 seconds, got -5$"),
    (dict(ttl="abc"), r"^ttl must be a whole number of seconds, got 'abc' \(not an integer\)$"),
    (dict(ttl=1.5), r"^ttl must be a whole number of seconds .*got 1.5$"),
    (dict(ttl=True), r"^ttl must be a number of seconds, got a boolean"),
    (dict(protocol="rdp"), r"value of protocol must be one of: spice, vnc, serial, got: rdp"),
    (dict(connected="disconnect", protocol="vnc"), r"^connected=disconnect is SPICE-only: QEMU refuses it for VNC"),
    (dict(connected="fail", protocol="vnc"), r"^connected=fail is SPICE-only"),
    (dict(proxy="http://hv1:3128", protocol="vnc"), r"^proxy is SPICE-only"),
    (dict(proxy="https://hv1:3128"), r"^proxy must be an http:// URL"),
    (dict(proxy="http://user:pa%3Ass@hv1:3128"), r"^proxy URL password may contain only \[A-Za-z0-9_-\]"),
    (dict(dest="/nonexistent-folder/web1.vv"), r"^dest: the folder /nonexistent-folder does not exist on the controller"),
    (dict(title="web1\nhost=evil.example"), r"^cannot write a \.vv with these options: \.vv value for 'title' contains a line break"),
    (dict(console_host="hv1\rca=x"), r"'host' contains a line break"),
    (dict(host_subject="CN=a,X=b"), r"^host_subject: host subject: unknown attribute name 'X'"),
    (dict(ca_file="/nonexistent/ca.pem"), r"^ca_file /nonexistent/ca.pem cannot be read: No such file or directory$"),
    (dict(server_cert_file="/etc/hostname"), r"^server_cert_file /etc/hostname is not a PEM certificate"),
    (dict(timeout=0), r"^timeout must be a positive number"),
    (dict(socket=None, vm="../etc/x"), r"^vm '\.\./etc/x' is not a valid VM name"),
])
def test_bad_input_is_refused_and_changes_nothing(both, overrides, message):
    message_seen = both.fail(**overrides)
    assert re.search(message, message_seen), message_seen
    for secret in ("S3cret", "pa%3Ass"):
        assert secret not in message_seen
    assert not os.path.exists(both.args()["dest"])
    both.assert_unchanged(both.known)


def test_refused_password_is_never_echoed(both):
    argv = ["ansible", "localhost", *LOCAL, "-vvv", "-m", "vmconsole.secure.console_ticket",
            "-a", json.dumps(both.args(password="S3cret:pw"))]
    proc = run(argv)
    assert proc.returncode != 0 and "password: a SPICE ticket may contain only" in proc.stdout
    assert "S3cret" not in proc.stdout + proc.stderr


def test_socket_missing(both, tmp_path):
    missing = str(tmp_path / "nothing.qmp")
    message = both.fail(socket=missing)
    assert message == "QMP socket %s does not exist: is the VM running, and is vm/socket right?" % missing
    both.assert_unchanged(both.known)


def test_regular_file_is_not_a_qmp_socket(both, tmp_path):
    path = tmp_path / "file.qmp"
    path.write_text("{}\n")
    message = both.fail(socket=str(path))
    assert "exists but is not a UNIX socket" in message and str(path) in message
    both.assert_unchanged(both.known)


def test_socket_that_speaks_something_else(both):
    folder = _procs.short_tmpdir("vmc-foreign-")
    path = os.path.join(folder, "ssh.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(4)
    stop = threading.Event()

    def serve():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, dummy = server.accept()
            except socket.timeout:
                continue
            with conn:
                conn.sendall(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        message = both.fail(socket=path, timeout=5)
        assert "is not a QMP peer" in message and path in message
    finally:
        stop.set()
        thread.join(5)
        server.close()
        shutil.rmtree(folder, ignore_errors=True)
    both.assert_unchanged(both.known)


def test_permission_denied_for_an_unprivileged_user(both, tmp_path):
    """QMP sockets are root-only: the module, run as nobody through ansible, says so."""
    os.chmod(os.path.dirname(both.vm.qmp_path), 0o711)      # like /run/vmconsole: reachable, ...
    os.chmod(both.vm.qmp_path, 0o600)                        # ... but the socket is root's
    home = _procs.short_tmpdir("vmc-nobody-")
    os.chown(home, 65534, 65534)
    argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
            "ansible", "localhost", *LOCAL, "-m", "vmconsole.secure.console_ticket",
            # VNC: no certificate files to read (the test PKI is not readable by nobody).
            "-a", json.dumps(dict(socket=both.vm.qmp_path, protocol="vnc", return_secret=True))]
    try:
        proc = run(argv, env=dict(JSON_OUTPUT, HOME=home, ANSIBLE_LOCAL_TEMP=os.path.join(home, "tmp"),
                                  ANSIBLE_REMOTE_TEMP=os.path.join(home, "rtmp")), cwd=home)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    assert proc.stdout.startswith("{"), proc.stdout + proc.stderr
    result = json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]
    assert result.get("failed") and result.get("qmp_error") == "QMPPermissionDenied", result
    assert result["msg"].startswith("Permission denied on QMP socket %s" % both.vm.qmp_path)
    both.assert_unchanged(both.known)


def test_qemu_without_spice(qemu_factory, pki, tmp_path):
    c = Console(qemu_factory(spice=False, vnc=True), pki, str(tmp_path))
    known = c.set_known_tickets()
    assert c.fail() == "QEMU has no SPICE: the VM was started without -spice (protocol=spice)"
    c.assert_unchanged(known)


def test_vnc_without_password_auth(qemu_factory, pki, tmp_path):
    c = Console(qemu_factory(vnc=True, vnc_password=False), pki, str(tmp_path))
    message = c.fail(protocol="vnc")
    assert message.startswith("VNC of this VM has no password authentication")


def test_ticket_that_reaches_nobody(both):
    message = both.fail(dest=None)
    assert message.startswith("the ticket would reach nobody")


# --- the ticket never appears in output -----------------------------------------------------------

def assert_secret_absent(secret, proc):
    assert len(secret) >= 8
    for name, text in (("stdout", proc.stdout), ("stderr", proc.stderr)):
        assert secret not in text, "the ticket leaked to %s" % name


@pytest.mark.parametrize("return_secret", [False, True])
def test_adhoc_at_vvv_never_prints_the_ticket(console, return_secret):
    args = console.args(return_secret=return_secret)
    argv = ["ansible", "localhost", *LOCAL, "-vvv", "-m", "vmconsole.secure.console_ticket", "-a", json.dumps(args)]
    proc = run(argv)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ticket = read_vv(args["dest"])["password"]
    assert_secret_absent(ticket, proc)
    assert stat.S_IMODE(os.stat(args["dest"]).st_mode) == 0o600
    if return_secret:
        assert "the output has been hidden" in proc.stdout
    else:
        assert '"tls_port": %d' % console.vm.tls_port in proc.stdout

    # A user-given password, same rules.
    proc = run(argv[:-1] + [json.dumps(dict(args, password="UserG1venPassw0rd"))])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert read_vv(args["dest"])["password"] == "UserG1venPassw0rd"
    assert_secret_absent("UserG1venPassw0rd", proc)


def test_playbook_with_return_secret_registers_the_ticket_but_never_prints_it(console, tmp_path):
    args = console.args(return_secret=True)
    out = tmp_path / "registered-ticket"
    playbook = tmp_path / "issue.yml"
    playbook.write_text(json.dumps([{
        "name": "Issue", "hosts": "localhost", "gather_facts": False,
        "tasks": [
            {"name": "Ticket", "vmconsole.secure.console_ticket": args, "register": "issued"},
            {"name": "Keep what register got", "no_log": True,
             "ansible.builtin.copy": {"content": "{{ issued.ticket }}", "dest": str(out), "mode": "0600"}},
            {"name": "Show the rest", "ansible.builtin.debug": {"msg": "{{ issued.dest }} until {{ issued.expires }}"}},
        ],
    }]))
    proc = run(["ansible-playbook", *LOCAL, "-vvv", str(playbook)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ticket = read_vv(args["dest"])["password"]
    assert out.read_text() == ticket, "register must hold the ticket"
    assert_secret_absent(ticket, proc)
    assert "the output has been hidden" in proc.stdout
    assert "%s until " % args["dest"] in proc.stdout


def test_console_playbook(console, pki, tmp_path):
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    argv = ["ansible-playbook", *LOCAL, "-vvv", "vmconsole.secure.console",
            "-e", "vm=%s" % console.vm.name, "-e", "target=localhost", "-e", "ansible_become=false",
            "-e", "socket_dir=%s" % os.path.dirname(console.vm.qmp_path), "-e", "console_host=127.0.0.1",
            "-e", "ca_file=%s" % pki.ca_file, "-e", "server_cert_file=%s" % pki.server_cert_file]
    proc = run(argv, cwd=str(workdir))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    dest = workdir / ("%s.vv" % console.vm.name)
    ticket = read_vv(str(dest))["password"]
    assert console.probe(ticket) == "accepted"
    assert stat.S_IMODE(os.stat(dest).st_mode) == 0o600
    assert_secret_absent(ticket, proc)
    assert re.search(r"%s opens the SPICE console of %s\s+until \d{4}-\d\d-\d\d \d\d:\d\d:\d\d" % (dest, console.vm.name),
                     proc.stdout)

    other = tmp_path / "elsewhere.vv"
    proc = run(argv + ["-e", "dest=%s" % other, "-e", "ttl=45"], cwd=str(workdir))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "(45 s)" in proc.stdout
    assert console.probe(read_vv(str(other))["password"]) == "accepted"
    assert console.probe(ticket) == "refused"


def test_console_playbook_usage_error(tmp_path):
    proc = run(["ansible-playbook", *LOCAL, "vmconsole.secure.console", "-e", "vm=web1"], cwd=str(tmp_path))
    assert proc.returncode != 0
    assert "usage: ansible-playbook vmconsole.secure.console -e vm=NAME -e target=HOST" in proc.stdout
