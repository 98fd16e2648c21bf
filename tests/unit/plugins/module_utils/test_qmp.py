# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import errno
import os
import socket
import time

import pytest

from ansible_collections.vmconsole.secure.plugins.module_utils import _qmp
from ansible_collections.vmconsole.secure.plugins.module_utils._qmp import (
    QMPClient,
    QMPCommandError,
    QMPConnectionRefused,
    QMPError,
    QMPPermissionDenied,
    QMPProtocolError,
    QMPSocketMissing,
    QMPTimeout,
    QMPUnexpectedEOF,
)
from ansible_collections.vmconsole.secure.tests.unit.fakeqmp import Error, qemu

# Timeouts for things that are expected to time out: short, the tests wait for them.
SHORT = 0.3


def client_for(server, timeout=5.0):
    if server.path is None:
        return QMPClient(host="127.0.0.1", port=server.port, timeout=timeout)
    return QMPClient(server.path, timeout=timeout)


# --- connecting ------------------------------------------------------------------------------

def test_connect_reads_greeting_and_negotiates(fake_qmp):
    server = fake_qmp(qemu({"query-status": {"running": True, "status": "running"}}, version=(7, 2, 22)))
    with client_for(server) as qmp:
        assert qmp.greeting["QMP"]["capabilities"] == ["oob"]
        assert qmp.version == {"major": 7, "minor": 2, "micro": 22}
        assert qmp.version_string == "7.2.22"
        assert qmp.execute("query-status") == {"running": True, "status": "running"}
    assert server.commands == ["qmp_capabilities", "query-status"]
    assert "arguments" not in server.requests[0]  # qmp_capabilities without oob: no arguments


def test_events_before_the_greeting_are_kept(fake_qmp):
    # Seen on QEMU 7.2: a connection accepted while a SPICE client leaves gets the
    # SPICE_DISCONNECTED event before the greeting.
    def script(peer):
        peer.event("SPICE_DISCONNECTED", {"client": {"port": "40000"}})
        peer.handshake()
        peer.recv()

    server = fake_qmp(script)
    with client_for(server) as qmp:
        assert qmp.version_string == "7.2.22"
        assert [e["event"] for e in qmp.pop_events()] == ["SPICE_DISCONNECTED"]


def test_tcp(fake_qmp):
    server = fake_qmp(qemu({"query-name": {"name": "web1"}}), tcp=True)
    with QMPClient(host="127.0.0.1", port=server.port, timeout=5) as qmp:
        assert qmp.execute("query-name") == {"name": "web1"}
        assert qmp.peer == "127.0.0.1:%d" % server.port


def test_connect_returns_greeting_and_close_is_idempotent(fake_qmp):
    server = fake_qmp(qemu())
    qmp = client_for(server)
    greeting = qmp.connect()
    assert greeting is qmp.greeting and qmp.connected
    with pytest.raises(QMPError, match="already connected"):
        qmp.connect()
    qmp.close()
    qmp.close()
    assert not qmp.connected
    with pytest.raises(QMPError, match="not connected"):
        qmp.execute("query-status")


@pytest.mark.parametrize("kwargs", [{}, {"path": "/x", "host": "h", "port": 1}, {"host": "127.0.0.1"}])
def test_constructor_needs_one_endpoint(kwargs):
    with pytest.raises(ValueError):
        QMPClient(**kwargs)


def test_capabilities_refused_is_a_command_error_and_closes(fake_qmp):
    def script(peer):
        peer.greet()
        request = peer.recv()
        peer.error(request, "GenericError", "nope")

    qmp = client_for(fake_qmp(script))
    with pytest.raises(QMPCommandError) as info:
        qmp.connect()
    assert info.value.command == "qmp_capabilities"
    assert not qmp.connected


# --- typed connection errors ----------------------------------------------------------------

def test_socket_missing(short_tmp):
    path = os.path.join(short_tmp, "nothere.qmp")
    with pytest.raises(QMPSocketMissing) as info:
        QMPClient(path, timeout=1).connect()
    assert info.value.socket == path
    assert path in str(info.value) and "is the VM running" in str(info.value)


def test_parent_not_a_folder_is_missing(short_tmp):
    regular = os.path.join(short_tmp, "file")
    open(regular, "w").close()
    with pytest.raises(QMPSocketMissing):
        QMPClient(os.path.join(regular, "vm.qmp"), timeout=1).connect()


