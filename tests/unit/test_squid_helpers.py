# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The squid helper of roles/connect_proxy, run as squid runs it: a process fed lines on stdin.

Each test installs the helper as the role does (the helper plus copies of _tickets.py and
_addresses.py in one folder) and talks to it through pipes, one line in, one line out. A line is
what squid sends: ``%>a %{X-Forwarded-For}>h %{Proxy-Authorization}>h %DST %PORT`` and the acl
line's arguments ("-"), each URL-escaped.
"""

from __future__ import annotations

import base64
import json
import os
import random
import shutil
import subprocess
import sys
import time
from urllib.parse import quote, unquote

import pytest

from ansible_collections.vmconsole.secure.plugins.module_utils._tickets import (
    ProxySigner, dump_public_keys, mint_proxy_token, new_proxy_signer, public_key_text,
)

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
HELPER = os.path.join(ROOT, "roles", "connect_proxy", "files", "vmconsole_proxy_helper.py")
TICKETS = os.path.join(ROOT, "plugins", "module_utils", "_tickets.py")
ADDRESSES = os.path.join(ROOT, "plugins", "module_utils", "_addresses.py")
PORTS = ["--spice-ports", "61000-61999", "--vnc-ports", "5900-5999", "--serial-ports", "62000-62999"]


def install(folder):
    """The helper and its token code side by side, like the role installs them; returns the helper's path."""
    os.makedirs(folder, exist_ok=True)
    shutil.copy(HELPER, folder)
    shutil.copy(TICKETS, folder)
    shutil.copy(ADDRESSES, folder)
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
    keys = new_proxy_signer()       # the signing node's key; the helper gets its public key only
    keys_file = tmp_path / "proxy-keys.json"
    write_keys(keys_file, keys)
    facts = tmp_path / "vmconsole_vms.fact"
    facts.write_text(json.dumps({"vms": {
        "web1": {"state": "started", "spice_tls_port": 61001, "spice_port": 61101, "vnc_port": 5901,
                 "serial_port": 62001, "migration_port": 60001},
        "web2": {"state": "started", "spice_tls_port": 61002, "vnc_port": None, "serial_port": None},
        "old": {"state": "stopped", "spice_tls_port": 61003},
        "moving": {"state": "incoming", "spice_tls_port": 61004},
    }}))
    bindings = tmp_path / "bindings"
    bindings.mkdir()
    helpers = []

    def start(*args, self_names=("HV1", "hv1.example.org"), nodes=("hv2",), extra=()):
        argv = ["check", "--keys", str(keys_file), "--facts", str(facts), *PORTS]
        for name in self_names:
            argv += ["--self", name]
        for name in nodes:
            argv += ["--node", name]
        helper = Helper(path, *argv, *extra, *args)
        helpers.append(helper)
        return helper

    ns = type("Setup", (), dict(path=path, keys=keys, keys_file=keys_file, facts=facts, start=start,
                                tmp=tmp_path, bindings=bindings))
    yield ns
    for helper in helpers:
        helper.stop()


def write_keys(path, *signers):
    """The public keys file of ``signers``, as the connect_proxy role installs it."""
    path.write_text(dump_public_keys({s.key_id: {"node": "hv1", "public": public_key_text(s)} for s in signers}))


def basic(username, token):
    """The Proxy-Authorization value as squid passes it (URL-escaped)."""
    return quote("Basic " + base64.b64encode(("%s:%s" % (username, token)).encode()).decode(), safe="")


def line(keys, user="alice", vm="web1", console="spice", host="hv1", port=61001, src="127.0.0.1", xff="-",
         minted=None, **kwargs):
    """One request as squid sends it, for a token minted with ``kwargs``."""
    minted = minted or mint_proxy_token(keys, user, vm, console, **kwargs)
    return "%s %s %s %s %s -" % (src, xff, basic(minted.username, minted.token), host, port)


# --- the token --------------------------------------------------------------------------------

def test_a_valid_token_for_its_console_is_admitted_and_named(setup):
    helper = setup.start()
    assert helper.ask(line(setup.keys)) == 'OK user=alice__web1 log="user=alice;vm=web1;console=spice"'
    assert helper.alive()


