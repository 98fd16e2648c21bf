# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The console portal end to end: its web process and its root agent, as the role runs them, in front of a real
QEMU, a real squid with the token helpers, and a real remote-viewer. Loopback only.

One node (its name is the test certificate's CN, which squid resolves to 127.0.0.1): the agent on a Unix socket in
a folder of the test, the portal on a free port with a node certificate (serverAuth and clientAuth, as the pki
role's), people with yescrypt hashes and client certificates. A second node (another agent, portal and QEMU) serves
the cross-node tests: its VM is opened through the first node's portal, which asks it over mutual TLS.
"""

from __future__ import annotations

import collections
import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import ssl
import struct
import subprocess
import sys
import time
import zlib
from urllib.parse import urlencode

import pytest

from ansible_collections.vmconsole.secure.plugins.module_utils._migrate import default_ticket_file, read_ticket_file
from ansible_collections.vmconsole.secure.plugins.module_utils._portal_auth import hash_password
from ansible_collections.vmconsole.secure.plugins.module_utils._serial_clients import AUTHZ_ID, authz_object_json
from ansible_collections.vmconsole.secure.plugins.module_utils._spice import MAIN
from ansible_collections.vmconsole.secure.plugins.module_utils._tickets import new_proxy_signer
from ansible_collections.vmconsole.secure.plugins.module_utils._vv import VV_MIME_TYPE, parse_vv
from ansible_collections.vmconsole.secure.tests.integration import _procs
from ansible_collections.vmconsole.secure.tests.integration.test_console_ticket import start_viewer

STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "roles", "console_portal", "files", "static")
PASSWORDS = {"alice": "alice's long passphrase", "olga": "olga operates the cluster"}
ACL = [{"users": ["alice", "carol"], "vms": ["vm1", "far*"], "role": "console"},
       {"users": ["olga"], "vms": ["*"], "role": "operator"}]


def have_aiohttp():
    try:
        import aiohttp  # noqa: F401  pylint: disable=unused-import,import-outside-toplevel
    except ImportError:
        return False
    return True


class PortalNode:
    """One node's portal (web process and agent) in ``workdir``: ``port``, ``url``, ``audit_log``, ``tickets_log``."""

    def __init__(self, workdir, *, name, pki, squid, vm, port, nodes=None, public=True, relays=None,
                 server_cert_file=None):
        self.workdir, self.name, self.pki, self.squid, self.vm = workdir, name, pki, squid, vm
        cert, key = pki.issue([("CN", name)], node=True)
        self.cert_file, self.key_file = os.path.join(workdir, "cert.pem"), os.path.join(workdir, "key.pem")
        _procs._write(self.cert_file, cert.encode(), 0o644)
        _procs._write(self.key_file, key.encode(), 0o600)
        self.socket = os.path.join(workdir, "agent.sock")
        self.audit_log = os.path.join(workdir, "portal.log")
        self.tickets_log = os.path.join(workdir, "tickets.log")
        self.port = port
        self.url = "https://127.0.0.1:%d" % self.port
        agent = dict(node=name, allowed_users=["root"], vms_fact=squid.facts_file, proxy_fact=squid.proxy_fact,
                     socket_dir=os.path.dirname(vm.qmp_path), cluster_vms=[], audit_log=self.tickets_log,
                     ticket_ttl=60, token_ttl=600, ca_file=pki.ca_file,
                     server_cert_file=server_cert_file or pki.server_cert_file)
        portal = dict(node=name, public=public, hosts=[], port=self.port, nodes=nodes or {}, proxy=None,
                      agent_socket=self.socket, acl=ACL, vm_nodes={}, cert_file=self.cert_file,
                      key_file=self.key_file, ca_file=pki.ca_file, audit_log=self.audit_log, session_idle=900,
                      session_absolute=3600, login=dict(max_failures=3, window=300, lockout=900), static_dir=STATIC,
                      users={user: {"password_hash": hash_password(password), "groups": []}
                             for user, password in PASSWORDS.items()})
        if relays:
            portal["relays"] = relays                   # {per_user, per_vm}: the relay limits (default 4 and 8)
        self.agent_config, self.portal_config = os.path.join(workdir, "agent.json"), os.path.join(workdir, "portal.json")
        _procs._write(self.agent_config, json.dumps(agent).encode(), 0o600)
        _procs._write(self.portal_config, json.dumps(portal).encode(), 0o600)
        self.agent = self.portal = None
        self.start()

    def _run(self, module, args, log):
        code = "import sys; from ansible_collections.vmconsole.secure.plugins.module_utils.%s import main; main(sys.argv[1:])"
        return _procs.start_process([sys.executable, "-c", code % module] + args, os.path.join(self.workdir, log))

    def start(self):
        self.agent = self._run("_portal_agent", [self.agent_config, self.socket], "agent.out")
        _procs.wait_until(lambda: os.path.exists(self.socket), 20, what="the portal's agent",
                          logs={"agent": os.path.join(self.workdir, "agent.out")})
        self.start_portal()

    def start_portal(self):
        self.portal = self._run("_portal", [self.portal_config, "127.0.0.1"], "portal.out")
        _procs.wait_until(self._listening, 20, what="the portal", logs={"portal": os.path.join(self.workdir, "portal.out")})

    def _listening(self):
        if self.portal.poll() is not None:
            raise RuntimeError("the portal exited:\n%s" % _procs.read_log(os.path.join(self.workdir, "portal.out")))
        try:
            _procs.socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        except OSError:
            return False
        return True

    def audit(self):
        """The portal's audit records (dicts)."""
        return [json.loads(line) for line in _procs.read_log(self.audit_log, 10 ** 6).splitlines() if line.strip()]

    def stop(self):
        for proc in (self.portal, self.agent):
            if proc is not None:
                _procs.stop_process(proc)


class Browser:
    """What a browser does, in plain HTTPS: the session cookie, the CSRF token of the last page, Origin on POST."""

    def __init__(self, node, cert=None):
        self.node, self.cookie, self.csrf = node, None, None
        self.context = ssl.create_default_context(cafile=node.pki.ca_file)
        if cert is not None:
            self.context.load_cert_chain(*cert)

    def request(self, method, path, form=None, headers=None, body=None):
        """(status, headers (lower-case names), body text) of one request; no redirect is followed."""
        conn = http.client.HTTPSConnection("127.0.0.1", self.node.port, context=self.context, timeout=30)
        sent = {"Origin": self.node.url} if method == "POST" else {}
        if self.cookie:
            sent["Cookie"] = "vmc_session=%s" % self.cookie
        if form is not None:
            body = urlencode(form)
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        sent.update(headers or {})
        try:
            conn.request(method, path, body=body, headers=sent)
            response = conn.getresponse()
            text = response.read().decode("utf-8", "replace")
            found = {k.lower(): v for k, v in response.getheaders()}
            cookies = [v for k, v in response.getheaders() if k.lower() == "set-cookie"]
        finally:
            conn.close()
        for cookie in cookies:
            match = re.match(r"vmc_session=([^;]*)", cookie)
            if match:
                self.cookie = match.group(1) or None
        match = re.search(r'name="csrf" value="([^"]+)"', text)
        if match:
            self.csrf = match.group(1)
        found["set-cookie"] = cookies
        return response.status, found, text

    def login(self, user, password=None):
        status, headers, _text = self.request("POST", "/login", form=dict(user=user, password=password or PASSWORDS[user]))
        assert status == 303, status
        status, _headers, text = self.request("GET", "/")
        assert status == 200
        return headers, text

    def post(self, path, **extra):
        return self.request("POST", path, form=dict(csrf=self.csrf, **extra))


@pytest.fixture
def cluster(pki, squid_factory):
    """``cluster(n)``: n nodes, each a QEMU guest, a squid and a portal; node i's VM is vm1 on the first node and
    far<i> on the others. Every node's portal knows every other node's."""
    if not _procs.have_qemu():
        pytest.skip("%s is not installed" % _procs.QEMU_BINARY)
    if not have_aiohttp():
        pytest.skip("aiohttp is not installed")
    made, folders = [], []

    def start(count=1):
        signers = [new_proxy_signer() for dummy in range(count)]
        names = [pki.cn] + ["vmc-portal-node%d" % i for i in range(1, count)]
        ports = [_procs.free_port() for dummy in range(count)]
        nodes = {}
        for index in range(count):
            folder = _procs.short_tmpdir("vmc-portal-")
            folders.append(folder)
            vm = _procs.ConsoleRangeVM("vm1" if index == 0 else "far%d" % index, folder, pki_dir=pki.dir)
            made.append(vm)
            vms = {vm.name: {"state": "started", "qmp": vm.qmp_path, "spice_tls_port": vm.tls_port, "vnc_port": None,
                             "serial_port": None},
                   "vm2": {"state": "stopped", "spice_tls_port": None, "vnc_port": None, "serial_port": None}}
            squid = squid_factory([signers[index]] + signers[:index] + signers[index + 1:], self_name=names[index],
                                  nodes=[n for n in names if n != names[index]], vms=vms)
            nodes[names[index]] = (folder, squid, vm)
        urls = {name: "https://127.0.0.1:%d" % port for name, port in zip(names, ports)}
        result = []
        for name, port in zip(names, ports):
            folder, squid, vm = nodes[name]
            node = PortalNode(folder, name=name, pki=pki, squid=squid, vm=vm, port=port, nodes=urls)
            made.append(node)
            result.append(node)
        return result

    try:
        yield start
    finally:
        for thing in reversed(made):
            thing.stop()
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)


def spice_clients(vm):
    with vm.qmp() as qmp:
        return list(qmp.execute("query-spice")["channels"])


def open_viewer(node, vm, vv_text, xvfb, tmp_path, name="viewer"):
    """remote-viewer on ``vv_text``; returns the process once QEMU saw its TLS main channel."""
    path = tmp_path / ("%s.vv" % name)
    path.write_text(vv_text)
    log_path = str(tmp_path / ("%s.log" % name))
    with vm.qmp() as qmp:
        viewer = start_viewer(xvfb, str(path), log_path)
        try:
            event = qmp.wait_event("SPICE_INITIALIZED", 30, match=lambda e: e["data"]["client"]["channel-type"] == MAIN)
        except Exception:
            _procs.stop_process(viewer)
            raise RuntimeError("remote-viewer did not connect:\n%s\n%s" % (
                _procs.read_log(log_path), _procs.read_log(node.squid.cache_log))) from None
    assert event["data"]["client"]["tls"] is True
    return viewer


def assert_no_secret(node, *secrets):
    text = "".join(_procs.read_log(path, 10 ** 7) for path in (
        node.audit_log, node.tickets_log, os.path.join(node.workdir, "portal.out"), os.path.join(node.workdir, "agent.out"),
        node.squid.access_log, node.squid.cache_log))
    for secret in secrets:
        assert secret and secret not in text


# --- a person gets a console ---------------------------------------------------------------------

def test_password_login_lists_the_acl_vms_and_the_vv_opens_in_remote_viewer(cluster, xvfb, tmp_path):
    node, = cluster(1)
    browser = Browser(node)
    headers, page = browser.login("alice")
    cookie = headers["set-cookie"][0]
    assert "HttpOnly" in cookie and "Secure" in cookie and "SameSite=Strict" in cookie
    assert 'id="vm-vm1"' in page and "vm2" not in page               # vm2 is in the fact, not in alice's ACL
    assert "disconnect-vm1" not in page                              # alice is not an operator
    status, headers, text = browser.post("/vms/vm1/spice.vv")
    assert status == 200, text
    assert headers["content-type"] == VV_MIME_TYPE
    assert headers["content-disposition"] == 'attachment; filename="vm1.vv"'
    assert headers["cache-control"] == "no-store"
    assert "max-age" in headers["strict-transport-security"] and "script-src 'self'" in headers["content-security-policy"]
    vv = parse_vv(text)
    assert vv["host"] == node.name and vv["proxy"].startswith("http://alice__vm1:")
    viewer = open_viewer(node, node.vm, text, xvfb, tmp_path)
    try:
        assert any(c["channel-type"] == MAIN and c["tls"] for c in spice_clients(node.vm))
    finally:
        _procs.stop_process(viewer)
    events = [(r["event"], r.get("user"), r.get("result")) for r in node.audit()]
    assert ("portal_login", "alice", "ok") in events and ("portal_vv", "alice", None) in events
    issued = [json.loads(line) for line in _procs.read_log(node.tickets_log).splitlines()]
    assert [(r["event"], r["run_by"], r["portal_user"], r["vm"], r["client"]) for r in issued] == [
        ("console_ticket", "portal", "alice", "vm1", "127.0.0.1")]
    token = vv["proxy"].split("//", 1)[1].split("@", 1)[0].split(":", 1)[1]
    assert_no_secret(node, vv["password"], token, browser.cookie, PASSWORDS["alice"], browser.csrf)


def test_the_api_with_a_client_certificate(cluster, pki, tmp_path):
    node, = cluster(1)
    cert, key = pki.issue([("CN", "alice")], client=True)
    (tmp_path / "alice.pem").write_text(cert)
    (tmp_path / "alice.key").write_text(key)
    api = Browser(node, cert=(str(tmp_path / "alice.pem"), str(tmp_path / "alice.key")))
    status, _headers, text = api.request("GET", "/api/v1/vms")
    assert status == 200, text
    assert [(vm["name"], vm["node"], vm["here"], vm["role"]) for vm in json.loads(text)["vms"]] == [
        ("vm1", node.name, True, "console")]
    status, headers, text = api.request("GET", "/api/v1/vms/vm1/spice.vv")
    assert status == 200 and headers["content-type"] == VV_MIME_TYPE and parse_vv(text)["type"] == "spice"
    assert api.request("GET", "/api/v1/vms/vm2/spice.vv")[0] == 404     # outside the ACL: does not exist
    assert api.request("GET", "/api/v1/vms/nosuch")[0] == 404
    # The browser login with the same certificate.
    status, headers, _text = api.request("POST", "/login/certificate")
    assert status == 303 and api.cookie
    assert ("portal_login", "alice", "certificate", "ok") in [
        (r["event"], r.get("user"), r.get("method"), r.get("result")) for r in node.audit()]
    # A node certificate (serverAuth too) is never a person, whatever its CN.
    node_cert = Browser(node, cert=(node.cert_file, node.key_file))
    assert node_cert.request("GET", "/api/v1/vms")[0] == 401
    # No certificate, no session.
    assert Browser(node).request("GET", "/api/v1/vms")[0] == 401


def test_refusals(cluster):
    node, = cluster(1)
    browser = Browser(node)
    assert browser.request("GET", "/")[0] == 303                                     # to the login page
    status, _h, page = browser.request("POST", "/login", form=dict(user="alice", password="wrong"))
    assert status == 401 and "Wrong user or password" in page
    browser.login("alice")
    assert browser.request("POST", "/vms/vm1/spice.vv", form={})[0] == 403           # no CSRF token
    assert browser.request("POST", "/vms/vm1/spice.vv", form=dict(csrf="x" * 43))[0] == 403
    assert browser.request("POST", "/vms/vm1/spice.vv", form=dict(csrf=browser.csrf),
                           headers={"Origin": "https://evil.example"})[0] == 403     # cross-origin
    assert browser.request("POST", "/vms/vm1/spice.vv", form=dict(csrf=browser.csrf),
                           headers={"Sec-Fetch-Site": "cross-site"})[0] == 403
    assert browser.request("GET", "/", headers={"Host": "evil.example"})[0] == 421  # forged Host
    assert browser.request("POST", "/vms/vm2/spice.vv", form=dict(csrf=browser.csrf))[0] == 404   # not in the ACL
    assert browser.request("POST", "/vms/..%2F..%2Fetc/spice.vv", form=dict(csrf=browser.csrf))[0] == 404
    assert browser.request("POST", "/vms/vm1/disconnect", form=dict(csrf=browser.csrf))[0] == 403  # not an operator
    assert browser.request("POST", "/login", body="user=alice&password=" + "x" * 10000,
                           headers={"Content-Type": "application/x-www-form-urlencoded"})[0] == 413
    # Logout ends the session on the server: the old cookie opens nothing.
    cookie = browser.cookie
    assert browser.post("/logout")[0] == 303
    browser.cookie = cookie
    assert browser.request("GET", "/")[0] == 303
    reasons = {r.get("reason") for r in node.audit() if r["event"] == "portal_refused"}
    assert {"csrf", "cross_origin", "wrong_host", "not_in_acl", "not_operator"} <= reasons


def test_repeated_failures_lock_the_name(cluster):
    node, = cluster(1)
    browser = Browser(node)
    for dummy in range(3):
        assert browser.request("POST", "/login", form=dict(user="alice", password="wrong"))[0] == 401
    status, _h, page = browser.request("POST", "/login", form=dict(user="alice", password=PASSWORDS["alice"]))
    assert status == 429 and "Too many failed logins" in page                         # locked, even the right one
    results = [r.get("result") for r in node.audit() if r["event"] == "portal_login"]
    assert results == ["wrong_password", "wrong_password", "lockout", "locked"]


def test_an_operator_disconnects_a_viewer(cluster, xvfb, tmp_path):
    node, = cluster(1)
    alice = Browser(node)
    alice.login("alice")
    status, _h, text = alice.post("/vms/vm1/spice.vv")
    assert status == 200
    viewer = open_viewer(node, node.vm, text, xvfb, tmp_path)
    try:
        olga = Browser(node)
        _headers, page = olga.login("olga")
        assert 'id="disconnect-vm1"' in page
        status, headers, _text = olga.post("/vms/vm1/disconnect")
        assert status == 303 and "cut" in headers["location"]
        _procs.wait_until(lambda: not spice_clients(node.vm), 15, what="the viewer's channels to go")
    finally:
        _procs.stop_process(viewer)
    cut = [r for r in node.audit() if r["event"] == "portal_cut"]
    assert [(r["user"], r["vm"], r["failed_nodes"]) for r in cut] == [("olga", "vm1", [])], cut[0].get("failures")
    records = [json.loads(line) for line in _procs.read_log(node.tickets_log).splitlines()]
    assert [(r["event"], r["portal_user"]) for r in records] == [("console_ticket", "alice"), ("console_session", "olga")]


def test_restarting_the_portal_leaves_open_consoles_alone(cluster, xvfb, tmp_path):
    node, = cluster(1)
    browser = Browser(node)
    browser.login("alice")
    viewer = open_viewer(node, node.vm, browser.post("/vms/vm1/spice.vv")[2], xvfb, tmp_path)
    try:
        # remote-viewer opens its channels one after the other: wait for main, display, inputs and cursor.
        _procs.wait_until(lambda: len(spice_clients(node.vm)) >= 4, 20, what="the viewer's channels")
        before = {c["port"] for c in spice_clients(node.vm)}
        _procs.stop_process(node.portal)
        node.start_portal()
        assert Browser(node).request("GET", "/login")[0] == 200
        assert before <= {c["port"] for c in spice_clients(node.vm)}        # the same connections, still there
        assert viewer.poll() is None
    finally:
        _procs.stop_process(viewer)


def test_a_vm_on_another_node_through_this_nodes_portal(cluster, xvfb, tmp_path):
    first, second = cluster(2)
    browser = Browser(first)
    _headers, page = browser.login("alice")
    assert 'id="vm-far1"' in page and second.name in page
    status, _h, text = browser.post("/vms/far1/spice.vv")
    assert status == 200, text
    vv = parse_vv(text)
    assert vv["host"] == second.name                                   # the VM's node, through this node's proxy
    assert vv["proxy"].endswith("@127.0.0.1:%d" % second.squid.port)   # the portal names no proxy: the VM node's
    viewer = open_viewer(second, second.vm, text, xvfb, tmp_path)
    _procs.stop_process(viewer)
    issued = [json.loads(line) for line in _procs.read_log(second.tickets_log).splitlines()]
    assert [(r["portal_user"], r["vm"], r["portal_node"]) for r in issued] == [("alice", "far1", first.name)]
    # The cluster endpoint takes node certificates only.
    person = Browser(second)
    status, _h, _t = person.request("POST", "/cluster/v1/agent", body=json.dumps({"op": "vms"}),
                                    headers={"Content-Type": "application/json"})
    assert status == 403


def test_the_agent_answers_only_its_user(cluster, tmp_path):
    node, = cluster(1)
    script = ("import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])\n"
              "try: s.sendall(b'{\"op\": \"vms\"}\\n'); print(repr(s.recv(100)))\n"
              "except (ConnectionResetError, BrokenPipeError): print(repr(b''))")
    os.chmod(node.workdir, 0o755)
    os.chmod(node.socket, 0o666)
    other = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", sys.executable, "-c",
                            script, node.socket], capture_output=True, text=True, timeout=30, check=False)
    assert other.stdout.strip() == "b''", other.stderr                  # closed without an answer
    from ansible_collections.vmconsole.secure.plugins.module_utils._portal_agent import ask
    assert ask(node.socket, {"op": "vms"})["vms"][0]["name"] == "vm1"
    assert ask(node.socket, {"op": "spice", "vm": "nosuch", "user": "alice"})["error"] == "unknown_vm"
    assert ask(node.socket, {"op": "set_password", "vm": "vm1", "user": "alice"})["error"] == "bad_request"
    assert ask(node.socket, {"op": "spice", "vm": "vm2", "user": "alice"})["error"] == "not_here"


