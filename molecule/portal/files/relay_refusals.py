# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What the portal's WebSocket relay must refuse, tried from the client as a script would (aiohttp).

Reads JSON on stdin: {"portal": "https://hv1:8443", "ca": PEM file, "alice": password, "olga": password,
"serial": VM with a serial console, "vnc": VM with VNC, "foreign": a VM alice may not open, "limit": the
relays a person may hold}. Prints JSON with what happened, never a secret, except "cookies" (the session
cookies it made, for the scenario's check that none reaches a log; the task that runs it is no_log).

  origin        a WebSocket from another origin, and one without an Origin: HTTP status of the handshake
  no_session    a WebSocket with this portal's Origin but no session: HTTP status
  foreign       a relay ticket for a VM outside alice's ACL, and for one that does not exist: HTTP status
  reused        a relay ticket used once (the guest's serial bytes arrive), then again: close code
  other_session alice's ticket in olga's session: close code
  limit         `limit` VNC relays held (each through RFB's handshake to ServerInit), then one more: close code
  cut           a VNC relay held while olga disconnects everyone from the VM: close code, seconds
  logout        a serial relay held while alice logs out: close code; then a WebSocket with the old cookie
"""

import asyncio
import json
import re
import ssl
import sys
import time

import aiohttp

TIMEOUT = aiohttp.ClientTimeout(total=60)
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


class Person:
    """A logged-in browser without a browser: a session cookie and its CSRF token."""

    def __init__(self, portal, context):
        self.portal, self.context = portal, context
        self.http = aiohttp.ClientSession(timeout=TIMEOUT, cookie_jar=aiohttp.CookieJar())
        self.csrf = None

    async def login(self, user, password):
        async with self.http.post(self.portal + "/login", data={"user": user, "password": password},
                                  headers={"Origin": self.portal}, ssl=self.context) as answer:
            text = await answer.text()
        found = CSRF.search(text)
        if answer.status != 200 or not found:
            raise RuntimeError("login of %s: HTTP %d, no page with a CSRF token" % (user, answer.status))
        self.csrf = found.group(1)

    def cookie(self):
        return [c.value for c in self.http.cookie_jar]

    async def post(self, path):
        async with self.http.post(self.portal + path, headers={"Origin": self.portal, "X-CSRF-Token": self.csrf or ""},
                                  ssl=self.context, allow_redirects=False) as answer:
            body = await answer.read()
            return answer.status, (json.loads(body) if answer.content_type == "application/json" else None)

    async def ticket(self, vm, console):
        status, body = await self.post("/api/v1/vms/%s/relay/%s" % (vm, console))
        if status != 200:
            raise RuntimeError("relay ticket for %s %s: HTTP %d" % (vm, console, status))
        return body["ticket"]

    async def socket(self, origin="same"):
        """The relay's WebSocket (serial and VNC), or the HTTP status that refused it."""
        headers = {} if origin is None else {"Origin": self.portal if origin == "same" else origin}
        try:
            return await self.http.ws_connect(self.portal.replace("https:", "wss:") + "/relay/v1", headers=headers,
                                              ssl=self.context, autoclose=False)
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status

    async def close(self):
        await self.http.close()


class Stream:
    """The bytes of a relay's binary messages, read n at a time."""

    def __init__(self, ws):
        self.ws, self.buffer = ws, b""

    async def read(self, n, timeout=20):
        deadline = time.monotonic() + timeout
        while len(self.buffer) < n:
            message = await self.ws.receive(timeout=max(0.1, deadline - time.monotonic()))
            if message.type != aiohttp.WSMsgType.BINARY:
                raise RuntimeError("relay closed (%s, code %s)" % (message.type.name, self.ws.close_code))
            self.buffer += message.data
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data


async def closed(ws, timeout=30):
    """The close code of a relay once it ends (its data read and dropped), or None if it stays open."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            message = await ws.receive(timeout=deadline - time.monotonic())
        except asyncio.TimeoutError:
            return None
        if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
            return ws.close_code
    return None


async def open_serial(person, vm):
    """A serial relay that carries the guest's bytes; ("open", ws) or ("closed", code)."""
    ticket = await person.ticket(vm, "serial")
    ws = await person.socket()
    await ws.send_str(ticket)
    try:
        await Stream(ws).read(1)
    except (RuntimeError, asyncio.TimeoutError):
        return "closed", ws.close_code, ticket
    return "open", ws, ticket


async def open_vnc(person, vm):
    """A VNC relay through RFB's handshake (security type None) to the server's ServerInit; ("open", ws) or
    ("closed", close code)."""
    ticket = await person.ticket(vm, "vnc")
    ws = await person.socket()
    await ws.send_str(ticket)
    stream = Stream(ws)
    try:
        if await stream.read(12) != b"RFB 003.008\n":
            raise RuntimeError("not RFB 3.8")
        await ws.send_bytes(b"RFB 003.008\n")
        if await stream.read(2) != b"\x01\x01":             # one security type: None
            raise RuntimeError("not security type None")
        await ws.send_bytes(b"\x01")
        if await stream.read(4) != b"\x00\x00\x00\x00":     # SecurityResult OK
            raise RuntimeError("security result not OK")
        await ws.send_bytes(b"\x01")                         # ClientInit, shared
        await stream.read(24)                                # ServerInit: size, pixel format, name length
    except (RuntimeError, asyncio.TimeoutError):
        return "closed", ws.close_code
    return "open", ws


async def main(config):
    context = ssl.create_default_context(cafile=config["ca"])
    portal = config["portal"]
    out = {}
    alice, olga, nobody = Person(portal, context), Person(portal, context), Person(portal, context)
    held = []
    try:
        await alice.login("alice", config["alice"])
        await olga.login("olga", config["olga"])
        out["cookies"] = alice.cookie() + olga.cookie()

        out["origin"] = {"other": await alice.socket("https://evil.example:8443"), "none": await alice.socket(None)}
        out["no_session"] = await nobody.socket()
        out["foreign"] = {vm: (await alice.post("/api/v1/vms/%s/relay/vnc" % vm))[0] for vm in (config["foreign"], "vm9")}

        state, ws, ticket = await open_serial(alice, config["serial"])
        out["reused"] = {"first": state}
        if state == "open":
            await ws.close()
            again = await alice.socket()
            await again.send_str(ticket)
            out["reused"]["second"] = await closed(again)
        theirs = await alice.ticket(config["serial"], "serial")
        in_olgas = await olga.socket()
        await in_olgas.send_str(theirs)
        out["other_session"] = await closed(in_olgas)

        opened = []
        for _count in range(config["limit"]):
            result = await open_vnc(alice, config["vnc"])
            opened.append(result[0])
            if result[0] == "open":
                held.append(result[1])
        extra = await open_vnc(alice, config["vnc"])
        out["limit"] = {"held": opened, "one more": extra[1] if extra[0] == "closed" else "open"}
        for ws in held:
            await ws.close()
        held.clear()

        result = await open_vnc(alice, config["vnc"])
        out["cut"] = {"before": result[0]}
        if result[0] == "open":
            start = time.monotonic()
            out["cut"]["disconnect"] = (await olga.post("/api/v1/vms/%s/disconnect" % config["vnc"]))[0]
            out["cut"]["code"] = await closed(result[1])
            out["cut"]["seconds"] = round(time.monotonic() - start, 1)

        state, ws, _ticket = await open_serial(alice, config["serial"])
        out["logout"] = {"before": state}
        if state == "open":
            saved = {c.key: c.value for c in alice.http.cookie_jar}
            out["logout"]["logout"] = (await alice.post("/logout"))[0]
            out["logout"]["code"] = await closed(ws)
            old = Person(portal, context)                    # the cookie kept from before the logout
            old.http.cookie_jar.update_cookies(saved)
            out["logout"]["old cookie"] = await old.socket()
            await old.close()
    finally:
        for ws in held:
            await ws.close()
        for person in (alice, olga, nobody):
            await person.close()
    return out


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(json.load(sys.stdin)))))
