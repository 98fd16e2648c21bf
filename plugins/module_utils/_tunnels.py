# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The console tunnels open through a node's squid, and how to cut them (private).

squid checks a proxy token when a CONNECT tunnel opens and never again, so revoking a token
does not end a tunnel that is already open. ``console_session`` ends them here:

1. :func:`fetch_active_requests` asks squid's cache manager (``active_requests``, over HTTP on
   the proxy's own port, with the manager password the role keeps root-only) which requests are
   open: each with the proxy username (``user__vm``), the destination and the client connection's
   two addresses. The answer holds no credential.
2. :func:`parse_active_requests` turns that into :class:`Tunnel` records, :func:`select` picks those
   of a revoked person, VM or person-and-VM.
3. :func:`cut` destroys each tunnel's client connection in the kernel (``ss -K``, SOCK_DESTROY):
   squid sees the connection fail and closes the tunnel's other side too, whatever console runs
   inside (SPICE, VNC or a serial session), without restarting squid or touching anyone else's
   tunnel.
"""

from __future__ import annotations

import base64
import collections
import json
import re
import socket
import subprocess
import time

from ansible_collections.vmconsole.secure.plugins.module_utils._addresses import is_ip_address
from ansible_collections.vmconsole.secure.plugins.module_utils._tickets import parse_proxy_username

# One open request in squid's active_requests report.
Tunnel = collections.namedtuple("Tunnel", "username user vm destination port client local")

_BLOCK_START = "Connection: "
_FIELDS = {
    "remote": re.compile(r"^\s*remote: (\S+)$", re.M),
    "local": re.compile(r"^\s*local: (\S+)$", re.M),
    "uri": re.compile(r"^uri (\S+)$", re.M),
    "username": re.compile(r"^username (\S+)$", re.M),
}
MANAGER_PAGE = "/squid-internal-mgr/active_requests"
MAX_REPORT = 16 << 20


class ManagerError(Exception):
    """squid's cache manager did not give the report; the text says why (never the password)."""