def presented_serial(node):
    context = ssl.create_default_context(cafile=node.pki.ca_file)
    with _procs.socket.create_connection(("127.0.0.1", node.port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            from cryptography import x509  # pylint: disable=import-outside-toplevel
            return x509.load_der_x509_certificate(tls.getpeercert(True)).serial_number


def test_a_reload_takes_a_renewed_certificate_and_keeps_the_sessions(cluster, pki):
    node, = cluster(1)
    browser = Browser(node)
    browser.login("alice")
    before = presented_serial(node)
    cert, key = pki.issue([("CN", node.name)], node=True)
    _procs._write(node.cert_file, cert.encode(), 0o644)
    _procs._write(node.key_file, key.encode(), 0o600)
    node.portal.send_signal(signal.SIGHUP)
    _procs.wait_until(lambda: "certificate reloaded" in _procs.read_log(os.path.join(node.workdir, "portal.out")), 10,
                      what="the portal's reload")
    after = presented_serial(node)
    assert after != before
    from cryptography import x509  # pylint: disable=import-outside-toplevel
    assert after == x509.load_pem_x509_certificate(cert.encode()).serial_number
    assert browser.request("GET", "/")[0] == 200                      # the session survived the reload


# --- the serial console in the browser: the relay ----------------------------------------------------

@contextlib.contextmanager
def guest_portal(pki, start_squid, prefix, make_guest, **portal_options):
    """One node whose vm1 is the boot-sector guest ``make_guest(folder, disk)`` starts, behind squid
    (``start_squid(signers, self_name=..., vms=...)``, e.g. the ``squid_factory`` fixture) and a portal
    (``PortalNode`` with ``portal_options``); stops the guest and the portal after. For the tests and the benchmarks."""
    from ansible_collections.vmconsole.secure.tests import guest_image  # pylint: disable=import-outside-toplevel
    folder = _procs.short_tmpdir(prefix)
    made = []
    try:
        disk = guest_image.write_image(os.path.join(folder, "guest.img"))
        vm = make_guest(folder, disk)
        made.append(vm)
        squid = start_squid([new_proxy_signer()], self_name=pki.cn, vms={"vm1": {
            "state": "started", "qmp": vm.qmp_path, "spice_tls_port": vm.tls_port, "vnc_port": vm.vnc_port,
            "serial_port": vm.serial_port}})
        node = PortalNode(folder, name=pki.cn, pki=pki, squid=squid, vm=vm, port=_procs.free_port(), **portal_options)
        made.append(node)
        yield node
    finally:
        for thing in reversed(made):
            thing.stop()
        shutil.rmtree(folder, ignore_errors=True)


def one_guest_portal(pki, squid_factory, prefix, make_guest):
    """``guest_portal`` for a fixture: skipped without QEMU or aiohttp."""
    if not _procs.have_qemu():
        pytest.skip("%s is not installed" % _procs.QEMU_BINARY)
    if not have_aiohttp():
        pytest.skip("aiohttp is not installed")
    with guest_portal(pki, squid_factory, prefix, make_guest) as node:
        yield node


@pytest.fixture
def serial_portal(pki, squid_factory):
    """One node whose vm1 is the boot-sector guest with a TLS serial console (it prints a line every second and
    echoes what it receives), behind squid and a portal."""
    from ansible_collections.vmconsole.secure.tests.integration.test_serial_console import SerialGuest  # pylint: disable=import-outside-toplevel
    yield from one_guest_portal(pki, squid_factory, "vmc-relay-",
                                lambda folder, disk: SerialGuest("vm1", folder, disk=disk, pki_dir=pki.dir))


def relay_ticket(browser, vm="vm1"):
    status, _headers, page = browser.post("/vms/%s/browser/serial" % vm)
    assert status == 200, page
    assert "<script>" not in page and 'src="/static/browser-console.js"' in page
    return re.search(r'data-ticket="([^"]+)"', page).group(1)


async def open_relay(browser, ticket, origin=None, cookie=True, **options):
    """(WebSocket, session) of the relay, the ticket sent; the caller closes both. ``options`` go to aiohttp's
    ``ws_connect`` (e.g. ``compress=15``: offer permessage-deflate, as Chromium does)."""
    import aiohttp  # pylint: disable=import-outside-toplevel
    headers = {"Origin": origin or browser.node.url}
    if cookie and browser.cookie:
        headers["Cookie"] = "vmc_session=%s" % browser.cookie
    session = aiohttp.ClientSession()
    try:
        sock = await session.ws_connect(browser.node.url + "/relay/v1", ssl=browser.context, headers=headers,
                                        **options)
    except aiohttp.WSServerHandshakeError as exc:
        await session.close()
        return exc.status, None
    await sock.send_str(ticket)
    return sock, session


async def read_until(sock, pattern, timeout):
    import aiohttp  # pylint: disable=import-outside-toplevel
    seen = b""
    deadline = time.monotonic() + timeout
    while not re.search(pattern, seen):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("no %r from the console in %s s; got %r" % (pattern, timeout, seen[-300:]))
        message = await sock.receive(timeout=left)
        if message.type != aiohttp.WSMsgType.BINARY:
            raise AssertionError("the relay ended: %s %s %r" % (message.type, sock.close_code, message.extra))
        seen += message.data
    return seen


def test_the_serial_console_in_the_browser_through_the_relay(serial_portal):
    import asyncio  # pylint: disable=import-outside-toplevel
    node = serial_portal
    browser = Browser(node)
    browser.login("alice")
    ticket = relay_ticket(browser)

    async def scenario():
        sock, session = await open_relay(browser, ticket)
        try:
            await read_until(sock, rb"vmconsole serial console ok \d+", 20)     # the guest's own line
            await sock.send_str("hello-relay")
            await read_until(sock, rb"hello-relay", 20)                          # the guest's echo
        finally:
            await sock.close()
            await session.close()
        # The same ticket again: refused, single use.
        sock, session = await open_relay(browser, ticket)
        try:
            message = await sock.receive(timeout=10)
            return message.type, sock.close_code
        finally:
            await session.close()
    kind, code = asyncio.run(scenario())
    assert code == 4401, (kind, code)
    records = _procs.wait_until(lambda: [r for r in node.audit() if r["event"] == "portal_relay"][2:] and
                                [r for r in node.audit() if r["event"] == "portal_relay"], 10, what="three relay audit lines")
    assert [(r["result"], r.get("reason")) for r in records] == [
        ("open", None), ("closed", "browser_closed"), ("refused", "ticket")]
    assert records[1]["bytes_to_console"] == len("hello-relay") and records[1]["bytes_to_browser"] > 0
    assert_no_secret(node, ticket, browser.cookie)


def test_the_relay_refuses_other_origins_other_sessions_and_ends_with_the_session(serial_portal):
    import asyncio  # pylint: disable=import-outside-toplevel
    node = serial_portal
    alice, olga = Browser(node), Browser(node)
    alice.login("alice")
    olga.login("olga")

    async def scenario():
        out = {}
        status, dummy = await open_relay(alice, relay_ticket(alice), origin="https://evil.example")
        out["other origin"] = status
        status, dummy = await open_relay(alice, relay_ticket(alice), cookie=False)
        out["no session"] = status
        sock, session = await open_relay(olga, relay_ticket(alice))     # alice's ticket in olga's session
        out["another session's ticket"] = (await sock.receive(timeout=10)) and sock.close_code
        await session.close()
        sock, session = await open_relay(alice, relay_ticket(alice))
        await read_until(sock, rb"vmconsole serial console ok", 20)
        assert alice.post("/logout")[0] == 303                         # logout ends the browser console
        message = await sock.receive(timeout=10)
        out["after logout"] = sock.close_code
        await session.close()
        return out, message
    out, dummy = asyncio.run(scenario())
    assert out == {"other origin": 403, "no session": 401, "another session's ticket": 4401, "after logout": 4001}


def test_the_relay_limit_per_person(serial_portal):
    import asyncio  # pylint: disable=import-outside-toplevel
    node = serial_portal
    browser = Browser(node)
    browser.login("alice")

    async def scenario():
        opened, codes = [], []
        try:
            for dummy in range(5):                                      # the default limit is 4 per person
                sock, session = await open_relay(browser, relay_ticket(browser))
                opened.append((sock, session))
            message = await opened[4][0].receive(timeout=20)
            codes.append(opened[4][0].close_code)
            return codes, message
        finally:
            for sock, session in opened:
                await sock.close()
                await session.close()
    codes, dummy = asyncio.run(scenario())
    assert codes == [4429]


def test_an_operators_cut_ends_the_browser_console(serial_portal):
    import asyncio  # pylint: disable=import-outside-toplevel
    node = serial_portal
    alice, olga = Browser(node), Browser(node)
    alice.login("alice")
    olga.login("olga")

    async def scenario():
        sock, session = await open_relay(alice, relay_ticket(alice))
        try:
            await read_until(sock, rb"vmconsole serial console ok", 20)
            loop = asyncio.get_running_loop()
            status = (await loop.run_in_executor(None, olga.post, "/vms/vm1/disconnect"))[0]
            message = await sock.receive(timeout=30)
            return status, (message.type, message.data, message.extra), sock.close_code
        finally:
            await sock.close()
            await session.close()
    status, message, code = asyncio.run(scenario())
    assert status == 303 and code == 1000, (status, message, code)
    # The relay writes its audit line after it closed the WebSocket: wait for it.
    closed = _procs.wait_until(lambda: [r for r in node.audit() if r["event"] == "portal_relay" and r["result"] == "closed"],
                               10, what="the relay's closing audit line",
                               logs={"portal": os.path.join(node.workdir, "portal.out"), "audit": node.audit_log,
                                     "tickets": node.tickets_log})
    assert [r["reason"] for r in closed] == ["console_closed"]


# --- a real browser ----------------------------------------------------------------------------------

@pytest.fixture
def chromium(tmp_path):
    """Headless Chromium (Debian's chromium and chromium-driver) driven by Selenium; quit after the test."""
    if shutil.which("chromium") is None or shutil.which("chromedriver") is None:
        pytest.skip("chromium and chromium-driver are not installed")
    from selenium import webdriver  # pylint: disable=import-outside-toplevel
    from selenium.webdriver.chrome.service import Service  # pylint: disable=import-outside-toplevel
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--user-data-dir=%s" % (tmp_path / "chromium-profile"),
                     # The test CA is not in Chromium's store; what the portal's TLS is worth is proven by the
                     # tests above with a verifying client. Here: what the page and its script do.
                     "--ignore-certificate-errors",
                     # Pages in other windows keep their timers (a console that reconnects is not a foreground one).
                     "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
                     "--disable-backgrounding-occluded-windows"):
        options.add_argument(argument)
    service = Service(shutil.which("chromedriver"), log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def without_secrets(page):
    """A page's source with its relay ticket and CSRF token blanked (for a failure message)."""
    return re.sub(r'(data-ticket="|name="csrf" value=")[^"]*"', r'\1(hidden)"', page)


def wait_in_browser(driver, node, condition, timeout, what):
    """WebDriverWait, failing with what the page (no ticket, no CSRF token), the browser's console and the portal
    said."""
    from selenium.common.exceptions import TimeoutException  # pylint: disable=import-outside-toplevel
    from selenium.webdriver.support.ui import WebDriverWait  # pylint: disable=import-outside-toplevel
    try:
        return WebDriverWait(driver, timeout).until(condition)
    except TimeoutException:
        raise AssertionError("no %s within %s s\npage: %s\nbrowser log: %s\nportal: %s\naudit: %s" % (
            what, timeout, without_secrets(driver.page_source)[:2000], driver.get_log("browser"),
            _procs.read_log(os.path.join(node.workdir, "portal.out")), node.audit()[-5:])) from None


def terminal_text(driver):
    return driver.execute_script(
        "var rows = document.querySelector('.xterm-rows'); return rows ? rows.innerText : '';")


def test_typing_in_the_browsers_serial_console_reaches_the_guest(serial_portal, chromium):
    from selenium.webdriver.common.by import By  # pylint: disable=import-outside-toplevel
    node, driver = serial_portal, chromium
    login_in_chromium(driver, node)
    driver.find_element(By.ID, "browser-serial-vm1").click()
    wait_in_browser(driver, node, lambda d: re.search(r"vmconsole serial console ok \d+", terminal_text(d)), 30,
                    "guest's line in the terminal")
    assert driver.find_element(By.ID, "console-state").text == "connected"
    driver.find_element(By.CSS_SELECTOR, ".xterm-helper-textarea").send_keys("typed-in-chromium")
    wait_in_browser(driver, node, lambda d: "typed-in-chromium" in terminal_text(d), 30,
                    "guest's echo of what was typed")
    errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == [], errors                                 # no script blocked, no CSP violation
    # Logging out (in another tab of the same session) ends the console in this one.
    driver.switch_to.new_window("tab")
    driver.get(node.url + "/")
    driver.find_element(By.CSS_SELECTOR, "form[action='/logout'] button").click()
    driver.switch_to.window(driver.window_handles[0])
    wait_in_browser(driver, node, lambda d: "session ended" in d.find_element(By.ID, "console-state").text, 30,
                    "end of the console at logout")


# --- VNC in the browser: the relay is QEMU's VeNCrypt client and offers the browser security type None -----------

class VncGuest(_procs.QemuVM):
    """The boot-sector guest (COM1 on a TLS chardev, as for the serial tests) with a VGA screen and VNC as qemu_vm
    starts it: 127.0.0.1, VeNCrypt with the node's X.509 certificate (tls-creds-x509, verify-peer as given;
    qemu_vm's is off), password=on (only a ticket set over QMP gets in); ``vnc_connections``: QEMU's limit of VNC
    clients at once (its default: 32)."""

    def __init__(self, name, workdir, *, disk, pki_dir, verify_peer=False, vnc_connections=None, **kwargs):
        self.disk, self.verify_peer, self.vnc_connections = disk, verify_peer, vnc_connections
        self.serial_port = None
        super().__init__(name, workdir, pki_dir=pki_dir, spice=False, **kwargs)

    def _argv(self, pki_dir, **options):
        from ansible_collections.vmconsole.secure.tests.integration.test_serial_console import SERIAL_PORTS  # pylint: disable=import-outside-toplevel
        self.tls_port = self.plain_port = self.vnc_port = None
        self.serial_port = _procs.free_console_port(*SERIAL_PORTS)
        return [
            _procs.QEMU_BINARY, "-accel", "tcg", "-machine", "pc", "-m", "16", "-nodefaults", "-no-user-config",
            "-display", "none", "-vga", "std", "-name", self.name, "-qmp", "unix:%s,server=on,wait=off" % self.qmp_path,
            "-drive", "file=%s,format=raw,if=virtio,readonly=on" % self.disk,
            "-object", "tls-creds-x509,id=vmconsole-serial-tls,endpoint=server,verify-peer=on,dir=%s" % pki_dir,
            "-chardev", "socket,id=vmconsole-serial,host=127.0.0.1,port=%d,server=on,wait=off,"
                        "tls-creds=vmconsole-serial-tls" % self.serial_port,
            "-serial", "chardev:vmconsole-serial",
        ] + self._screen(pki_dir)

    def _screen(self, pki_dir):
        self.vnc_port = _procs.free_port(5900, 5999)                   # the proxy's VNC range in these tests
        return ["-object", "tls-creds-x509,id=vmconsole-vnc-tls,endpoint=server,verify-peer=%s,dir=%s"
                           % ("on" if self.verify_peer else "off", pki_dir),
                "-vnc", "127.0.0.1:%d,tls-creds=vmconsole-vnc-tls,password=on%s" % (
                    self.vnc_port - 5900, ",connections=%d" % self.vnc_connections if self.vnc_connections else "")]


class SpiceGuest(VncGuest):
    """The same guest with SPICE instead of VNC, as qemu_vm starts it: 127.0.0.1, a TLS port in the console range,
    every channel TLS, ticketing on (only a ticket set over QMP gets in)."""

    def _screen(self, pki_dir):
        self.tls_port = _procs.free_console_port()
        return ["-spice", "addr=127.0.0.1,tls-port=%d,x509-dir=%s,tls-channel=default,seamless-migration=on"
                % (self.tls_port, pki_dir)]


@pytest.fixture(params=[False, True], ids=["verify-peer-off", "verify-peer-on"])
def vnc_portal(request, pki, squid_factory):
    """One node whose vm1 is the boot-sector guest with a VGA screen on VeNCrypt VNC (and its TLS serial console),
    behind squid and a portal. Parametrized: QEMU without and with a client certificate check."""
    yield from one_guest_portal(pki, squid_factory, "vmc-vnc-",
                                lambda folder, disk: VncGuest("vm1", folder, disk=disk, pki_dir=pki.dir,
                                                              verify_peer=request.param))


def vnc_relay_ticket(browser, vm="vm1"):
    status, _headers, page = browser.post("/vms/%s/browser/vnc" % vm)
    assert status == 200, page
    assert "<script>" not in page and 'type="module" src="/static/vnc-console.js"' in page
    return re.search(r'data-ticket="([^"]+)"', page).group(1)


class WSBytes:
    """Exact reads from a relay WebSocket's binary messages (aiohttp client)."""

    def __init__(self, sock):
        self.sock, self.buffer = sock, bytearray()      # a bytearray: appending and cutting its head copy once

    async def read(self, size, timeout=20):
        import aiohttp  # pylint: disable=import-outside-toplevel
        while len(self.buffer) < size:
            message = await self.sock.receive(timeout=timeout)
            if message.type != aiohttp.WSMsgType.BINARY:
                raise AssertionError("the relay ended: %s %s %r" % (message.type, self.sock.close_code, message.extra))
            self.buffer += message.data
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data


async def rfb_viewer(sock):
    """A minimal RFB 3.8 viewer on the relay: the handshake the relay offers (security type None), ClientInit, and
    one full framebuffer update in raw 32-bit pixels; (security types offered, width, height, name, pixels)."""
    import struct  # pylint: disable=import-outside-toplevel
    wire = WSBytes(sock)
    assert await wire.read(12) == b"RFB 003.008\n"
    await sock.send_bytes(b"RFB 003.008\n")
    count = (await wire.read(1))[0]
    offered = list(await wire.read(count))
    await sock.send_bytes(bytes([1]))
    assert await wire.read(4) == b"\0\0\0\0"                            # SecurityResult: OK
    await sock.send_bytes(b"\1")                                       # ClientInit: shared
    width, height = struct.unpack(">HH", await wire.read(4))
    await wire.read(16)                                                 # the server's pixel format
    name = await wire.read(struct.unpack(">I", await wire.read(4))[0])
    # SetPixelFormat 32 bpp true colour, SetEncodings [raw], FramebufferUpdateRequest (not incremental).
    await sock.send_bytes(struct.pack(">B3xBBBBHHHBBB3x", 0, 32, 24, 0, 1, 255, 255, 255, 16, 8, 0)
                          + struct.pack(">BxHi", 2, 1, 0) + struct.pack(">BBHHHH", 3, 0, 0, 0, width, height))
    pixels = bytearray(width * height * 4)
    covered = 0
    while covered < width * height:
        kind = (await wire.read(1))[0]
        if kind != 0:                                                   # not a FramebufferUpdate (a bell, colours)
            continue
        await wire.read(1)
        for dummy in range(struct.unpack(">H", await wire.read(2))[0]):
            x, y, w, h, encoding = struct.unpack(">HHHHi", await wire.read(12))
            assert encoding == 0, encoding
            data = await wire.read(w * h * 4)
            for row in range(h):
                start = ((y + row) * width + x) * 4
                pixels[start:start + w * 4] = data[row * w * 4:(row + 1) * w * 4]
            covered += w * h
    return offered, width, height, name, bytes(pixels)


def test_the_vnc_console_in_the_browser_through_the_relay(vnc_portal):
    import asyncio  # pylint: disable=import-outside-toplevel
    node = vnc_portal
    browser = Browser(node)
    browser.login("alice")
    assert 'id="browser-vnc-vm1"' in browser.request("GET", "/")[2]
    ticket = vnc_relay_ticket(browser)

    async def scenario():
        sock, session = await open_relay(browser, ticket)
        try:
            shown = await rfb_viewer(sock)
        finally:
            await sock.close()
            await session.close()
        sock, session = await open_relay(browser, ticket)                 # the same ticket again: refused
        try:
            await sock.receive(timeout=10)
            return shown, sock.close_code
        finally:
            await session.close()
    (offered, width, height, name, pixels), code = asyncio.run(scenario())
    assert offered == [1]                       # None only: the relay authenticated to QEMU, the browser needs no password
    assert (width, height) == (720, 400) and name == b"QEMU (vm1)"             # the VGA text mode screen of vm1
    assert len(set(pixels[i:i + 3] for i in range(0, len(pixels), 4))) > 1   # not blank: SeaBIOS's text on it
    assert code == 4401
    records = _procs.wait_until(lambda: [r for r in node.audit() if r["event"] == "portal_relay"][2:] and
                                [r for r in node.audit() if r["event"] == "portal_relay"], 10, what="three relay audit lines")
    assert [(r["console"] if "console" in r else None, r["result"], r.get("reason")) for r in records] == [
        ("vnc", "open", None), ("vnc", "closed", "browser_closed"), (None, "refused", "ticket")]
    assert records[1]["bytes_to_console"] > 0 and records[1]["bytes_to_browser"] > width * height * 4
    issued = [json.loads(line) for line in _procs.read_log(node.tickets_log, 10 ** 6).splitlines() if line.strip()]
    assert [(r["protocol"], r["proxy_user"]) for r in issued] == [("vnc", "alice")]
    assert_no_secret(node, ticket, browser.cookie)


def test_vnc_relays_of_one_vm_opened_at_once_all_get_in(vnc_portal):
    """QEMU has one VNC password: each relay's ticket replaced the one before, so relays opened together refused all
    but the last. The agent now lets one relay's ticket at a time live until its handshake is over, then expires it."""
    import asyncio  # pylint: disable=import-outside-toplevel
    node = vnc_portal
    browser = Browser(node)
    browser.login("alice")
    tickets = [vnc_relay_ticket(browser) for dummy in range(4)]       # the person's limit

    async def scenario():
        opened = await asyncio.gather(*(open_relay(browser, ticket) for ticket in tickets))
        try:
            return await asyncio.gather(*(rfb_viewer(sock) for sock, dummy in opened), return_exceptions=True)
        finally:
            for sock, session in opened:
                await sock.close()
                await session.close()
    shown = asyncio.run(scenario())
    assert [one[3] if isinstance(one, tuple) else repr(one) for one in shown] == [b"QEMU (vm1)"] * 4
    records = _procs.wait_until(lambda: len([r for r in node.audit() if r["event"] == "portal_relay"]) >= 8 and
                                [r for r in node.audit() if r["event"] == "portal_relay"], 20, what="eight relay audit lines")
    assert sorted((r["result"], r.get("reason")) for r in records) == [("closed", "browser_closed")] * 4 + [("open", None)] * 4
    issued = [json.loads(line) for line in _procs.read_log(node.tickets_log, 10 ** 6).splitlines() if line.strip()]
    assert [r["protocol"] for r in issued] == ["vnc"] * 4


def test_the_vnc_relay_refuses_other_origins_and_ends_at_logout(vnc_portal):
    import asyncio  # pylint: disable=import-outside-toplevel
    node = vnc_portal
    alice = Browser(node)
    alice.login("alice")

    async def scenario():
        out = {}
        out["other origin"] = (await open_relay(alice, vnc_relay_ticket(alice), origin="https://evil.example"))[0]
        out["no session"] = (await open_relay(alice, vnc_relay_ticket(alice), cookie=False))[0]
        sock, session = await open_relay(alice, vnc_relay_ticket(alice))
        try:
            await rfb_viewer(sock)
            loop = asyncio.get_running_loop()
            assert (await loop.run_in_executor(None, alice.post, "/logout"))[0] == 303
            while not sock.closed:
                await sock.receive(timeout=20)                          # framebuffer updates, then the close
            out["after logout"] = sock.close_code
        finally:
            await session.close()
        return out
    assert asyncio.run(scenario()) == {"other origin": 403, "no session": 401, "after logout": 4001}
    closed = _procs.wait_until(lambda: [r for r in node.audit() if r["event"] == "portal_relay" and r["result"] == "closed"],
                               10, what="the relay's closing audit line")
    assert [(r["console"], r["reason"]) for r in closed] == [("vnc", "session_ended")]


class SerialTap:
    """What the guest writes on COM1, read through the portal's serial relay in a thread of its own (a session of
    ``browser``'s), for a test that drives a real browser meanwhile."""

    def __init__(self, browser):
        import threading  # pylint: disable=import-outside-toplevel
        self.browser, self.seen, self.lock = browser, b"", threading.Lock()
        self.stop = threading.Event()
        self.ticket = re.search(r'data-ticket="([^"]+)"', browser.post("/vms/vm1/browser/serial")[2]).group(1)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        import asyncio  # pylint: disable=import-outside-toplevel

        async def read():
            sock, session = await open_relay(self.browser, self.ticket)
            try:
                while not self.stop.is_set() and not sock.closed:
                    try:
                        message = await sock.receive(timeout=0.5)
                    except asyncio.TimeoutError:
                        continue
                    if isinstance(message.data, bytes):
                        with self.lock:
                            self.seen += message.data
            finally:
                await sock.close()
                await session.close()
        asyncio.run(read())

    def text(self):
        with self.lock:
            return self.seen

    def wait_connected(self):
        """Until the guest's line arrived through the relay. QEMU drops what the guest writes on COM1 while no client
        is connected: a key typed before the tap's relay is open would be reported to nobody (seen under load)."""
        _procs.wait_until(lambda: b"vmconsole serial console ok " in self.text(), 30,
                          what="the guest's line on COM1 through the tap's serial relay")

    def close(self):
        self.stop.set()
        self.thread.join(10)


def login_in_chromium(driver, node, user="alice"):
    """``user`` logs in with the password form in Chromium, and the portal's list of VMs (with vm1) shows."""
    from selenium.webdriver.common.by import By  # pylint: disable=import-outside-toplevel
    driver.get(node.url + "/login")
    driver.find_element(By.ID, "user").send_keys(user)
    driver.find_element(By.ID, "password").send_keys(PASSWORDS[user])
    driver.find_element(By.ID, "login").click()
    wait_in_browser(driver, node, lambda d: d.find_elements(By.ID, "vm-vm1"), 20, "list of VMs")


def canvas_colours(driver):
    """How many distinct colours noVNC's canvas shows (1: blank)."""
    return driver.execute_script(
        "var c = document.querySelector('#console canvas'); if (!c || !c.width) { return 0; }"
        "var d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data, seen = new Set();"
        "for (var i = 0; i < d.length; i += 4) { seen.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]); }"
        "return seen.size;")


def german_key(driver, code, key, vk, altgr=False):
    """A key press as Chromium gets it from a German (de) keyboard layout: ``code`` is the physical key, ``key``
    what the layout makes of it, ``altgr`` with AltGr (right Alt) held (CDP Input.dispatchKeyEvent, as the OS would
    deliver them)."""
    def send(kind, code, key, vk, text=None, modifiers=0):
        event = dict(type=kind, code=code, key=key, windowsVirtualKeyCode=vk, nativeVirtualKeyCode=vk,
                     modifiers=modifiers)
        driver.execute_cdp_cmd("Input.dispatchKeyEvent", dict(event, text=text) if text else event)
    modifiers = 1 if altgr else 0                                       # CDP: 1 = Alt
    if altgr:
        send("rawKeyDown", "AltRight", "AltGraph", 0x12, modifiers=modifiers)
    send("keyDown", code, key, vk, text=key, modifiers=modifiers)
    send("keyUp", code, key, vk, modifiers=modifiers)
    if altgr:
        send("keyUp", "AltRight", "AltGraph", 0x12)


def assert_keys_reach_the_guest(driver, node, canvas):
    """Types into the console page's ``canvas`` and checks the boot-sector guest's report of each key on COM1 (read
    through a serial relay of another session of alice's): "hello", then a German keyboard's key labelled Z (where a
    US keyboard has Y) and AltGr+Q ("@"). The page must send the physical keys (scan codes): the guest's own (de) layout
    makes the characters; the BIOS here maps with the US layout: "y" for scan code 15, Alt+Q (scan code 10, no ASCII)
    for AltGr+Q (the BIOS reports right and left Alt alike)."""
    from selenium.webdriver.common.action_chains import ActionChains  # pylint: disable=import-outside-toplevel
    other = Browser(node)
    other.login("alice")
    tap = SerialTap(other)
    try:
        tap.wait_connected()
        ActionChains(driver).click(canvas).send_keys("hello").perform()
        for report, press in ((b"[23h][12e][26l][26l][18o]", None),
                              (b"[15y]", ("KeyY", "z", 0x5A, False)),
                              (b"[10\x00]", ("KeyQ", "@", 0x51, True))):
            if press:
                german_key(driver, *press)
            wait_in_browser(driver, node, lambda d, report=report: report in tap.text(), 30,
                            "the guest's report %r (COM1: %r)" % (report, tap.text()[-200:]))
    finally:
        tap.close()


def test_the_vnc_page_shows_the_vms_screen_and_typing_reaches_the_guest(vnc_portal, chromium, tmp_path):
    from selenium.webdriver.common.by import By  # pylint: disable=import-outside-toplevel
    node, driver = vnc_portal, chromium
    login_in_chromium(driver, node)
    driver.find_element(By.ID, "browser-vnc-vm1").click()
    wait_in_browser(driver, node, lambda d: d.find_element(By.ID, "console-state").text == "connected", 30,
                    "noVNC connected")
    wait_in_browser(driver, node, lambda d: canvas_colours(d) > 1, 30, "the VM's screen on the canvas")
    canvas = driver.find_element(By.CSS_SELECTOR, "#console canvas")
    (tmp_path / "vnc-canvas.png").write_bytes(canvas.screenshot_as_png)     # SeaBIOS's text screen, for a person
    assert driver.find_element(By.ID, "console").get_attribute("data-desktop") == "QEMU (vm1)"
    errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == [], errors                                 # no script blocked, no CSP violation
    assert_keys_reach_the_guest(driver, node, canvas)
    # Logging out (in another tab of the same session) ends the console in this one, with a clear message.
    driver.switch_to.new_window("tab")
    driver.get(node.url + "/")
    driver.find_element(By.CSS_SELECTOR, "form[action='/logout'] button").click()
    driver.switch_to.window(driver.window_handles[0])
    wait_in_browser(driver, node, lambda d: "session ended" in d.find_element(By.ID, "console-state").text, 30,
                    "end of the console at logout")


def test_an_operators_cut_ends_the_vnc_console(vnc_portal):
    import asyncio  # pylint: disable=import-outside-toplevel
    node = vnc_portal
    alice, olga = Browser(node), Browser(node)
    alice.login("alice")
    olga.login("olga")

    async def scenario():
        sock, session = await open_relay(alice, vnc_relay_ticket(alice))
        try:
            await rfb_viewer(sock)
            loop = asyncio.get_running_loop()
            status = (await loop.run_in_executor(None, olga.post, "/vms/vm1/disconnect"))[0]
            while not sock.closed:
                await sock.receive(timeout=30)
            return status, sock.close_code
        finally:
            await sock.close()
            await session.close()
    assert asyncio.run(scenario()) == (303, 1000)
    closed = _procs.wait_until(lambda: [r for r in node.audit() if r["event"] == "portal_relay" and r["result"] == "closed"],
                               10, what="the relay's closing audit line")
    assert [(r["console"], r["reason"]) for r in closed] == [("vnc", "console_closed")]


# --- SPICE in the browser (spice-html5 through the relay) ---------------------------------------------

def spice_relay_ticket(browser, vm="vm1"):
    status, headers, page = browser.post("/vms/%s/browser/spice" % vm)
    assert status == 200, page
    assert "<script>" not in page and 'src="/static/spice-console.js"' in page
    assert "script-src 'self';" in headers["content-security-policy"]
    return re.search(r'data-ticket="([^"]+)"', page).group(1)


async def open_spice_channel(browser, ticket, channel_type, connection_id=0, origin=None):
    """(WebSocket, client session, link result) of one SPICE channel through the relay, linked as spice-html5 links
    (its caps; 128 bytes of its own in place of the ticket, which it does not have): the relay completes the link."""
    import aiohttp  # pylint: disable=import-outside-toplevel
    headers = {"Origin": origin or browser.node.url, "Cookie": "vmc_session=%s" % browser.cookie}
    session = aiohttp.ClientSession()
    try:
        sock = await session.ws_connect("%s/relay/v1/spice?ticket=%s" % (browser.node.url, ticket), ssl=browser.context,
                                        headers=headers, protocols=("binary",))
    except aiohttp.WSServerHandshakeError as exc:
        await session.close()
        return exc.status, None, None
    caps = (1 << 0) | (1 << 3)                              # PROTOCOL_AUTH_SELECTION, MINI_HEADER
    mess = struct.pack("<IBBIIII", connection_id, channel_type, 0, 1, 0, 18, caps)
    await sock.send_bytes(struct.pack("<4sIII", b"REDQ", 2, 2, len(mess)) + mess)
    received = bytearray()

    async def read(size):
        while len(received) < size:
            message = await sock.receive(timeout=20)
            if message.type != aiohttp.WSMsgType.BINARY:
                return None
            received.extend(message.data)
        data = bytes(received[:size])
        del received[:size]
        return data
    head = await read(16)
    if head is None:
        return sock, session, None
    reply = await read(struct.unpack_from("<I", head, 12)[0])
    sock.spice_link = head + reply
    if struct.unpack_from("<I", reply)[0]:
        return sock, session, struct.unpack_from("<I", reply)[0]
    await sock.send_bytes(struct.pack("<I", 1) + b"\0" * 128)     # AUTH_SPICE and a "ticket" QEMU would refuse
    result = await read(4)
    sock.spice_link += result
    sock.spice_received = received                                  # what followed the link (main: MAIN_INIT)
    sock.spice_read = read
    return sock, session, struct.unpack("<I", result)[0]


async def speak_spice(sock, channel_type):
    """Go on as a SPICE client does on a linked channel (spice-html5's spiceconn.js) until the WebSocket closes: a
    display channel asks for DISPLAY_INIT, SET_ACK is answered with ACK_SYNC, every window's worth of messages with an
    ACK, PING with PONG. A channel left half set up (linked, never initialised nor acknowledged) is what makes
    Debian 12's libspice-server 0.15.1 crash QEMU (a segfault in its SPICE Worker) once the channel disconnects."""
    import asyncio  # pylint: disable=import-outside-toplevel

    def message(msg_type, payload=b""):
        return struct.pack("<HI", msg_type, len(payload)) + payload
    if channel_type == 2:                                           # DISPLAY_INIT: spice-html5's caches
        await sock.send_bytes(message(101, struct.pack("<BqBI", 1, 10 * 1024 * 1024, 0, 0)))

    async def read(size):
        while True:
            try:
                return await sock.spice_read(size)
            except asyncio.TimeoutError:                            # a quiet channel (inputs) stays open
                continue
    window = left = None
    while True:
        head = await read(6)
        if head is None:
            return
        msg_type, size = struct.unpack("<HI", head)
        payload = await read(size) if size else b""
        if payload is None:
            return
        if msg_type == 3:                                           # SET_ACK (generation, window): ACK_SYNC
            window = left = struct.unpack_from("<II", payload)[1]
            await sock.send_bytes(message(1, payload[:4]))
            continue
        if msg_type == 4:                                           # PING (id, time): PONG
            await sock.send_bytes(message(3, payload[:12]))
        if window:
            left -= 1
            if left <= 0:
                left = window
                await sock.send_bytes(message(2))                  # ACK


async def spice_session_id(sock):
    """The session id of QEMU's MAIN_INIT (mini headers) on a linked main channel."""
    while True:
        msg_type, size = struct.unpack("<HI", await sock.spice_read(6))
        payload = await sock.spice_read(size)
        if msg_type == 103:
            return struct.unpack_from("<I", payload)[0]


def test_spice_through_the_relay_links_every_channel_with_tls_and_refuses_the_rest(cluster):
    import asyncio  # pylint: disable=import-outside-toplevel
    node, = cluster(1)
    alice = Browser(node)
    alice.login("alice")
    ticket = spice_relay_ticket(alice)

    async def scenario():
        out, held, clients = {}, [], []
        try:
            sock, session, result = await open_spice_channel(alice, ticket, MAIN)
            held.append((sock, session))
            out["main"] = result
            session_id = await spice_session_id(sock)
            out["spice ticket"] = read_ticket_file(default_ticket_file(node.vm.qmp_path))["ticket"]
            out["link bytes"] = sock.spice_link
            for channel in (2, 3, 4):                              # display, inputs, cursor
                sock2, session2, result = await open_spice_channel(alice, ticket, channel, session_id)
                held.append((sock2, session2))
                out[channel] = result
                if result == 0:                                    # as spice-html5 goes on with it
                    clients.append(asyncio.ensure_future(speak_spice(sock2, channel)))
            out["channels"] = sorted((c["channel-type"], c["tls"]) for c in spice_clients(node.vm))
            again, session3, result = await open_spice_channel(alice, ticket, MAIN)      # the ticket again
            held.append((again, session3))
            out["main again"] = (result, again.close_code)
            other, session4, result = await open_spice_channel(alice, ticket, 3, session_id ^ 1)   # not its session
            held.append((other, session4))
            out["other connection id"] = (result, other.close_code)
            out["other origin"] = (await open_spice_channel(alice, spice_relay_ticket(alice), MAIN,
                                                            origin="https://evil.example"))[0]
            assert alice.post("/logout")[0] == 303
            message = await sock.receive(timeout=20)
            while message.type == __import__("aiohttp").WSMsgType.BINARY:
                message = await sock.receive(timeout=20)
            out["after logout"] = sock.close_code
            return out
        finally:
            for one, session in held:
                await one.close()
                await session.close()
            for client in clients:
                client.cancel()
    out = asyncio.run(scenario())
    assert out["main"] == 0 and out[2] == 0 and out[3] == 0 and out[4] == 0, out
    assert out["channels"] == [(1, True), (2, True), (3, True), (4, True)], out
    assert out["main again"] == (None, 4401) and out["other connection id"] == (None, 4401), out
    assert out["other origin"] == 403 and out["after logout"] == 4001, out
    _procs.wait_until(lambda: not spice_clients(node.vm), 20, what="QEMU to drop the relay's channels")
    records = _procs.wait_until(
        lambda: [r for r in node.audit() if r["event"] == "portal_relay" and r["result"] == "closed"
                 and r.get("channel") == "main" and r.get("reason") != "refused"], 20, what="the main relay's closing line")
    assert records[0]["reason"] == "session_ended" and records[0]["bytes_to_browser"] > 0 and "seconds" in records[0]
    refused = [(r.get("channel"), r["reason"]) for r in node.audit() if r["event"] == "portal_relay"
               and r["result"] == "refused"]
    assert ("main", "ticket") in refused and ("inputs", "channel") in refused, refused
    # The SPICE ticket (the one the agent set and kept for a migration) linked every channel, yet never reached the
    # browser's side, nor any log.
    assert out["spice ticket"].encode() not in out["link bytes"]
    assert_no_secret(node, ticket, alice.cookie, out["spice ticket"])


def png_colours(data):
    """{(r, g, b): pixels} of a PNG screenshot (8-bit RGB or RGBA, not interlaced: what Chromium writes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, []
    while pos < len(data):
        size, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + size]
        pos += 12 + size
        if kind == b"IHDR":
            width, height, depth, colour_type, dummy, dummy, interlace = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
    assert depth == 8 and colour_type in (2, 6) and interlace == 0, (depth, colour_type, interlace)
    step = 3 if colour_type == 2 else 4
    raw, stride = zlib.decompress(b"".join(idat)), width * step
    previous, colours = bytearray(stride), collections.Counter()
    for row in range(height):
        kind, line = raw[row * (stride + 1)], bytearray(raw[row * (stride + 1) + 1:(row + 1) * (stride + 1)])
        for x in range(stride):
            left, up = line[x - step] if x >= step else 0, previous[x]
            corner = previous[x - step] if x >= step else 0
            if kind == 1:
                line[x] = (line[x] + left) & 255
            elif kind == 2:
                line[x] = (line[x] + up) & 255
            elif kind == 3:
                line[x] = (line[x] + (left + up) // 2) & 255
            elif kind == 4:
                guess = left + up - corner
                near = min((abs(guess - left), 0, left), (abs(guess - up), 1, up), (abs(guess - corner), 2, corner))
                line[x] = (line[x] + near[2]) & 255
        colours.update(tuple(line[i:i + 3]) for i in range(0, stride, step))
        previous = line
    return colours


def test_spice_in_chromium_shows_the_vms_screen(cluster, chromium, tmp_path):
    from selenium.webdriver.common.by import By  # pylint: disable=import-outside-toplevel
    if not os.path.exists("/usr/share/spice-html5/main.js"):
        pytest.fail("Debian's spice-html5 is not installed (tools/bootstrap.sh test installs it)")
    (node,), driver = cluster(1), chromium
    login_in_chromium(driver, node)
    driver.find_element(By.ID, "browser-spice-vm1").click()
    wait_in_browser(driver, node, lambda d: d.find_element(By.ID, "console-state").text == "connected", 30,
                    "SPICE main channel")
    wait_in_browser(driver, node, lambda d: d.find_elements(By.ID, "spice_surface_0"), 30, "display canvas")
    channels = _procs.wait_until(lambda: len(spice_clients(node.vm)) >= 4 and spice_clients(node.vm), 30,
                                 what="the relay's channels in query-spice")
    assert {c["channel-type"] for c in channels} >= {1, 2, 3, 4} and all(c["tls"] for c in channels), channels

    # The guest's screen as QEMU has it (SeaBIOS's text: light grey on black), and the canvas until it shows it.
    screendump = str(tmp_path / "screen.ppm")
    with node.vm.qmp() as qmp:
        qmp.execute("screendump", {"filename": screendump})
    with open(screendump, "rb") as handle:
        pixels = handle.read().split(b"\n", 3)[3]
    guest = collections.Counter(tuple(pixels[i:i + 3]) for i in range(0, len(pixels), 3))
    (background, dummy), (text_colour, dummy) = guest.most_common(2)

    def near(colours, colour):
        return sum(count for found, count in colours.items() if max(abs(a - b) for a, b in zip(found, colour)) <= 8)

    def screen():
        from selenium.common.exceptions import StaleElementReferenceException  # pylint: disable=import-outside-toplevel
        try:            # spice-html5 makes a new canvas when the guest's mode (the surface) changes
            shot = driver.find_element(By.ID, "spice_surface_0").screenshot_as_png
        except StaleElementReferenceException:
            return False
        colours = png_colours(shot)
        (tmp_path / "spice-canvas.png").write_bytes(shot)
        return near(colours, background) > sum(colours.values()) // 2 and near(colours, text_colour) >= 500 and colours
    colours = wait_in_browser(driver, node, lambda d: screen(), 30, "the VM's screen (%s on %s) on the canvas"
                              % (text_colour, background))
    chrome = png_colours(driver.find_element(By.TAG_NAME, "h1").screenshot_as_png)     # the page's own
    assert near(chrome, background) < sum(chrome.values()) // 2, chrome.most_common(3)
    assert near(chrome, text_colour) * 10 < near(colours, text_colour), (chrome.most_common(5), colours.most_common(5))
    errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == [], errors                                 # no script blocked, no CSP violation
    # Logging out (in another tab of the same session) ends the console in this one, with a clear message.
    driver.switch_to.new_window("tab")
    driver.get(node.url + "/")
    driver.find_element(By.CSS_SELECTOR, "form[action='/logout'] button").click()
    driver.switch_to.window(driver.window_handles[0])
    wait_in_browser(driver, node, lambda d: "session ended" in d.find_element(By.ID, "console-state").text, 30,
                    "end of the console at logout")
    _procs.wait_until(lambda: not spice_clients(node.vm), 20, what="QEMU to drop the relay's channels")


@pytest.fixture
def spice_guest_portal(pki, squid_factory):
    """One node whose vm1 is the boot-sector guest with a VGA screen on SPICE (TLS) and its TLS serial console."""
    yield from one_guest_portal(pki, squid_factory, "vmc-spk-",
                                lambda folder, disk: SpiceGuest("vm1", folder, disk=disk, pki_dir=pki.dir))


def test_typing_in_the_spice_page_reaches_the_guest(spice_guest_portal, chromium):
    """The keys typed into spice-html5 reach the guest as the physical keys they are, as noVNC's do: the guest (its
    BIOS, on COM1) reports each key's scan code, read through the serial relay."""
    from selenium.webdriver.common.by import By  # pylint: disable=import-outside-toplevel
    if not os.path.exists("/usr/share/spice-html5/main.js"):
        pytest.fail("Debian's spice-html5 is not installed (tools/bootstrap.sh test installs it)")
    node, driver = spice_guest_portal, chromium
    login_in_chromium(driver, node)
    driver.find_element(By.ID, "browser-spice-vm1").click()
    wait_in_browser(driver, node, lambda d: d.find_element(By.ID, "console-state").text == "connected", 30,
                    "SPICE main channel")
    canvas = wait_in_browser(driver, node, lambda d: d.find_elements(By.ID, "spice_surface_0"), 30, "display canvas")[0]
    _procs.wait_until(lambda: 3 in {c["channel-type"] for c in spice_clients(node.vm)}, 30,
                      what="the relay's inputs channel in query-spice")
    assert_keys_reach_the_guest(driver, node, canvas)
    errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == [], errors                                 # no script blocked, no CSP violation


# --- after a live migration the browser consoles open again by themselves --------------------------------------

class MigratingGuest(_procs.ConsoleRangeVM):
    """A guest as qemu_vm starts one with SPICE, ``vnc: true`` and ``serial: true``: SPICE over TLS in the console
    range, VeNCrypt VNC with the node's X.509 certificate and password=on (only a ticket set over QMP gets in), and
    COM1 on a TLS chardev in the serial range (verify-peer=on, ``tls-authz`` with an ``authz-list`` admitting
    ``serial_clients`` only: the portal nodes' certificates, as ``qemu_vm_serial_relays`` does). It boots
    tests/guest_image.py's boot sector from ``disk`` (shared storage: the same file on both nodes). The same devices
    on both nodes, so it migrates; ``extra_args`` ``-incoming defer`` makes the target."""

    def __init__(self, name, workdir, *, disk, serial_clients, **kwargs):
        self.disk, self.serial_clients, self.serial_port = disk, list(serial_clients), None
        super().__init__(name, workdir, **kwargs)

    def _argv(self, **options):
        from ansible_collections.vmconsole.secure.tests.integration.test_serial_console import SERIAL_PORTS  # pylint: disable=import-outside-toplevel
        argv = super()._argv(**dict(options, vnc=False))
        pki_dir = options["pki_dir"]
        at = argv.index("-serial")                                      # QemuVM's "-serial none" would take COM1
        del argv[at:at + 2]
        self.vnc_port = _procs.free_port(5900, 5999)                   # the proxy's VNC range in these tests
        self.serial_port = _procs.free_console_port(*SERIAL_PORTS)
        return argv + [
            "-object", "tls-creds-x509,id=vmconsole-vnc-tls,endpoint=server,verify-peer=off,dir=%s" % pki_dir,
            "-vnc", "127.0.0.1:%d,tls-creds=vmconsole-vnc-tls,password=on" % (self.vnc_port - 5900),
            "-drive", "file=%s,format=raw,if=virtio,readonly=on" % self.disk,
            "-object", "tls-creds-x509,id=vmconsole-serial-tls,endpoint=server,verify-peer=on,dir=%s" % pki_dir,
            "-object", authz_object_json(self.serial_clients),
            "-chardev", "socket,id=vmconsole-serial,host=127.0.0.1,port=%d,server=on,wait=off,"
                        "tls-creds=vmconsole-serial-tls,tls-authz=%s" % (self.serial_port, AUTHZ_ID),
            "-serial", "chardev:vmconsole-serial"]


def guest_fact(vm, state="started"):
    return {"state": state, "qmp": vm.qmp_path, "spice_tls_port": vm.tls_port, "vnc_port": vm.vnc_port,
            "serial_port": vm.serial_port}


@pytest.fixture
def migration(pki, squid_factory):
    """Two nodes, each a squid, an agent and a portal: vm1 (:class:`MigratingGuest`: SPICE, VNC and a serial console
    that admits both portal nodes' certificates) runs on the first (``source``) and waits on the second as a
    migration target (``target``, QEMU with ``-incoming defer``, the node's own certificate), as migrate.yml leaves
    them before the migration: both facts list vm1. Yields (first node, second node, source, target)."""
    if not _procs.have_qemu():
        pytest.skip("%s is not installed" % _procs.QEMU_BINARY)
    if not have_aiohttp():
        pytest.skip("aiohttp is not installed")
    names, signers, made, folders = [pki.cn, "vmc-portal-node1"], [new_proxy_signer(), new_proxy_signer()], [], []
    try:
        folders = [_procs.short_tmpdir("vmc-move-"), _procs.short_tmpdir("vmc-move-")]
        # The second node's QEMU has a certificate of its own name (the relay checks it, as the pki role makes them).
        cert, key = pki.issue([("CN", names[1])], node=True)
        target_pki = os.path.join(folders[1], "pki")
        os.makedirs(target_pki)
        for name, data, mode in (("ca-cert.pem", pki.ca_pem, 0o644), ("server-cert.pem", cert, 0o644),
                                 ("server-key.pem", key, 0o600)):
            _procs._write(os.path.join(target_pki, name), data.encode(), mode)
        from ansible_collections.vmconsole.secure.tests import guest_image  # pylint: disable=import-outside-toplevel
        disk = guest_image.write_image(os.path.join(folders[0], "guest.img"))
        relays = ["CN=%s" % name for name in names]                    # the portal nodes' certificates (CN only)
        source = MigratingGuest("vm1", folders[0], pki_dir=pki.dir, disk=disk, serial_clients=relays)
        made.append(source)
        target = MigratingGuest("vm1", folders[1], pki_dir=target_pki, disk=disk, serial_clients=relays,
                                extra_args=["-incoming", "defer"])
        made.append(target)
        ports = [_procs.free_port(), _procs.free_port()]
        urls = {name: "https://127.0.0.1:%d" % port for name, port in zip(names, ports)}
        nodes = []
        for index, vm in enumerate((source, target)):
            squid = squid_factory([signers[index], signers[1 - index]], self_name=names[index], nodes=[names[1 - index]],
                                  vms={"vm1": guest_fact(vm, "started" if index == 0 else "incoming")})
            node = PortalNode(folders[index], name=names[index], pki=pki, squid=squid, vm=vm, port=ports[index],
                              nodes=urls, server_cert_file=os.path.join(target_pki, "server-cert.pem") if index else None)
            made.append(node)
            nodes.append(node)
        yield nodes[0], nodes[1], source, target
    finally:
        for thing in reversed(made):
            thing.stop()
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)


