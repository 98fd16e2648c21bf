# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Live migration with SPICE clients that follow the VM (private; stdlib only, no Ansible imports).

Shared by ``spice_migrate`` (both ends of a migration) and ``console_ticket`` (which keeps the
current SPICE ticket in a root-only *ticket file* next to the QMP socket, because a migrating
client links to the target with the ticket it linked to the source with, and QEMU cannot
tell anyone which ticket that was).

Facts measured with QEMU 7.2, spice-server 0.15.1 and spice-gtk 0.42 (remote-viewer 11):

- ``client_migrate_info`` returns at once; every connected client then links all its channels
  to the target, using the *same connection id* as on the source. The target lists them in
  ``query-spice`` while it still waits in ``inmigrate`` (0.05 to 0.4 s after the announcement;
  the display channel is the slowest). Polling the target's ``query-spice`` for those ids is
  reliable; its ``SPICE_INITIALIZED`` events reach only a QMP client connected at that moment.
- The client tells the source it is ready only when *all* its channels have linked (MAIN alone
  is not enough): a migration that completes before that sends it to the target again ("switch
  host") although it had linked.
- spice-gtk first links to the target's *plain* port (and is told ``NEED_SECURED`` there when
  ``tls-channel=default``). Without a plain port it tries port 65535, fails, and falls back to
  a reconnection after the migration ("switch host": new connection id, a short gap).
- A client that has not linked to the target when the migration completes also gets "switch
  host"; spice-server gives up waiting for links after 10 s.
- The source emits ``SPICE_MIGRATE_COMPLETED`` after a completed migration if (and only if)
  ``client_migrate_info`` was sent, with or without clients. A failed or cancelled migration
  sends the clients back to the source only (they stay connected), and the target QEMU exits.
"""

from __future__ import annotations

import json
import os
import re
import time

from ansible_collections.vmconsole.secure.plugins.module_utils._files import write_file_atomic

# The objects the qemu_vm role creates at QEMU's start (QEMU cannot read the keys once it runs
# as its unprivileged user, so object-add at migration time works only for a root QEMU).
TLS_CREDS_SERVER = "vmconsole-migration-server"
TLS_CREDS_CLIENT = "vmconsole-migration-client"
TLS_DIR = "/etc/pki/qemu"

TICKET_FILE_SUFFIX = ".ticket"
SPICE_MAIN_CHANNEL = 1
# Seconds between the target listing a client's last channel and the client telling the source it is ready.
LINK_SETTLE = 0.25
MIGRATION_DONE = ("completed", "failed", "cancelled")

_URI_RE = re.compile(r"tcp:(?:\[(?P<ip6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9.-]+)):(?P<port>[0-9]{1,5})\Z")


# --- the ticket file --------------------------------------------------------------------------

def default_ticket_file(qmp_path):
    """``<socket folder>/<vm>.ticket`` for the QMP socket ``<socket folder>/<vm>.qmp``."""
    base = qmp_path[:-len(".qmp")] if qmp_path.endswith(".qmp") else qmp_path
    return base + TICKET_FILE_SUFFIX


def check_ticket_file_writable(path):
    """Raise OSError unless ``path`` can be created or replaced (its folder exists and is writable)."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise OSError(21, "Is a directory")
    if not os.path.isdir(folder):
        raise OSError(2, "the folder %s does not exist" % folder)
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OSError(13, "Permission denied (%s)" % folder)


def write_ticket_file(path, ticket, expires, protocol="spice"):
    """Write the ticket record to ``path``: mode 0600 from the first byte, replaced atomically.

    The record is JSON ``{"protocol", "ticket", "expires", "set"}`` (epoch seconds).
    """
    record = dict(protocol=protocol, ticket=ticket, expires=int(expires), set=int(time.time()))
    write_file_atomic(path, json.dumps(record) + "\n")


def ticket_lifetime(expires, connected, ttl, now=None):
    """Seconds the target of a migration accepts the source's ticket for (0: not at all), and why.

    ``expires``: the ticket's own expiry (epoch seconds, from the source's ticket file);
    ``connected``: whether a SPICE client is connected on the source; ``ttl``: the migration window.
    A connected client links to the target with the ticket it once used, long expired as a rule
    (a ticket lives seconds, a session hours): the target accepts it for the window. Without a
    client the ticket is armed on the target only for what is left of its own life, and an
    expired ticket is never armed again (nobody may open a new console with it).
    """
    now = int(time.time() if now is None else now)
    if connected:
        return ttl, "a client is connected and follows the VM with its ticket"
    if expires <= now:
        return 0, "the ticket expired and no client is connected, it is not armed again"
    return min(ttl, expires - now), "no client is connected: the ticket keeps its own expiry"