def _authority(text):
    """(host, port) of ``host:port`` / ``[ip6]:port``; None for a URL or anything else."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or "/" in text or not port.isdigit() or len(port) > 5:
        return None
    return host.strip("[]"), int(port)


def _address(text):
    """(ip, port) of squid's ``ip:port`` / ``[ip6]:port`` (the collection's one address check); else None."""
    found = _authority(text or "")
    return found if found is not None and is_ip_address(found[0]) else None


def parse_active_requests(text):
    """The CONNECT tunnels of an ``active_requests`` report that carry a proxy username (:class:`Tunnel` list).

    Requests without a username (the report's own request, a refused one) and usernames that are
    not ``user__vm`` are left out.
    """
    tunnels = []
    for block in text.split(_BLOCK_START)[1:]:
        found = {name: pattern.search(block) for name, pattern in _FIELDS.items()}
        if not all(found.values()):
            continue
        username = found["username"].group(1)
        names = parse_proxy_username(username)
        destination = _authority(found["uri"].group(1))
        client, local = _address(found["remote"].group(1)), _address(found["local"].group(1))
        if names is None or destination is None or client is None or local is None:
            continue
        tunnels.append(Tunnel(username, names[0], names[1], destination[0], destination[1], client, local))
    return tunnels


def select(tunnels, users=(), vms=(), pairs=()):
    """The tunnels of a revoked person (any VM), of a revoked VM (anyone), or of a (person, VM) pair."""
    users, vms, pairs = set(users), set(vms), {tuple(p) for p in pairs}
    return [t for t in tunnels if t.user in users or t.vm in vms or (t.user, t.vm) in pairs]


def fetch_active_requests(host, port, name, password, timeout=5.0):
    """The text of squid's ``active_requests`` report, asked at ``host:port`` (squid's ``visible_hostname`` ``name``).

    ``password`` is the manager password for ``active_requests`` (cachemgr_passwd). Raises ManagerError.
    """
    credentials = base64.b64encode(("vmconsole:%s" % password).encode("utf-8")).decode("ascii")
    request = ("GET http://%s:%d%s HTTP/1.0\r\nHost: %s:%d\r\nAuthorization: Basic %s\r\n\r\n"
               % (name, port, MANAGER_PAGE, name, port, credentials)).encode("ascii")
    data = b""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(request)
            while len(data) <= MAX_REPORT:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
    except OSError as exc:
        raise ManagerError("squid at %s:%d did not answer: %s" % (host, port, exc.strerror or exc)) from None
    head, sep, body = data.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].split(b" ")
    if not sep or len(status) < 2 or status[1] != b"200":
        raise ManagerError("squid at %s:%d refused the active_requests report (%s)"
                           % (host, port, b" ".join(status[1:3]).decode("ascii", "replace") or "no answer"))
    return body.decode("utf-8", "replace")


def open_tunnels(proxy, users=(), vms=(), pairs=()):
    """The tunnels open through the node's proxy (a :class:`NodeProxy`) of the given names, from squid's report."""
    report = fetch_active_requests(proxy.address, proxy.port, proxy.name, proxy.password)
    return select(parse_active_requests(report), users, vms, pairs)


def _ss_address(address):
    ip, port = address
    return "[%s]:%d" % (ip, port) if ":" in ip else "%s:%d" % (ip, port)


def cut(tunnel, run=subprocess.run):
    """Destroy the client connection of ``tunnel`` (``ss -K``); True when the kernel found it.

    Raises OSError when ``ss`` cannot run, RuntimeError when it fails (e.g. without CAP_NET_ADMIN).
    """
    argv = ["ss", "-K", "-H", "-tn", "src", _ss_address(tunnel.local), "dst", _ss_address(tunnel.client)]
    # The portal agent calls this without an AnsibleModule (no run_command); tests pass a fake run.
    done = run(argv, capture_output=True, text=True, check=False)  # pylint: disable=ansible-bad-function
    if done.returncode != 0:
        raise RuntimeError("ss -K failed (%d): %s" % (done.returncode, (done.stderr or "").strip()[:300]))
    return bool(done.stdout.strip())


# --- the node's proxy, as connect_proxy publishes it --------------------------------------------

NodeProxy = collections.namedtuple("NodeProxy", "name address port password credentials_ttl console_ports")


def _read_json(path):
    with open(path, "r", encoding="utf-8") as f:
        return json.load(f)


def read_manager_password(path):
    """The password of ``cachemgr_passwd PASSWORD active_requests`` in ``path``; ValueError (never the password)."""
    try:
        with open(path, "r", encoding="utf-8") as f:
            words = f.read(4096).split()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError("%s cannot be read: %s" % (path, getattr(exc, "strerror", None) or exc)) from None
    if len(words) != 3 or words[0] != "cachemgr_passwd" or words[2] != "active_requests":
        raise ValueError("%s is not one line 'cachemgr_passwd PASSWORD active_requests'" % path)
    return words[1]


def read_proxy_fact(fact_path):
    """connect_proxy's local fact of this node (``vmconsole_proxy.fact``, a dict), or None where there is none.

    Raises ValueError when it exists but cannot be read or is not a JSON object.
    """
    try:
        fact = _read_json(fact_path)
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError("%s cannot be read: %s" % (fact_path, getattr(exc, "strerror", None) or exc)) from None
    if not isinstance(fact, dict):
        raise ValueError("%s is not a JSON object" % fact_path)
    return fact


def node_proxy(fact_path):
    """The node's proxy from connect_proxy's local fact (``vmconsole_proxy.fact``), or None where there is none.

    Raises ValueError when the fact or the manager password file it names is unusable.
    """
    fact = read_proxy_fact(fact_path)
    if fact is None:
        return None
    try:
        listen = fact["listen_address"]
        ports = {console: (int(low), int(high)) for console, (low, high) in fact["console_ports"].items()}
        name, port, manager_file, ttl = fact["name"], int(fact["port"]), fact["manager_file"], int(fact["credentials_ttl"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError("%s is not a connect_proxy fact of this collection's version (no usable %s); run the "
                         "connect_proxy role on this node" % (fact_path, exc)) from None
    address = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(listen, listen)
    return NodeProxy(name, address, port, read_manager_password(manager_file), ttl, ports)


def console_of(port, console_ports):
    """Which console a tunnel's destination port is (spice, vnc or serial, by the node's ranges), else "other"."""
    for console, (low, high) in sorted(console_ports.items()):
        if low <= port <= high:
            return console
    return "other"


def cut_tunnels(proxy, users=(), vms=(), pairs=(), watch=0.0, fetch=None, destroy=cut, clock=None, sleep=None):
    """Cut every open tunnel of the revoked names, and for ``watch`` seconds every one that opens again; the cut list.

    ``fetch()`` gives the open tunnels of those names (default :func:`open_tunnels`).

    squid may accept a revoked token for a while from its credentials cache (``credentialsttl``), so a
    client that reconnects at once gets a new tunnel: watching that long cuts it too. Ends when the
    report shows none of them after ``watch``; RuntimeError when one outlives ``watch`` + 5 s.
    """
    fetch = fetch or (lambda: open_tunnels(proxy, users, vms, pairs))
    clock, sleep = clock or time.monotonic, sleep or time.sleep
    deadline = clock() + watch
    done, tried = [], set()
    while True:
        open_now = fetch()
        for tunnel in open_now:
            if (tunnel.client, tunnel.local) not in tried:
                tried.add((tunnel.client, tunnel.local))
                destroy(tunnel)
                done.append(tunnel)
        if clock() >= deadline and not open_now:
            return done
        if clock() >= deadline + 5:
            raise RuntimeError("%d tunnel(s) still open %.0f s after they were cut" % (len(open_now), watch + 5))
        sleep(0.2)
