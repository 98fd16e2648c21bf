# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The portal's web process: identities from certificates, where a VM is, what each refusal is. aiohttp's test
server over plain HTTP on loopback, the agents faked (tests/integration/test_portal.py runs the real ones)."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import os
import re
import sys
import types

import pytest
import struct

aiohttp = pytest.importorskip("aiohttp")
from aiohttp.test_utils import TestClient, TestServer  # noqa: E402
from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # noqa: E402

from ansible_collections.vmconsole.secure.plugins.module_utils import _portal  # noqa: E402


def certificate(cn, usages, dns=(), ips=()):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now)
               .not_valid_after(now + datetime.timedelta(days=1)))
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    if dns or ips:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName(n) for n in dns] + [x509.IPAddress(ipaddress.ip_address(a)) for a in ips]), critical=False)
    return builder.sign(key, hashes.SHA256())


PERSON = [ExtendedKeyUsageOID.CLIENT_AUTH]
NODE = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]


@pytest.mark.parametrize("cert, found", [
    (certificate("alice", PERSON), ("user", "alice")),
    (certificate("hv2", NODE, dns=["hv2", "hv2.example"]), ("node", ("hv2", "hv2.example"))),
    (certificate("hv2", NODE), None),                              # a node certificate without names
    (certificate("alice", [ExtendedKeyUsageOID.SERVER_AUTH]), None),
    (certificate("alice", None), None),                            # no extended key usage at all
])
def test_certificate_identity(cert, found):
    assert _portal.certificate_identity(cert.public_bytes(serialization.Encoding.DER)) == found


def test_certificate_names_are_the_hosts_the_portal_answers_to(tmp_path):
    path = tmp_path / "cert.pem"
    path.write_bytes(certificate("hv1", NODE, dns=["HV1", "hv1.example"], ips=["192.0.2.1", "fd00::1"])
                     .public_bytes(serialization.Encoding.PEM))
    assert _portal.certificate_names(str(path)) == {"hv1", "hv1.example", "192.0.2.1", "fd00::1"}


class FakeAgents:
    """Every node's agent: ``vms`` per node (None: the node does not answer); records what was asked."""

    def __init__(self, vms):
        self.vms, self.asked = vms, []

    async def __call__(self, node, request, timeout=None):
        self.asked.append((node, request))
        if self.vms.get(node) is None:
            raise OSError("down")
        if request["op"] == "vms":
            return dict(ok=True, node=node, vms=self.vms[node])
        if request["op"] == "spice":
            return dict(ok=True, node=node, vv="[virt-viewer]\ntype=spice\nhost=%s\n" % node, expires=1,
                        proxy_token_expires=2)
        return dict(ok=True, node=node, changed=True, spice_channels=0, tunnels_cut=0)


def vm(name, here=True, state="running", consoles=("spice",)):
    return dict(name=name, state=state, here=here, consoles=list(consoles))


@pytest.fixture
def portal(tmp_path):
    """(Portal, FakeAgents) with alice (console on web*), olga (operator on *), nodes hv1 (this one) and hv2."""
    cert = tmp_path / "cert.pem"
    cert.write_bytes(certificate("hv1", NODE, dns=["hv1"], ips=["127.0.0.1"]).public_bytes(serialization.Encoding.PEM))
    config = _portal.portal_config(dict(
        node="hv1", port=0, nodes={"hv1": "https://hv1:8443", "hv2": "https://hv2:8443"}, cert_file=str(cert),
        key_file="/nonexistent", ca_file="/nonexistent", audit_log=str(tmp_path / "portal.log"),
        users={"olga": {"groups": ["ops"]}}, vm_nodes={"web3": "hv2"},
        acl=[{"users": ["alice"], "vms": ["web*"], "role": "console"},
             {"groups": ["ops"], "vms": ["*"], "role": "operator"}]))
    portal = _portal.Portal(config)
    agents = FakeAgents({"hv1": [vm("web1"), vm("db1")], "hv2": [vm("web2"), vm("web1", here=False, state="postmigrate")]})
    portal.agent = agents
    return portal, agents


def identity(portal, user):
    return _portal.Identity(user, portal.groups_of(user), "certificate", None)


