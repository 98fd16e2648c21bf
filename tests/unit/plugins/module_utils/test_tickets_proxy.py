# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Proxy tokens: format, binding to user and VM, every refusal class, keys and revocations."""

from __future__ import annotations

import json
import random
import re

import pytest

from ansible_collections.vmconsole.secure.plugins.module_utils import _tickets
from ansible_collections.vmconsole.secure.plugins.module_utils._tickets import (
    TOKEN_CLOCK_SKEW, TOKEN_MAX_LENGTH, TOKEN_TTL_DEFAULT, ProxyKeys, load_proxy_keys, load_revocations,
    mint_proxy_token, new_proxy_key, parse_proxy_keys, parse_proxy_username, parse_revocations, proxy_username,
    validate_token_ttl, verify_proxy_token,
)

NOW = 1767225600
K1 = b"\x01" * 32
K2 = b"\x02" * 32
KEYS = ProxyKeys("k1", {"k1": K1})
ALPHABET = re.compile(r"[A-Za-z0-9_-]+\Z")


def mint(user="alice", vm="web1", keys=KEYS, console="spice", **kwargs):
    kwargs.setdefault("now", NOW)
    return mint_proxy_token(keys, user, vm, console, **kwargs)


def verify(minted, keys=KEYS, username=None, token=None, **kwargs):
    kwargs.setdefault("now", NOW + 10)
    return verify_proxy_token(keys, minted.username if username is None else username,
                              minted.token if token is None else token, **kwargs)


# --- format ----------------------------------------------------------------------------------

def test_round_trip():
    minted = mint()
    assert minted.username == "alice__web1"
    assert (minted.user, minted.vm, minted.key_id, minted.issued, minted.expires, minted.console, minted.client) == (
        "alice", "web1", "k1", NOW, NOW + TOKEN_TTL_DEFAULT, "spice", None)
    assert re.match(r"^v2_k1_spice_%d_%d_n_[A-Za-z0-9_-]{43}$" % (NOW, NOW + 28800), minted.token)
    check = verify(minted)
    assert check.ok and tuple(check) == ("ok", "alice", "web1", "k1", NOW, NOW + 28800, "spice", None)


@pytest.mark.parametrize("console", ["spice", "vnc", "serial"])
def test_the_console_is_part_of_the_token(console):
    minted = mint(console=console)
    assert minted.token.startswith("v2_k1_%s_" % console)
    assert verify(minted).console == console


def test_a_token_for_no_known_console_is_not_minted():
    with pytest.raises(ValueError, match="console must be one of spice, vnc, serial, got 'rdp'"):
        mint(console="rdp")


@pytest.mark.parametrize("client, field", [
    ("192.0.2.7", "ac0000207"), ("::ffff:192.0.2.7", "ac0000207"),
    ("2001:db8::1", "a20010db8000000000000000000000001"),
])
def test_a_token_bound_to_a_client_works_from_that_address_only(client, field):
    minted = mint(client=client)
    assert minted.token.split("_")[5] == field and minted.client == client.replace("::ffff:", "")
    assert verify(minted, client=client).ok
    assert verify(minted, client=minted.client).ok
    assert verify(minted, client="192.0.2.8").status == "wrong_client"
    assert verify(minted).status == "wrong_client", "a bound token needs to know its client"
    assert verify(mint(), client="192.0.2.8").ok, "an unbound token works from any address"


@pytest.mark.parametrize("client", ["", "192.0.2.0/24", "fe80::1%eth0", "example.org", "010.0.0.1"])
def test_a_bad_client_address_is_refused_naming_the_option(client):
    with pytest.raises(ValueError, match="proxy_client_address must be one IP address"):
        mint(client=client)


def test_default_lifetime_is_8_hours():
    assert TOKEN_TTL_DEFAULT == 8 * 3600
    assert verify(mint(), now=NOW + 8 * 3600 - 1).ok
    assert verify(mint(), now=NOW + 8 * 3600).status == "expired"


@pytest.mark.parametrize("user, vm, username", [
    ("alice", "web1", "alice__web1"),
    ("alice@example.org", "web1.prod", "alice_40example_2Eorg__web1_2Eprod"),
    ("a_b", "db_1", "a_5Fb__db_5F1"),
    ("Zoé Smith", "x", "Zo_C3_A9_20Smith__x"),
    ("o'neil", "vm-1", "o_27neil__vm-1"),
    ("__", "a", "_5F_5F__a"),
])
def test_username_encoding_is_readable_and_reversible(user, vm, username):
    assert proxy_username(user, vm) == username
    assert parse_proxy_username(username) == (user, vm)
    assert ALPHABET.match(username)