def test_refusals_of_the_token_say_why(setup):
    helper = setup.start()
    minted = mint_proxy_token(setup.keys, "alice", "web1", "spice")
    other_vm = mint_proxy_token(setup.keys, "alice", "web2", "spice")
    refused = 'ERR log="user=alice;vm=web1;refused=token-%s"'
    assert helper.ask("127.0.0.1 - %s hv1 61001 -" % basic("alice__web1", other_vm.token)) == refused % "bad-signature"
    assert helper.ask(line(setup.keys, now=1000000000, ttl=60)) == refused % "expired"
    impostor = ProxySigner(setup.keys.key_id, new_proxy_signer().private)     # another key under the known id
    assert helper.ask(line(impostor)) == refused % "bad-signature"
    assert helper.ask(line(new_proxy_signer())) == refused % "unknown-key"
    assert helper.ask("127.0.0.1 - %s hv1 61001 -" % basic("alice__web1", minted.token[:-1])) == refused % "malformed"
    assert helper.ask("127.0.0.1 - %s hv1 61001 -" % basic("alice", minted.token)) == 'ERR log="refused=not-a-proxy-username"'
    assert helper.ask("127.0.0.1 - - hv1 61001 -") == 'ERR log="refused=no-proxy-token"'
    assert helper.ask("127.0.0.1 - Digest%20abc hv1 61001 -") == 'ERR log="refused=no-proxy-token"'
    assert helper.ask("127.0.0.1 - Basic%20%21%21 hv1 61001 -") == 'ERR log="refused=no-proxy-token"'
    assert helper.ask("127.0.0.1 - hv1 61001") == 'ERR log="refused=expected-SRC-XFF-AUTH-DST-PORT"'
    assert helper.alive()


@pytest.mark.parametrize("console, port, answer", [
    ("spice", 61001, "OK"), ("spice", 61101, "OK"), ("spice", 5901, "not-a-spice-port"),
    ("spice", 62001, "not-a-spice-port"),
    ("serial", 62001, "OK"), ("serial", 61001, "not-a-serial-port"), ("serial", 61101, "not-a-serial-port"),
    ("vnc", 5901, "OK"), ("vnc", 61001, "not-a-vnc-port"), ("vnc", 62001, "not-a-vnc-port"),
    ("spice", 61002, "not-this-vms-console-here"), ("serial", 62002, "not-this-vms-console-here"),
])
def test_a_token_opens_its_own_console_only(setup, console, port, answer):
    """#17 finding 4: a SPICE token does not open the VM's serial console or VNC, nor the other way round."""
    got = setup.start().ask(line(setup.keys, console=console, port=port))
    if answer == "OK":
        assert got == 'OK user=alice__web1 log="user=alice;vm=web1;console=%s"' % console
    else:
        assert got == 'ERR log="user=alice;vm=web1;console=%s;refused=%s"' % (console, answer)


@pytest.mark.parametrize("host, port, console, answer", [
    ("hv1", 61001, "spice", 'OK user=alice__web1 log="user=alice;vm=web1;console=spice"'),
    ("HV1.example.org", 61001, "spice", 'OK user=alice__web1 log="user=alice;vm=web1;console=spice"'),
    ("127.0.0.1", 61001, "spice", 'OK user=alice__web1 log="user=alice;vm=web1;console=spice"'),
    ("hv1", 60001, "spice", 'ERR log="user=alice;vm=web1;console=spice;refused=not-a-spice-port"'),
    ("hv1", 22, "spice", 'ERR log="user=alice;vm=web1;console=spice;refused=not-a-spice-port"'),
    ("hv2", 61999, "spice", 'OK user=alice__web1 log="user=alice;vm=web1;console=spice;via=hv2"'),
    ("hv2", 62999, "spice", 'ERR log="user=alice;vm=web1;console=spice;refused=not-a-spice-port"'),
    ("hv2", 62999, "serial", 'OK user=alice__web1 log="user=alice;vm=web1;console=serial;via=hv2"'),
    ("evil.example", 61001, "spice", 'ERR log="user=alice;vm=web1;console=spice;refused=not-a-cluster-node"'),
    ("10.0.0.1", 61001, "spice", 'ERR log="user=alice;vm=web1;console=spice;refused=not-a-cluster-node"'),
    ("localhost", 61001, "spice", 'ERR log="user=alice;vm=web1;console=spice;refused=not-a-cluster-node"'),
    ("hv1", "+61001", "spice", 'ERR log="user=alice;vm=web1;console=spice;refused=bad-port"'),
    ("hv1", "６1001", "spice", 'ERR log="user=alice;vm=web1;console=spice;refused=bad-port"'),
    ("hv%31", 61001, "spice", 'OK user=alice__web1 log="user=alice;vm=web1;console=spice"'),
])
def test_destination_decisions(setup, host, port, console, answer):
    assert setup.start().ask(line(setup.keys, console=console, host=host, port=port)) == answer


