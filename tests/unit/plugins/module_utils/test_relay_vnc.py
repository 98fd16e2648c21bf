# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The VNC relay: QEMU's side (VeNCrypt through a CONNECT proxy, on asyncio streams) against the fake VeNCrypt
server, and the browser's side (RFB with security type None) against scripted browsers."""

from __future__ import annotations

import asyncio
import datetime
import functools
import json
import os
import re
import ssl
import struct

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ansible_collections.vmconsole.secure.plugins.module_utils._portal import SPICE_HTML5_FILES, STATIC_FILES, StaticFiles
from ansible_collections.vmconsole.secure.plugins.module_utils._relay import RelayError
from ansible_collections.vmconsole.secure.plugins.module_utils._relay_vnc import (
    BrowserBytes,
    greet_browser,
    open_vnc,
    vendored_static,
)
from ansible_collections.vmconsole.secure.tests.unit import fakespice
from ansible_collections.vmconsole.secure.tests.unit.plugins.module_utils.test_vnc import serve, wait_for_session
from ansible_collections.vmconsole.secure.tests.unit.plugins.module_utils.test_vnc_vencrypt import FakeVeNCrypt

PASSWORD = "Vk3nP8qz"
STATIC = os.path.join(os.path.dirname(__file__), "..", "..", "..", "..", "roles", "console_portal", "files", "static")


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA, QEMU's certificate for the node name hv1 (subjectAltName, as the pki role's) and the relay's contexts."""
    ca = fakespice.make_ca()
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hv1")]))
            .issuer_name(ca[1].subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("hv1")]), critical=False)
            # Python 3.13's default context (VERIFY_X509_STRICT) wants it, as the pki role's certificates have it.
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca[1].public_key()), critical=False)
            .sign(ca[0], hashes.SHA256()))
    client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=fakespice.pem(ca[1]))   # as the portal's
    other = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=fakespice.pem(fakespice.make_ca()[1]))
    return dict(server=fakespice.server_context(str(tmp_path_factory.mktemp("tls")), key, cert), client=client,
                other=other)


@pytest.fixture
def fake(pki):
    yield from serve(functools.partial(FakeVeNCrypt, pki["server"]))


async def connect_proxy(target_port, seen):
    """A CONNECT proxy on 127.0.0.1 that sends every tunnel to ``target_port``; ``seen`` gets the request heads."""

    async def pipe(reader, writer):
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def handle(reader, writer):
        seen.append(await reader.readuntil(b"\r\n\r\n"))
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target_port)
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def relay_to(server_port, password, context, node="hv1"):
    """open_vnc through a proxy to the fake server; (what the proxy saw, None or the RelayError)."""
    async def scenario():
        seen = []
        proxy, port = await connect_proxy(server_port, seen)
        try:
            try:
                reader, writer = await open_vnc("127.0.0.1", port, node, 5901, "alice__vm1", "v3_token", password,
                                                context, timeout=5)
            except RelayError as exc:
                return seen, exc
            writer.write(b"\x01")                                       # ClientInit, as the browser's would go on
            await writer.drain()
            await asyncio.sleep(0.2)
            writer.close()
            return seen, None
        finally:
            proxy.close()
    return asyncio.run(scenario())


def test_the_relay_authenticates_to_qemu_through_the_proxy_and_qemu_waits_for_client_init(fake, pki):
    server = fake(subtypes=(261,), vnc_password=PASSWORD)
    seen, error = relay_to(server.port, PASSWORD, pki["client"])
    assert error is None
    assert seen[0].startswith(b"CONNECT hv1:5901 HTTP/1.1\r\n") and b"Proxy-Authorization: Basic " in seen[0]
    session = wait_for_session(server, "after_auth")
    assert (session["type"], session["subtype"], session["after_auth"]) == (19, 261, b"\x01")   # VeNCrypt X509VNC


def test_a_refused_ticket_is_a_relay_error_without_the_ticket(fake, pki):
    server = fake(subtypes=(261,), vnc_password=PASSWORD)
    dummy, error = relay_to(server.port, "wrongpas", pki["client"])
    assert error.reason == "vnc_refused" and "Authentication failed" in str(error) and "wrongpas" not in str(error)


@pytest.mark.parametrize("context, node", [("other", "hv1"), ("client", "hv2")], ids=["other CA", "other name"])
def test_qemus_certificate_must_be_the_cas_for_the_node(fake, pki, context, node):
    server = fake(subtypes=(261,), vnc_password=PASSWORD)
    dummy, error = relay_to(server.port, PASSWORD, pki[context], node=node)
    assert error.reason == "tls_mismatch", error
    assert wait_for_session(server, "tls_failed")["tls_failed"]        # nothing was sent inside TLS


def test_a_console_without_tls_is_never_reached(pki):
    for server in serve(functools.partial(fakespice.FakeVNCServer)):
        plain = server(password=PASSWORD, types=(2,))                   # plain VNC authentication
        dummy, error = relay_to(plain.port, PASSWORD, pki["client"])
        assert error.reason == "console_unreachable" and "never reached without TLS" in str(error)
        assert plain.sessions[0].get("response") is None                # the ticket was not sent