def test_random_names_give_unique_tokens_within_limits():
    rng = random.Random(7)
    seen = set()
    letters = "abcXYZ019_-.@ é€:%/\\\"'+"
    for dummy in range(2000):
        user = "".join(rng.choice(letters) for dummy2 in range(rng.randint(1, 20)))
        vm = rng.choice("abc0") + "".join(rng.choice("aZ9_.-") for dummy2 in range(rng.randint(0, 20)))
        minted = mint(user, vm)
        assert len(minted.token) <= TOKEN_MAX_LENGTH and ALPHABET.match(minted.token)
        assert ALPHABET.match(minted.username) and len(minted.username) <= _tickets.PROXY_USERNAME_MAX
        assert parse_proxy_username(minted.username) == (user, vm)
        assert verify(minted).ok
        seen.add(minted.username)
    assert len(seen) == len({parse_proxy_username(n) for n in seen})


def test_longest_names_still_fit():
    minted = mint("u" * 60, "v" * 64, keys=ProxyKeys("K" * 16, {"K" * 16: K1}), now=99999999999 - 604800)
    assert len(minted.token) <= TOKEN_MAX_LENGTH and len(minted.token) == 95
    bound = mint("u" * 60, "v" * 64, keys=ProxyKeys("K" * 16, {"K" * 16: K1}), now=99999999999 - 604800,
                 console="serial", client="2001:db8::1")
    assert len(bound.token) == 128


@pytest.mark.parametrize("username", [
    "alice", "alice_web1", "alice___web1", "__web1", "alice__", "alice__web1__x", "alice__-web1",
    "al_41ice__web1",           # escaped letter: not canonical
    "al_e9__web1",              # lower-case hex
    "al_FF__web1",              # not UTF-8
    "al_0A__web1",              # control character
    "alice__web 1", "alice__web1\n", "alice:x__web1", "",
    "a" * 100 + "__" + "b" * 30,
])
def test_not_a_proxy_username(username):
    assert parse_proxy_username(username) is None


@pytest.mark.parametrize("value", [None, 5, b"alice__web1", ["alice__web1"], {"a": 1}, 3.5])
def test_parse_username_never_raises(value):
    assert parse_proxy_username(value) is None


# --- refusal classes ----------------------------------------------------------------------------

def test_expired():
    minted = mint(ttl=60)
    assert verify(minted, now=NOW + 59).ok
    check = verify(minted, now=NOW + 60)
    assert check.status == "expired" and not check.ok and check.user == "alice"


def test_not_yet_valid_with_a_clock_skew_allowance():
    minted = mint()
    assert verify(minted, now=NOW - TOKEN_CLOCK_SKEW).ok, "a checker slightly behind the minting node accepts it"
    assert verify(minted, now=NOW - TOKEN_CLOCK_SKEW - 1).status == "not_yet_valid"


def test_unknown_key():
    assert verify(mint(), keys=ProxyKeys("k9", {"k9": K1})).status == "unknown_key"
    assert verify(mint(), keys={}).status == "unknown_key"


def test_other_key_is_a_bad_signature():
    assert verify(mint(), keys=ProxyKeys("k1", {"k1": K2})).status == "bad_signature"


def test_token_of_another_vm_or_user_is_a_bad_signature():
    minted = mint()
    assert verify(minted, username="alice__web2").status == "bad_signature"
    assert verify(minted, username="bob__web1").status == "bad_signature"


def _tamper(token, index, value):
    parts = token.split("_", 6)
    parts[index] = value
    return "_".join(parts)


@pytest.mark.parametrize("index, value, status", [
    (0, "v1", "malformed"),
    (1, "k2", "bad_signature"),          # another key id that exists
    (1, "k3", "unknown_key"),
    (2, "serial", "bad_signature"),      # another console
    (2, "vnc", "bad_signature"),
    (2, "rdp", "malformed"),
    (3, str(NOW - 1), "bad_signature"),  # issue time
    (4, str(NOW + 28801), "bad_signature"),  # expiry
    (4, str(NOW + 999999), "malformed"),  # longer than any lifetime minting allows
    (4, str(NOW), "malformed"),          # expires at issue
    (3, "0" + str(NOW), "malformed"),   # not canonical
    (5, "ac0000207", "bad_signature"),   # bound to an address after the fact
    (5, "a00", "malformed"),
])
def test_tampering_with_each_field(index, value, status):
    keys = ProxyKeys("k1", {"k1": K1, "k2": K2})
    minted = mint(keys=keys)
    assert verify(minted, keys=keys, token=_tamper(minted.token, index, value)).status == status