def run(coroutine):
    return asyncio.run(coroutine)


def test_the_list_holds_only_the_acls_vms_where_they_run(portal):
    p, _agents = portal
    vms, down = run(p.visible_vms(identity(p, "alice")))
    assert [(v["name"], v["node"], v["role"]) for v in vms] == [("web1", "hv1", "console"), ("web2", "hv2", "console")]
    assert down == []
    vms, _down = run(p.visible_vms(identity(p, "olga")))
    assert [v["name"] for v in vms] == ["db1", "web1", "web2"]


def test_after_a_migration_the_vm_is_where_it_runs(portal):
    p, agents = portal
    agents.vms = {"hv1": [vm("web1", here=False, state="postmigrate")], "hv2": [vm("web1")]}
    entry, role = run(p.locate(identity(p, "alice"), "web1"))
    assert (entry["node"], role) == ("hv2", "console")


@pytest.mark.parametrize("user, name, status, reason", [
    ("alice", "db1", 404, "not_in_acl"),              # exists, but not for alice: the same answer as a VM that does not
    ("alice", "web9", 404, "unknown_vm"),
    ("alice", "../etc", 404, "not_in_acl"),
    ("bob", "web1", 404, "not_in_acl"),               # nobody's ACL names bob
])
def test_vms_outside_the_acl_do_not_exist(portal, user, name, status, reason):
    p, _agents = portal
    with pytest.raises(_portal.Refused) as info:
        run(p.locate(identity(p, user), name))
    assert (info.value.status, info.value.reason) == (status, reason)


def test_a_stopped_vm_and_a_node_that_is_down(portal):
    p, agents = portal
    agents.vms["hv1"] = [vm("web1", here=False, state="stopped")]
    with pytest.raises(_portal.Refused) as info:
        run(p.locate(identity(p, "alice"), "web1"))
    assert (info.value.status, info.value.reason, str(info.value)) == (409, "not_running", "web1 is not running (stopped)")
    agents.vms["hv2"] = None
    with pytest.raises(_portal.Refused) as info:
        run(p.locate(identity(p, "alice"), "web3"))                  # known to run on hv2, which does not answer
    assert (info.value.status, info.value.reason) == (503, "node_down")
    vms, down = run(p.visible_vms(identity(p, "alice")))
    assert down == ["hv2"] and ("web3", "hv2", False) in [(v["name"], v["node"], v["here"]) for v in vms]


def test_only_operators_disconnect_and_every_node_is_asked(portal):
    p, agents = portal
    with pytest.raises(_portal.Refused) as info:
        run(p.disconnect(identity(p, "alice"), "web1", None))
    assert (info.value.status, info.value.reason) == (403, "not_operator")
    agents.asked.clear()
    answers, failed = run(p.disconnect(identity(p, "olga"), "web1", FakeRequest()))
    assert failed == {} and sorted(answers) == ["hv1", "hv2"]
    assert sorted(node for node, request in agents.asked if request["op"] == "cut") == ["hv1", "hv2"]


class FakeRequest:
    transport = None


def http(portal, coroutine_of_client):
    async def main():
        app = _portal.build_app(portal)
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            portal.config = portal.config._replace(port=client.port, hosts=portal.config.hosts | {"127.0.0.1"})
            return await coroutine_of_client(client)
    return asyncio.run(main())


def test_every_answer_carries_the_security_headers(portal):
    p, _agents = portal

    async def check(client):
        out = []
        for path in ("/login", "/no/such/path", "/"):
            response = await client.get(path, allow_redirects=False)
            out.append((path, response.status, dict(response.headers)))
        return out
    for path, status, headers in http(p, check):
        assert status in (200, 303, 404), path
        assert headers["Strict-Transport-Security"] == "max-age=31536000", path
        assert "default-src 'none'" in headers["Content-Security-Policy"] and "'unsafe-inline'" not in \
            headers["Content-Security-Policy"], path
        assert headers["X-Content-Type-Options"] == "nosniff" and headers["Cache-Control"] == "no-store", path