def migrate(source, target):
    """vm1 from ``source`` to ``target`` over QMP (loopback TCP); returns once the target runs it."""
    uri = "tcp:127.0.0.1:%d" % _procs.free_port()
    with target.qmp() as qmp:
        qmp.execute("migrate-incoming", {"uri": uri})
    with source.qmp() as qmp:
        qmp.execute("migrate", {"uri": uri})
    with source.qmp() as qmp:
        _procs.wait_until(lambda: qmp.execute("query-migrate").get("status") in ("completed", "failed", "cancelled"),
                          60, what="the migration")
        assert qmp.execute("query-migrate")["status"] == "completed"
    with target.qmp() as qmp:
        _procs.wait_until(lambda: qmp.execute("query-status")["status"] == "running", 30, what="the target to run vm1")


def console_clients(vm):
    """(SPICE channel types, number of VNC clients) QEMU lists."""
    with vm.qmp() as qmp:
        return (sorted(c["channel-type"] for c in qmp.execute("query-spice")["channels"]),
                len(qmp.execute("query-vnc")["clients"]))


def relays_on(vm):
    """QEMU's clients (:func:`console_clients`) when they are one SPICE session with all four channels and one VNC
    client: the relays of one SPICE page and one VNC page; else None."""
    found = console_clients(vm)
    return found if found[0].count(MAIN) == 1 and len(found[0]) >= 4 and found[1] == 1 else None