def read_ticket_file(path):
    """The record written by :func:`write_ticket_file`; ValueError says why it is unusable (never shows the ticket)."""
    try:
        with open(path, "r", encoding="utf-8") as f:
            record = json.load(f)
    except OSError as exc:
        raise ValueError("%s cannot be read: %s" % (path, exc.strerror or exc)) from None
    except ValueError:
        raise ValueError("%s is not a ticket file (not JSON)" % path) from None
    if not isinstance(record, dict) or not isinstance(record.get("ticket"), str) or not isinstance(record.get("expires"), int):
        raise ValueError("%s is not a ticket file (no ticket and expiry)" % path)
    return record


# --- migration addresses and TLS --------------------------------------------------------------

def parse_migration_uri(uri):
    """(host, port) of ``tcp:HOST:PORT`` (IPv6 as ``tcp:[ADDR]:PORT``); ValueError names the reason."""
    match = _URI_RE.match(uri or "")
    if not match:
        raise ValueError("migration_uri %r is not tcp:HOST:PORT (IPv6: tcp:[ADDRESS]:PORT); migrations run over "
                         "TCP between the cluster's nodes" % (uri,))
    port = int(match.group("port"))
    if not 1 <= port <= 65535:
        raise ValueError("migration_uri %r: port %d is not between 1 and 65535" % (uri, port))
    return match.group("ip6") or match.group("host"), port


def build_migration_uri(host, port):
    """``tcp:HOST:PORT``, with IPv6 addresses in brackets; validated by :func:`parse_migration_uri`."""
    uri = "tcp:%s:%s" % ("[%s]" % host if ":" in host else host, port)
    parse_migration_uri(uri)
    return uri


def has_object(qmp, object_id):
    """True when QEMU has a user-created object ``object_id`` (``qom-list /objects``)."""
    return any(entry.get("name") == object_id for entry in qmp.execute("qom-list", {"path": "/objects"}))


def tls_creds_arguments(object_id, tls_dir, endpoint):
    """``object-add`` arguments of a ``tls-creds-x509`` object; the server end verifies its peer."""
    arguments = {"qom-type": "tls-creds-x509", "id": object_id, "dir": tls_dir, "endpoint": endpoint}
    if endpoint == "server":
        arguments["verify-peer"] = True
    return arguments


# --- SPICE clients --------------------------------------------------------------------------

def spice_clients(channels):
    """The SPICE sessions in a ``query-spice`` channel list: ``[{"connection_id", "channels"}]`` sorted by id.

    A session is the connection id of a MAIN channel; ``channels`` counts all its channels.
    """
    counts = {}
    for c in channels or ():
        counts[c.get("connection-id")] = counts.get(c.get("connection-id"), 0) + 1
    ids = {c["connection-id"] for c in channels or () if c.get("channel-type") == SPICE_MAIN_CHANNEL}
    return [dict(connection_id=cid, channels=counts[cid]) for cid in sorted(ids)]


def missing_clients(clients, channels):
    """The connection ids of ``clients`` (as from :func:`spice_clients`) without all their channels in ``channels``."""
    present = {s["connection_id"]: s["channels"] for s in spice_clients(channels)}
    return sorted(c["connection_id"] for c in clients if present.get(c["connection_id"], 0) < c["channels"])


def wait_for_clients(qmp, clients, timeout, settle=LINK_SETTLE, interval=0.05, clock=time.monotonic, sleep=time.sleep):
    """Poll ``query-spice`` until every client of ``clients`` has all its channels listed, then wait ``settle`` s.

    A client tells the source it is ready (spice-gtk: ``MIGRATE_CONNECTED_SEAMLESS``) only after its last channel
    linked to the target, a moment after the target lists that channel; ``settle`` covers that moment.
    Returns (missing connection ids, the last ``query-spice`` answer, seconds waited).
    """
    start = clock()
    while True:
        info = qmp.execute("query-spice")
        missing = missing_clients(clients, info.get("channels"))
        waited = clock() - start
        if not missing:
            if clients and settle:
                sleep(settle)
            return missing, info, clock() - start
        if waited >= timeout:
            return missing, info, waited
        sleep(min(interval, max(0.0, timeout - waited)))


# --- the migration itself ---------------------------------------------------------------------

def poll_migration(qmp, timeout, interval=0.05, clock=time.monotonic, sleep=time.sleep):
    """Poll ``query-migrate`` until completed, failed or cancelled, or ``timeout`` seconds pass.

    Returns (the last ``query-migrate`` answer, True when it ended within the time).
    """
    deadline = clock() + timeout
    while True:
        info = qmp.execute("query-migrate")
        if info.get("status") in MIGRATION_DONE:
            return info, True
        if clock() >= deadline:
            return info, False
        sleep(interval)


def migration_stats(info):
    """The numbers a person wants from a ``query-migrate`` answer (times in ms, sizes in bytes)."""
    ram = info.get("ram") or {}
    return dict(
        status=info.get("status"),
        total_time=info.get("total-time"),
        downtime=info.get("downtime"),
        setup_time=info.get("setup-time"),
        transferred=ram.get("transferred"),
        remaining=ram.get("remaining"),
        total=ram.get("total"),
        mbps=ram.get("mbps"),
        error=info.get("error-desc"),
    )