def test_tampering_with_every_mac_character():
    minted = mint()
    prefix = "_".join(minted.token.split("_", 6)[:6]) + "_"
    mac = minted.token[len(prefix):]
    assert len(mac) == 43
    for i, char in enumerate(mac):
        forged = prefix + mac[:i] + ("A" if char != "A" else "B") + mac[i + 1:]
        assert verify(minted, token=forged).status == "bad_signature", i
    # The last character carries 2 unused bits: a variant decoding to the same MAC is refused too.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    variant = alphabet[alphabet.index(mac[-1]) ^ 1]
    assert verify(minted, token=prefix + mac[:-1] + variant).status == "bad_signature"


def test_signature_is_checked_before_time():
    """A forged expired token learns 'bad_signature', not 'expired'."""
    minted = mint(ttl=60)
    forged = minted.token[:-1] + ("A" if minted.token[-1] != "A" else "B")
    assert verify(minted, token=forged, now=NOW + 10 ** 6).status == "bad_signature"


def test_compare_is_constant_time(monkeypatch):
    calls = []
    real = _tickets.hmac.compare_digest
    monkeypatch.setattr(_tickets.hmac, "compare_digest", lambda a, b: calls.append((a, b)) or real(a, b))
    assert verify(mint()).ok
    assert len(calls) == 1


@pytest.mark.parametrize("username, token", [
    (None, None), (1, 2), (b"alice__web1", b"v1"), ("alice__web1", ""), ("alice__web1", "v1"),
    ("alice__web1", "v2_k1_spice_1_2_n_" + "A" * 42), ("alice__web1", "v2_k1_spice_1_2_n_" + "A" * 44),
    ("alice__web1", "v2_k1_spice_1_2_n_" + "A" * 42 + "="), ("alice__web1", "v2_k1_spice_1_2_n_" + "A" * 42 + "é"),
    ("alice__web1", "v2_k1_spice_1_2_n_" + "A" * 43 + "\n"), ("alice__web1", "v2__spice_1_2_n_" + "A" * 43),
    ("alice__web1", "v2_k1_spice_-1_2_n_" + "A" * 43), ("alice__web1", "v2_k1_spice_1_123456789012_n_" + "A" * 43),
    ("alice__web1", "x" * 100000), ("a" * 100000, "v1"), ("alice__web1", ["v1"]),
])
def test_malformed_never_raises(username, token):
    check = verify_proxy_token(KEYS, username, token)
    assert check.status == "malformed" and not check.ok


def test_verify_never_raises_on_random_garbage():
    rng = random.Random(42)
    pool = "v2_spice_k2AZaz09-=é\n\0 %:" + chr(0xD800)
    minted = mint()
    for dummy in range(3000):
        token = "".join(rng.choice(pool) for dummy2 in range(rng.randint(0, 120)))
        if rng.random() < 0.5:
            token = minted.token[:rng.randint(0, len(minted.token))] + token
        username = rng.choice([minted.username, token[:20], "", None])
        status = verify_proxy_token(KEYS, username, token, now=NOW).status
        assert status in _tickets.TOKEN_STATUSES and status != "ok"
    assert verify_proxy_token({"k1": "not bytes"}, minted.username, minted.token).status == "unknown_key"
    assert verify_proxy_token(None, minted.username, minted.token).status == "malformed"


# --- keys: rotation and files -------------------------------------------------------------------

def test_rotation_overlap_accepts_both_keys():
    old = ProxyKeys("k1", {"k1": K1})
    both_old_current = ProxyKeys("k1", {"k1": K1, "k2": K2})
    both_new_current = ProxyKeys("k2", {"k1": K1, "k2": K2})
    new = ProxyKeys("k2", {"k2": K2})
    t_old = mint(keys=old)
    t_new = mint(keys=both_new_current)
    assert t_new.key_id == "k2"
    for keys in (both_old_current, both_new_current):
        assert verify(t_old, keys=keys).ok and verify(t_new, keys=keys).ok
    assert verify(t_old, keys=new).status == "unknown_key"
    assert verify(t_new, keys=old).status == "unknown_key"
    assert mint(keys=both_new_current, key_id="k1").key_id == "k1"