@pytest.mark.parametrize("vm, port, ok", [("moving", 61004, True), ("old", 61003, False), ("ghost", 61001, False)])
def test_only_running_or_incoming_vms_are_reached_here(setup, vm, port, ok):
    assert setup.start().ask(line(setup.keys, vm=vm, port=port)).startswith("OK" if ok else "ERR")


def test_names_are_logged_escaped(setup):
    helper = setup.start()
    assert helper.ask(line(setup.keys, user="alice@x.org")) == \
        'OK user=alice_40x_2Eorg__web1 log="user=alice@x.org;vm=web1;console=spice"'
    assert helper.ask(line(setup.keys, user='alice "x')) == \
        'OK user=alice_20_22x__web1 log="user=alice%20%22x;vm=web1;console=spice"'


def test_follows_the_vm_map(setup):
    helper = setup.start()
    assert helper.ask(line(setup.keys)).startswith("OK")
    setup.facts.write_text(json.dumps({"vms": {"web1": {"state": "started", "spice_tls_port": 61050}}}))
    assert helper.ask(line(setup.keys)).startswith("ERR"), "the VM moved to another port"
    assert helper.ask(line(setup.keys, port=61050)).startswith("OK")
    setup.facts.unlink()
    assert helper.ask(line(setup.keys, port=61050)).startswith("ERR"), "no map: no VM here"
    assert helper.ask(line(setup.keys, host="hv2", port=61050)).startswith("OK")
    setup.facts.write_text("{garbage")
    assert helper.ask(line(setup.keys, port=61050)).startswith("BH "), "a broken map fails closed"
    assert "is not valid JSON" in helper.stop()


# --- the client ---------------------------------------------------------------------------------

def test_a_bound_token_works_from_its_address_only(setup):
    helper = setup.start()
    minted = mint_proxy_token(setup.keys, "alice", "web1", "spice", client="192.0.2.7")
    assert helper.ask(line(setup.keys, minted=minted, src="192.0.2.7")).startswith("OK")
    assert helper.ask(line(setup.keys, minted=minted, src="::ffff:192.0.2.7")).startswith("OK")
    assert helper.ask(line(setup.keys, minted=minted, src="192.0.2.8")) == \
        'ERR log="user=alice;vm=web1;refused=token-wrong-client"'


def test_bind_on_first_use(setup):
    """#17 finding 5: a token captured from one client's traffic is refused from a second address."""
    helper = setup.start(extra=("--bindings", str(setup.bindings)))
    minted = mint_proxy_token(setup.keys, "alice", "web1", "spice")
    assert helper.ask(line(setup.keys, minted=minted, src="192.0.2.7")).startswith("OK")
    assert helper.ask(line(setup.keys, minted=minted, src="192.0.2.7", port=61101)).startswith("OK")
    assert helper.ask(line(setup.keys, minted=minted, src="192.0.2.8")) == \
        'ERR log="user=alice;vm=web1;console=spice;refused=token-bound-to-another-client"'
    # Another helper process (squid runs several) sees the same binding.
    other = setup.start(extra=("--bindings", str(setup.bindings)))
    assert other.ask(line(setup.keys, minted=minted, src="192.0.2.8")).startswith("ERR")
    assert other.ask(line(setup.keys, minted=minted, src="192.0.2.7")).startswith("OK")
    # A refused request binds nothing: a token first sent to a wrong port still binds its real client.
    fresh = mint_proxy_token(setup.keys, "alice", "web1", "spice")      # minted in the same second: another nonce
    assert helper.ask(line(setup.keys, minted=fresh, src="192.0.2.9", port=62001)).startswith("ERR")
    assert helper.ask(line(setup.keys, minted=fresh, src="192.0.2.10")).startswith("OK")
    (name,) = [n for n in os.listdir(setup.bindings) if os.readlink(setup.bindings / n) == "192.0.2.10"]
    assert fresh.token not in name and len(os.listdir(setup.bindings)) == 2, "one link per token, no token in a name"


def test_without_bindings_an_unbound_token_works_from_anywhere(setup):
    helper = setup.start()
    minted = mint_proxy_token(setup.keys, "alice", "web1", "spice")
    assert helper.ask(line(setup.keys, minted=minted, src="192.0.2.7")).startswith("OK")
    assert helper.ask(line(setup.keys, minted=minted, src="192.0.2.8")).startswith("OK")