def test_regular_file_is_refused_with_a_hint(short_tmp):
    path = os.path.join(short_tmp, "regular.qmp")
    open(path, "w").close()
    with pytest.raises(QMPConnectionRefused, match="exists but is not a UNIX socket"):
        QMPClient(path, timeout=1).connect()


def test_stale_socket_file_is_refused(short_tmp):
    path = os.path.join(short_tmp, "stale.qmp")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    sock.close()  # the file stays, nobody listens: what a crashed QEMU leaves behind
    with pytest.raises(QMPConnectionRefused, match="nothing listens"):
        QMPClient(path, timeout=1).connect()


def test_tcp_port_closed_is_refused():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        with pytest.raises(QMPConnectionRefused) as info:
            QMPClient(host="127.0.0.1", port=port, timeout=1).connect()
    assert info.value.socket == "127.0.0.1:%d" % port


@pytest.mark.parametrize("code", [errno.EACCES, errno.EPERM])
def test_permission_denied(monkeypatch, short_tmp, code):
    # Root ignores file permissions, so the kernel's answer is simulated here; the
    # integration tests check the real thing as an unprivileged user.
    class DeniedSocket(socket.socket):
        def connect(self, address):
            raise PermissionError(code, os.strerror(code))

    monkeypatch.setattr(_qmp.socket, "socket", DeniedSocket)
    path = os.path.join(short_tmp, "root-only.qmp")
    with pytest.raises(QMPPermissionDenied) as info:
        QMPClient(path, timeout=1).connect()
    assert path in str(info.value) and "root" in str(info.value)


def test_connect_timeout_when_backlog_is_full(short_tmp):
    # A UNIX listener that never accepts: once its backlog is full, connect() blocks.
    path = os.path.join(short_tmp, "full.qmp")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(0)
    fillers = []
    try:
        with pytest.raises(QMPTimeout, match="connecting"):
            for _i in range(8):  # the kernel queues a few before it blocks
                filler = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                fillers.append(filler)
                filler.setblocking(False)
                try:
                    filler.connect(path)
                except BlockingIOError:
                    break
            QMPClient(path, timeout=SHORT).connect()
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


def test_no_greeting_times_out_with_a_hint(fake_qmp):
    server = fake_qmp(lambda peer: peer.hold())
    started = time.monotonic()
    with pytest.raises(QMPTimeout) as info:
        client_for(server, timeout=SHORT).connect()
    assert time.monotonic() - started < 3
    assert "greeting" in str(info.value) and "one QMP client at a time" in str(info.value)
    assert info.value.socket == server.path


def test_eof_before_greeting(fake_qmp):
    with pytest.raises(QMPUnexpectedEOF, match="closed the connection"):
        client_for(fake_qmp(lambda peer: None)).connect()


@pytest.mark.parametrize("garbage, match", [
    (b"SSH-2.0-OpenSSH_9.2\r\n", "not JSON"),
    (b"\xff\xfe\x00garbage\n", "not JSON"),
    (b"[1, 2, 3]\n", "not an object"),
    (b'{"hello": "world"}\n', "not a QMP greeting"),
    (b'{"QMP": "yes"}\n', "not a QMP greeting"),
])
def test_not_a_qmp_peer(fake_qmp, garbage, match):
    server = fake_qmp(lambda peer: peer.send_raw(garbage))
    with pytest.raises(QMPProtocolError, match=match) as info:
        client_for(server).connect()
    assert server.path in str(info.value)


def test_endless_line_is_bounded(fake_qmp):
    def script(peer):
        for _i in range(64):
            peer.send_raw(b"x" * 1024)  # no newline, ever
        peer.hold()

    qmp = client_for(fake_qmp(script))
    qmp.max_line = 4096
    with pytest.raises(QMPProtocolError, match="without a newline"):
        qmp.connect()


# --- commands ---------------------------------------------------------------------------------

def test_execute_sends_arguments_and_unique_ids(fake_qmp):
    server = fake_qmp(qemu({"set_password": {}, "query-status": {"running": True}}))
    with client_for(server) as qmp:
        assert qmp.execute("set_password", {"protocol": "spice", "password": "s3cret"}) == {}
        qmp.execute("query-status")
    ids = [r["id"] for r in server.requests]
    assert len(set(ids)) == len(ids) == 3
    assert server.requests[1]["arguments"] == {"protocol": "spice", "password": "s3cret"}
    assert "arguments" not in server.requests[2]


