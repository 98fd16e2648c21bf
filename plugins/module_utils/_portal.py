# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The console portal's web process (private): HTTPS pages and a JSON API that hand a person their console.

Runs as an unprivileged user on aiohttp (Debian's python3-aiohttp); no HTTP is parsed here. What
it decides: who the person is (a password or a client certificate, ``_portal_auth``), which VMs
exist for them (the ACL: a VM outside it is 404, not 403), where each VM runs now (every node's
agent, the local one over its Unix socket and the others through their portals over mutual TLS
with the nodes' certificates), and what every refusal looks like. What needs root (a ticket, a
token, a cut) is done by the agent of the VM's node (``_portal_agent``) with the code of
console_ticket and console_session.

Routes (all HTTPS; pages need a session, the API a session or a client certificate):

  GET  /login, POST /login, POST /login/certificate, POST /logout
  GET  /                                  the person's VMs
  POST /vms/VM/spice.vv                   the .vv (application/x-virt-viewer, attachment, no-store)
  POST /vms/VM/serial                     the serial console's command, with its token
  POST /vms/VM/disconnect                 operators: every session of the VM cut, on every node
  GET  /api/v1/vms, GET /api/v1/vms/VM    the same as JSON
  POST /vms/VM/browser/CONSOLE            a browser console's page (serial: xterm.js, spice: spice-html5)
  GET  /relay/v1, GET /relay/v1/spice      the browser consoles' WebSockets (``_relay``, ``_relay_spice``)
  GET|POST /api/v1/vms/VM/spice.vv, POST /api/v1/vms/VM/serial, POST /api/v1/vms/VM/disconnect
  POST /cluster/v1/agent                  another node's portal (its node certificate) asks this node's agent

Every state-changing request from a browser session carries the session's CSRF token and, when the
browser sends one, an ``Origin`` of this portal; ``Sec-Fetch-Site: cross-site`` is refused outright.
Every login, refusal, ``.vv``, serial token and cut is a JSON line in the audit log (the format of
``tickets.log``); no password, ticket, token or cookie is ever logged.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import html
import json
import os
import signal
import ssl
import sys
import time
import zipfile
from urllib.parse import urlencode, urlsplit

try:
    from aiohttp import ClientError, ClientSession, ClientTimeout, TCPConnector, web
    HAS_AIOHTTP = True
except ImportError:      # pragma: no cover  # the portal's node has python3-aiohttp; the controller needs none
    HAS_AIOHTTP = False

try:
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    HAS_CRYPTOGRAPHY = True
except ImportError:      # pragma: no cover
    HAS_CRYPTOGRAPHY = False

from ansible_collections.vmconsole.secure.plugins.module_utils._files import AuditLog, audit_record
from ansible_collections.vmconsole.secure.plugins.module_utils._portal_agent import AGENT_SOCKET, ask
from ansible_collections.vmconsole.secure.plugins.module_utils._portal_auth import (
    LoginLimiter,
    SessionStore,
    csrf_ok,
    dummy_verify,
    parse_acl,
    parse_users,
    verify_password,
    vm_role,
)
from ansible_collections.vmconsole.secure.plugins.module_utils._relay import (
    CONSOLES as RELAY_CONSOLES,
    MOVED,
    RELAY_STREAM_LIMIT,
    RELAY_TICKET_TTL,
    RelayError,
    RelayLimits,
    RelayTickets,
    VncTurns,
    follow_console,
    open_through_proxy,
    placement_of,
    reconnect_bounds,
)
from ansible_collections.vmconsole.secure.plugins.module_utils._relay_vnc import BrowserBytes, greet_browser, open_vnc, vendored_static
from ansible_collections.vmconsole.secure.plugins.module_utils._relay_spice import (
    CHANNEL_NAMES as SPICE_CHANNEL_NAMES,
    LINK_TIMEOUT as SPICE_LINK_TIMEOUT,
    ByteReader,
    MainInitWatch,
    SpiceRelays,
    TappedReader,
    console_from_vv,
    link_channel,
    open_spice,
    read_link_mess,
)
from ansible_collections.vmconsole.secure.plugins.module_utils._spice import MAIN as SPICE_MAIN
from ansible_collections.vmconsole.secure.plugins.module_utils._tickets import VM_NAME_PATTERN
from ansible_collections.vmconsole.secure.plugins.module_utils._vv import VV_MIME_TYPE

COOKIE = "vmc_session"
STATIC_DIR = "/usr/lib/vmconsole/portal/static"
# The files under /static/ (from static_dir; portal.css is built in): name -> content type. Nothing else is served.
STATIC_FILES = {"browser-console.js": "text/javascript", "xterm/xterm.js": "text/javascript",
                "xterm/xterm.css": "text/css", "vnc-console.js": "text/javascript",
                "spice-console.js": "text/javascript", "spice-keys.js": "text/javascript",
                "console-reconnect.js": "text/javascript"}
# ...and the vendored noVNC's ES modules (novnc/core/..., novnc/vendor/...), as its vendor.json lists them.
# spice-html5's ES modules, served as /static/spice-html5/NAME from spice_html5_dir (Debian's package spice-html5).
SPICE_HTML5_DIR = "/usr/share/spice-html5"
SPICE_HTML5_FILES = frozenset(
    ["atKeynames.js", "bitmap.js", "cursor.js", "display.js", "enums.js", "filexfer.js", "inputs.js", "lz.js", "main.js",
     "playback.js", "png.js", "port.js", "quic.js", "resize.js", "simulatecursor.js", "spicearraybuffer.js",
     "spiceconn.js", "spicedataview.js", "spicemsg.js", "spicetype.js", "ticket.js", "utils.js", "webm.js", "wire.js",
     "thirdparty/jsbn.js", "thirdparty/prng4.js", "thirdparty/rng.js", "thirdparty/rsa.js", "thirdparty/sha1.js"])
# The SPICE page: spice-html5 draws JPEG images and cursors from data: URLs, plays video streams from blob: URLs and
# places a video over the canvas with a style attribute; scripts stay 'self' (ES modules from /static).
SPICE_CSP = ("default-src 'none'; style-src 'self' 'unsafe-inline'; script-src 'self'; img-src 'self' data:; "
             "media-src blob:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
# The browser console's page lets xterm.js add its own <style> elements (theme, cell size); scripts stay 'self'.
CONSOLE_CSP = ("default-src 'none'; style-src 'self' 'unsafe-inline'; script-src 'self'; img-src 'self'; "
               "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
# noVNC draws the VM's mouse pointer as a CSS cursor from a data: URL of its canvas.
VNC_CSP = CONSOLE_CSP.replace("img-src 'self'", "img-src 'self' data:")
MAX_BODY = 4096
NODE_TIMEOUT = 5.0          # seconds a node's portal or agent may take to answer
WHERE_CACHE = 2.0           # seconds an issuance may go by the last answer of where each VM runs
CUT_TIMEOUT = 30.0          # a cut watches the proxy for the helper's answer cache (5 s by default) before it answers
ROLES_ORDER = ("console", "operator")
SECURITY_HEADERS = {
    "Strict-Transport-Security": "max-age=31536000",
    "Content-Security-Policy": ("default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; "
                                "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",        # no-referrer would make Chromium send "Origin: null" on a same-origin POST
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cache-Control": "no-store",
}
STYLE = """body{font-family:sans-serif;margin:2em;max-width:60em}table{border-collapse:collapse}
td,th{padding:.3em .8em;border-bottom:1px solid #ccc;text-align:left}form{display:inline}
.error{color:#a00}.note{color:#555}code{background:#eee;padding:.2em;word-break:break-all}
#spice-screen canvas{background:#000}
"""


# The application's key of the Portal (aiohttp 3.9+ wants a typed key; Debian 12 has 3.8).
PORTAL_KEY = web.AppKey("portal") if HAS_AIOHTTP and hasattr(web, "AppKey") else "portal"


_PORTAL_FIELDS = ("node public hosts port nodes proxy agent_socket users acl vm_nodes cert_file key_file ca_file "
                  "audit_log session_idle session_absolute login relays static_dir static_zip spice_html5_dir")


class PortalConfig(collections.namedtuple("PortalConfig", _PORTAL_FIELDS)):
    """The portal's configuration (the JSON file the role writes), checked by :func:`portal_config`."""


def portal_config(data):
    """A :class:`PortalConfig` from the role's JSON object; ValueError names the key and why."""
    if not isinstance(data, dict):
        raise ValueError("the portal configuration must be a JSON object")
    nodes = data.get("nodes") or {}
    if not isinstance(nodes, dict) or not all(isinstance(url, str) and url.startswith("https://") for url in nodes.values()):
        raise ValueError("nodes must map node names to https:// URLs of their portals")
    login = dict(max_failures=5, window=300, lockout=900)
    login.update(data.get("login") or {})
    return PortalConfig(
        node=data["node"],
        public=bool(data.get("public", True)),
        hosts=frozenset(name.lower() for name in data.get("hosts", [])) | certificate_names(data["cert_file"]),
        port=int(data.get("port", 8443)),
        nodes=dict(nodes),
        proxy=data.get("proxy"),
        agent_socket=data.get("agent_socket", AGENT_SOCKET),
        users=parse_users(data.get("users") or {}),
        acl=parse_acl(data.get("acl") or []),
        vm_nodes=dict(data.get("vm_nodes") or {}),
        cert_file=data["cert_file"],
        key_file=data["key_file"],
        ca_file=data["ca_file"],
        audit_log=data.get("audit_log"),
        session_idle=int(data.get("session_idle", 900)),
        session_absolute=int(data.get("session_absolute", 28800)),
        login={key: int(value) for key, value in login.items()},
        relays={key: int(value) for key, value in dict(dict(per_user=4, per_vm=8), **(data.get("relays") or {})).items()},
        static_dir=data.get("static_dir", STATIC_DIR),
        static_zip=data.get("static_zip"),
        spice_html5_dir=data.get("spice_html5_dir", SPICE_HTML5_DIR),
    )


def say(text):
    """One line on standard error (the journal, under systemd). Never a secret."""
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


# --- who is at the other end ----------------------------------------------------------------------

Identity = collections.namedtuple("Identity", "user groups method session")


def certificate_identity(der):
    """``("user", CN)`` of a person's client certificate, ``("node", names)`` of a node certificate, or None.

    A person's certificate (``client_cert.yml``) has the extended key usage clientAuth only; a node's
    (the pki role) has serverAuth too, and is never taken for a person, whatever its CN.
    """
    if not der or not HAS_CRYPTOGRAPHY:
        return None
    cert = x509.load_der_x509_certificate(der)
    try:
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return None
    if ExtendedKeyUsageOID.CLIENT_AUTH not in usages:
        return None
    if ExtendedKeyUsageOID.SERVER_AUTH in usages:
        try:
            names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return None
        return ("node", tuple(name.lower() for name in names.get_values_for_type(x509.DNSName)))
    common = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(common) != 1 or not common[0].value:
        return None
    return ("user", common[0].value)


def certificate_names(path):
    """The DNS names and IP addresses (as text, lower case) in the subjectAltName of the PEM certificate at ``path``:
    the host names the portal answers to (a browser only trusts it under one of them anyway)."""
    if not HAS_CRYPTOGRAPHY:
        return frozenset()
    with open(path, "rb") as handle:
        cert = x509.load_pem_x509_certificate(handle.read())
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return frozenset()
    return frozenset([name.lower() for name in names.get_values_for_type(x509.DNSName)]
                     + [str(address) for address in names.get_values_for_type(x509.IPAddress)])


def peer_certificate(request):
    """The DER of the verified client certificate of ``request``'s TLS connection, or None."""
    ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
    if ssl_object is None:
        return None
    return ssl_object.getpeercert(binary_form=True)


def client_of(request):
    """The client's address as the portal sees it (taken when the request came in: a WebSocket's transport is gone
    once it closed)."""
    try:
        return getattr(request, "remote", None) or "unknown"
    except (AttributeError, RuntimeError):
        return "unknown"


# --- pages ------------------------------------------------------------------------------------------

def _e(text):
    return html.escape(str(text), quote=True)


def page(title, body, user=None, csrf=None, styles=()):
    """A whole HTML page (no inline script or style); ``user`` and ``csrf`` add the logout button, ``styles`` more
    stylesheets."""
    logout = ""
    if user is not None:
        logout = ('<p class="note">%s &middot; <form method="post" action="/logout"><input type="hidden" name="csrf" '
                  'value="%s"><button type="submit">Log out</button></form></p>' % (_e(user), _e(csrf)))
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>%s</title>'
            '<link rel="stylesheet" href="/static/portal.css">%s</head><body><h1>%s</h1>%s%s</body></html>\n'
            % (_e(title), "".join('<link rel="stylesheet" href="%s">' % _e(s) for s in styles), _e(title), logout,
               body))


def login_page(error=None, certificate_user=None):
    """The login form; with a person's certificate at hand, a button to log in with it."""
    body = '<p class="error">%s</p>' % _e(error) if error else ""
    if certificate_user:
        body += ('<form method="post" action="/login/certificate"><button type="submit" id="login-certificate">'
                 'Log in as %s (client certificate)</button></form><p>or with a password:</p>' % _e(certificate_user))
    body += ('<form method="post" action="/login"><p><label>User <input name="user" id="user" autocomplete="username" '
             'required></label></p><p><label>Password <input name="password" id="password" type="password" '
             'autocomplete="current-password" required></label></p><p><button type="submit" id="login">Log in</button>'
             '</p></form>')
    return page("Console portal", body)


def vms_page(identity, vms, problems, message=None):
    """The person's VMs with a form per action."""
    session = identity.session
    rows = []
    for vm in vms:
        actions = []
        if vm["here"] and "spice" in vm["consoles"]:
            actions.append(_button(vm["name"], "spice.vv", "Open SPICE (remote-viewer)", session.csrf))
            actions.append(_button(vm["name"], "browser/spice", "SPICE in the browser", session.csrf))
        if vm["here"] and "vnc" in vm["consoles"]:
            actions.append(_button(vm["name"], "browser/vnc", "VNC in the browser", session.csrf))
        if vm["here"] and "serial" in vm["consoles"]:
            actions.append(_button(vm["name"], "browser/serial", "Serial in the browser", session.csrf))
            actions.append(_button(vm["name"], "serial", "Serial console command", session.csrf))
        if vm["role"] == "operator":
            actions.append(_button(vm["name"], "disconnect", "Disconnect everyone", session.csrf))
        rows.append('<tr id="vm-%s"><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td></tr>' % (
            _e(vm["name"]), _e(vm["name"]), _e(vm["node"] or "?"), _e(vm["state"]), _e(", ".join(vm["consoles"])),
            " ".join(actions)))
    body = '<p class="note">%s</p>' % _e(message) if message else ""
    body += "".join('<p class="error">%s</p>' % _e(text) for text in problems)
    table = '<table id="vms"><tr><th>VM</th><th>node</th><th>state</th><th>consoles</th><th></th></tr>%s</table>'
    body += table % "".join(rows) if rows else "<p>No VMs for you.</p>"
    return page("Your consoles", body, identity.user, session.csrf)


def _button(vm, action, label, csrf):
    values = (_e(vm), _e(action), _e(csrf), _e(action.replace("/", "-")), _e(vm), _e(label))
    return ('<form method="post" action="/vms/%s/%s"><input type="hidden" name="csrf" value="%s">'
            '<button type="submit" id="%s-%s">%s</button></form>' % values)


# --- the application ----------------------------------------------------------------------------------

class Redirect(Exception):
    """Answer 303 to ``location`` (setting the session cookie, or clearing it)."""

    def __init__(self, location, cookie=None, clear_cookie=False):
        super().__init__(location)
        self.location = location
        self.cookie = cookie
        self.clear_cookie = clear_cookie


class Refused(Exception):
    """A request the portal answers with ``status`` and ``message`` (and audits as ``reason``)."""

    def __init__(self, status, message, reason):
        super().__init__(message)
        self.status = status
        self.reason = reason


class Portal:
    """The portal's state: configuration, sessions, login limits, the audit log and the cluster client."""

    def __init__(self, config, clock=time.monotonic):
        self.config = config
        self.sessions = SessionStore(idle=config.session_idle, absolute=config.session_absolute, clock=clock)
        self.limiter = LoginLimiter(max_failures=config.login["max_failures"], window=config.login["window"],
                                    lockout=config.login["lockout"], clock=clock)
        self.client_context = None
        self._client = None
        self.relay_tickets = RelayTickets(clock=clock)
        self.clock = clock
        self._where = None                              # (when, cluster_vms()) for issuances
        self.relay_limits = RelayLimits(per_user=config.relays["per_user"], per_vm=config.relays["per_vm"])
        self.vnc_turns = VncTurns()
        self.relays = collections.defaultdict(set)      # session id -> an asyncio.Event per open browser console
        self.static = StaticFiles(zip_path=config.static_zip, folder=config.static_dir)
        self.static_files = dict(STATIC_FILES, **vendored_static(self.static.read))
        self.spice_relays = SpiceRelays()               # the open SPICE main relays, which admit their channels

    # --- audit
    def audit(self, event, request, **fields):
        """One JSON line in the audit log: the event, who (if known), from where; never a secret."""
        record = audit_record(event, client=client_of(request), portal_node=self.config.node, **fields)
        try:
            AuditLog(self.config.audit_log, False).write(record)      # opened per record: logrotate may move it
        except OSError as exc:
            say("vmconsole-portal: the audit log %s cannot be written: %s" % (self.config.audit_log, exc))

    # --- identity
    def groups_of(self, user):
        known = self.config.users.get(user)
        return tuple(known.groups) if known else ()

    def identity(self, request, api):
        """The person of ``request`` (session cookie, or for the API a person's client certificate), or None."""
        session = self.sessions.get(request.cookies.get(COOKIE))
        if session is not None:
            return Identity(session.user, tuple(session.groups), session.method, session)
        if api:
            found = certificate_identity(peer_certificate(request))
            if found and found[0] == "user":
                return Identity(found[1], self.groups_of(found[1]), "certificate", None)
        return None

    def role(self, identity, vm):
        return vm_role(self.config.acl, identity.user, identity.groups, vm)

    # --- the agents
    async def agent(self, node, request, timeout=NODE_TIMEOUT):
        """``node``'s agent's answer to ``request`` (this node's over its socket, another's through its portal)."""
        if node == self.config.node:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(None, functools.partial(ask, self.config.agent_socket, request, timeout))
        url = self.config.nodes[node] + "/cluster/v1/agent"
        async with self.client().post(url, json=request, timeout=ClientTimeout(total=timeout)) as response:
            if response.status != 200:
                raise ClientError("%s answered %d" % (node, response.status))
            return await response.json()

    def reload_client_context(self, context):
        """Use ``context`` for new connections to other nodes (a renewed certificate or CA bundle)."""
        self.client_context = context
        old, self._client = self._client, None
        if old is not None:
            asyncio.get_running_loop().create_task(old.close())

    def client(self):
        if self._client is None:
            self._client = ClientSession(connector=TCPConnector(ssl=self.client_context),
                                         timeout=ClientTimeout(total=NODE_TIMEOUT))
        return self._client

    async def ask_all(self, request, timeout=NODE_TIMEOUT):
        """{node: answer or None (it did not answer within ``timeout``)} of every node's agent, in parallel."""
        nodes = sorted(set(self.config.nodes) | {self.config.node})

        async def one(node):
            try:
                return await asyncio.wait_for(self.agent(node, request, timeout), timeout)
            except (OSError, ValueError, asyncio.TimeoutError, ClientError):
                return None
        answers = await asyncio.gather(*(one(node) for node in nodes))
        return dict(zip(nodes, answers))

    async def cluster_vms(self, cached=False):
        """({vm: {"name", "node", "state", "here", "consoles"}}, [node names that did not answer]).

        ``cached``: the answer of at most :data:`WHERE_CACHE` seconds ago will do (an issuance that finds the VM gone
        from that node asks again: :meth:`issue`).
        """
        now = self.clock()
        if cached and self._where is not None and now - self._where[0] < WHERE_CACHE:
            return self._where[1]
        answers = await self.ask_all({"op": "vms"})
        found, down = {}, []
        for node, answer in sorted(answers.items()):
            if not answer or not answer.get("ok"):
                down.append(node)
                continue
            for vm in answer.get("vms", []):
                known = found.get(vm["name"])
                if known is None or (vm["here"] and not known["here"]):
                    found[vm["name"]] = dict(vm, node=node)
        for name, node in self.config.vm_nodes.items():
            if name not in found and node in down:
                found[name] = dict(name=name, node=node, state="unknown (%s does not answer)" % node, here=False,
                                   consoles=[])
        self._where = (now, (found, down))
        return found, down

    async def visible_vms(self, identity):
        found, down = await self.cluster_vms()
        vms = []
        for name, vm in sorted(found.items()):
            role = self.role(identity, name)
            if role is not None:
                vms.append(dict(vm, role=role))
        return vms, down

    async def locate(self, identity, vm, need=None, cached=False):
        """(the VM, its role for ``identity``), or Refused: 404 outside the ACL, 503 node down, 409 not running."""
        if not VM_NAME_PATTERN.fullmatch(vm) or self.role(identity, vm) is None:
            raise Refused(404, "no such VM", "not_in_acl")
        role = self.role(identity, vm)
        if need == "operator" and role != "operator":
            raise Refused(403, "only an operator of %s may do that" % vm, "not_operator")
        found, down = await self.cluster_vms(cached)
        entry = found.get(vm)
        if entry is None:
            if down:
                raise Refused(503, "%s cannot be reached now (%s does not answer); try again" % (vm, ", ".join(down)),
                              "node_down")
            raise Refused(404, "no such VM", "unknown_vm")
        if not entry["here"] and need is None:
            if down:
                raise Refused(503, "%s cannot be reached now (%s does not answer); try again"
                              % (vm, ", ".join(down)), "node_down")
            raise Refused(409, "%s is not running (%s)" % (vm, entry["state"]), "not_running")
        return entry, role

    async def issue(self, request, identity, vm, op, cached=True):
        """The agent's answer for a .vv (op spice) or a serial token, from the node that runs ``vm`` now.

        Where the VM runs may come from a list a moment old; when that node answers that the VM is not there (it
        migrated just now), the list is asked for again and the VM's new node issues.
        """
        entry, _role = await self.locate(identity, vm, cached=cached)
        if op not in entry["consoles"]:
            raise Refused(404, "%s has no %s console" % (vm, op), "no_console")
        ask_for = dict(op=op, vm=vm, user=identity.user, client=client_of(request), portal_node=self.config.node)
        if self.config.proxy:
            ask_for["proxy"] = self.config.proxy        # the proxy of the node the person reached (a hop to the VM's)
        try:
            answer = await asyncio.wait_for(self.agent(entry["node"], ask_for, NODE_TIMEOUT * 2), NODE_TIMEOUT * 2)
        except (OSError, ValueError, asyncio.TimeoutError, ClientError):
            raise Refused(503, "%s cannot be reached now (%s does not answer); try again" % (vm, entry["node"]),
                          "node_down") from None
        if not answer.get("ok") and answer.get("error") == "not_here" and cached:
            self._where = None
            return await self.issue(request, identity, vm, op, cached=False)
        if not answer.get("ok"):
            status = 409 if answer.get("error") == "not_here" else 502
            raise Refused(status, "%s: %s" % (vm, answer.get("message")), answer.get("error") or "agent")
        return entry, answer

    async def issue_vnc(self, request, identity, vm):
        """:meth:`issue` (op vnc) in the VM's turn (``_relay.VncTurns``): the relay's ticket is the VM's VNC password
        until the relay calls :meth:`vnc_done`, which ends the turn."""
        await self.vnc_turns.take(vm)
        try:
            return await self.issue(request, identity, vm, "vnc")
        except BaseException:
            self.vnc_turns.give(vm)
            raise

    async def vnc_done(self, node, vm, user, lease):
        """Tell ``node``'s agent that the VNC handshake of ``lease`` is over (``_portal_agent.vnc_done``: the ticket
        expired, the agent's lease released), then end the VM's turn here. A failure is left to the lease's own lapse
        and the ticket's expiry."""
        try:
            await self.agent(node, dict(op="vnc_done", vm=vm, user=user, lease=lease or "", portal_node=self.config.node))
        except (OSError, ValueError, asyncio.TimeoutError, ClientError):
            pass
        finally:
            self.vnc_turns.give(vm)

    async def disconnect(self, identity, vm, request):
        """Every session of ``vm`` cut on every node (the VM's own node locks its consoles)."""
        await self.locate(identity, vm, need="operator")
        answers = await self.ask_all(dict(op="cut", vm=vm, user=identity.user, client=client_of(request),
                                          portal_node=self.config.node), CUT_TIMEOUT)
        failed = {node: (answer or {}).get("message") or "no answer" for node, answer in sorted(answers.items())
                  if not answer or not answer.get("ok")}
        return answers, failed

    def follower(self, vm, entry):
        """For :func:`_pump`: a coroutine function that says what became of ``vm`` (which ran as ``entry`` said when
        the relay opened) once its console's end closed (``_relay.follow_console``, every node asked afresh)."""
        async def where():
            found, _down = await self.cluster_vms()
            return found.get(vm)
        return functools.partial(follow_console, where, placement_of(entry))


# --- handlers ---------------------------------------------------------------------------------------

def _portal(request):
    return request.app[PORTAL_KEY]


def _api(request):
    return request.path.startswith("/api/")


def _refusal(request, exc):
    if _api(request):
        return web.json_response({"error": exc.reason, "message": str(exc)}, status=exc.status)
    return web.Response(text=page("Refused", '<p class="error">%s</p><p><a href="/">Back</a></p>' % _e(exc)),
                        status=exc.status, content_type="text/html")


def _same_origin(request):
    """False when the browser says the request comes from another site (Origin, Sec-Fetch-Site)."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    try:
        parts = urlsplit(origin)
        port = parts.port or 443
    except ValueError:
        return False
    return parts.scheme == "https" and (parts.hostname or "") == host_name(request) and port == _portal(request).config.port


def _middleware(function):
    return web.middleware(function) if HAS_AIOHTTP else function


def host_name(request):
    """The host name of the request's Host header, lower case, without port or IPv6 brackets ("" when unusable)."""
    try:
        return (urlsplit("//" + (request.host or "")).hostname or "").lower()
    except ValueError:
        return ""


@_middleware
async def guard(request, handler):
    """Host check, cross-origin check for state changes, and the security headers on every answer."""
    portal = _portal(request)
    try:
        if portal.config.hosts and host_name(request) not in portal.config.hosts:
            raise Refused(421, "this portal does not answer to that host name", "wrong_host")
        if not portal.config.public and not request.path.startswith("/cluster/"):
            raise Refused(404, "this node serves other nodes' portals only", "not_public")
        if request.method not in ("GET", "HEAD") and not request.path.startswith("/cluster/") and not _same_origin(request):
            raise Refused(403, "cross-origin request refused", "cross_origin")
        response = await handler(request)
    except Redirect as exc:
        response = web.Response(status=303, headers={"Location": exc.location})
        if exc.cookie is not None:
            response.set_cookie(COOKIE, exc.cookie, secure=True, httponly=True, samesite="Strict", path="/")
        elif exc.clear_cookie:
            response.del_cookie(COOKIE, path="/")
    except Refused as exc:
        portal.audit("portal_refused", request, method=request.method, path=request.path[:200], status=exc.status,
                     reason=exc.reason)
        response = _refusal(request, exc)
    except web.HTTPException as exc:       # aiohttp's own answers (no such route, body too large): headers too
        if exc.status == 413:
            portal.audit("portal_refused", request, method=request.method, path=request.path[:200], status=413,
                         reason="too_large")
        for key, value in SECURITY_HEADERS.items():
            exc.headers.setdefault(key, value)
        raise
    for key, value in SECURITY_HEADERS.items():
        response.headers.setdefault(key, value)
    return response


async def _form(request):
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise Refused(413, "request body too large", "too_large")
    return await request.post()


async def _session_identity(request, api=False, csrf=True):
    """The identity of a page or API request; Refused when there is none or (state changes) the CSRF token is off."""
    portal = _portal(request)
    identity = portal.identity(request, api)
    if identity is None:
        if api:
            raise Refused(401, "log in: a session or a client certificate", "no_session")
        raise Redirect("/login")
    if identity.session is not None and csrf and request.method == "POST":
        token = request.headers.get("X-CSRF-Token")
        if token is None:
            token = (await _form(request)).get("csrf")
        if not csrf_ok(identity.session, token):
            raise Refused(403, "missing or wrong CSRF token", "csrf")
    return identity


async def login_form(request):
    portal = _portal(request)
    if portal.identity(request, False) is not None:
        raise Redirect("/")
    found = certificate_identity(peer_certificate(request))
    return web.Response(text=login_page(certificate_user=found[1] if found and found[0] == "user" else None),
                        content_type="text/html")


def _start_session(request, user, method):
    portal = _portal(request)
    cookie, session = portal.sessions.create(user, portal.groups_of(user), method, client_of(request))
    portal.audit("portal_login", request, user=user, method=method, result="ok", session=session.id)
    return Redirect("/", cookie=cookie)


async def login(request):
    portal = _portal(request)
    form = await _form(request)
    user, password = form.get("user"), form.get("password")
    address = client_of(request)
    if not isinstance(user, str) or not isinstance(password, str) or not user or len(user) > 64:
        raise Refused(400, "user and password are required", "bad_login_form")
    left = portal.limiter.locked(user, address)
    if left:
        portal.audit("portal_login", request, user=user, method="password", result="locked")
        return web.Response(text=login_page("Too many failed logins: try again in %d s." % left), status=429,
                            content_type="text/html")
    known = portal.config.users.get(user)
    loop = asyncio.get_running_loop()
    if known is None or known.password_hash is None:
        await loop.run_in_executor(None, dummy_verify, password)
        good = False
    else:
        good = await loop.run_in_executor(None, verify_password, known.password_hash, password)
    if not good:
        locked = portal.limiter.failure(user, address)
        portal.audit("portal_login", request, user=user, method="password",
                     result="lockout" if locked else "wrong_password")
        return web.Response(text=login_page("Wrong user or password."), status=401, content_type="text/html")
    portal.limiter.success(user, address)
    raise _start_session(request, user, "password")


async def login_certificate(request):
    found = certificate_identity(peer_certificate(request))
    if not found or found[0] != "user":
        raise Refused(401, "no person's client certificate on this connection", "no_certificate")
    raise _start_session(request, found[1], "certificate")


async def logout(request):
    portal = _portal(request)
    identity = await _session_identity(request)
    if identity.session is not None:
        portal.sessions.drop(request.cookies.get(COOKIE))
        portal.audit("portal_logout", request, user=identity.user, session=identity.session.id)
        for ended in portal.relays.pop(identity.session.id, ()):
            ended.set()                                 # its relay closes the browser console
    raise Redirect("/login", clear_cookie=True)


async def index(request):
    portal = _portal(request)
    identity = await _session_identity(request)
    vms, down = await portal.visible_vms(identity)
    problems = ["%s does not answer: its VMs are missing or unknown here" % node for node in down]
    return web.Response(text=vms_page(identity, vms, problems, request.query.get("done")), content_type="text/html")


def _vv_response(vm, answer):
    return web.Response(body=answer["vv"].encode("utf-8"), headers={
        "Content-Type": VV_MIME_TYPE,
        "Content-Disposition": 'attachment; filename="%s.vv"' % vm,
        "Cache-Control": "no-store",
    })


async def spice_vv(request):
    portal = _portal(request)
    vm = request.match_info["vm"]
    identity = await _session_identity(request, api=_api(request))
    entry, answer = await portal.issue(request, identity, vm, "spice")
    portal.audit("portal_vv", request, user=identity.user, vm=vm, node=entry["node"], method=identity.method,
                 ticket_expires=answer.get("expires"), proxy_token_expires=answer.get("proxy_token_expires"))
    return _vv_response(vm, answer)


async def serial(request):
    portal = _portal(request)
    vm = request.match_info["vm"]
    identity = await _session_identity(request, api=_api(request))
    entry, answer = await portal.issue(request, identity, vm, "serial")
    portal.audit("portal_serial", request, user=identity.user, vm=vm, node=entry["node"], method=identity.method,
                 proxy_token_expires=answer.get("proxy_token_expires"))
    if _api(request):
        return web.json_response(dict(vm=vm, node=entry["node"], command=answer["command"], argv=answer["argv"],
                                      token=answer["token"], expires=answer.get("proxy_token_expires")))
    body = ('<p>Run this on your machine (the token is valid until %s; keep it secret):</p>'
            '<p><code id="serial-command">VMC_PROXY_TOKEN=%s %s</code></p><p><a href="/">Back</a></p>'
            % (_e(time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(answer.get("proxy_token_expires") or 0))),
               _e(answer["token"]), _e(answer["command"])))
    return web.Response(text=page("Serial console of %s" % vm, body, identity.user,
                                  identity.session.csrf if identity.session else ""), content_type="text/html")


# Close codes of a browser console's WebSocket (4000-4999: the application's own).
CLOSE_TICKET = 4401          # no ticket, or not one of this session (used, expired, another's)
CLOSE_LIMIT = 4429           # the person or the VM has as many browser consoles as allowed
CLOSE_UNREACHABLE = 4502     # the VM's node or its console cannot be reached, or the ACL no longer allows it
CLOSE_SESSION_ENDED = 4001   # logout, or the session expired
CLOSE_TOKEN_EXPIRED = 4408   # the proxy token's lifetime is over: open the console again
CLOSE_MOVED = 4301           # the VM moved (live migration, or a new QEMU): the page takes a new relay ticket and reopens
SESSION_CHECK = 5            # seconds between checks that the relay's session still exists
# No permessage-deflate on the relays, though browsers offer it: the consoles' bytes are compressed by their own
# protocols where it pays (SPICE, noVNC's encodings) or tiny (keys), deflate cut the relay's throughput to about a
# third and added about 150 KiB per relay (measured with the browser relay benchmark), and it would compress what a
# person types with what a page can influence, under one TLS length.
RELAY_COMPRESS = False


# What each browser console's page loads: (title, scripts, stylesheets, Content-Security-Policy).
CONSOLE_PAGES = {
    "serial": ("Serial", '<script src="/static/xterm/xterm.js"></script>'
               '<script type="module" src="/static/browser-console.js"></script>',
               ["/static/xterm/xterm.css"], CONSOLE_CSP),
    "vnc": ("VNC", '<script type="module" src="/static/vnc-console.js"></script>', [], VNC_CSP),
}


async def browser_console(request):
    """A relay ticket for a browser console of the VM: the page (with the ticket in a data attribute; the script is a
    file of its own) or, for the API, JSON."""
    portal = _portal(request)
    vm, console = request.match_info["vm"], request.match_info["console"]
    identity = await _session_identity(request, api=_api(request))
    if console not in RELAY_CONSOLES:
        raise Refused(404, "no browser console %s" % console, "no_console")
    if identity.session is None:
        raise Refused(403, "a browser console belongs to a session: log in first", "no_session")
    entry, _role = await portal.locate(identity, vm)
    if console not in entry["consoles"]:
        raise Refused(404, "%s has no %s console" % (vm, console), "no_console")
    ticket = portal.relay_tickets.mint(identity.user, vm, console, identity.session.id)
    portal.audit("portal_relay_ticket", request, user=identity.user, vm=vm, console=console, node=entry["node"],
                 session=identity.session.id)
    if _api(request):
        return web.json_response(dict(vm=vm, console=console, ticket=ticket, expires_in=RELAY_TICKET_TTL,
                                      url="/relay/v1/spice?ticket=" + ticket if console == "spice" else "/relay/v1"))
    if console == "spice":
        return _spice_page(identity, vm, ticket)
    title, scripts, styles, policy = CONSOLE_PAGES[console]
    body = ('<div id="console" data-ticket="%s" data-vm="%s" data-console="%s" %s></div>'
            '<p class="note" id="console-state">connecting</p><p><a href="/">Back</a></p>%s'
            % (_e(ticket), _e(vm), _e(console), reconnect_bounds(), scripts))
    return web.Response(text=page("%s console of %s" % (title, vm), body, identity.user,
                                  identity.session.csrf, styles=styles),
                        content_type="text/html", headers={"Content-Security-Policy": policy})


def _relay_session(request):
    """(portal, cookie, session) of a relay's WebSocket request; Refused from another origin or without a session."""
    portal = _portal(request)
    if request.headers.get("Origin") is None or not _same_origin(request):
        raise Refused(403, "a browser console opens from this portal's own pages only", "cross_origin")
    cookie = request.cookies.get(COOKIE)
    session = portal.sessions.get(cookie)
    if session is None:
        raise Refused(401, "log in: a browser console belongs to a session", "no_session")
    return portal, cookie, session


async def relay(request):
    """GET /relay/v1, a WebSocket: the page's first message is its relay ticket; then bytes both ways between the
    browser and the console (through the VM node's proxy with the person's token, TLS to QEMU), until either side
    ends, the session ends, the token expires or the console is cut."""
    portal, cookie, session = _relay_session(request)
    sock = web.WebSocketResponse(heartbeat=30, max_msg_size=1 << 16, compress=RELAY_COMPRESS)
    await sock.prepare(request)
    try:
        first = await sock.receive(timeout=10)
    except asyncio.TimeoutError:
        first = None
    ticket = first.data if first is not None and first.type == web.WSMsgType.TEXT else None
    found = portal.relay_tickets.take(ticket, session.id)
    if found is None:
        portal.audit("portal_relay", request, user=session.user, result="refused", reason="ticket", session=session.id)
        await sock.close(code=CLOSE_TICKET, message=b"relay ticket refused")
        return sock
    if not portal.relay_limits.acquire(found.user, found.vm):
        portal.audit("portal_relay", request, user=found.user, vm=found.vm, console=found.console, result="refused",
                     reason="limit", session=session.id)
        await sock.close(code=CLOSE_LIMIT, message=b"too many browser consoles")
        return sock
    identity = Identity(session.user, tuple(session.groups), session.method, session)
    started, counts, reason, node, moved = time.monotonic(), [0, 0], "refused", None, {}
    ended = asyncio.Event()
    portal.relays[session.id].add(ended)
    try:
        try:
            if found.console == "vnc":
                entry, answer = await portal.issue_vnc(request, identity, found.vm)
            else:
                entry, answer = await portal.issue(request, identity, found.vm, found.console)
            node = entry["node"]
            proxy = urlsplit(answer.get("proxy") or portal.config.proxy or "")
            if found.console == "vnc":
                try:
                    reader, writer = await open_vnc(proxy.hostname, proxy.port or 3128, answer["node"],
                                                    answer["vnc_port"], answer["proxy_username"], answer["token"],
                                                    answer["password"], portal.client_context)
                finally:                                # the ticket expired, the VM's next VNC relay may set its own
                    await portal.vnc_done(node, found.vm, identity.user, answer.get("lease"))
                try:
                    early = await _greet_vnc_browser(sock)
                except RelayError:
                    writer.close()
                    raise
                writer.write(early)                     # the browser's ClientInit, for QEMU
                counts[0] += len(early)
            else:
                reader, writer = await open_through_proxy(proxy.hostname, proxy.port or 3128, answer["node"],
                                                          answer["serial_port"], answer["proxy_username"],
                                                          answer["token"], portal.client_context)
        except (Refused, RelayError, KeyError) as exc:
            reason = getattr(exc, "reason", "agent")
            await sock.close(code=CLOSE_UNREACHABLE, message=str(exc)[:120].encode("utf-8", "replace"))
            return sock
        portal.audit("portal_relay", request, user=found.user, vm=found.vm, console=found.console, node=node,
                     result="open", session=session.id, proxy_token_expires=answer.get("proxy_token_expires"))
        reason = await _pump(portal, sock, reader, writer, counts, cookie, answer.get("proxy_token_expires"), ended,
                             portal.follower(found.vm, entry), moved, coalesce=found.console != "serial")
        return sock
    finally:
        portal.relays[session.id].discard(ended)
        if not portal.relays[session.id]:
            portal.relays.pop(session.id, None)
        portal.relay_limits.release(found.user, found.vm)
        portal.audit("portal_relay", request, user=found.user, vm=found.vm, console=found.console, node=node,
                     result="closed", reason=reason, bytes_to_console=counts[0], bytes_to_browser=counts[1],
                     seconds=round(time.monotonic() - started, 1), session=session.id, **moved)


async def _greet_vnc_browser(sock):
    """RFB's handshake with noVNC (``_relay_vnc.greet_browser``, security type None) on the WebSocket; the bytes the
    browser sent beyond it (its ClientInit)."""

    async def receive():
        message = await sock.receive()
        if message.type == web.WSMsgType.BINARY:
            return message.data
        return message.data.encode("utf-8") if message.type == web.WSMsgType.TEXT else None
    browser = BrowserBytes(receive)
    await greet_browser(browser.read, sock.send_bytes)
    return browser.rest


async def _pump(portal, sock, reader, writer, counts, cookie, expires, ended, follow=None, moved=None, coalesce=True):
    """Copy bytes both ways until one side ends, the session is gone (``ended`` set at logout, or found gone) or the
    token expires; why it ended.

    ``coalesce``: the browser's messages that came in together go to the console in one write. Not for the serial
    console: QEMU's TLS serial port reads only what the guest's UART takes (a byte without a FIFO) and is not woken for
    the rest of a TLS record, so keys typed together would wait there until the next ones (each key its own write, as
    before, reaches the guest).

    When the console's end closed and ``follow`` is given (:meth:`Portal.follower`), the relay asks what became of the
    VM before it closes the browser's side: a VM that moved is closed with :data:`CLOSE_MOVED` and the reason
    ``moved`` (``moved`` gets ``moved_to``, the node, for the audit record), so the page opens it again; a VM that runs
    where it ran (a cut) or nowhere is closed as before."""

    pending = []                            # the browser's messages of this turn of the event loop, for the console

    def flush():
        if pending:
            data = b"".join(pending) if len(pending) > 1 else pending[0]
            pending.clear()
            if not writer.is_closing():
                writer.write(data)

    async def browser_to_console():
        loop = asyncio.get_running_loop()
        async for message in sock:
            if message.type == web.WSMsgType.BINARY:
                data = message.data
            elif message.type == web.WSMsgType.TEXT:
                data = message.data.encode("utf-8")
            else:
                break
            # The messages that came in together go to the console in one write (one TLS write, one send) once this
            # turn of the event loop has taken them all: one write per message cost the relay a third of its CPU.
            # drain() waits while the console's end has more than its high-water mark unsent, and raises when it
            # went away (a cut resets the proxy's tunnel).
            try:
                if not coalesce:
                    writer.write(data)
                await writer.drain()
            except OSError:
                return "console_closed"
            if coalesce:
                if not pending:
                    loop.call_soon(flush)
                pending.append(data)
            counts[0] += len(data)
        flush()
        return "browser_closed"

    async def console_to_browser():
        while True:
            try:
                # What is there, up to the stream's limit, as one message: fewer, larger messages cost the portal,
                # the browser and the sends less per byte (64 KiB before).
                data = await reader.read(RELAY_STREAM_LIMIT)
            except OSError:
                data = b""
            if not data:
                return "console_closed"
            await sock.send_bytes(data)
            counts[1] += len(data)

    async def watch():
        while True:
            left = (expires - time.time()) if expires else SESSION_CHECK
            if left <= 0:
                return "token_expired"
            try:
                await asyncio.wait_for(ended.wait(), min(SESSION_CHECK, left))
                return "session_ended"
            except asyncio.TimeoutError:
                pass
            if portal.sessions.get(cookie) is None:
                return "session_ended"

    tasks = [asyncio.ensure_future(job()) for job in (browser_to_console, console_to_browser, watch)]
    try:
        done, _pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        first = next(iter(done))
        reason = first.result() if not first.exception() else "error"
    finally:
        for task in tasks:
            task.cancel()
        writer.close()
    if reason == "console_closed" and follow is not None and not sock.closed:
        fate, entry = await follow()
        if fate == MOVED:
            reason = "moved"
            if moved is not None:
                moved["moved_to"] = entry["node"]
    codes = {"token_expired": CLOSE_TOKEN_EXPIRED, "session_ended": CLOSE_SESSION_ENDED, "moved": CLOSE_MOVED}
    if not sock.closed:
        await sock.close(code=codes.get(reason, 1000), message=reason.encode("ascii"))
    return reason


# --- SPICE in the browser (spice-html5; the link and the channels' admission: _relay_spice) --------------------

def _spice_page(identity, vm, ticket):
    """The SPICE page: spice-html5 (an ES module from /static) draws into #spice-screen; the relay ticket is in a
    data attribute, the script a file of its own."""
    body = ('<div id="spice-area"><div id="spice-screen" data-ticket="%s" data-vm="%s" %s></div></div>'
            '<p class="note" id="console-state">connecting</p><p><a href="/">Back</a></p>'
            '<script type="module" src="/static/spice-console.js"></script>'
            '<script type="module" src="/static/spice-keys.js"></script>' % (_e(ticket), _e(vm), reconnect_bounds()))
    return web.Response(text=page("SPICE console of %s" % vm, body, identity.user, identity.session.csrf),
                        content_type="text/html", headers={"Content-Security-Policy": SPICE_CSP})


def _track(portal, session, ended, add):
    """Count ``ended`` among ``session``'s browser consoles (logout sets them), or drop it (``add`` False)."""
    if add:
        portal.relays[session.id].add(ended)
        return
    portal.relays[session.id].discard(ended)
    if not portal.relays[session.id]:
        portal.relays.pop(session.id, None)


async def relay_spice(request):
    """GET /relay/v1/spice?ticket=T, one WebSocket per SPICE channel of the page (spice-html5 opens them all to this
    URL). The first links MAIN and takes the relay ticket; the others are that main relay's channels. Each is a TLS
    connection to QEMU through the VM node's proxy whose link the relay completes with the ticket of the person's
    .vv (``_relay_spice``); then bytes both ways until either side ends, the session ends or the token expires."""
    portal, cookie, session = _relay_session(request)
    ticket = request.query.get("ticket")
    sock = web.WebSocketResponse(protocols=("binary",), heartbeat=30, max_msg_size=1 << 20, compress=RELAY_COMPRESS)
    await sock.prepare(request)

    async def receive():
        message = await sock.receive()
        return message.data if message.type == web.WSMsgType.BINARY else b""
    browser = ByteReader(receive)
    try:
        mess = await asyncio.wait_for(read_link_mess(browser), SPICE_LINK_TIMEOUT)
    except (RelayError, asyncio.TimeoutError):
        portal.audit("portal_relay", request, user=session.user, console="spice", result="refused", reason="link",
                     session=session.id)
        await sock.close(code=1002, message=b"not a SPICE link")
        return sock
    if mess.channel_type == SPICE_MAIN and mess.connection_id == 0:
        return await _spice_main(portal, request, sock, browser, mess, ticket, cookie, session)
    return await _spice_channel(portal, request, sock, browser, mess, ticket, cookie, session)


async def _spice_link(sock, browser, mess, console):
    """(reader, writer) of QEMU's channel, linked for the browser; RelayError when it cannot be."""
    reader, writer = await open_spice(console)
    try:
        code, mini = await link_channel(browser, sock.send_bytes, reader, writer, mess, console["ticket"])
        if code:
            raise RelayError("link_refused", "QEMU refused the SPICE link (%d)" % code)
    except BaseException:
        writer.close()
        raise
    leftover = browser.leftover()
    if leftover:
        writer.write(leftover)
    return reader, writer, mini


async def _spice_main(portal, request, sock, browser, mess, ticket, cookie, session):
    found = portal.relay_tickets.take(ticket, session.id)
    if found is None or found.console != "spice":
        portal.audit("portal_relay", request, user=session.user, console="spice", channel="main", result="refused",
                     reason="ticket", session=session.id)
        await sock.close(code=CLOSE_TICKET, message=b"relay ticket refused")
        return sock
    if not portal.relay_limits.acquire(found.user, found.vm):
        portal.audit("portal_relay", request, user=found.user, vm=found.vm, console="spice", channel="main",
                     result="refused", reason="limit", session=session.id)
        await sock.close(code=CLOSE_LIMIT, message=b"too many browser consoles")
        return sock
    identity = Identity(session.user, tuple(session.groups), session.method, session)
    started, counts, reason, node, main, moved = time.monotonic(), [0, 0], "refused", None, None, {}
    ended = asyncio.Event()
    _track(portal, session, ended, True)
    try:
        try:
            entry, answer = await portal.issue(request, identity, found.vm, "spice")
            node = entry["node"]
            console = console_from_vv(answer.get("vv") or "", answer.get("proxy_token_expires"))
            reader, writer, mini = await _spice_link(sock, browser, mess, console)
        except (Refused, RelayError) as exc:
            reason = exc.reason
            await sock.close(code=CLOSE_UNREACHABLE, message=str(exc)[:120].encode("utf-8", "replace"))
            return sock
        watch = MainInitWatch(mini)
        main = portal.spice_relays.open_main(ticket, found, session.id, console, watch)
        portal.audit("portal_relay", request, user=found.user, vm=found.vm, console="spice", channel="main", node=node,
                     result="open", session=session.id, proxy_token_expires=console["expires"])
        reason = await _pump(portal, sock, TappedReader(reader, watch), writer, counts, cookie, console["expires"],
                             ended, portal.follower(found.vm, entry), moved)
        return sock
    finally:
        if main is not None:
            portal.spice_relays.close_main(ticket)
        _track(portal, session, ended, False)
        portal.relay_limits.release(found.user, found.vm)
        portal.audit("portal_relay", request, user=found.user, vm=found.vm, console="spice", channel="main", node=node,
                     result="closed", reason=reason, bytes_to_console=counts[0], bytes_to_browser=counts[1],
                     seconds=round(time.monotonic() - started, 1), session=session.id, **moved)


async def _spice_channel(portal, request, sock, browser, mess, ticket, cookie, session):
    ended = asyncio.Event()
    channel = SPICE_CHANNEL_NAMES.get(mess.channel_type, str(mess.channel_type))
    main, why = portal.spice_relays.admit(ticket, session.id, mess, ended)
    if main is None:
        portal.audit("portal_relay", request, user=session.user, console="spice", channel=channel, result="refused",
                     reason=why, session=session.id)
        await sock.close(code=CLOSE_LIMIT if why == "limit" else CLOSE_TICKET, message=b"channel refused")
        return sock
    relay = main.relay
    started, counts, reason = time.monotonic(), [0, 0], "refused"
    _track(portal, session, ended, True)
    try:
        try:
            reader, writer, _mini = await _spice_link(sock, browser, mess, main.console)
        except RelayError as exc:
            reason = exc.reason
            await sock.close(code=CLOSE_UNREACHABLE, message=str(exc)[:120].encode("utf-8", "replace"))
            return sock
        portal.audit("portal_relay", request, user=relay.user, vm=relay.vm, console="spice", channel=channel,
                     node=main.console["host"], result="open", session=session.id)
        reason = await _pump(portal, sock, reader, writer, counts, cookie, main.console["expires"], ended)
        return sock
    finally:
        portal.spice_relays.release(main, ended)
        _track(portal, session, ended, False)
        portal.audit("portal_relay", request, user=relay.user, vm=relay.vm, console="spice", channel=channel,
                     node=main.console["host"], result="closed", reason=reason, bytes_to_console=counts[0], bytes_to_browser=counts[1],
                     seconds=round(time.monotonic() - started, 1), session=session.id)


async def disconnect(request):
    portal = _portal(request)
    vm = request.match_info["vm"]
    identity = await _session_identity(request, api=_api(request))
    answers, failed = await portal.disconnect(identity, vm, request)
    portal.audit("portal_cut", request, user=identity.user, vm=vm, method=identity.method, failed_nodes=sorted(failed),
                 failures=failed,
                 cut={node: answer.get("spice_channels", 0) + answer.get("tunnels_cut", 0)
                      for node, answer in answers.items() if answer and answer.get("ok")})
    if _api(request):
        return web.json_response(dict(vm=vm, failed_nodes=failed), status=200 if not failed else 502)
    done = "every session of %s is cut" % vm if not failed else "%s: not cut on %s" % (vm, ", ".join(failed))
    raise Redirect("/?" + urlencode(dict(done=done)))


async def api_vms(request):
    portal = _portal(request)
    identity = await _session_identity(request, api=True)
    vms, down = await portal.visible_vms(identity)
    return web.json_response(dict(vms=vms, nodes_down=down))


async def api_vm(request):
    portal = _portal(request)
    identity = await _session_identity(request, api=True)
    entry, role = await portal.locate(identity, request.match_info["vm"], need="listed")
    return web.json_response(dict(entry, role=role))


async def cluster_agent(request):
    """Another node's portal asks this node's agent; the node certificate is the credential, the ACL is checked
    here again for the person the request names."""
    portal = _portal(request)
    found = certificate_identity(peer_certificate(request))
    if not found or found[0] != "node" or not set(found[1]) & set(portal.config.nodes):
        raise Refused(403, "cluster nodes only", "not_a_node")
    if request.content_length is None or request.content_length > MAX_BODY:
        raise Refused(413, "request body too large", "too_large")
    try:
        asked = await request.json()
    except ValueError:
        raise Refused(400, "not JSON", "bad_request") from None
    if not isinstance(asked, dict):
        raise Refused(400, "not a JSON object", "bad_request")
    if asked.get("op") != "vms":
        user, vm = asked.get("user"), asked.get("vm")
        if not isinstance(user, str) or not isinstance(vm, str):
            raise Refused(400, "user and vm are required", "bad_request")
        role = vm_role(portal.config.acl, user, portal.groups_of(user), vm) if VM_NAME_PATTERN.fullmatch(vm) else None
        if role is None or (asked.get("op") == "cut" and role != "operator"):
            raise Refused(403, "the ACL does not allow it", "not_in_acl")
    loop = asyncio.get_running_loop()
    try:
        answer = await loop.run_in_executor(None, functools.partial(ask, portal.config.agent_socket, asked))
    except (OSError, ValueError):
        raise Refused(503, "this node's agent does not answer", "agent_down") from None
    return web.json_response(answer)


async def no_content(request):
    """GET /favicon.ico: nothing (a browser asks for it on every page)."""
    return web.Response(status=204)


async def static(request):
    """GET /static/NAME: the built-in stylesheet, one of :data:`STATIC_FILES` (and noVNC's) from :class:`StaticFiles`, or
    ``spice-html5/`` and one of :data:`SPICE_HTML5_FILES` from ``spice_html5_dir``; else 404."""
    name = request.match_info["name"]
    if name == "portal.css":
        return web.Response(text=STYLE, content_type="text/css", headers={"Cache-Control": "max-age=3600"})
    portal = _portal(request)
    try:
        if name.startswith("spice-html5/") and name[len("spice-html5/"):] in SPICE_HTML5_FILES:
            kind = "text/javascript"
            with open(os.path.join(portal.config.spice_html5_dir, name[len("spice-html5/"):]), "rb") as handle:
                body = handle.read()
        elif name in portal.static_files:
            kind, body = portal.static_files[name], portal.static.read(name)
        else:
            raise web.HTTPNotFound()
    except (OSError, KeyError):
        raise web.HTTPNotFound() from None
    return web.Response(body=body, content_type=kind, headers={"Cache-Control": "max-age=3600"})


class StaticFiles:
    """The pages' own files: read once from ``zip_path`` (the zip the role installs, ``code_bundle`` with
    ``folder``) into memory, or each time from ``folder`` (a checkout, the tests) when there is no zip."""

    def __init__(self, zip_path=None, folder=STATIC_DIR):
        self.folder, self.files = folder, None
        if zip_path:
            with zipfile.ZipFile(zip_path) as archive:
                self.files = {name: archive.read(name) for name in archive.namelist() if not name.endswith("/")}

    def read(self, name):
        """The file's bytes; KeyError or OSError when there is none."""
        if self.files is not None:
            return self.files[name]
        if ".." in name.split("/"):
            raise KeyError(name)
        with open(os.path.join(self.folder, name), "rb") as handle:
            return handle.read()


def server_context(config):
    """TLS 1.2+ with the node's certificate; client certificates optional and verified against the cluster's CA."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=config.ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(config.cert_file, config.key_file)
    context.verify_mode = ssl.CERT_OPTIONAL
    return context


class ServerTLS:
    """The server's TLS: ``listening`` is the context the socket holds; each new handshake is switched to
    ``current`` (in the SNI callback, which runs with or without SNI), so :meth:`reload` takes a renewed
    certificate, key and CA bundle (a rotated CA dropped too) for new connections while open ones and the
    sessions stay."""

    def __init__(self, config):
        self.config = config
        self.current = server_context(config)
        self.listening = server_context(config)
        self.listening.sni_callback = self._switch

    def _switch(self, ssl_object, server_name, context):  # pylint: disable=unused-argument
        ssl_object.context = self.current

    def reload(self):
        """Read the files again; ssl.SSLError or OSError (the old context stays) when they are unusable."""
        self.current = server_context(self.config)


def client_context(config):
    """For asking other nodes' portals: their certificate verified (cluster CA, node name), ours presented."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=config.ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(config.cert_file, config.key_file)
    return context


def build_app(portal):
    """The aiohttp application of ``portal``."""
    app = web.Application(middlewares=[guard], client_max_size=MAX_BODY)
    app[PORTAL_KEY] = portal
    vm = "/{vm:[^/]{1,64}}"
    app.add_routes([
        web.get("/login", login_form),
        web.post("/login", login),
        web.post("/login/certificate", login_certificate),
        web.post("/logout", logout),
        web.get("/", index),
        web.post("/vms" + vm + "/spice.vv", spice_vv),
        web.post("/vms" + vm + "/serial", serial),
        web.post("/vms" + vm + "/disconnect", disconnect),
        web.post("/vms" + vm + "/browser/{console}", browser_console),
        web.post("/api/v1/vms" + vm + "/relay/{console}", browser_console),
        web.get("/relay/v1", relay),
        web.get("/relay/v1/spice", relay_spice),
        web.get("/api/v1/vms", api_vms),
        web.get("/api/v1/vms" + vm, api_vm),
        web.get("/api/v1/vms" + vm + "/spice.vv", spice_vv),
        web.post("/api/v1/vms" + vm + "/spice.vv", spice_vv),
        web.post("/api/v1/vms" + vm + "/serial", serial),
        web.post("/api/v1/vms" + vm + "/disconnect", disconnect),
        web.post("/cluster/v1/agent", cluster_agent),
        web.get("/static/{name:.+}", static),
        web.get("/favicon.ico", no_content),
    ])

    async def close_client(_app):
        if portal._client is not None:
            await portal._client.close()
    app.on_cleanup.append(close_client)
    return app


def load_config(path):
    """The :class:`PortalConfig` in the JSON file ``path``; ValueError or OSError say why not."""
    with open(path, encoding="utf-8") as handle:
        return portal_config(json.load(handle))


def event_loop():
    """uvloop's event loop when the module is there (Debian's python3-uvloop, which the role installs), else None:
    asyncio's own. With uvloop the relays cost the portal less CPU per byte and about a tenth of the memory (asyncio's
    TLS keeps a 256 KiB read buffer per connection, two per relay); the portal works the same on both."""
    try:
        import uvloop  # pylint: disable=import-outside-toplevel
    except ImportError:
        return None
    return uvloop.new_event_loop()


def main(argv):
    """``vmconsole-portal CONFIG``: serve until stopped (SIGTERM); SIGHUP is a restart by systemd (reload)."""
    if len(argv) not in (1, 2):
        raise SystemExit("usage: vmconsole-portal CONFIG [LISTEN_ADDRESS]")
    listen = argv[1] if len(argv) > 1 else None
    try:
        config = load_config(argv[0])
        portal = Portal(config)
        portal.client_context = client_context(config)
        tls = ServerTLS(config)
    except (OSError, ValueError, KeyError, ssl.SSLError) as exc:
        raise SystemExit("vmconsole-portal: %s: %s" % (argv[0], exc)) from None
    app = build_app(portal)

    def reload_certificate():
        # New handshakes get the renewed certificate; open connections and sessions stay.
        try:
            tls.reload()
            portal.reload_client_context(client_context(config))
            say("vmconsole-portal: certificate reloaded")
        except (OSError, ssl.SSLError) as exc:
            say("vmconsole-portal: the certificate could not be reloaded, the old one stays: %s" % exc)

    async def on_startup(_app):
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, reload_certificate)
    app.on_startup.append(on_startup)
    loop = event_loop()
    say("vmconsole-portal: %s serving https on port %d (%s)" % (
        config.node, config.port, "uvloop" if loop is not None else "asyncio's event loop"))
    web.run_app(app, host=listen, port=config.port, ssl_context=tls.listening, print=None, access_log=None,
                reuse_address=True, loop=loop)