def test_on_a_hop_the_client_is_the_one_the_peer_names(setup):
    helper = setup.start(extra=("--bindings", str(setup.bindings), "--peer", "10.0.0.2"))
    minted = mint_proxy_token(setup.keys, "alice", "web1", "spice")
    assert helper.ask(line(setup.keys, minted=minted, src="10.0.0.2", xff="192.0.2.7")).startswith("OK")
    assert helper.ask(line(setup.keys, minted=minted, src="192.0.2.7")).startswith("OK"), "the same client, direct"
    # A replay through the peer, which names the replaying client, is refused; so is a client that is no
    # peer claiming to be the bound one in its own X-Forwarded-For.
    assert helper.ask(line(setup.keys, minted=minted, src="10.0.0.2", xff="192.0.2.8")).startswith("ERR")
    assert helper.ask(line(setup.keys, minted=minted, src="192.0.2.8", xff="192.0.2.7")).startswith("ERR")
    assert helper.ask(line(setup.keys, minted=minted, src="10.0.0.2", xff="not%20an%20address")) == \
        'ERR log="refused=bad-client-address"'


# --- files and the protocol -------------------------------------------------------------------------

def test_with_concurrency_every_answer_repeats_the_channel_id(setup):
    helper = setup.start("--concurrency")
    assert helper.ask("0 " + line(setup.keys)).startswith("0 OK user=alice__web1 ")
    assert helper.ask("17 127.0.0.1 - Basic%20eA== hv1 61001 -") == '17 ERR log="refused=no-proxy-token"'
    assert helper.ask("x 127.0.0.1 - - hv1 61001 -") == "ERR"


def test_the_channel_id_survives_bytes_that_are_not_utf8(setup):
    """squid matches an answer to its request by the channel ID: it comes back whatever follows it."""
    helper = setup.start("--concurrency")
    for request in (b"17 127.0.0.1 - \xff\xfe hv1 61001", b"18 alic\xc3", b"19 \xe2\x82", b"20"):
        channel = request.split(b" ", maxsplit=1)[0]
        assert helper.ask_bytes(request).split(b" ")[:2] == [channel, b"ERR"], request
    assert helper.alive()


def test_reads_rotated_keys_without_restart(setup):
    helper = setup.start()
    old = line(setup.keys)
    new_key = new_proxy_signer()
    new = line(new_key)
    assert helper.ask(new).endswith("refused=token-unknown-key\"")
    write_keys(setup.keys_file, setup.keys, new_key)                  # overlap: both keys
    assert helper.ask(old).startswith("OK") and helper.ask(new).startswith("OK")
    write_keys(setup.keys_file, new_key)                              # the old one retired
    assert helper.ask(old).endswith("refused=token-unknown-key\"") and helper.ask(new).startswith("OK")


def test_without_usable_keys_answers_bh_and_recovers(setup):
    helper = setup.start()
    good = setup.keys_file.read_text()
    setup.keys_file.write_text("{not json")
    assert helper.ask(line(setup.keys)).startswith("BH ")
    setup.keys_file.unlink()
    assert helper.ask(line(setup.keys)).startswith("BH ")
    setup.keys_file.write_text(good)
    assert helper.ask(line(setup.keys)).startswith("OK")
    stderr = helper.stop()
    assert "not valid JSON" in stderr and "does not exist" in stderr
    assert good not in stderr and public_key_text(setup.keys) not in stderr


def test_revocations(setup):
    revoked = setup.tmp / "revoked.json"
    helper = setup.start(extra=("--revocations", str(revoked)))
    issued = int(time.time()) - 100
    request = line(setup.keys, now=issued)
    assert helper.ask(request).startswith("OK"), "a missing revocation file revokes nothing"
    revoked.write_text(json.dumps({"vms": {"web1": issued}}))
    assert helper.ask(request) == 'ERR log="user=alice;vm=web1;refused=token-revoked"'
    assert helper.ask(line(setup.keys, vm="web2", port=61002, now=issued)).startswith("OK")
    assert helper.ask(line(setup.keys, now=issued + 1)).startswith("OK"), "a token issued after the cut works"
    revoked.write_text("garbage")
    assert helper.ask(request).startswith("BH "), "an unreadable revocation list fails closed"