def test_browsers_send_the_portal_its_origin_with_its_own_forms(portal):
    # Under Referrer-Policy no-referrer a browser sends "Origin: null" with every POST, a same-origin form's
    # too (Fetch, "serializing a request origin"; Chromium does so): every login and button would be refused
    # as cross-origin. same-origin keeps the origin for the portal's own forms only; "null" stays refused.
    p, _agents = portal

    async def check(client):
        policy = (await client.get("/login")).headers["Referrer-Policy"]
        null = (await client.post("/login", data=dict(user="a", password="b"), headers={"Origin": "null"})).status
        return policy, null
    policy, null = http(p, check)
    assert policy in ("same-origin", "strict-origin", "strict-origin-when-cross-origin")
    assert null == 403


def test_the_login_page_has_no_inline_script_or_style(portal):
    p, _agents = portal

    async def get(client):
        return await (await client.get("/login")).text()
    page = http(p, get)
    assert "<script" not in page and "style=" not in page and "<style" not in page


def test_refusals_over_http(portal):
    p, _agents = portal

    async def check(client):
        origin = "https://127.0.0.1:%d" % client.port
        out = {}
        out["api_without_login"] = (await client.get("/api/v1/vms")).status
        out["cluster_without_certificate"] = (await client.post("/cluster/v1/agent", json={"op": "vms"})).status
        out["forged_host"] = (await client.get("/login", headers={"Host": "evil.example"})).status
        out["cross_origin_login"] = (await client.post("/login", data=dict(user="a", password="b"),
                                                       headers={"Origin": "https://evil.example"})).status
        out["cross_site_login"] = (await client.post("/login", data=dict(user="a", password="b"),
                                                     headers={"Origin": origin, "Sec-Fetch-Site": "cross-site"})).status
        out["unknown_user"] = (await client.post("/login", data=dict(user="nobody", password="b"),
                                                 headers={"Origin": origin})).status
        out["too_large"] = (await client.post("/login", data="user=a&password=" + "x" * 8000,
                                              headers={"Origin": origin,
                                                       "Content-Type": "application/x-www-form-urlencoded"})).status
        return out
    assert http(p, check) == dict(api_without_login=401, cluster_without_certificate=403, forged_host=421,
                                  cross_origin_login=403, cross_site_login=403, unknown_user=401, too_large=413)
    reasons = [json.loads(line).get("reason") or json.loads(line).get("result")
               for line in open(p.config.audit_log, encoding="utf-8")]
    assert reasons == ["no_session", "not_a_node", "wrong_host", "cross_origin", "cross_origin", "wrong_password",
                       "too_large"]


def test_a_page_escapes_what_it_shows():
    session = type("S", (), {"csrf": 'c"><x'})()
    page = _portal.vms_page(_portal.Identity("<b>alice</b>", (), "password", session),
                            [dict(name="web1", node="hv<1>", state="running", here=True, consoles=["spice"],
                                  role="operator")], ["<i>down</i>"])
    assert "<b>alice</b>" not in page and "&lt;b&gt;alice&lt;/b&gt;" in page
    assert "hv<1>" not in page and "<i>down</i>" not in page and 'value="c&quot;&gt;&lt;x"' in page
    assert re.search(r'id="disconnect-web1"', page)


class MovingAgents(FakeAgents):
    """web1 moves from hv1 to hv2 between the list and the issuance: hv1's agent says not_here."""

    async def __call__(self, node, request, timeout=None):
        if request["op"] == "spice" and node == "hv1":
            self.asked.append((node, request))
            self.vms = {"hv1": [vm("web1", here=False, state="postmigrate")], "hv2": [vm("web1")]}
            return dict(ok=False, error="not_here", message="vm web1 does not run on hv1")
        return await super().__call__(node, request, timeout)


def test_an_issuance_right_after_a_migration_goes_to_the_new_node(portal):
    p, _agents = portal
    agents = MovingAgents({"hv1": [vm("web1")], "hv2": []})
    p.agent = agents
    run(p.visible_vms(identity(p, "alice")))                         # the list says: hv1
    entry, answer = run(p.issue(FakeRequest(), identity(p, "alice"), "web1", "spice"))
    assert (entry["node"], answer["node"]) == ("hv2", "hv2")
    assert [(node, r["op"]) for node, r in agents.asked if r["op"] == "spice"] == [("hv1", "spice"), ("hv2", "spice")]


