# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The squid helpers of roles/connect_proxy, run as squid runs them: a process fed lines on stdin.

Each test installs the helper as the role does (the helper plus a copy of _tickets.py in one
folder) and talks to it through pipes, one line in, one line out.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
from urllib.parse import unquote

import pytest

from ansible_collections.vmconsole.secure.plugins.module_utils._tickets import (
    ProxyKeys, mint_proxy_token, parse_proxy_username,
)

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
HELPER = os.path.join(ROOT, "roles", "connect_proxy", "files", "vmconsole_proxy_helper.py")
TICKETS = os.path.join(ROOT, "plugins", "module_utils", "_tickets.py")
PORTS = "61000-61999,5900-5999,62000-62999"


def install(folder):
    """The helper and its token code side by side, like the role installs them; returns the helper's path."""
    os.makedirs(folder, exist_ok=True)
    shutil.copy(HELPER, folder)
    shutil.copy(TICKETS, folder)
    return os.path.join(folder, os.path.basename(HELPER))


class Helper:
    """A running helper; ``ask(line)`` -> its one-line answer."""

    def __init__(self, path, *args):
        self.proc = subprocess.Popen([sys.executable, "-I", path, *args], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.stderr = None

    def ask(self, line):
        self.proc.stdin.write(line.encode("utf-8") + b"\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline()
        assert answer.endswith(b"\n"), "the helper died: %r" % self.stop()
        return answer.decode("utf-8").rstrip("\n")

    def ask_bytes(self, line):
        """``ask`` for a request that is not text; the answer as bytes."""
        self.proc.stdin.write(line + b"\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline()
        assert answer.endswith(b"\n"), "the helper died: %r" % self.stop()
        return answer.rstrip(b"\n")

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        """End it (EOF on stdin, as when squid stops); returns what it wrote to stderr (cache.log)."""
        if self.stderr is None:
            self.proc.stdin.close()
            self.proc.wait(10)
            self.stderr = self.proc.stderr.read().decode("utf-8", "replace")
            self.proc.stdout.close()
            self.proc.stderr.close()
        return self.stderr


@pytest.fixture
def setup(tmp_path):
    folder = tmp_path / "helper"
    path = install(str(folder))
    keys = ProxyKeys("k1", {"k1": os.urandom(32)})
    keys_file = tmp_path / "proxy-keys.json"
    write_keys(keys_file, keys)
    facts = tmp_path / "vmconsole_vms.fact"
    facts.write_text(json.dumps({"vms": {
        "web1": {"state": "started", "spice_tls_port": 61001, "vnc_port": 5901, "serial_port": 62001,
                 "migration_port": 60001},
        "web2": {"state": "started", "spice_tls_port": 61002, "vnc_port": None, "serial_port": None},
        "old": {"state": "stopped", "spice_tls_port": 61003},
        "moving": {"state": "incoming", "spice_tls_port": 61004},
    }}))
    helpers = []

    def start(*args):
        helper = Helper(path, *args)
        helpers.append(helper)
        return helper

    ns = type("Setup", (), dict(path=path, keys=keys, keys_file=keys_file, facts=facts, start=start,
                                tmp=tmp_path))
    yield ns
    for helper in helpers:
        helper.stop()


def write_keys(path, keys):
    import base64
    text = {k: base64.urlsafe_b64encode(v).decode().rstrip("=") for k, v in keys.keys.items()}
    path.write_text(json.dumps({"current": keys.current, "keys": text}))


def credentials(keys, user="alice", vm="web1", **kwargs):
    minted = mint_proxy_token(keys, user, vm, **kwargs)
    return "%s %s" % (minted.username, minted.token)


# --- auth -----------------------------------------------------------------------------------

def test_auth_answers_ok_and_err(setup):
    helper = setup.start("auth", "--keys", str(setup.keys_file))
    assert helper.ask(credentials(setup.keys)) == "OK"
    minted = mint_proxy_token(setup.keys, "alice", "web1")
    assert helper.ask("alice__web2 %s" % minted.token) == 'ERR message="proxy token bad signature"'
    assert helper.ask(credentials(setup.keys, now=1000000000, ttl=60)) == 'ERR message="proxy token expired"'
    other = ProxyKeys("k1", {"k1": os.urandom(32)})
    assert helper.ask(credentials(other)) == 'ERR message="proxy token bad signature"'
    assert helper.ask(credentials(ProxyKeys("k7", {"k7": os.urandom(32)}))) == 'ERR message="proxy token unknown key"'
    assert helper.ask("alice__web1") == 'ERR message="expected USERNAME TOKEN"'
    # squid URL-escapes both fields: an escaped form of a valid pair is still that pair.
    username, token = credentials(setup.keys, user="a b").split(" ")
    assert username == "a_20b__web1"
    assert helper.ask("%s %s" % (username.replace("_", "%5F"), token.replace("-", "%2D"))) == "OK"
    assert helper.alive()


def test_auth_with_concurrency_repeats_the_channel_id(setup):
    helper = setup.start("auth", "--keys", str(setup.keys_file), "--concurrency")
    assert helper.ask("0 " + credentials(setup.keys)) == "0 OK"
    assert helper.ask("17 alice__web1 v1_garbage") == '17 ERR message="proxy token malformed"'
    assert helper.ask("x alice__web1 v1") == "ERR"


@pytest.mark.parametrize("mode", ["auth", "acl"])
def test_the_channel_id_survives_bytes_that_are_not_utf8(setup, mode):
    """squid matches an answer to its request by the channel ID: it comes back whatever follows it."""
    if mode == "auth":
        helper = setup.start("auth", "--keys", str(setup.keys_file), "--concurrency")
    else:
        helper = setup.start("acl", "--facts", str(setup.facts), "--self", "hv1", "--console-ports", PORTS,
                             "--concurrency")
    for line in (b"17 alice__web1 \xff\xfe", b"18 alic\xc3", b"19 \xe2\x82", b"20"):
        channel = line.split(b" ", maxsplit=1)[0]
        assert helper.ask_bytes(line).split(b" ")[:2] == [channel, b"ERR"], line
    assert helper.alive()


def test_auth_reads_rotated_keys_without_restart(setup):
    helper = setup.start("auth", "--keys", str(setup.keys_file))
    old = credentials(setup.keys)
    new_keys = ProxyKeys("k2", {"k1": setup.keys.keys["k1"], "k2": os.urandom(32)})
    new = credentials(new_keys)
    assert helper.ask(new) == 'ERR message="proxy token unknown key"'
    write_keys(setup.keys_file, new_keys)                         # overlap: both keys
    assert (helper.ask(old), helper.ask(new)) == ("OK", "OK")
    write_keys(setup.keys_file, ProxyKeys("k2", {"k2": new_keys.keys["k2"]}))   # the old one retired
    assert (helper.ask(old), helper.ask(new)) == ('ERR message="proxy token unknown key"', "OK")


def test_auth_without_usable_keys_answers_bh_and_recovers(setup):
    helper = setup.start("auth", "--keys", str(setup.keys_file))
    good = setup.keys_file.read_text()
    setup.keys_file.write_text("{not json")
    assert helper.ask(credentials(setup.keys)).startswith("BH ")
    setup.keys_file.unlink()
    assert helper.ask(credentials(setup.keys)).startswith("BH ")
    setup.keys_file.write_text(good)
    assert helper.ask(credentials(setup.keys)) == "OK"
    stderr = helper.stop()
    assert "is not valid JSON" in stderr or "not valid JSON" in stderr
    assert "does not exist" in stderr
    assert good not in stderr and json.loads(good)["keys"]["k1"] not in stderr


def test_auth_revocations(setup):
    revoked = setup.tmp / "revoked.json"
    helper = setup.start("auth", "--keys", str(setup.keys_file), "--revocations", str(revoked))
    issued = int(time.time()) - 100
    line = credentials(setup.keys, now=issued)
    assert helper.ask(line) == "OK", "a missing revocation file revokes nothing"
    revoked.write_text(json.dumps({"vms": {"web1": issued}}))
    assert helper.ask(line) == 'ERR message="proxy token revoked"'
    assert helper.ask(credentials(setup.keys, vm="web2", now=issued)) == "OK"
    assert helper.ask(credentials(setup.keys, now=issued + 1)) == "OK", "a token issued after the cut works"
    revoked.write_text("garbage")
    assert helper.ask(line).startswith("BH "), "an unreadable revocation list fails closed"


# --- acl ------------------------------------------------------------------------------------

@pytest.fixture
def acl(setup):
    return setup.start("acl", "--facts", str(setup.facts), "--self", "HV1", "--self", "hv1.example.org",
                       "--node", "hv2", "--console-ports", PORTS)


@pytest.mark.parametrize("line, answer", [
    ("alice__web1 hv1 61001 -", 'OK log="user=alice;vm=web1"'),
    ("alice__web1 HV1.example.org 61001 -", 'OK log="user=alice;vm=web1"'),
    ("alice__web1 127.0.0.1 61001", 'OK log="user=alice;vm=web1"'),
    ("alice__web1 hv1 5901 -", 'OK log="user=alice;vm=web1"'),
    ("alice__web1 hv1 62001 -", 'OK log="user=alice;vm=web1"'),
    ("alice__moving hv1 61004 -", 'OK log="user=alice;vm=moving"'),
    ("alice_40x_2Eorg__web1 hv1 61001 -", 'OK log="user=alice@x.org;vm=web1"'),
    ("alice_20_22x__web1 hv1 61001 -", 'OK log="user=alice%20%22x;vm=web1"'),
    ("alice__web1 hv1 61002 -", 'ERR log="user=alice;vm=web1;refused=not-this-vms-console-here"'),
    ("alice__web1 hv1 60001 -", 'ERR log="user=alice;vm=web1;refused=not-a-console-port"'),
    ("alice__old hv1 61003 -", 'ERR log="user=alice;vm=old;refused=not-this-vms-console-here"'),
    ("alice__ghost hv1 61001 -", 'ERR log="user=alice;vm=ghost;refused=not-this-vms-console-here"'),
    ("alice__web1 hv1 22 -", 'ERR log="user=alice;vm=web1;refused=not-a-console-port"'),
    ("alice__web1 hv2 61999 -", 'OK log="user=alice;vm=web1;via=hv2"'),
    ("alice__web1 hv2 22 -", 'ERR log="user=alice;vm=web1;refused=not-a-console-port"'),
    ("alice__web1 evil.example 61001 -", 'ERR log="user=alice;vm=web1;refused=not-a-cluster-node"'),
    ("alice__web1 10.0.0.1 61001 -", 'ERR log="user=alice;vm=web1;refused=not-a-cluster-node"'),
    ("alice__web1 localhost 61001 -", 'ERR log="user=alice;vm=web1;refused=not-a-cluster-node"'),
    ("alice__web1 hv1 +61001 -", 'ERR log="user=alice;vm=web1;refused=bad-port"'),
    ("alice__web1 hv1 ６1001 -", 'ERR log="user=alice;vm=web1;refused=bad-port"'),
    ("- hv1 61001 -", 'ERR log="refused=not-a-proxy-username"'),
    ("alice hv1 61001 -", 'ERR log="refused=not-a-proxy-username"'),
    ("alice__web1 hv1", 'ERR log="refused=expected-LOGIN-DST-PORT"'),
    ("alice__web1%20hv1 hv1 61001", 'ERR log="refused=not-a-proxy-username"'),
    ("alice%5F%5Fweb1 hv%31 61001 -", 'OK log="user=alice;vm=web1"'),
])
def test_acl_decisions(acl, line, answer):
    assert acl.ask(line) == answer


def test_acl_follows_the_vm_map(setup, acl):
    assert acl.ask("alice__web1 hv1 61001 -").startswith("OK")
    setup.facts.write_text(json.dumps({"vms": {"web1": {"state": "started", "spice_tls_port": 61050}}}))
    assert acl.ask("alice__web1 hv1 61001 -").startswith("ERR"), "the VM moved to another port"
    assert acl.ask("alice__web1 hv1 61050 -").startswith("OK")
    setup.facts.unlink()
    assert acl.ask("alice__web1 hv1 61050 -").startswith("ERR"), "no map: no VM here"
    assert acl.ask("alice__web1 hv2 61050 -").startswith("OK")
    setup.facts.write_text("{garbage")
    assert acl.ask("alice__web1 hv1 61050 -").startswith("BH "), "a broken map fails closed"
    assert "is not valid JSON" in acl.stop()


def test_acl_with_concurrency(setup):
    helper = setup.start("acl", "--facts", str(setup.facts), "--self", "hv1", "--console-ports", PORTS,
                         "--concurrency")
    assert helper.ask("3 alice__web1 hv1 61001 -") == '3 OK log="user=alice;vm=web1"'
    assert helper.ask("4 alice__web1 hv2 61001 -") == '4 ERR log="user=alice;vm=web1;refused=not-a-cluster-node"'


def test_bad_command_line_is_refused_at_start(setup):
    proc = subprocess.run([sys.executable, setup.path, "acl", "--facts", "x", "--self", "a", "--console-ports", "9-2"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 2 and "'9-2' is not a port range within 1-65535" in proc.stderr
    proc = subprocess.run([sys.executable, setup.path, "auth"], capture_output=True, text=True, check=False)
    assert proc.returncode == 2 and "--keys" in proc.stderr


def test_helper_finds_its_token_code_next_to_itself(setup, tmp_path):
    """Run from elsewhere, in isolated mode (-I: no script folder on sys.path), it still imports the copy."""
    proc = subprocess.run([sys.executable, "-I", setup.path, "auth", "--keys", str(setup.keys_file)],
                          input=credentials(setup.keys) + "\n", capture_output=True, text=True, cwd="/", check=False)
    assert proc.stdout == "OK\n" and proc.returncode == 0
    os.unlink(os.path.join(os.path.dirname(setup.path), "_tickets.py"))
    proc = subprocess.run([sys.executable, "-I", setup.path, "auth", "--keys", str(setup.keys_file)],
                          input="", capture_output=True, text=True, check=False)
    assert proc.returncode != 0 and "_tickets" in proc.stderr


# --- garbage --------------------------------------------------------------------------------

def same_request(line, valid, mode):
    """Whether the helper may rightly accept ``line``, a mutation of ``valid`` (squid escapes fields)."""
    try:
        fields = [unquote(f) for f in line.decode("utf-8").split(" ")]
    except UnicodeDecodeError:
        return False
    wanted = [unquote(f) for f in valid.decode("utf-8").split(" ")]
    if wanted[0].isdigit():
        if not fields[0].isdigit():
            return False
        fields, wanted = fields[1:], wanted[1:]
    if mode == "auth":         # the same credentials
        return fields == wanted
    # The ACL does not check the user (the auth helper did): the same VM, node and port.
    names = parse_proxy_username(fields[0])
    return (len(fields) >= 3 and names is not None and names[1] == "web1" and fields[1].lower() == "hv1"
            and fields[2] == "61001")


def garbage_lines(rng, count, valid):
    """Random lines without a line break: bytes, near-misses of a valid line, huge lines."""
    pieces = [b" ", b"%", b"%2", b"%ZZ", b"_", b"__", b"\r", b"\0", b"\xff", b"\xc3", b"\xe2\x82\xac", b"-",
              b"v1_", b"k1", b"61001", b"hv1", b"alice__web1", b"OK", b"ERR", b"\t"]
    lines = []
    for i in range(count):
        kind = i % 4
        if kind == 0:
            line = bytes(rng.randrange(256) for dummy in range(rng.randint(0, 80)))
        elif kind == 1:
            line = b"".join(rng.choice(pieces) for dummy in range(rng.randint(0, 12)))
        elif kind == 2:
            data = bytearray(valid)
            for dummy in range(rng.randint(1, 4)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            line = bytes(data)
        else:
            line = valid[:rng.randrange(len(valid))] + rng.choice(pieces) + valid[rng.randrange(len(valid)):]
        lines.append(line.replace(b"\n", b"."))
    lines.append(b"A" * 100000)                                   # longer than any squid line
    lines.append(b"")
    return lines


@pytest.mark.parametrize("mode", ["auth", "acl"])
@pytest.mark.parametrize("concurrency", [False, True])
def test_thousands_of_garbage_lines_each_get_one_refusal(setup, mode, concurrency):
    rng = random.Random("%s-%s" % (mode, concurrency))
    if mode == "auth":
        args = ["auth", "--keys", str(setup.keys_file)]
        valid = credentials(setup.keys).encode()
    else:
        args = ["acl", "--facts", str(setup.facts), "--self", "hv1", "--console-ports", PORTS]
        valid = b"alice__web1 hv1 61001 -"
    if concurrency:
        args.append("--concurrency")
        valid = b"9 " + valid
    lines = garbage_lines(rng, 3000, valid)
    proc = subprocess.run([sys.executable, "-I", install(str(setup.tmp / "fuzz")), *args],
                          input=b"".join(line + b"\n" for line in lines) + valid + b"\n",
                          capture_output=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    answers = proc.stdout.split(b"\n")
    assert answers[-1] == b"" and len(answers) - 1 == len(lines) + 1, "exactly one answer per line"
    for line, answer in zip(lines, answers):
        words = answer.split(b" ")
        if concurrency and words[0].isdigit():
            words = words[1:]
        if words[0] == b"OK":     # a mutation can leave the request intact (same byte, %-escape, acl data)
            assert same_request(line, valid, mode), (line, answer)
            continue
        assert words[0] in (b"ERR", b"BH"), (line, answer)
    assert answers[-2] == (b"9 OK" if concurrency else b"OK") or answers[-2].startswith(b"9 OK ") \
        or answers[-2].startswith(b"OK "), "a valid request still works after the garbage"
    assert proc.stderr == b"", "garbage is refused quietly: no internal error, nothing of the input logged"