def test_command_error_keeps_class_and_desc(fake_qmp):
    server = fake_qmp(qemu({"set_password": Error("GenericError", "Could not set password")}))
    with client_for(server) as qmp:
        with pytest.raises(QMPCommandError) as info:
            qmp.execute("set_password", {"protocol": "spice", "password": "x" * 70})
        assert info.value.command == "set_password"
        assert info.value.error_class == "GenericError"
        assert info.value.desc == "Could not set password"
        assert info.value.socket == server.path
        assert "Could not set password" in str(info.value) and server.path in str(info.value)
        # the connection stays usable after a command error
        with pytest.raises(QMPCommandError) as info:
            qmp.execute("no-such-command")
        assert info.value.error_class == "CommandNotFound"


def test_reply_with_other_id_is_ignored(fake_qmp):
    def answer(peer, request):
        peer.send({"return": "stale", "id": "someone-else"})
        peer.send({"return": {}})  # no id at all: not ours either
        peer.reply(request, "mine")

    with client_for(fake_qmp(qemu({"query-x": answer}))) as qmp:
        assert qmp.execute("query-x") == "mine"


def test_late_reply_after_timeout_is_not_taken_for_the_next_one(fake_qmp):
    slow = []

    def remember(peer, request):
        slow.append(request)  # answer it only together with the next command

    def answer_both(peer, request):
        peer.reply(slow[0], "late answer to query-slow")
        peer.reply(request, "answer to query-fast")

    with client_for(fake_qmp(qemu({"query-slow": remember, "query-fast": answer_both}))) as qmp:
        with pytest.raises(QMPTimeout, match="reply to 'query-slow'"):
            qmp.execute("query-slow", timeout=SHORT)
        assert qmp.execute("query-fast") == "answer to query-fast"


def test_error_without_id_belongs_to_the_current_command(fake_qmp):
    def answer(peer, request):
        peer.send({"error": {"class": "GenericError", "desc": "JSON parse error"}})

    with client_for(fake_qmp(qemu({"broken": answer}))) as qmp:
        with pytest.raises(QMPCommandError, match="JSON parse error"):
            qmp.execute("broken")


def test_reply_without_return_or_error(fake_qmp):
    def answer(peer, request):
        peer.send({"id": request["id"], "something": 1})

    with client_for(fake_qmp(qemu({"odd": answer}))) as qmp:
        with pytest.raises(QMPProtocolError, match="neither 'return' nor 'error'"):
            qmp.execute("odd")


def test_reply_timeout_names_the_command(fake_qmp):
    with client_for(fake_qmp(qemu({"stop": lambda peer, request: None}))) as qmp:
        with pytest.raises(QMPTimeout, match="reply to 'stop'"):
            qmp.execute("stop", timeout=SHORT)


def test_eof_mid_reply(fake_qmp):
    def answer(peer, request):
        peer.send_raw(b'{"return": {"running": tr')
        peer.close()

    with client_for(fake_qmp(qemu({"query-status": answer}))) as qmp:
        with pytest.raises(QMPUnexpectedEOF) as info:
            qmp.execute("query-status")
        assert "query-status" in str(info.value)


def test_garbage_instead_of_reply(fake_qmp):
    with client_for(fake_qmp(qemu({"query-status": lambda peer, request: peer.send_raw(b"<html>\n")}))) as qmp:
        with pytest.raises(QMPProtocolError, match="not JSON"):
            qmp.execute("query-status")


def test_send_after_peer_closed(fake_qmp):
    def quit_now(peer, request):
        peer.reply(request, {})
        peer.event("SHUTDOWN", {"guest": False, "reason": "host-qmp-quit"})
        peer.close()

    with client_for(fake_qmp(qemu({"quit": quit_now}))) as qmp:
        qmp.execute("quit")
        with pytest.raises(QMPUnexpectedEOF):
            for _i in range(3):  # the first send may still land in the socket buffer
                qmp.execute("query-status")
        assert [e["event"] for e in qmp.pop_events()] == ["SHUTDOWN"]


# --- events -----------------------------------------------------------------------------------

def _stop_with_events(peer, request):
    peer.event("RTC_CHANGE", {"offset": 1})
    peer.event("STOP")
    peer.event("RTC_CHANGE", {"offset": 2})
    peer.reply(request, {})


