# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""A scripted fake QMP server for unit tests.

A :class:`FakeQMPServer` listens on a UNIX socket (or TCP on 127.0.0.1) in a thread and
runs a *script* -- a function that gets a :class:`Peer` -- for every connection it
accepts. Scripts say exactly what the "QEMU" does: greet (or not), answer, interleave
events, send garbage, hang up mid-line, or stay silent. :func:`qemu` builds the usual
script: handshake, then answer each command from a table.

An exception raised in a script (a failed ``assert`` about what the client sent) is
re-raised by :meth:`FakeQMPServer.stop`, so it fails the test.
"""

from __future__ import annotations

import collections
import json
import os
import socket
import threading

DEFAULT_VERSION = (7, 2, 22)

# A table entry for qemu(): answer with {"error": {"class": error_class, "desc": desc}}.
Error = collections.namedtuple("Error", "error_class desc")


class Peer:
    """The server's side of one connection."""

    def __init__(self, server, conn):
        self.server = server
        self.conn = conn
        self.conn.settimeout(0.1)  # lets recv() notice stop() when a test leaves a client open
        self._buf = b""
        self.hung_up = False

    def send(self, obj):
        self.send_raw(json.dumps(obj).encode("utf-8") + b"\r\n")  # QEMU ends lines with CRLF

    def send_raw(self, data):
        """Send bytes as they are; a client that already hung up is not an error here."""
        try:
            self.conn.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            self.hung_up = True

    def recv(self):
        """The next request the client sent (a dict), or None when the client hung up."""
        while b"\n" not in self._buf:
            try:
                data = self.conn.recv(65536)
            except socket.timeout:
                if self.server.stopping.is_set():
                    return None
                continue
            except OSError:
                data = b""
            if not data:
                return None
            self._buf += data
        line, self._buf = self._buf.split(b"\n", 1)
        request = json.loads(line)
        self.server.requests.append(request)
        return request

    def greet(self, version=DEFAULT_VERSION, capabilities=("oob",)):
        major, minor, micro = version
        self.send({"QMP": {"version": {"qemu": {"major": major, "minor": minor, "micro": micro},
                                       "package": "fake"}, "capabilities": list(capabilities)}})

    def negotiate(self):
        request = self.recv()
        assert request is not None and request.get("execute") == "qmp_capabilities", request
        self.reply(request, {})

    def handshake(self, version=DEFAULT_VERSION):
        self.greet(version)
        self.negotiate()

    def reply(self, request, value):
        self.send({"return": value, "id": request.get("id")})

    def error(self, request, error_class, desc):
        self.send({"error": {"class": error_class, "desc": desc}, "id": request.get("id")})

    def event(self, name, data=None):
        message = {"event": name, "timestamp": {"seconds": 1700000000, "microseconds": 0}}
        if data is not None:
            message["data"] = data
        self.send(message)

    def hold(self):
        """Stay silent (keep the connection open) until the server is stopped."""
        self.server.stopping.wait()

    def close(self):
        try:
            self.conn.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.conn.close()


class FakeQMPServer:
    """Serve ``script(peer)`` on a UNIX socket at ``path`` (or TCP when ``path`` is None)."""

    def __init__(self, script, path=None):
        self.script = script
        self.path = path
        self.port = None
        self.requests = []     # every request received, in order, over all connections
        self.connections = 0   # connections accepted so far
        self.stopping = threading.Event()
        self._error = None
        if path is not None:
            self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self._listener.bind(path)
        else:
            self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self._listener.bind(("127.0.0.1", 0))
            self.port = self._listener.getsockname()[1]
        self._listener.listen(4)
        self._listener.settimeout(0.05)
        self._thread = threading.Thread(target=self._serve, name="fake-qmp", daemon=True)

    def start(self):
        self._thread.start()
        return self

    @property
    def commands(self):
        """The ``execute`` names of every request received, in order."""
        return [r.get("execute") for r in self.requests]

    def _serve(self):
        while not self.stopping.is_set():
            try:
                conn, _addr = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.connections += 1
            peer = Peer(self, conn)
            try:
                self.script(peer)
            except Exception as exc:  # reported by stop(), in the test's thread
                self._error = exc
            finally:
                peer.close()

    def stop(self):
        self.stopping.set()
        self._thread.join(10)
        self._listener.close()
        if self.path is not None and os.path.exists(self.path):
            os.unlink(self.path)
        if self._error is not None:
            raise self._error


def qemu(table=None, after_handshake=None, version=DEFAULT_VERSION):
    """A script that behaves like QEMU: greeting, capabilities, then answers from ``table``.

    ``table`` maps a command name to its return value, to an :data:`Error`, or to a
    function ``(peer, request)`` that answers by itself. Unknown commands get QEMU's
    ``CommandNotFound`` error. ``after_handshake(peer)`` runs after the negotiation.
    """
    table = dict(table or {})

    def script(peer):
        peer.handshake(version)
        if after_handshake is not None:
            after_handshake(peer)
        while True:
            request = peer.recv()
            if request is None:
                return
            name = request.get("execute")
            answer = table.get(name, Error("CommandNotFound", "The command %s has not been found" % name))
            if callable(answer):
                answer(peer, request)
            elif isinstance(answer, Error):
                peer.error(request, answer.error_class, answer.desc)
            else:
                peer.reply(request, answer)

    return script
