# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""squid's helper of vmconsole.secure: the proxy token and the console it opens, in one question.

  vmconsole_proxy_helper.py check --keys FILE [--revocations FILE] [--bindings DIR]
                                  --facts FILE --self NAME [--self NAME ...] [--node NAME ...]
                                  [--peer ADDRESS ...] --spice-ports R --vnc-ports R --serial-ports R
                                  [--concurrency]

  `external_acl_type ... %>a %{X-Forwarded-For}>h %{Proxy-Authorization}>h %DST %PORT`: squid asks
  once per CONNECT (and caches the answer for the ACL's ttl). The answer is OK when

  - the Basic credentials are USERNAME:TOKEN and TOKEN is a valid proxy token minted for exactly
    USERNAME's user and VM (not expired, not revoked, signed by a key in --keys);
  - the client is the one the token works from: the token's own address if it has one, else, with
    --bindings, the address it was first used from on this node (bound on first use). The client is
    squid's %>a, or, on a hop from another node's proxy (a --peer address), the X-Forwarded-For that
    proxy set;
  - the CONNECT goes to the token's console (spice, vnc or serial) of the token's VM: on this node
    (a --self name or 127.0.0.1) a port of that console in FILE (the qemu_vm fact, VM running or
    incoming); on another cluster node (a --node name) a port in that console's range, and that
    node's own helper checks its map.

  OK answers carry user=USERNAME (squid logs it, and its cache manager lists it per tunnel) and
  log="user=U;vm=V;console=C[;via=NODE]"; ERR answers log="...;refused=WHY". Keys unusable: BH.

With --concurrency every line starts with squid's channel ID, which every answer repeats.

The token code is `_tickets.py` installed next to this file (a copy of the collection's
plugins/module_utils/_tickets.py, with its `_addresses.py`). Files are read again when they change
(inode, size, mtime). Every line gets exactly one answer, flushed at once; garbage gets ERR, a helper
never dies on input. Nothing secret is ever written: no token, no key, no input line.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import functools
import hashlib
import json
import os
import re
import sys
from urllib.parse import unquote

sys.dont_write_bytecode = True            # the install folder is root's; squid's helpers run as proxy
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _tickets  # noqa: E402  pylint: disable=wrong-import-position

PROGRAM = "vmconsole_proxy_helper"
MAX_LINE = 16384                           # squid's helper lines are far shorter
SELF_ADDRESSES = ("127.0.0.1",)
VM_STATES = ("started", "incoming")        # incoming: the target of a migration, where the client reconnects
# The ports of each console in the qemu_vm fact: a token opens its own console only.
CONSOLE_PORT_KEYS = {"spice": ("spice_tls_port", "spice_port"), "vnc": ("vnc_port",), "serial": ("serial_port",)}


def warn(text):
    """One line to squid's cache.log (stderr). Never called with input, tokens or keys."""
    try:
        sys.stderr.write("%s: %s\n" % (PROGRAM, text))
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


class WatchedFile:
    """A file parsed again only when it changes; ``get()`` returns the parsed value or raises ValueError."""

    def __init__(self, path, parse, missing=None):
        self.path, self.parse, self.missing = path, parse, missing
        self.signature = self.value = None
        self.reported = None

    def get(self):
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            if self.missing is not None:
                self._report("%s does not exist (treated as empty)" % self.path)
                self.signature = None
                return self.missing
            self._report("%s does not exist" % self.path)
            raise ValueError("%s does not exist" % self.path) from None
        except OSError as exc:
            self._report("%s: %s" % (self.path, exc.strerror))
            raise ValueError(self.path) from None
        signature = (st.st_ino, st.st_size, st.st_mtime_ns)
        if signature != self.signature:
            try:
                value = self.parse(self.path)
            except ValueError as exc:
                self._report(str(exc))
                raise
            self.signature, self.value = signature, value
            self._report(None)
        return self.value

    def _report(self, problem):
        if problem != self.reported and problem is not None:
            warn(problem)
        self.reported = problem


def load_facts(path):
    """{VM: {console: frozenset(ports)}} of the VMs running (or incoming) in the qemu_vm fact at ``path``."""
    try:
        with open(path, "r", encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError("%s cannot be read: %s" % (path, getattr(exc, "strerror", None) or exc)) from None
    except ValueError:
        raise ValueError("%s is not valid JSON" % path) from None
    vms = data.get("vms") if isinstance(data, dict) else None
    if not isinstance(vms, dict):
        raise ValueError('%s is not {"vms": {NAME: {...}}}' % path)
    ports = {}
    for name, vm in vms.items():
        if isinstance(vm, dict) and vm.get("state") in VM_STATES:
            ports[name] = {console: frozenset(p for p in (vm.get(k) for k in keys)
                                              if isinstance(p, int) and not isinstance(p, bool))
                           for console, keys in CONSOLE_PORT_KEYS.items()}
    return ports


def parse_ranges(text):
    """``61000-61999,5900-5999`` -> [(61000, 61999), (5900, 5999)]; argparse-friendly errors."""
    ranges = []
    for part in text.split(","):
        low, sep, high = part.strip().partition("-")
        try:
            low, high = int(low), int(high if sep else low)
        except ValueError:
            raise argparse.ArgumentTypeError("%r is not a port or a LOW-HIGH port range" % part) from None
        if not 1 <= low <= high <= 65535:
            raise argparse.ArgumentTypeError("%r is not a port range within 1-65535" % part)
        ranges.append((low, high))
    return ranges


_UNSAFE = re.compile(r"[^A-Za-z0-9._@+-]")


def _safe(text):
    """Text for squid's access log (%ea): nothing but [A-Za-z0-9._@+-], the rest %-escaped."""
    return _UNSAFE.sub(lambda match: "".join("%%%02X" % b for b in match.group().encode("utf-8")), text)


def basic_credentials(header):
    """(username, token) of a ``Proxy-Authorization: Basic ...`` value, or None."""
    scheme, _sep, value = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    username, sep, token = decoded.partition(":")
    return (username, token) if sep else None


class Bindings:
    """Bind-on-first-use: the first client address a token arrives from on this node is the only one
    it works from afterwards. One symbolic link per token in ``folder``, named by the token's SHA-256
    and pointing at the address: symlink(2) makes it with its content in one step, so that of two
    helpers racing exactly one binds and the other reads a complete address. The role's tmpfiles.d
    rule removes links older than the longest token lifetime."""

    def __init__(self, folder):
        self.folder = folder

    def admit(self, token, client):
        """True when ``client`` may use ``token`` here: its first use (now bound) or the bound address."""
        path = os.path.join(self.folder, hashlib.sha256(token.encode("ascii")).hexdigest()[:40])
        try:
            os.symlink(client, path)
            return True
        except FileExistsError:
            return os.readlink(path) == client


def make_check(args):
    keys = WatchedFile(args.keys, _tickets.load_proxy_keys)
    revocations = None
    if args.revocations:
        revocations = WatchedFile(args.revocations, _tickets.load_revocations, missing={"users": {}, "vms": {}})
    bindings = Bindings(args.bindings) if args.bindings else None
    facts = WatchedFile(args.facts, load_facts, missing={})
    self_names = {name.lower() for name in args.self_names} | set(SELF_ADDRESSES)
    nodes = {name.lower() for name in args.nodes} - self_names
    peers = {_tickets.client_address(a) for a in args.peers}
    # squid asks about the same few client addresses over and over: parse each once.
    canonical = functools.lru_cache(maxsize=4096)(_tickets.client_address)
    ranges = {"spice": args.spice_ports, "vnc": args.vnc_ports, "serial": args.serial_ports}

    def client_of(source, forwarded):
        client = canonical(source)
        if client in peers and forwarded != "-":
            return canonical(forwarded.strip())
        return client

    def answer(fields):
        if len(fields) < 5:
            return 'ERR log="refused=expected-SRC-XFF-AUTH-DST-PORT"'
        # squid appends the acl line's arguments ("-" for none): not used.
        source, forwarded, header, host, port = (unquote(f) for f in fields[:5])
        credentials = basic_credentials(header) if header != "-" else None
        if credentials is None:
            return 'ERR log="refused=no-proxy-token"'
        try:
            client = client_of(source, forwarded)
        except ValueError:
            return 'ERR log="refused=bad-client-address"'
        try:
            table = keys.get()
            revoked = revocations.get() if revocations else None
        except ValueError:
            return 'BH message="proxy token keys or revocations unusable, see cache.log"'
        check = _tickets.verify_proxy_token(table, credentials[0], credentials[1], revocations=revoked, client=client)
        if check.user is None:
            return 'ERR log="refused=not-a-proxy-username"'
        who = "user=%s;vm=%s" % (_safe(check.user), _safe(check.vm))
        if not check.ok:
            return 'ERR log="%s;refused=token-%s"' % (who, check.status.replace("_", "-"))
        who += ";console=%s" % check.console
        if not (port.isascii() and port.isdigit() and len(port) <= 5):
            return 'ERR log="%s;refused=bad-port"' % who
        port = int(port)
        if not any(low <= port <= high for low, high in ranges[check.console]):
            return 'ERR log="%s;refused=not-a-%s-port"' % (who, check.console)
        host = host.lower()
        if host in self_names:
            try:
                vms = facts.get()
            except ValueError:
                return 'BH message="VM map unusable, see cache.log"'
            if port not in vms.get(check.vm, {}).get(check.console, ()):
                return 'ERR log="%s;refused=not-this-vms-console-here"' % who
        elif host in nodes:
            who += ";via=%s" % _safe(host)
        else:
            return 'ERR log="%s;refused=not-a-cluster-node"' % who
        if check.client is None and bindings is not None and not bindings.admit(credentials[1], client):
            return 'ERR log="%s;refused=token-bound-to-another-client"' % who
        return 'OK user=%s log="%s"' % (credentials[0], who)

    return answer


# --- the line protocol ----------------------------------------------------------------------

def serve(answer, concurrency, stdin, stdout):
    """Answer each line of ``stdin`` on ``stdout`` until EOF (or squid closing the pipe)."""
    while True:
        raw = stdin.readline(MAX_LINE)
        if not raw:
            return
        too_long = not raw.endswith(b"\n") and len(raw) >= MAX_LINE
        while too_long:                            # drop the rest of an over-long line, answer it once
            rest = stdin.readline(MAX_LINE)
            if not rest or rest.endswith(b"\n"):
                break
        line = raw.rstrip(b"\n").rstrip(b"\r")
        channel = None
        if concurrency:
            # The channel ID comes from the raw bytes, so that squid gets it back whatever follows it
            # (bytes that are not UTF-8, a line cut inside a character): without it squid cannot match
            # the answer to its request.
            head, line = line.partition(b" ")[::2]
            if head.isdigit() and len(head) <= 10:
                channel = head.decode("ascii")
            else:
                line = None
        try:
            if line is None or too_long:
                reply = "ERR"
            else:
                reply = answer(line.decode("utf-8").split(" "))
        except UnicodeDecodeError:
            reply = "ERR"
        except Exception as exc:  # pylint: disable=broad-except  # one bad line must not stop the helper
            warn("internal error (%s) answering a request" % type(exc).__name__)
            reply = 'BH message="internal error"'
        reply = reply if channel is None else "%s %s" % (channel, reply)
        try:
            stdout.write(reply.encode("utf-8") + b"\n")
            stdout.flush()
        except (BrokenPipeError, ValueError):
            return


def parse_args(argv):
    parser = argparse.ArgumentParser(prog=PROGRAM, description="squid's helper of vmconsole.secure")
    sub = parser.add_subparsers(dest="mode", required=True)
    check = sub.add_parser("check", help="external ACL helper (%%>a %%{X-Forwarded-For}>h %%{Proxy-Authorization}>h "
                                         "%%DST %%PORT): the proxy token and the console it opens")
    check.add_argument("--keys", required=True, help="public proxy token keys of every node (JSON), e.g. /etc/vmconsole/proxy-keys.json")
    check.add_argument("--revocations", help="revoked users and VMs (JSON); a missing file revokes nothing")
    check.add_argument("--bindings", metavar="DIR", help="bind each token to the first client address it comes from")
    check.add_argument("--facts", required=True, help="the node's VM map, /etc/ansible/facts.d/vmconsole_vms.fact")
    check.add_argument("--self", dest="self_names", action="append", required=True, metavar="NAME",
                       help="a name of this node (127.0.0.1 always is)")
    check.add_argument("--node", dest="nodes", action="append", default=[], metavar="NAME",
                       help="another cluster node, reached through its own proxy")
    check.add_argument("--peer", dest="peers", action="append", default=[], metavar="ADDRESS",
                       help="another node's proxy: its X-Forwarded-For names the client")
    for console in ("spice", "vnc", "serial"):
        check.add_argument("--%s-ports" % console, type=parse_ranges, required=True, metavar="RANGES",
                           help="%s console port ranges, e.g. 61000-61999" % console)
    check.add_argument("--concurrency", action="store_true", help="lines start with a channel ID (squid concurrency > 0)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    answer = make_check(args)
    try:
        serve(answer, args.concurrency, sys.stdin.buffer, sys.stdout.buffer)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