def test_issuances_within_a_moment_ask_where_once(portal):
    p, agents = portal
    for dummy in range(3):
        run(p.issue(FakeRequest(), identity(p, "alice"), "web1", "spice"))
    assert len([r for dummy, r in agents.asked if r["op"] == "vms"]) == 2     # hv1 and hv2, once


# --- a relay whose console's end closed: the VM moved, or was cut ------------------------------------------------

class PumpSocket:
    """The browser's side of a relay for ``_pump``: says nothing, records how the relay closed it."""

    def __init__(self):
        self.closed, self.close_code, self.close_message, self.quiet = False, None, None, asyncio.Event()

    def __aiter__(self):
        return self

    async def __anext__(self):
        await self.quiet.wait()
        raise StopAsyncIteration

    async def send_bytes(self, data):
        pass

    async def close(self, code, message):
        self.closed, self.close_code, self.close_message = True, code, message


class PumpWriter:
    def write(self, data):
        pass

    async def drain(self):
        pass

    def is_closing(self):
        return False

    def close(self):
        pass


def pump_after(p, before, now):
    """(reason, close code, audit fields) of a relay opened on ``before`` whose console's end closes (QEMU went away)
    while the agents say ``now`` about web1."""
    async def go():
        reader = asyncio.StreamReader()
        reader.feed_eof()
        sock, moved = PumpSocket(), {}
        reason = await _portal._pump(p, sock, reader, PumpWriter(), [0, 0], "cookie", None, asyncio.Event(),
                                     p.follower("web1", before), moved)
        return reason, sock.close_code, moved
    p.agent.vms = now
    return run(go())


@pytest.mark.parametrize("now, reason, code, moved", [
    ({"hv1": [vm("web1", here=False, state="postmigrate")], "hv2": [dict(vm("web1"), instance="b-2")]},
     "moved", _portal.CLOSE_MOVED, {"moved_to": "hv2"}),
    ({"hv1": [dict(vm("web1"), instance="c-3")], "hv2": []}, "moved", _portal.CLOSE_MOVED, {"moved_to": "hv1"}),
    ({"hv1": [dict(vm("web1"), instance="a-1")], "hv2": []}, "console_closed", 1000, {}),         # a cut
    ({"hv1": [vm("web1", here=False, state="stopped")], "hv2": []}, "console_closed", 1000, {}),  # shut down
    ({"hv1": None, "hv2": None}, "console_closed", 1000, {}),                                    # nobody answers
])
def test_a_relay_closes_with_moved_only_when_the_vm_moved(portal, now, reason, code, moved):
    p, _agents = portal
    before = dict(vm("web1"), node="hv1", instance="a-1")
    assert pump_after(p, before, now) == (reason, code, moved)
    assert code not in (_portal.CLOSE_SESSION_ENDED, _portal.CLOSE_TOKEN_EXPIRED)


# --- the relay's byte pump, on asyncio's event loop and on uvloop's -----------------------------------------------

LOOPS = ["asyncio", "uvloop"]


def run_on(kind, coroutine):
    """Run ``coroutine`` on a new event loop of ``kind``: asyncio's, or uvloop's as the portal takes it."""
    if kind == "uvloop":
        pytest.importorskip("uvloop")
        loop = _portal.event_loop()
    else:
        loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coroutine)
    finally:
        loop.close()


def test_the_portal_runs_on_uvloop_when_it_is_there(monkeypatch):
    uvloop = pytest.importorskip("uvloop")
    loop = _portal.event_loop()
    try:
        assert isinstance(loop, uvloop.Loop)
    finally:
        loop.close()
    monkeypatch.setitem(sys.modules, "uvloop", None)           # not installed: asyncio's own loop (run_app's default)
    assert _portal.event_loop() is None