def test_events_before_reply_are_buffered_in_order(fake_qmp):
    with client_for(fake_qmp(qemu({"stop": _stop_with_events}))) as qmp:
        assert qmp.execute("stop") == {}
        assert [e["data"]["offset"] for e in qmp.pop_events("RTC_CHANGE")] == [1, 2]
        assert [e["event"] for e in qmp.pop_events()] == ["STOP"]
        assert qmp.pop_events() == []


def test_wait_event_uses_the_buffer_first(fake_qmp):
    with client_for(fake_qmp(qemu({"stop": _stop_with_events}))) as qmp:
        qmp.execute("stop")
        # The fake sends nothing more: these can only come from the buffer.
        event = qmp.wait_event("RTC_CHANGE", timeout=SHORT, match=lambda e: e["data"]["offset"] == 2)
        assert event["data"] == {"offset": 2}
        assert qmp.wait_event("STOP", timeout=SHORT)["event"] == "STOP"
        assert [e["data"]["offset"] for e in qmp.pop_events()] == [1]


def test_wait_event_reads_the_socket_and_keeps_other_events(fake_qmp):
    def cont(peer, request):
        peer.reply(request, {})
        peer.event("SPICE_CONNECTED", {"client": {"port": "1"}})
        peer.event("RESUME")

    with client_for(fake_qmp(qemu({"cont": cont}))) as qmp:
        qmp.execute("cont")
        assert qmp.wait_event("RESUME", timeout=5)["event"] == "RESUME"
        assert [e["event"] for e in qmp.pop_events()] == ["SPICE_CONNECTED"]


def test_wait_event_skips_late_replies(fake_qmp):
    def cont(peer, request):
        peer.send({"return": {}, "id": "old"})
        peer.reply(request, {})
        peer.send({"return": {}, "id": "older"})
        peer.event("RESUME")

    with client_for(fake_qmp(qemu({"cont": cont}))) as qmp:
        qmp.execute("cont")
        assert qmp.wait_event("RESUME", timeout=5)["event"] == "RESUME"


def test_wait_event_timeout(fake_qmp):
    def stop(peer, request):
        peer.reply(request, {})
        peer.event("STOP")

    with client_for(fake_qmp(qemu({"stop": stop}))) as qmp:
        qmp.execute("stop")
        started = time.monotonic()
        with pytest.raises(QMPTimeout, match="event RESUME"):
            qmp.wait_event("RESUME", timeout=SHORT)
        assert SHORT <= time.monotonic() - started < 3
        # the STOP read while waiting is still there
        assert [e["event"] for e in qmp.pop_events()] == ["STOP"]


def test_wait_event_match_rejects(fake_qmp):
    with client_for(fake_qmp(qemu({"stop": _stop_with_events}))) as qmp:
        qmp.execute("stop")
        with pytest.raises(QMPTimeout):
            qmp.wait_event("RTC_CHANGE", timeout=SHORT, match=lambda e: e["data"]["offset"] == 3)
        assert len(qmp.pop_events("RTC_CHANGE")) == 2


def test_pop_events_reads_what_is_waiting_without_blocking(fake_qmp):
    def stop(peer, request):
        # reply and event in one write: the event reaches the client with the reply,
        # but execute() returns before parsing it
        peer.send_raw(b'{"return": {}, "id": "%s"}\r\n{"event": "STOP", "timestamp": {}}\r\n'
                      % request["id"].encode())

    with client_for(fake_qmp(qemu({"stop": stop}))) as qmp:
        qmp.execute("stop")
        started = time.monotonic()
        assert [e["event"] for e in qmp.pop_events()] == ["STOP"]
        assert qmp.pop_events() == []
        assert time.monotonic() - started < 1


def test_event_buffer_is_bounded(fake_qmp):
    def noisy(peer, request):
        for i in range(10):
            peer.event("RTC_CHANGE", {"offset": i})
        peer.reply(request, {})

    class SmallBuffer(QMPClient):
        max_events = 3

    with SmallBuffer(fake_qmp(qemu({"stop": noisy})).path, timeout=5) as qmp:
        qmp.execute("stop")
        assert [e["data"]["offset"] for e in qmp.pop_events()] == [7, 8, 9]


def test_events_survive_close(fake_qmp):
    with client_for(fake_qmp(qemu({"stop": _stop_with_events}))) as qmp:
        qmp.execute("stop")
    assert len(qmp.pop_events()) == 3