def test_bad_command_line_is_refused_at_start(setup):
    proc = subprocess.run([sys.executable, setup.path, "check", "--keys", "k", "--facts", "x", "--self", "a",
                           "--spice-ports", "9-2", "--vnc-ports", "1", "--serial-ports", "2"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 2 and "'9-2' is not a port range within 1-65535" in proc.stderr
    proc = subprocess.run([sys.executable, setup.path, "check"], capture_output=True, text=True, check=False)
    assert proc.returncode == 2 and "--keys" in proc.stderr


def test_helper_finds_its_token_code_next_to_itself(setup):
    """Run from elsewhere, in isolated mode (-I: no script folder on sys.path), it still imports the copies."""
    argv = [sys.executable, "-I", setup.path, "check", "--keys", str(setup.keys_file), "--facts", str(setup.facts),
            "--self", "hv1", *PORTS]
    proc = subprocess.run(argv, input=line(setup.keys) + "\n", capture_output=True, text=True, cwd="/", check=False)
    assert proc.stdout.startswith("OK user=alice__web1 ") and proc.returncode == 0
    os.unlink(os.path.join(os.path.dirname(setup.path), "_addresses.py"))
    proc = subprocess.run(argv, input="", capture_output=True, text=True, check=False)
    assert proc.returncode != 0 and "_addresses" in proc.stderr


# --- garbage --------------------------------------------------------------------------------

def same_request(request, valid):
    """Whether the helper may rightly accept ``request``, a mutation of ``valid`` (squid escapes fields)."""
    try:
        fields = [unquote(f) for f in request.decode("utf-8").split(" ")]
    except UnicodeDecodeError:
        return False
    wanted = [unquote(f) for f in valid.decode("utf-8").split(" ")]
    if wanted[0].isdigit():
        if not fields[0].isdigit():
            return False
        fields, wanted = fields[1:], wanted[1:]
    # The same credentials, destination and port; the client may differ where it means the same address.
    return len(fields) >= 5 and fields[2:4] == wanted[2:4] and fields[3].lower() == "hv1" and fields[4] == "61001"


def garbage_lines(rng, count, valid):
    """Random lines without a line break: bytes, near-misses of a valid line, huge lines."""
    pieces = [b" ", b"%", b"%2", b"%ZZ", b"_", b"__", b"\r", b"\0", b"\xff", b"\xc3", b"\xe2\x82\xac", b"-",
              b"v3_", b"k1", b"61001", b"hv1", b"Basic%20", b"OK", b"ERR", b"\t", b"127.0.0.1"]
    lines = []
    for i in range(count):
        kind = i % 4
        if kind == 0:
            request = bytes(rng.randrange(256) for dummy in range(rng.randint(0, 80)))
        elif kind == 1:
            request = b"".join(rng.choice(pieces) for dummy in range(rng.randint(0, 12)))
        elif kind == 2:
            data = bytearray(valid)
            for dummy in range(rng.randint(1, 4)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            request = bytes(data)
        else:
            request = valid[:rng.randrange(len(valid))] + rng.choice(pieces) + valid[rng.randrange(len(valid)):]
        lines.append(request.replace(b"\n", b"."))
    lines.append(b"A" * 100000)                                   # longer than any squid line
    lines.append(b"")
    return lines


@pytest.mark.parametrize("concurrency", [False, True])
def test_thousands_of_garbage_lines_each_get_one_refusal(setup, concurrency):
    rng = random.Random("check-%s" % concurrency)
    args = ["check", "--keys", str(setup.keys_file), "--facts", str(setup.facts), "--self", "hv1", *PORTS]
    valid = line(setup.keys).encode()
    if concurrency:
        args.append("--concurrency")
        valid = b"9 " + valid
    lines = garbage_lines(rng, 3000, valid)
    proc = subprocess.run([sys.executable, "-I", install(str(setup.tmp / "fuzz")), *args],
                          input=b"".join(request + b"\n" for request in lines) + valid + b"\n",
                          capture_output=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    answers = proc.stdout.split(b"\n")
    assert answers[-1] == b"" and len(answers) - 1 == len(lines) + 1, "exactly one answer per line"
    for request, answer in zip(lines, answers):
        words = answer.split(b" ")
        if concurrency and words[0].isdigit():
            words = words[1:]
        if words[0] == b"OK":     # a mutation can leave the request intact (same byte, %-escape, acl data)
            assert same_request(request, valid), (request, answer)
            continue
        assert words[0] in (b"ERR", b"BH"), (request, answer)
    assert answers[-2].startswith(b"9 OK " if concurrency else b"OK "), "a valid request still works after the garbage"
    assert proc.stderr == b"", "garbage is refused quietly: no internal error, nothing of the input logged"