class BrowserMessages:
    """The browser's side of a relay for ``_pump``: ``messages`` (bytes: binary, text: text) at once, then the end
    of the WebSocket once the console's ``expected`` bytes came through; what the relay sent is in ``sent``."""

    def __init__(self, messages, expected):
        self.messages, self.expected = list(messages), expected
        self.sent, self.got, self.closed, self.close_code = [], 0, False, None
        self.all_there = asyncio.Event()

    def __aiter__(self):
        return self

    async def __anext__(self):
        if self.messages:
            data = self.messages.pop(0)
            binary = isinstance(data, bytes)
            return types.SimpleNamespace(type=aiohttp.WSMsgType.BINARY if binary else aiohttp.WSMsgType.TEXT,
                                         data=data)
        await self.all_there.wait()
        raise StopAsyncIteration

    async def send_bytes(self, data):
        self.sent.append(bytes(data))
        self.got += len(data)
        if self.got >= self.expected:
            self.all_there.set()

    async def close(self, code, message):
        self.closed, self.close_code = True, code


@pytest.mark.parametrize("kind", LOOPS)
@pytest.mark.parametrize("coalesce", [True, False])
def test_the_pump_carries_every_byte_in_order_both_ways(portal, kind, coalesce):
    """What the browser sends reaches the console in order, the messages that came in together in one write (without
    ``coalesce``, the serial console's relay: one write each); what the console sends reaches the browser in order, in
    messages of at most RELAY_STREAM_LIMIT bytes; the counts are right."""
    p, _agents = portal
    up = [bytes([n % 251]) * (1 + n * 997 % 40000) for n in range(60)] + ["a key"]
    down = os.urandom(3 * 1024 * 1024 + 7)

    async def go():
        received, writes, finished = bytearray(), [], asyncio.Event()

        async def console(reader, writer):
            writer.write(down)
            await writer.drain()
            while True:
                data = await reader.read(1 << 16)
                if not data:
                    break
                received.extend(data)
            writer.close()
            finished.set()
        server = await asyncio.start_server(console, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=_portal.RELAY_STREAM_LIMIT)
        write = writer.write
        writer.write = lambda data: (writes.append(len(data)), write(data))
        sock, counts = BrowserMessages(up, len(down)), [0, 0]
        reason = await _portal._pump(p, sock, reader, writer, counts, "cookie", None, asyncio.Event(), coalesce=coalesce)
        await asyncio.wait_for(finished.wait(), 10)    # the console read to the end: the relay closed its side
        others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        await asyncio.gather(*others, return_exceptions=True)          # the pump's cancelled tasks
        server.close()
        await server.wait_closed()
        return reason, counts, bytes(received), writes, sock
    reason, counts, received, writes, sock = run_on(kind, go())
    sent_up = b"".join(m if isinstance(m, bytes) else m.encode() for m in up)
    assert reason == "browser_closed" and sock.closed and sock.close_code == 1000
    assert received == sent_up and b"".join(sock.sent) == down
    assert counts == [len(sent_up), len(down)]
    if coalesce:
        assert writes == [len(sent_up)]                 # 61 messages that were there at once: one write
    else:
        assert writes == [len(m) for m in up]           # a key per write
    assert max(len(m) for m in sock.sent) <= _portal.RELAY_STREAM_LIMIT


def test_the_moved_close_code_is_its_own():
    codes = [_portal.CLOSE_MOVED, _portal.CLOSE_SESSION_ENDED, _portal.CLOSE_TOKEN_EXPIRED, _portal.CLOSE_TICKET,
             _portal.CLOSE_LIMIT, _portal.CLOSE_UNREACHABLE, 1000]
    assert len(set(codes)) == len(codes) and 4000 <= _portal.CLOSE_MOVED < 5000


# --- VNC in the browser: the button, the page, noVNC's files ---------------------------------------------

STATIC = os.path.join(os.path.dirname(__file__), "..", "..", "..", "..", "roles", "console_portal", "files", "static")


def test_the_vnc_button_only_for_a_vm_with_vnc_here():
    session = type("S", (), {"csrf": "c"})()
    page = _portal.vms_page(_portal.Identity("alice", (), "password", session), [
        dict(name="web1", node="hv1", state="running", here=True, consoles=["spice", "vnc"], role="console"),
        dict(name="web2", node="hv1", state="running", here=True, consoles=["spice"], role="console"),
        dict(name="web3", node="hv2", state="inmigrate", here=False, consoles=["vnc"], role="console")], [])
    assert re.findall(r'id="browser-vnc-([^"]+)"', page) == ["web1"]
    assert 'action="/vms/web1/browser/vnc"' in page


