# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The console portal's agent (private): the one narrow door from the web process to root.

The portal's web process runs as an unprivileged user and holds no key, no QMP socket and no
ticket code of its own. What needs root goes through this agent, a root service on a Unix socket
(``/run/vmconsole-portal/agent.sock``, in a folder only root and the portal's group enter):

- one JSON request per connection, one JSON answer, at most :data:`MAX_REQUEST` bytes;
- only the peers whose uid is allowed (``SO_PEERCRED``: the portal's user) get an answer; anyone
  else is closed without one;
- only these requests, only for VMs this node knows (its ``vmconsole_vms`` fact, or the cluster's
  list in the agent's configuration):

  ``{"op": "vms"}``
      the VMs of this node's fact with their live state (QMP ``query-status``) and consoles.
  ``{"op": "spice", "vm": V, "user": U, "proxy": URL, "client": ADDRESS}``
      a SPICE ticket set on V (which must run here) and a proxy token for U, through the code of
      ``console_ticket`` (``_issue``); the answer holds the ``.vv`` text (the one renderer, ``_vv``).
  ``{"op": "serial", "vm": V, "user": U, "proxy": URL, "client": ADDRESS}``
      a proxy token for U to V's serial console and the client command (``_issue``, protocol=serial).
  ``{"op": "vnc", "vm": V, "user": U, "proxy": URL, "client": ADDRESS}``
      for the portal's VNC relay (``_relay_vnc``): a VNC ticket set on V (which must run here) and a proxy token
      for U to V's VNC console (``_issue``, protocol=vnc, relay); the answer holds both, the port and the node. The
      relay authenticates to QEMU with the ticket; the browser never sees it.
  ``{"op": "cut", "vm": V, "user": BY, "client": ADDRESS}``
      every console session of V cut and its tokens revoked on this node (``_sessions``, the code
      of ``console_session``); V need not run here (a hop through this node's proxy is cut too).

Answers: ``{"ok": true, ...}`` or ``{"ok": false, "error": CODE, "message": TEXT}`` with CODE one
of :data:`ERRORS`. The audit records of ``_issue`` and ``_sessions`` name the portal: ``run_by``
is ``portal``, ``portal_user`` the person, ``client`` their address and ``portal_node`` the node
whose portal they used. Nothing secret is ever logged; the ticket and the token leave only in the
answer to the portal's user.
"""

from __future__ import annotations

import collections
import json
import os
import pwd
import socket
import socketserver
import struct
import sys

from ansible_collections.vmconsole.secure.plugins.module_utils._console import (
    Failed,
    LocalModule,
    OptionError,
    QMPConsole,
)
from ansible_collections.vmconsole.secure.plugins.module_utils._issue import ISSUE_ARGUMENT_SPEC, issue, prepare
from ansible_collections.vmconsole.secure.plugins.module_utils._qmp import QMPClient, QMPConnectionRefused, QMPError, QMPSocketMissing
from ansible_collections.vmconsole.secure.plugins.module_utils._sessions import SESSION_ARGUMENT_SPEC, cut_sessions
from ansible_collections.vmconsole.secure.plugins.module_utils._tunnels import read_proxy_fact
from ansible_collections.vmconsole.secure.plugins.module_utils._tickets import (
    check_proxy_user,
    check_vm_name,
    client_address,
    new_ticket,
)
from ansible_collections.vmconsole.secure.plugins.module_utils._vv import check_proxy_url, render_vv

AGENT_SOCKET = "/run/vmconsole-portal/agent.sock"
MAX_REQUEST = 8192
OPS = ("vms", "spice", "serial", "vnc", "cut")
ERRORS = ("bad_request", "unknown_vm", "not_here", "console", "failed")
# QMP run states in which the VM is this node's (a migration target waits in "inmigrate", a source that
# handed over is "postmigrate").
HERE_STATES = ("running", "paused", "suspended")
# Which ports of the qemu_vm fact make which console.
CONSOLE_PORTS = (("spice", "spice_tls_port"), ("vnc", "vnc_port"), ("serial", "serial_port"))
_FIELDS = {"op": str, "vm": str, "user": str, "proxy": str, "client": str, "portal_node": str}


_AGENT_FIELDS = ("node vms_fact proxy_fact socket_dir cluster_vms allowed_uids audit_log ticket_ttl token_ttl timeout "
                 "ca_file server_cert_file")


class AgentConfig(collections.namedtuple("AgentConfig", _AGENT_FIELDS)):
    """What the agent serves: ``node`` (this node's name, the console host in a ``.vv``), the facts it reads,
    ``cluster_vms`` (VM names of the whole cluster, which may be cut here), ``allowed_uids`` and the lifetimes."""


def agent_config(data):
    """An :class:`AgentConfig` from the JSON object the role writes; ValueError names the key and why."""
    if not isinstance(data, dict):
        raise ValueError("the agent configuration must be a JSON object")
    users = data.get("allowed_users")
    if not isinstance(users, list) or not users or not all(isinstance(name, str) for name in users):
        raise ValueError("allowed_users must be a list of user names")
    uids = []
    for name in users:
        try:
            uids.append(pwd.getpwnam(name).pw_uid)
        except KeyError:
            raise ValueError("allowed_users: no such user %r" % name) from None
    for name in data.get("cluster_vms", []):
        check_vm_name(name)
    return AgentConfig(
        node=_text(data, "node"),
        vms_fact=data.get("vms_fact", "/etc/ansible/facts.d/vmconsole_vms.fact"),
        proxy_fact=data.get("proxy_fact", "/etc/ansible/facts.d/vmconsole_proxy.fact"),
        socket_dir=data.get("socket_dir", "/run/vmconsole"),
        cluster_vms=frozenset(data.get("cluster_vms", [])),
        allowed_uids=tuple(uids),
        audit_log=data.get("audit_log", "/var/log/vmconsole/tickets.log"),
        ticket_ttl=int(data.get("ticket_ttl", 60)),
        token_ttl=int(data.get("token_ttl", 28800)),
        timeout=float(data.get("timeout", 5)),
        ca_file=data.get("ca_file", ISSUE_ARGUMENT_SPEC["ca_file"]["default"]),
        server_cert_file=data.get("server_cert_file", ISSUE_ARGUMENT_SPEC["server_cert_file"]["default"]),
    )


def _text(data, key):
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise ValueError("%s must be a non-empty string" % key)
    return value


class Refusal(Exception):
    """A request the agent does not serve: ``code`` (one of :data:`ERRORS`) and a message for the portal."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


def local_vms(config):
    """{name: fact entry} of this node's qemu_vm fact ({} when there is none)."""
    try:
        with open(config.vms_fact, encoding="utf-8") as handle:
            vms = json.load(handle).get("vms", {})
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, AttributeError) as exc:
        raise Refusal("failed", "the node's VM list (%s) cannot be read: %s" % (config.vms_fact, exc)) from None
    return vms if isinstance(vms, dict) else {}


def vm_state(config, name):
    """The VM's QMP run state on this node ("running", "inmigrate", ...), or "stopped" when QEMU does not answer."""
    client = QMPClient(os.path.join(config.socket_dir, name + ".qmp"), timeout=config.timeout)
    try:
        client.connect()
        return client.execute("query-status").get("status") or "unknown"
    except (QMPSocketMissing, QMPConnectionRefused):
        return "stopped"
    except QMPError:
        return "unknown"
    finally:
        client.close()


def qemu_instance(config, name):
    """Which QEMU process serves the VM's QMP socket now (text), or None when there is no socket: QEMU creates the
    socket when it starts, so a new QEMU on this node (a restart, a migration between two QEMUs here) gives another
    value. The portal's relays tell a moved VM from a cut by it (``_relay.console_fate``)."""
    try:
        found = os.stat(os.path.join(config.socket_dir, name + ".qmp"))
    except OSError:
        return None
    return "%x-%x" % (found.st_ino, found.st_mtime_ns)


def list_vms(config):
    """The VMs of this node: [{"name", "state", "here", "consoles", "instance"}], by name (``instance``: a running
    VM's :func:`qemu_instance`)."""
    answer = []
    for name, entry in sorted(local_vms(config).items()):
        entry = entry if isinstance(entry, dict) else {}
        state = vm_state(config, name)
        vm = dict(name=name, state=state, here=state in HERE_STATES,
                  consoles=[console for console, key in CONSOLE_PORTS if entry.get(key)])
        if vm["here"]:
            vm["instance"] = qemu_instance(config, name)
        answer.append(vm)
    return answer


def check_request(config, request):
    """The request's fields, checked (Refusal "bad_request" or "unknown_vm" otherwise)."""
    if not isinstance(request, dict):
        raise Refusal("bad_request", "a request is a JSON object")
    for key, value in request.items():
        if key not in _FIELDS or not isinstance(value, _FIELDS[key]):
            raise Refusal("bad_request", "unexpected field %r" % (key,))
    if request.get("op") not in OPS:
        raise Refusal("bad_request", "op must be one of %s" % ", ".join(OPS))
    if request["op"] == "vms":
        return request
    for key in ("vm", "user"):
        if key not in request:
            raise Refusal("bad_request", "%s is missing" % key)
    checks = (("vm", check_vm_name), ("user", check_proxy_user), ("client", client_address), ("proxy", check_proxy_url))
    for key, check in checks:
        if key in request:
            try:
                check(request[key])
            except ValueError as exc:
                raise Refusal("bad_request", "%s: %s" % (key, exc)) from None
    if request["vm"] not in local_vms(config) and request["vm"] not in config.cluster_vms:
        raise Refusal("unknown_vm", "vm %s is not a VM of this cluster" % request["vm"])
    return request


def _audit_fields(request):
    return dict(run_by="portal", portal_user=request["user"], client=request.get("client"),
                portal_node=request.get("portal_node"))


def issue_console(config, request):
    """op spice, serial or vnc: issue through ``_issue`` on the VM, which must run on this node."""
    vm, protocol = request["vm"], request["op"]
    if vm not in local_vms(config) or vm_state(config, vm) not in HERE_STATES:
        raise Refusal("not_here", "vm %s does not run on %s" % (vm, config.node))
    try:
        fact = read_proxy_fact(config.proxy_fact) or {}
    except ValueError as exc:
        raise Refusal("failed", "the node's proxy fact: %s" % exc) from None
    params = dict(vm=vm, protocol=protocol, console_host=config.node, proxy_user=request["user"],
                  proxy_token_ttl=config.token_ttl, audit_log=config.audit_log, socket_dir=config.socket_dir,
                  proxy_fact_file=config.proxy_fact, timeout=config.timeout, ticket_file="",
                  ca_file=config.ca_file, server_cert_file=config.server_cert_file)
    if fact.get("signing_key_file"):
        params["proxy_token_key_file"] = fact["signing_key_file"]
    if "proxy" in request:
        params["proxy"] = request["proxy"]
    if protocol == "spice":
        params.update(password=new_ticket("spice"), ttl=config.ticket_ttl, title=vm)
        params.pop("ticket_file")      # the default: kept for a migration, as console_ticket does
    elif protocol == "vnc":
        params.update(password=new_ticket("vnc"), ttl=config.ticket_ttl)
    module = LocalModule(ISSUE_ARGUMENT_SPEC, params, _audit_fields(request))
    try:
        prepared = prepare(module, relay=protocol == "vnc")
        with QMPConsole(module) as console:
            result = issue(module, console, prepared)
    except OptionError as exc:
        raise Refusal("console", str(exc)) from None
    except Failed as exc:
        raise Refusal("console", str(exc)) from None
    except QMPError as exc:
        raise Refusal("console", exc.message) from None
    answer = dict(node=config.node, expires=result["expires"], proxy_token_expires=result.get("proxy_token_expires"),
                  warnings=module.warnings)
    if protocol == "spice":
        answer["vv"] = render_vv(password=params["password"], **result["vv"])
    elif protocol == "vnc":
        answer.update(vnc_port=result["port"], password=params["password"], proxy_username=result["proxy_username"],
                      token=result["relay_handover"]["proxy_token"], proxy=module.params["proxy"])
    else:
        answer.update(command=result["command"], argv=result["argv"], serial_port=result["serial_port"],
                      proxy_username=result["proxy_username"], token=result["serial_handover"]["proxy_token"],
                      proxy=module.params["proxy"])
    return answer


def cut_console(config, request):
    """op cut: the VM's sessions cut and its tokens revoked on this node, through ``_sessions``."""
    params = dict(vm=request["vm"], state="absent", socket_dir=config.socket_dir, proxy_fact_file=config.proxy_fact,
                  audit_log=config.audit_log, timeout=config.timeout)
    module = LocalModule(SESSION_ARGUMENT_SPEC, params, _audit_fields(request))
    try:
        result = cut_sessions(module)
    except Failed as exc:
        raise Refusal("failed", str(exc)) from None
    session = result["sessions"].get(request["vm"], {})
    return dict(node=config.node, changed=result["changed"], running=bool(session.get("running")),
                spice_channels=session.get("spice", {}).get("channels_before", 0),
                tunnels_cut=len(result["tunnels"]["cut"]), warnings=module.warnings)


def handle(config, request):
    """The answer to one request (a dict, never raises for bad input)."""
    try:
        request = check_request(config, request)
        if request["op"] == "vms":
            return dict(ok=True, node=config.node, vms=list_vms(config))
        if request["op"] == "cut":
            return dict(cut_console(config, request), ok=True)
        return dict(issue_console(config, request), ok=True)
    except Refusal as exc:
        return dict(ok=False, error=exc.code, message=str(exc))


def peer_uid(sock):
    """The uid of the process at the other end of a Unix socket (SO_PEERCRED)."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", raw)[1]


def read_request(sock):
    """One request line from ``sock`` (JSON), or None when it is too long or not JSON."""
    data = b""
    while b"\n" not in data and len(data) <= MAX_REQUEST:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    line = data.split(b"\n", 1)[0]
    if len(line) > MAX_REQUEST:
        return None
    try:
        return json.loads(line.decode("utf-8"))
    except ValueError:
        return None


class _Handler(socketserver.BaseRequestHandler):
    def handle(self):
        config = self.server.config
        self.request.settimeout(30)
        try:
            if peer_uid(self.request) not in config.allowed_uids:
                return                                  # not the portal: no answer at all
            request = read_request(self.request)
            answer = handle(config, request) if request is not None else dict(
                ok=False, error="bad_request", message="a request is one line of JSON of at most %d bytes" % MAX_REQUEST)
            self.request.sendall(json.dumps(answer).encode("utf-8") + b"\n")
        except OSError:
            pass


class AgentServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """The agent's socket server: one thread per connection."""

    daemon_threads = True

    def __init__(self, path, config):
        self.config = config
        if os.path.exists(path):
            os.unlink(path)
        super().__init__(path, _Handler)


def ask(path, request, timeout=30):
    """The agent's answer (a dict) to ``request``; OSError or ValueError when the agent cannot be asked."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        data = b""
        try:
            sock.sendall(json.dumps(request).encode("utf-8") + b"\n")
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except (ConnectionResetError, BrokenPipeError):
            data = b""
    if not data:
        raise ValueError("the agent at %s closed the connection without an answer" % path)
    return json.loads(data.decode("utf-8"))


def main(argv=None):
    """``vmconsole-portal-agent CONFIG [SOCKET]``: serve until stopped."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        raise SystemExit("usage: vmconsole-portal-agent CONFIG [SOCKET]")
    try:
        with open(argv[0], encoding="utf-8") as handle:
            config = agent_config(json.load(handle))
    except (OSError, ValueError) as exc:
        raise SystemExit("vmconsole-portal-agent: %s: %s" % (argv[0], exc)) from None
    path = argv[1] if len(argv) > 1 else AGENT_SOCKET
    group = os.environ.get("VMCONSOLE_PORTAL_GROUP")
    old = os.umask(0o117)
    try:
        server = AgentServer(path, config)
    finally:
        os.umask(old)
    if group:
        import grp  # pylint: disable=import-outside-toplevel
        os.chown(path, 0, grp.getgrnam(group).gr_gid)
    sys.stderr.write("vmconsole-portal-agent: serving %s for uid %s\n" % (path, ",".join(map(str, config.allowed_uids))))
    sys.stderr.flush()
    try:
        server.serve_forever()
    finally:
        server.server_close()
