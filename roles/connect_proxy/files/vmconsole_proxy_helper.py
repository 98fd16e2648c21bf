# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""squid helpers of vmconsole.secure: proxy token authentication and the console destination ACL.

One program, two squid helper roles (they share the line protocol, the file caching and the
token code):

  vmconsole_proxy_helper.py auth --keys FILE [--revocations FILE] [--concurrency]
      `auth_param basic program`: reads `USERNAME TOKEN` lines (URL-escaped by squid) and
      answers OK when TOKEN is a valid proxy token minted for exactly USERNAME's user and VM,
      else ERR message="proxy token <status>"; BH when the keys file is unusable.

  vmconsole_proxy_helper.py acl --facts FILE --self NAME [--self NAME ...] [--node NAME ...]
                                --console-ports LOW-HIGH[,LOW-HIGH...] [--concurrency]
      `external_acl_type ... %LOGIN %DST %PORT`: answers OK when the CONNECT goes to the
      console of the token's VM: on this node (a --self name or 127.0.0.1) the port must be
      one of that VM's console ports in FILE (the qemu_vm fact, VM running or incoming); on
      another cluster node (a --node name) the port must be in a console range, and that
      node's own helper checks its map. Anything else: ERR.

With --concurrency every line starts with squid's channel ID, which every answer repeats.

The token code is `_tickets.py` installed next to this file (a copy of the collection's
plugins/module_utils/_tickets.py). Files are read again when they change (inode, size,
mtime). Every line gets exactly one answer, flushed at once; garbage gets ERR, a helper
never dies on input. Nothing secret is ever written: no token, no key, no input line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from urllib.parse import unquote

sys.dont_write_bytecode = True            # the install folder is root's; squid's helpers run as proxy
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _tickets  # noqa: E402  pylint: disable=wrong-import-position

PROGRAM = "vmconsole_proxy_helper"
MAX_LINE = 16384                           # squid's helper lines are far shorter
SELF_ADDRESSES = ("127.0.0.1",)
VM_STATES = ("started", "incoming")        # incoming: the target of a migration, where the client reconnects
CONSOLE_PORT_KEYS = ("spice_tls_port", "spice_port", "vnc_port", "serial_port")


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


# --- auth -----------------------------------------------------------------------------------

def make_auth(args):
    keys = WatchedFile(args.keys, _tickets.load_proxy_keys)
    revocations = None
    if args.revocations:
        revocations = WatchedFile(args.revocations, _tickets.load_revocations, missing={"users": {}, "vms": {}})

    def answer(fields):
        if len(fields) != 2:
            return 'ERR message="expected USERNAME TOKEN"'
        username, token = unquote(fields[0]), unquote(fields[1])
        try:
            table = keys.get()
            revoked = revocations.get() if revocations else None
        except ValueError:
            return 'BH message="proxy token keys or revocations unusable, see cache.log"'
        check = _tickets.verify_proxy_token(table, username, token, revocations=revoked)
        if check.ok:
            return "OK"
        return 'ERR message="proxy token %s"' % check.status.replace("_", " ")

    return answer


# --- acl ------------------------------------------------------------------------------------

def _load_facts(path):
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
            ports[name] = frozenset(p for p in (vm.get(k) for k in CONSOLE_PORT_KEYS)
                                    if isinstance(p, int) and not isinstance(p, bool))
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


def _safe(text):
    """Text for squid's access log (%ea): nothing but [A-Za-z0-9._@+-], the rest %-escaped.

    The answer's log= ("user=U;vm=V[;via=NODE][;refused=WHY]") is what %ea shows.
    """
    return "".join(c if c.isascii() and (c.isalnum() or c in "._@+-") else "".join(
        "%%%02X" % b for b in c.encode("utf-8")) for c in text)


def make_acl(args):
    facts = WatchedFile(args.facts, _load_facts, missing={})
    self_names = {name.lower() for name in args.self_names} | set(SELF_ADDRESSES)
    nodes = {name.lower() for name in args.nodes} - self_names
    ranges = args.console_ports

    def answer(fields):
        if len(fields) < 3:
            return 'ERR log="refused=expected-LOGIN-DST-PORT"'
        # squid appends the acl line's arguments ("-" for none): not used.
        login, host, port = (unquote(f) for f in fields[:3])
        names = _tickets.parse_proxy_username(login)
        if names is None:
            return 'ERR log="refused=not-a-proxy-username"'
        who = "user=%s;vm=%s" % (_safe(names[0]), _safe(names[1]))
        if not (port.isascii() and port.isdigit() and len(port) <= 5):
            return 'ERR log="%s;refused=bad-port"' % who
        port = int(port)
        if not any(low <= port <= high for low, high in ranges):
            return 'ERR log="%s;refused=not-a-console-port"' % who
        host = host.lower()
        if host in self_names:
            try:
                ports = facts.get()
            except ValueError:
                return 'BH message="VM map unusable, see cache.log"'
            if port in ports.get(names[1], ()):
                return 'OK log="%s"' % who
            return 'ERR log="%s;refused=not-this-vms-console-here"' % who
        if host in nodes:
            return 'OK log="%s;via=%s"' % (who, _safe(host))
        return 'ERR log="%s;refused=not-a-cluster-node"' % who

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
    parser = argparse.ArgumentParser(prog=PROGRAM, description="squid helpers of vmconsole.secure")
    sub = parser.add_subparsers(dest="mode", required=True)
    auth = sub.add_parser("auth", help="basic auth helper: checks proxy tokens")
    auth.add_argument("--keys", required=True, help="proxy token keys (JSON), e.g. /etc/vmconsole/proxy-keys.json")
    auth.add_argument("--revocations", help="revoked users and VMs (JSON); a missing file revokes nothing")
    acl = sub.add_parser("acl", help="external ACL helper (%%LOGIN %%DST %%PORT): allows the token VM's console")
    acl.add_argument("--facts", required=True, help="the node's VM map, /etc/ansible/facts.d/vmconsole_vms.fact")
    acl.add_argument("--self", dest="self_names", action="append", required=True, metavar="NAME",
                     help="a name of this node (127.0.0.1 always is)")
    acl.add_argument("--node", dest="nodes", action="append", default=[], metavar="NAME",
                     help="another cluster node, reached through its own proxy")
    acl.add_argument("--console-ports", type=parse_ranges, required=True, metavar="RANGES",
                     help="console port ranges, e.g. 61000-61999,5900-5999,62000-62999")
    for p in (auth, acl):
        p.add_argument("--concurrency", action="store_true", help="lines start with a channel ID (squid concurrency > 0)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    answer = make_auth(args) if args.mode == "auth" else make_acl(args)
    try:
        serve(answer, args.concurrency, sys.stdin.buffer, sys.stdout.buffer)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