def test_keys_file(tmp_path):
    key = new_proxy_key()
    assert len(key) == 43 and ALPHABET.match(key)
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({"current": "k2", "keys": {"k1": new_proxy_key(), "k2": key}}))
    keys = load_proxy_keys(str(path))
    assert keys.current == "k2" and set(keys.keys) == {"k1", "k2"} and len(keys.keys["k2"]) == 32
    assert verify(mint(keys=keys), keys=keys).ok


SECRET = "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"


@pytest.mark.parametrize("text, message", [
    ("", "not valid JSON"),
    ("[]", "expected"),
    ('{"current": "k1", "keys": {}}', "at least one key"),
    ('{"current": "k1", "keys": {"k-1": "%s"}}' % SECRET, "key id 'k-1' must be 1 to 16 letters and digits"),
    ('{"current": "k1", "keys": {"k1": "c2hvcnQ"}}', "key k1 has 5 bytes, at least 32 are needed"),
    ('{"current": "k1", "keys": {"k1": "%s!"}}' % SECRET, "key k1 is not base64url text"),
    ('{"current": "k1", "keys": {"k1": 5}}', "key k1 is not base64url text"),
    ('{"current": "k2", "keys": {"k1": "%s"}}' % SECRET, "current must name one of the keys \\(k1\\)"),
])
def test_bad_keys_file_says_why_without_the_key(text, message):
    with pytest.raises(ValueError, match=message) as info:
        parse_proxy_keys(text)
    assert SECRET not in str(info.value)


def test_keys_file_missing(tmp_path):
    with pytest.raises(ValueError, match=r"proxy token keys .*/nope.json cannot be read: No such file or directory"):
        load_proxy_keys(str(tmp_path / "nope.json"))


def test_mint_refuses_bad_input():
    with pytest.raises(ValueError, match="proxy_token_ttl must be between 60 and 604800 seconds, got 10"):
        mint(ttl=10)
    with pytest.raises(ValueError, match="proxy_user must be a non-empty string"):
        mint(user="")
    with pytest.raises(ValueError, match="proxy_user must not contain control characters"):
        mint(user="a\nb")
    with pytest.raises(ValueError, match="proxy_user must be at most 64 characters"):
        mint(user="a" * 65)
    with pytest.raises(ValueError, match="is not a valid VM name"):
        mint(vm="../x")
    with pytest.raises(ValueError, match="key id 'k9' is not among the proxy token keys"):
        mint(key_id="k9")
    with pytest.raises(ValueError, match="proxy username of 148 characters, more than 128"):
        mint(user="é" * 20, vm="v" * 26)


@pytest.mark.parametrize("value, expected", [(60, 60), ("28800", 28800), (3600.0, 3600), (604800, 604800)])
def test_token_ttl(value, expected):
    assert validate_token_ttl(value) == expected


# --- revocations --------------------------------------------------------------------------------

def test_revocation_by_user_and_by_vm():
    minted = mint()
    assert verify(minted, revocations={"users": {"alice": NOW - 1}, "vms": {}}).ok, "revoked before it was issued"
    assert verify(minted, revocations={"users": {"alice": NOW}, "vms": {}}).status == "revoked"
    assert verify(minted, revocations={"users": {}, "vms": {"web1": NOW + 5}}).status == "revoked"
    assert verify(minted, revocations={"users": {"bob": NOW + 5}, "vms": {"web2": NOW + 5}}).ok
    assert verify(mint(now=NOW + 6), revocations={"vms": {"web1": NOW + 5}}).ok, "a new token after the cut works"
    assert verify(minted, revocations={"pairs": {"alice__web1": NOW + 5}}).status == "revoked"
    assert verify(minted, revocations={"pairs": {"alice__web2": NOW + 5, "bob__web1": NOW + 5}}).ok, "others' pairs"


def test_revocations_file(tmp_path):
    path = tmp_path / "revoked.json"
    assert load_revocations(str(path)) == {"users": {}, "vms": {}, "pairs": {}}
    path.write_text('{"users": {"alice": 5}}')
    assert load_revocations(str(path)) == {"users": {"alice": 5}, "vms": {}, "pairs": {}}, "files without pairs"
    path.write_text('{"pairs": {"alice__web1": 5}}')
    assert load_revocations(str(path)) == {"users": {}, "vms": {}, "pairs": {"alice__web1": 5}}
    for bad in ('{"users": {"alice": "5"}}', "[1]", "{", '{"vms": {"a": true}}', '{"pairs": {"alice": 5}}'):
        with pytest.raises(ValueError):
            parse_revocations(bad)