def test_the_vnc_page_and_the_files_it_loads(portal):
    p, _agents = portal
    p = _portal.Portal(p.config._replace(static_dir=STATIC))
    p.agent = FakeAgents({"hv1": [vm("web1", consoles=("spice", "vnc"))], "hv2": []})
    cookie, session = p.sessions.create("alice", (), "password", "127.0.0.1")

    async def check(client):
        headers = {"Origin": "https://127.0.0.1:%d" % client.port, "Cookie": "vmc_session=%s" % cookie}
        response = await client.post("/vms/web1/browser/vnc", data=dict(csrf=session.csrf), headers=headers)
        out = dict(page=(response.status, await response.text(), response.headers["Content-Security-Policy"]))
        for name in ("vnc-console.js", "novnc/core/rfb.js", "novnc/vendor/vendor.json", "novnc/vendor.json",
                     "novnc/LICENSE.txt", "novnc/core/nosuch.js"):
            answer = await client.get("/static/" + name)
            out[name] = (answer.status, answer.headers.get("Content-Type").split(";")[0])
        return out
    out = http(p, check)
    status, page, policy = out.pop("page")
    assert status == 200 and "<title>VNC console of web1</title>" in page
    assert '<script type="module" src="/static/vnc-console.js"></script>' in page and "<script>" not in page
    assert re.search(r'data-ticket="[A-Za-z0-9_-]{40,}"', page) and 'data-console="vnc"' in page
    assert "script-src 'self';" in policy and "img-src 'self' data:;" in policy    # noVNC's cursor is a data: URL
    assert out == {"vnc-console.js": (200, "text/javascript"), "novnc/core/rfb.js": (200, "text/javascript"),
                   "novnc/vendor/vendor.json": (404, "text/plain"), "novnc/vendor.json": (404, "text/plain"),
                   "novnc/LICENSE.txt": (404, "text/plain"), "novnc/core/nosuch.js": (404, "text/plain")}
    ticket = re.search(r'data-ticket="([^"]+)"', page).group(1)
    relay = p.relay_tickets.take(ticket, session.id)
    assert (relay.user, relay.vm, relay.console) == ("alice", "web1", "vnc")


def test_no_vnc_page_for_a_vm_without_vnc(portal):
    p, _agents = portal
    cookie, session = p.sessions.create("alice", (), "password", "127.0.0.1")

    async def check(client):
        headers = {"Origin": "https://127.0.0.1:%d" % client.port, "Cookie": "vmc_session=%s" % cookie}
        return (await client.post("/vms/web1/browser/vnc", data=dict(csrf=session.csrf), headers=headers)).status
    assert http(p, check) == 404


# --- SPICE in the browser -----------------------------------------------------------------------------

def test_the_vm_list_offers_spice_in_the_browser_next_to_the_vv():
    session = type("S", (), {"csrf": "c"})()
    page = _portal.vms_page(_portal.Identity("alice", (), "password", session),
                            [dict(name="web1", node="hv1", state="running", here=True, consoles=["spice"],
                                  role="console")], [])
    assert 'id="spice.vv-web1"' in page and 'action="/vms/web1/browser/spice"' in page
    assert 'id="browser-spice-web1">SPICE in the browser<' in page


def test_spice_html5_is_served_from_its_package_and_nothing_else(portal, tmp_path):
    p, _agents = portal
    (tmp_path / "spice").mkdir()
    (tmp_path / "spice" / "main.js").write_text("export {};")
    (tmp_path / "spice" / "thirdparty").mkdir()
    (tmp_path / "spice" / "thirdparty" / "rsa.js").write_text("export {};")
    (tmp_path / "spice" / "spice_auto.html").write_text("<script>inline</script>")
    p.config = p.config._replace(spice_html5_dir=str(tmp_path / "spice"))

    async def get(client):
        out = {}
        for name in ("main.js", "thirdparty/rsa.js", "spice_auto.html", "../spice/main.js", "nosuch.js"):
            response = await client.get("/static/spice-html5/" + name)
            out[name] = (response.status, response.headers.get("Content-Type"))
        return out
    assert http(p, get) == {"main.js": (200, "text/javascript"), "thirdparty/rsa.js": (200, "text/javascript"),
                            "spice_auto.html": (404, "text/plain; charset=utf-8"),
                            "../spice/main.js": (404, "text/plain; charset=utf-8"),
                            "nosuch.js": (404, "text/plain; charset=utf-8")}


