# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import socket
import time

import pytest

from ansible_collections.vmconsole.secure.plugins.module_utils._vnc import vnc_auth_probe, vnc_des_response
from ansible_collections.vmconsole.secure.tests.unit import fakespice

PASSWORD = "Vn8kQ2zr"


def serve(factory):
    """Generator body for a fixture: yields ``start(**kwargs)`` -> a started ``factory(**kwargs)``;
    afterwards closes every server and fails the test on errors in the server threads."""
    started = []

    def start(**kwargs):
        started.append(factory(**kwargs).start())
        return started[-1]

    yield start
    for server in started:
        server.close()
        assert not server.errors, server.errors


@pytest.fixture
def vnc():
    yield from serve(fakespice.FakeVNCServer)


def probe(port, password, **kwargs):
    result = vnc_auth_probe("127.0.0.1", port, password, **kwargs)
    assert result["status"] in ("accepted", "refused", "unreachable")
    assert password not in result["detail"] or not password
    return result


def test_des_response_matches_an_independent_implementation():
    challenge = bytes(range(16, 32))
    for password in ("", "a", "Vn8kQ2zr", "\u00e9t\u00e9", "\xff" * 8):
        assert vnc_des_response(password, challenge) == fakespice.FakeVNCServer.expected_response(password, challenge)


def test_des_response_uses_the_first_8_bytes_only():
    challenge = bytes(16)
    assert vnc_des_response("12345678", challenge) == vnc_des_response("12345678-ignored", challenge)
    assert vnc_des_response("1234567", challenge) == vnc_des_response("1234567\0", challenge)
    assert vnc_des_response("12345678", challenge) != vnc_des_response("12345679", challenge)


def test_accepted_and_hangs_up_before_client_init(vnc):
    server = vnc(password=PASSWORD)
    result = probe(server.port, PASSWORD)
    assert result == dict(status="accepted", detail=result["detail"], rfb_version="3.8", security_types=[2],
                          vencrypt_subtypes=None, vencrypt_subtype=None, subject=None, sasl_mechanism=None)
    session = wait_for_session(server, "after_auth")
    assert session["client_version"] == b"RFB 003.008\n"
    assert session["chosen"] == 2
    assert session["response"] == server.expected_response(PASSWORD, server.CHALLENGE)
    assert session["after_auth"] == b""         # no ClientInit: the share policy never applies


def test_refused_with_the_servers_reason(vnc):
    server = vnc(password=PASSWORD)
    result = probe(server.port, "Xn8kQ2zr")
    assert result["status"] == "refused"
    assert result["detail"].endswith(": Authentication failed")    # QEMU's trailing NUL is gone


def test_no_password_set_is_refused(vnc):
    server = vnc(password=None)
    assert probe(server.port, PASSWORD)["status"] == "refused"


def test_longer_password_counts_8_bytes_like_the_server(vnc):
    server = vnc(password=PASSWORD)
    assert probe(server.port, PASSWORD + "-tail")["status"] == "accepted"


@pytest.mark.parametrize("server_version, client_version", [
    (b"003.003", b"RFB 003.003\n"),
    (b"003.005", b"RFB 003.003\n"),      # unknown minor: fall back to 3.3 (RFC 6143 7.1.1)
    (b"003.007", b"RFB 003.007\n"),
    (b"003.889", b"RFB 003.008\n"),      # Apple's 3.889 speaks 3.8
    (b"004.001", b"RFB 003.008\n"),
])
def test_protocol_versions(vnc, server_version, client_version):
    server = vnc(password=PASSWORD, version=server_version)
    assert probe(server.port, PASSWORD)["status"] == "accepted"
    assert wait_for_session(server, "response")["client_version"] == client_version
    result = probe(server.port, "Wr0ngPwd")
    assert result["status"] == "refused"
    if client_version != b"RFB 003.008\n":
        assert "wrong, expired, or no password set" in result["detail"]     # no reason before 3.8


def test_vnc_auth_preferred_over_none(vnc):
    server = vnc(password=PASSWORD, types=(1, 2))
    assert probe(server.port, PASSWORD)["status"] == "accepted"
    assert wait_for_session(server, "response")["chosen"] == 2


@pytest.mark.parametrize("version", [b"003.008", b"003.003"])
def test_no_authentication_is_accepted_and_said_so(vnc, version):
    server = vnc(types=(1,), version=version)
    result = probe(server.port, "anything")
    assert result["status"] == "accepted"
    assert "no authentication" in result["detail"]


def test_no_type_the_probe_runs_is_unreachable(vnc):
    server = vnc(types=(16, 30))
    result = probe(server.port, PASSWORD)
    assert (result["status"], result["security_types"]) == ("unreachable", [16, 30])
    assert "16 (Tight), 30 (Apple Remote Desktop)" in result["detail"]
    assert "19 (VeNCrypt), 2 (VNC Authentication), 1 (None)" in result["detail"]


@pytest.mark.parametrize("version", [b"003.008", b"003.003"])
def test_server_refuses_the_connection(vnc, version):
    server = vnc(types=(), version=version, refuse_reason="Too many security failures")
    result = probe(server.port, PASSWORD)
    assert result["status"] == "unreachable"
    assert result["detail"].endswith("refused the connection: Too many security failures")


def test_garbage_greeting():
    class Garbage(fakespice.FakeVNCServer):
        def handle(self, conn):
            conn.sendall(b"SSH-2.0-Open\n")

    with Garbage() as server:
        result = probe(server.port, PASSWORD)
    assert result["status"] == "unreachable" and "is not a VNC server" in result["detail"]


def test_connection_refused():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = probe(port, PASSWORD)
    assert result["status"] == "unreachable" and "connection refused" in result["detail"]


def test_silent_server_times_out_within_the_budget():
    class Silent(fakespice.FakeVNCServer):
        def handle(self, conn):
            while conn.recv(4096):
                pass

    with Silent() as server:
        start = time.monotonic()
        result = probe(server.port, PASSWORD, timeout=0.4)
        elapsed = time.monotonic() - start
    assert result["status"] == "unreachable" and "timed out" in result["detail"]
    assert 0.3 < elapsed < 2.0


def wait_for_session(server, key, timeout=2.0):
    """The server thread records the last step after the client moved on: wait for it briefly."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.sessions and key in server.sessions[-1]:
            return server.sessions[-1]
        time.sleep(0.01)
    raise AssertionError("the fake server recorded no %r: %r" % (key, server.sessions))
