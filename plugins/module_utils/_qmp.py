# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The collection's one QMP (QEMU Machine Protocol) client.

Private module: stdlib only and no Ansible imports, so it runs on any managed host with
Python 3.8+ and can be used by tests and tools as well as by modules.

QMP speaks one JSON object per line. After connecting, QEMU sends a greeting
(``{"QMP": {"version": ..., "capabilities": [...]}}``); the client answers with
``qmp_capabilities`` and may then send commands. Every command carries a unique ``id``
that QEMU copies into its reply, so a late reply to a command that timed out can never be
mistaken for the reply to the next one. Asynchronous events can arrive at any time, also
between a command and its reply; they are kept in a bounded buffer until ``wait_event`` or
``pop_events`` asks for them.

Example::

    with QMPClient("/run/vmconsole/web1.qmp", timeout=5) as qmp:
        qmp.execute("stop")
        qmp.wait_event("STOP", timeout=5)
"""

from __future__ import annotations

import collections
import errno
import itertools
import json
import os
import select
import socket
import stat
import time

__all__ = [
    "QMPClient", "QMPError", "QMPSocketMissing", "QMPPermissionDenied", "QMPConnectionRefused", "QMPTimeout",
    "QMPUnexpectedEOF", "QMPProtocolError", "QMPCommandError",
]


class QMPError(Exception):
    """Base of every error raised by :class:`QMPClient`.

    ``socket`` names the peer (UNIX socket path, or ``host:port``), ``message`` is the
    human-readable text that ``str(exc)`` also returns.
    """

    def __init__(self, message, socket=None):
        super().__init__(message)
        self.message = message
        self.socket = socket

    def __str__(self):
        return self.message


class QMPSocketMissing(QMPError):
    """The UNIX socket path does not exist (VM not running, or wrong path)."""


class QMPPermissionDenied(QMPError):
    """Connecting was refused with EACCES/EPERM (the sockets are root-only)."""


class QMPConnectionRefused(QMPError):
    """Nobody listens: a stale socket file, a path that is not a socket, or a closed TCP port."""


class QMPTimeout(QMPError):
    """Connecting, the greeting, a reply or an awaited event took longer than allowed."""


class QMPUnexpectedEOF(QMPError):
    """The peer closed the connection (QEMU quit, or another client holds the monitor)."""


class QMPProtocolError(QMPError):
    """The peer does not speak QMP: no or garbled greeting, invalid JSON, oversized line."""


class QMPCommandError(QMPError):
    """QEMU answered a command with ``{"error": {"class": ..., "desc": ...}}``."""

    def __init__(self, message, socket=None, command=None, error_class=None, desc=None):
        super().__init__(message, socket=socket)
        self.command = command
        self.error_class = error_class
        self.desc = desc


class QMPClient:
    """A QMP connection over a UNIX socket (``path``) or TCP (``host`` and ``port``).

    ``timeout`` (seconds) bounds connecting, the greeting and each command, unless a call
    passes its own. The client is not thread-safe. QEMU serves one QMP client per monitor
    at a time: a second client connects but gets no greeting until the first one closes.
    """

    #: Longest accepted QMP line in bytes (``query-qmp-schema`` is about 200 KiB).
    max_line = 16 * 1024 * 1024
    #: Most events kept for ``wait_event``/``pop_events``; the oldest are dropped first.
    max_events = 1000

    _ids = itertools.count(1)  # shared by all clients: ids stay unique within a process

    def __init__(self, path=None, host=None, port=None, timeout=10.0):
        if (path is None) == (host is None):
            raise ValueError("QMPClient needs either path or host (and port)")
        if host is not None and port is None:
            raise ValueError("QMPClient needs a port with host")
        self.path = path
        self.host = host
        self.port = port
        self.timeout = float(timeout)
        self.peer = path if path is not None else "%s:%s" % (host, port)
        self.greeting = None
        self.version = None
        self.version_string = None
        self._sock = None
        self._buf = bytearray()
        self._events = collections.deque(maxlen=self.max_events)

    # --- connection ---------------------------------------------------------------------

    def connect(self):
        """Connect, read the greeting and negotiate capabilities; returns the greeting."""
        if self._sock is not None:
            raise QMPError("QMP client for %s is already connected" % self.peer, self.peer)
        deadline = time.monotonic() + self.timeout  # one budget for socket, greeting and negotiation
        self._sock = self._open_socket(deadline)
        try:
            self._buf = bytearray()
            greeting = self._read_message(deadline, "the QMP greeting")
            # QEMU can write an event on a new connection before its greeting (the monitor
            # takes the connection in the main loop, where events are emitted too): keep
            # such events for wait_event/pop_events and read on.
            while isinstance(greeting.get("event"), str) and "QMP" not in greeting:
                self._events.append(greeting)
                greeting = self._read_message(deadline, "the QMP greeting")
            info = greeting.get("QMP")
            if not isinstance(info, dict) or not isinstance(info.get("version"), dict):
                raise QMPProtocolError("%s is not a QMP monitor: its first message is not a QMP greeting: %s"
                                       % (self.peer, _excerpt(json.dumps(greeting))), self.peer)
            self.greeting = greeting
            qemu = info["version"].get("qemu")
            if isinstance(qemu, dict):
                self.version = qemu
                self.version_string = "%s.%s.%s" % (qemu.get("major"), qemu.get("minor"), qemu.get("micro"))
            self.execute("qmp_capabilities", timeout=_remaining(deadline))
        except BaseException:
            self.close()
            raise
        return greeting

    def _open_socket(self, deadline):
        try:
            if self.path is not None:
                return self._open_unix(deadline)
            return socket.create_connection((self.host, self.port), timeout=_remaining(deadline))
        except socket.timeout:
            raise QMPTimeout("connecting to QMP %s timed out after %g s: QEMU does not accept connections "
                             "(is it stuck?)" % (self.peer, self.timeout), self.peer) from None
        except OSError as exc:
            raise self._connect_error(exc) from None

    def _open_unix(self, deadline):
        # A UNIX socket with a timeout is non-blocking inside: when the listener's backlog
        # is full, connect() fails at once with EAGAIN instead of waiting. Retry until the
        # deadline, like a blocking connect with a timeout would wait.
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(_remaining(deadline))
                sock.connect(self.path)
                return sock
            except BlockingIOError:
                sock.close()
                if time.monotonic() >= deadline:
                    raise socket.timeout("timed out") from None
                time.sleep(0.05)
            except BaseException:
                sock.close()
                raise

    def _connect_error(self, exc):
        code = exc.errno
        where = "QMP socket %s" % self.peer if self.path is not None else "QMP at %s" % self.peer
        if code == errno.ENOENT:
            return QMPSocketMissing("%s does not exist: is the VM running, and is the path right?" % where, self.peer)
        if code in (errno.EACCES, errno.EPERM):
            return QMPPermissionDenied("permission denied connecting to %s: QMP sockets are root-only, run as root "
                                       "(become: true)" % where, self.peer)
        if code == errno.ECONNREFUSED:
            if self.path is not None and not _is_socket(self.path):
                return QMPConnectionRefused("%s exists but is not a UNIX socket: check the path" % where, self.peer)
            return QMPConnectionRefused("connection refused by %s: nothing listens there (QEMU gone, stale socket "
                                        "file?)" % where, self.peer)
        if code == errno.ENOTDIR:
            return QMPSocketMissing("%s does not exist (a parent is not a folder): check the path" % where, self.peer)
        return QMPError("cannot connect to %s: %s" % (where, exc.strerror or exc), self.peer)

    def close(self):
        """Close the connection; safe to call more than once. Buffered events are kept."""
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    @property
    def connected(self):
        return self._sock is not None

    def __enter__(self):
        if self._sock is None:
            self.connect()
        return self

    def __exit__(self, *exc_info):
        self.close()

    # --- commands and events ------------------------------------------------------------

    def execute(self, command, arguments=None, timeout=None):
        """Run ``command`` and return its ``"return"`` value.

        Raises :class:`QMPCommandError` when QEMU answers with an error. Events that
        arrive before the reply are buffered; replies with other ids are discarded.
        """
        if self._sock is None:
            raise QMPError("QMP client for %s is not connected" % self.peer, self.peer)
        request_id = "vmc-%d" % next(self._ids)
        request = {"execute": command, "id": request_id}
        if arguments is not None:
            request["arguments"] = arguments
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        self._send(request, deadline, command)
        what = "the reply to %r" % command
        while True:
            msg = self._read_message(deadline, what)
            if "event" in msg:
                self._events.append(msg)
                continue
            if "id" not in msg and "error" in msg:
                # QEMU leaves out the id only when it could not parse the request at all.
                raise self._command_error(command, msg)
            if msg.get("id") != request_id:
                continue  # a late reply to an earlier command that timed out
            if "error" in msg:
                raise self._command_error(command, msg)
            if "return" in msg:
                return msg["return"]
            raise QMPProtocolError("%s sent a reply to %r with neither 'return' nor 'error': %s"
                                   % (self.peer, command, _excerpt(json.dumps(msg))), self.peer)

    def wait_event(self, name, timeout, match=None):
        """Return (and remove) the first event called ``name`` for which ``match(event)`` is true.

        Buffered events are searched first, oldest first; then the socket is read until
        ``timeout`` seconds have passed (:class:`QMPTimeout`). Other events stay buffered.
        """
        for event in list(self._events):
            if event.get("event") == name and (match is None or match(event)):
                self._events.remove(event)
                return event
        if self._sock is None:
            raise QMPError("QMP client for %s is not connected" % self.peer, self.peer)
        deadline = time.monotonic() + timeout
        while True:
            msg = self._read_message(deadline, "event %s" % name)
            if "event" not in msg:
                continue  # a late reply to a command that timed out
            if msg.get("event") == name and (match is None or match(msg)):
                return msg
            self._events.append(msg)

    def pop_events(self, name=None):
        """Remove and return the buffered events (all, or those called ``name``), oldest first.

        Events already waiting in the socket are read first, without blocking.
        """
        self._drain()
        if name is None:
            events = list(self._events)
            self._events.clear()
            return events
        events = [e for e in self._events if e.get("event") == name]
        kept = [e for e in self._events if e.get("event") != name]
        self._events.clear()
        self._events.extend(kept)
        return events

    # --- wire format --------------------------------------------------------------------

    def _command_error(self, command, msg):
        error = msg.get("error")
        if not isinstance(error, dict):
            error = {}
        error_class = error.get("class", "GenericError")
        desc = error.get("desc", "")
        return QMPCommandError("QMP command %r failed on %s: %s: %s" % (command, self.peer, error_class, desc),
                               self.peer, command=command, error_class=error_class, desc=desc)

    def _send(self, obj, deadline, command):
        data = json.dumps(obj, separators=(",", ":")).encode("utf-8") + b"\n"
        try:
            self._sock.settimeout(_remaining(deadline))
            self._sock.sendall(data)
        except socket.timeout:
            raise QMPTimeout("sending %r to QMP %s timed out" % (command, self.peer), self.peer) from None
        except OSError as exc:
            if exc.errno in (errno.EPIPE, errno.ECONNRESET):
                raise QMPUnexpectedEOF("QMP %s closed the connection before %r could be sent (did QEMU quit?)"
                                       % (self.peer, command), self.peer) from None
            raise QMPError("sending %r to QMP %s failed: %s" % (command, self.peer, exc), self.peer) from None

    def _read_message(self, deadline, what):
        """The next JSON object from the socket, waiting at most until ``deadline``."""
        while True:
            line = self._next_line()
            while line is None:
                self._fill(deadline, what)
                line = self._next_line()
            if line.strip():
                return self._parse(line)

    def _next_line(self):
        end = self._buf.find(b"\n")
        if end < 0:
            if len(self._buf) > self.max_line:
                raise QMPProtocolError("%s sent more than %d bytes without a newline: not a QMP peer"
                                       % (self.peer, self.max_line), self.peer)
            return None
        line = bytes(self._buf[:end])
        del self._buf[:end + 1]
        return line

    def _fill(self, deadline, what):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise self._timeout(what)
        try:
            self._sock.settimeout(remaining)
            data = self._sock.recv(65536)
        except socket.timeout:
            raise self._timeout(what) from None
        except OSError as exc:
            if exc.errno == errno.ECONNRESET:
                data = b""
            else:
                raise QMPError("reading %s from QMP %s failed: %s" % (what, self.peer, exc), self.peer) from None
        if not data:
            raise QMPUnexpectedEOF("QMP %s closed the connection while waiting for %s (did QEMU quit?)"
                                   % (self.peer, what), self.peer)
        self._buf.extend(data)

    def _timeout(self, what):
        hint = ""
        if what == "the QMP greeting":
            hint = ": another client may hold the monitor (QEMU serves one QMP client at a time)"
        return QMPTimeout("timed out waiting for %s from QMP %s%s" % (what, self.peer, hint), self.peer)

    def _parse(self, line):
        try:
            msg = json.loads(line.decode("utf-8"))
        except ValueError:  # also UnicodeDecodeError
            raise QMPProtocolError("%s is not a QMP peer: it sent a line that is not JSON: %s"
                                   % (self.peer, _excerpt(line)), self.peer) from None
        if not isinstance(msg, dict):
            raise QMPProtocolError("%s is not a QMP peer: it sent JSON that is not an object: %s"
                                   % (self.peer, _excerpt(line)), self.peer)
        return msg

    def _drain(self):
        """Move complete messages that are already readable into the event buffer."""
        if self._sock is None:
            return
        while True:
            line = self._next_line()
            if line is None:
                try:
                    readable = select.select([self._sock], [], [], 0)[0]
                    data = self._sock.recv(65536) if readable else None
                except OSError:
                    return
                if not data:
                    return  # nothing waiting, or EOF: the next execute() reports it
                self._buf.extend(data)
                continue
            if line.strip():
                msg = self._parse(line)
                if "event" in msg:
                    self._events.append(msg)


def _remaining(deadline):
    """Seconds left until ``deadline`` (a time.monotonic() value); never zero, which would mean non-blocking."""
    return max(deadline - time.monotonic(), 0.001)


def _is_socket(path):
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False


def _excerpt(data, limit=120):
    if isinstance(data, bytes):
        data = data.decode("utf-8", "replace")
    data = data.strip()
    return repr(data if len(data) <= limit else data[:limit] + "...")