def test_the_spice_page_and_its_relay_refusals(portal):
    p, _agents = portal
    cookie, session = p.sessions.create("alice", (), "password", "127.0.0.1")

    async def check(client):
        origin = "https://127.0.0.1:%d" % client.port
        headers = {"Origin": origin, "Cookie": "vmc_session=" + cookie, "X-CSRF-Token": session.csrf}
        response = await client.post("/vms/web1/browser/spice", headers=headers)
        page, csp = await response.text(), response.headers["Content-Security-Policy"]
        ticket = re.search(r'data-ticket="([^"]+)"', page).group(1)
        api = await (await client.post("/api/v1/vms/web1/relay/spice", headers=headers)).json()
        out = dict(page=(response.status, page, csp), api=api)
        url = "/relay/v1/spice?ticket=" + ticket
        for label, sent in (("other origin", {"Origin": "https://evil.example", "Cookie": headers["Cookie"]}),
                            ("no session", {"Origin": origin})):
            try:
                await client.ws_connect(url, headers=sent, protocols=("binary",))
            except aiohttp.WSServerHandshakeError as exc:
                out[label] = exc.status
        sent = {"Origin": origin, "Cookie": headers["Cookie"]}
        for label, first in (("not spice", b"GET / HTTP/1.0\r\n\r\n" + b"x" * 16),
                             ("a channel without its main relay", link_mess(channel_type=2, connection_id=42))):
            sock = await client.ws_connect(url, headers=sent, protocols=("binary",))
            out["protocol"] = sock.protocol
            await sock.send_bytes(first)
            await sock.receive(timeout=10)
            out[label] = sock.close_code
            await sock.close()
        return out
    out = http(p, check)
    status, page, csp = out["page"]
    assert status == 200 and '<script type="module" src="/static/spice-console.js"></script>' in page
    assert "<script>" not in page and "style=" not in page
    assert "script-src 'self';" in csp and "img-src 'self' data:;" in csp and "media-src blob:;" in csp
    assert out["api"]["console"] == "spice" and out["api"]["url"] == "/relay/v1/spice?ticket=" + out["api"]["ticket"]
    assert out["protocol"] == "binary"                  # spice-html5 asks for it; without it Chromium drops the socket
    assert (out["other origin"], out["no session"]) == (403, 401)
    assert (out["not spice"], out["a channel without its main relay"]) == (1002, 4401)
    records = [json.loads(line) for line in open(p.config.audit_log, encoding="utf-8")]
    assert [(r.get("channel"), r.get("reason")) for r in records if r["event"] == "portal_relay"] == [
        (None, "link"), ("display", "ticket")]


def test_the_relays_decline_permessage_deflate(portal):
    """Browsers offer permessage-deflate; the relays answer without it (a third of the throughput, 150 KiB more per
    relay, and what a person types compressed with what a page shows)."""
    p, _agents = portal
    cookie, _session = p.sessions.create("alice", (), "password", "127.0.0.1")

    async def check(client):
        sent = {"Origin": "https://127.0.0.1:%d" % client.port, "Cookie": "vmc_session=" + cookie}
        out = {}
        for url in ("/relay/v1", "/relay/v1/spice?ticket=x"):
            sock = await client.ws_connect(url, headers=sent, protocols=("binary",), compress=15)
            out[url] = sock.compress
            await sock.close()
        return out
    assert http(p, check) == {"/relay/v1": 0, "/relay/v1/spice?ticket=x": 0}


def link_mess(channel_type=1, connection_id=0):
    body = struct.pack("<IBBIIII", connection_id, channel_type, 0, 1, 0, 18, (1 << 0) | (1 << 3))
    return struct.pack("<4sIII", b"REDQ", 2, 2, len(body)) + body