def serial_lines(driver):
    """The numbers of the guest's lines ("vmconsole serial console ok N") the serial page's terminal shows."""
    return [int(n) for n in re.findall(r"vmconsole serial console ok (\d+)", terminal_text(driver))]


def spice_canvas_colours(driver):
    """How many distinct colours spice-html5's display canvas shows (1: blank, 0: none)."""
    return driver.execute_script(
        "var c = document.getElementById('spice_surface_0'); if (!c || !c.width) { return 0; }"
        "var d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data, seen = new Set();"
        "for (var i = 0; i < d.length; i += 4) { seen.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]); }"
        "return seen.size;")


def test_the_browser_consoles_reconnect_after_a_live_migration_and_not_after_a_cut(migration, chromium):
    from selenium.webdriver.common.by import By  # pylint: disable=import-outside-toplevel
    if not os.path.exists("/usr/share/spice-html5/main.js"):
        pytest.fail("Debian's spice-html5 is not installed (tools/bootstrap.sh test installs it)")
    first, second, source, target = migration
    driver = chromium
    login_in_chromium(driver, first)
    # The SPICE page in this window, the VNC page in another of the same session.
    driver.find_element(By.ID, "browser-spice-vm1").click()
    spice_window = driver.current_window_handle
    wait_in_browser(driver, first, lambda d: d.find_element(By.ID, "console-state").text == "connected", 30, "SPICE")
    wait_in_browser(driver, first, lambda d: spice_canvas_colours(d) > 1, 30, "the VM's screen on the SPICE canvas")
    driver.switch_to.new_window("window")
    vnc_window = driver.current_window_handle
    driver.get(first.url + "/")
    driver.find_element(By.ID, "browser-vnc-vm1").click()
    wait_in_browser(driver, first, lambda d: d.find_element(By.ID, "console-state").text == "connected", 30, "noVNC")
    wait_in_browser(driver, first, lambda d: canvas_colours(d) > 1, 30, "the VM's screen on the VNC canvas")
    # The serial page (xterm.js) in a third window: the guest's lines show.
    driver.switch_to.new_window("window")
    serial_window = driver.current_window_handle
    driver.get(first.url + "/")
    driver.find_element(By.ID, "browser-serial-vm1").click()
    wait_in_browser(driver, first, lambda d: d.find_element(By.ID, "console-state").text == "connected"
                    and serial_lines(d), 30, "the guest's line on the serial page")
    _procs.wait_until(lambda: relays_on(source), 30, what="the relays' SPICE channels and VNC client on the source")
    assert console_clients(target) == ([], 0)

    # The live migration, as migrate.yml does it: the target runs vm1, the facts follow, the source QEMU quits.
    migrate(source, target)
    second.squid.write_facts({"vm1": guest_fact(target)})
    first.squid.write_facts({"vm1": guest_fact(source, "stopped")})
    quit_at = time.monotonic()
    source.stop()

    def reconnected(window, state_of, canvas):
        driver.switch_to.window(window)
        box = driver.find_element(By.ID, state_of)
        if box.get_attribute("data-reconnects") != "1" or driver.find_element(By.ID, "console-state").text != "connected":
            return False
        return canvas(driver) > 1 and int(box.get_attribute("data-reconnect-gap"))
    serial_gap = wait_in_browser(driver, first, lambda d: reconnected(serial_window, "console", lambda dd: 2),
                                 60, "the serial page connected again")
    spice_gap = wait_in_browser(driver, first, lambda d: reconnected(spice_window, "spice-screen", spice_canvas_colours),
                                60, "the SPICE page connected again, the VM's screen on its canvas")
    vnc_gap = wait_in_browser(driver, first, lambda d: reconnected(vnc_window, "console", canvas_colours), 60,
                              "the VNC page connected again, the VM's screen on its canvas")
    found = _procs.wait_until(lambda: relays_on(target), 30,
                              what="the new relays' SPICE channels and VNC client on the target")
    seen = time.monotonic() - quit_at
    print("\nreconnect gap after the migration (the relay's close to connected again, as the page measured it): "
          "serial %d ms, SPICE %d ms, VNC %d ms; from the source QEMU's exit to all three pages connected to the "
          "target: %.1f s" % (serial_gap, spice_gap, vnc_gap, seen))
    assert found[0].count(MAIN) == 1 and found[1] == 1
    # The serial page shows a line of the guest that came after the reconnection (its count goes on from where it
    # was: the same guest, moved) and the guest's echo of a word typed now: both ways through the new relay.
    driver.switch_to.window(serial_window)
    last = max(serial_lines(driver), default=-1)
    wait_in_browser(driver, first, lambda d: max(serial_lines(d), default=-1) > last, 30,
                    "a new line of the guest on the serial page after the move")
    driver.find_element(By.CSS_SELECTOR, ".xterm-helper-textarea").send_keys("typed-after-the-move")
    wait_in_browser(driver, first, lambda d: "typed-after-the-move" in terminal_text(d), 30,
                    "the guest's echo of a word typed after the move")
    records = first.audit()
    moved = [(r["console"], r.get("node"), r.get("moved_to")) for r in records
             if r["event"] == "portal_relay" and r["result"] == "closed" and r["reason"] == "moved"]
    assert sorted(moved) == [("serial", first.name, second.name), ("spice", first.name, second.name),
                             ("vnc", first.name, second.name)], moved
    opened = [(r["console"], r.get("node")) for r in records if r["event"] == "portal_relay" and r["result"] == "open"
              and r.get("channel") in (None, "main")]
    assert sorted(opened) == sorted([("serial", first.name), ("serial", second.name), ("spice", first.name),
                                     ("spice", second.name), ("vnc", first.name), ("vnc", second.name)]), opened

    # A cut does not move the VM: the three pages end and stay ended.
    olga = Browser(first)
    olga.login("olga")
    assert olga.post("/vms/vm1/disconnect")[0] == 303
    for window, box in ((spice_window, "spice-screen"), (vnc_window, "console"), (serial_window, "console")):
        driver.switch_to.window(window)
        wait_in_browser(driver, first, lambda d: d.find_element(By.ID, "console-state").text
                        == "disconnected: the console was closed", 30, "the end of the console at the cut")
        assert driver.find_element(By.ID, box).get_attribute("data-reconnects") == "1"
    closed = _procs.wait_until(
        lambda: [(r["console"], r["reason"]) for r in first.audit() if r["event"] == "portal_relay"
                 and r["result"] == "closed" and r.get("node") == second.name and r.get("channel") in (None, "main")],
        20, what="the cut relays' closing lines")
    assert sorted(closed) == [(console, "console_closed") for console in ("serial", "spice", "vnc")], closed
    _procs.wait_until(lambda: console_clients(target) == ([], 0), 20, what="QEMU to drop the cut relays")
    tickets = [r for r in first.audit() if r["event"] == "portal_relay_ticket"]
    assert len(tickets) == 6, tickets       # three pages, one new ticket each after the move, none after the cut
    assert_no_secret(first, olga.cookie)