# --- the browser's side ------------------------------------------------------------------------------

def greet(browser_messages):
    """Run greet_browser against a browser that sends ``browser_messages`` (bytes each; None: it closes);
    (what the relay sent, its return value or the RelayError, the bytes left over)."""
    sent, queue = [], list(browser_messages)

    async def receive():
        return queue.pop(0) if queue else None

    async def send(data):
        sent.append(data)

    async def scenario():
        browser = BrowserBytes(receive)
        try:
            minor = await greet_browser(browser.read, send, timeout=5)
        except RelayError as exc:
            return exc, browser.rest
        return minor, browser.rest
    result, rest = asyncio.run(scenario())
    return b"".join(sent), result, rest


def test_rfb_38_with_security_type_none_and_the_client_init_left_for_qemu():
    sent, minor, rest = greet([b"RFB 003.008\n", b"\x01\x01"])         # the type and ClientInit in one message
    assert sent == b"RFB 003.008\n" + b"\x01\x01" + struct.pack(">I", 0)   # one type: None; SecurityResult OK
    assert (minor, rest) == (8, b"\x01")


def test_rfb_37_has_no_security_result_and_33_gets_the_type_named():
    assert greet([b"RFB 003.007\n", b"\x01"])[:2] == (b"RFB 003.008\n\x01\x01", 7)
    assert greet([b"RFB 003.003\n"])[:2] == (b"RFB 003.008\n" + struct.pack(">I", 1), 3)


@pytest.mark.parametrize("messages, text", [
    ([b"GET / HTTP/1.1\r\n"], "does not speak RFB"),
    ([b"RFB 003.008\n", b"\x02"], "chose security type 2"),
    ([b"RFB 003.0"], "closed the console"),
])
def test_a_browser_that_speaks_otherwise_is_refused(messages, text):
    dummy, error, dummy_rest = greet(messages)
    assert isinstance(error, RelayError) and text in str(error)


def test_a_silent_browser_times_out():
    async def scenario():
        async def receive():
            await asyncio.sleep(10)

        async def send(data):
            pass
        with pytest.raises(RelayError, match="did not finish"):
            await greet_browser(BrowserBytes(receive).read, send, timeout=0.1)
    asyncio.run(scenario())


# --- noVNC's files -----------------------------------------------------------------------------------

def test_the_vendored_novnc_modules_are_served_and_nothing_else(tmp_path):
    found = vendored_static(StaticFiles(folder=STATIC).read)
    assert found["novnc/core/rfb.js"] == "text/javascript"
    assert "novnc/vendor/pako/lib/zlib/inflate.js" in found and "novnc/LICENSE.txt" not in found
    imported = set()
    pages = ["vnc-console.js", "spice-console.js", "browser-console.js", "console-reconnect.js"]
    for name in list(found) + pages:                                    # every module the pages import is served
        with open(os.path.join(STATIC, name), encoding="utf-8") as handle:
            for target in re.findall(r"""^\s*import\b[^'"]*['"]([^'"]+)['"]""", handle.read(), re.M):
                imported.add(os.path.normpath(os.path.join(os.path.dirname(name), target)))
    spice_html5 = {name for name in imported if name.startswith("spice-html5/")}     # Debian's, served from its folder
    assert imported and imported - spice_html5 <= set(found) | set(STATIC_FILES)
    assert {name[len("spice-html5/"):] for name in spice_html5} <= SPICE_HTML5_FILES
    assert vendored_static(StaticFiles(folder=str(tmp_path)).read) == {}
    (tmp_path / "novnc").mkdir()
    (tmp_path / "novnc" / "vendor.json").write_text(json.dumps({"sha256": {"../x.js": "", "a.js": "", "b.txt": ""}}))
    assert vendored_static(StaticFiles(folder=str(tmp_path)).read) == {"novnc/a.js": "text/javascript"}


def test_the_static_files_come_from_the_zip_the_role_installs(tmp_path):
    """The role's zip (code_bundle with folder: files/static) gives the same files and the same noVNC list."""
    from ansible_collections.vmconsole.secure.plugins.action import code_bundle  # pylint: disable=import-outside-toplevel
    bundle = tmp_path / "static.zip"
    bundle.write_bytes(code_bundle.build_folder_zip(STATIC, code_bundle.folder_files(STATIC)))
    zipped, folder = StaticFiles(zip_path=str(bundle), folder="/nonexistent"), StaticFiles(folder=STATIC)
    assert vendored_static(zipped.read) == vendored_static(folder.read) != {}
    for name in ["browser-console.js", "vnc-console.js", "spice-console.js", "xterm/xterm.js", "novnc/core/rfb.js"]:
        assert zipped.read(name) == folder.read(name)
    with pytest.raises(KeyError):
        zipped.read("../../etc/passwd")
    with pytest.raises(KeyError):
        folder.read("../vnc-console.js")
