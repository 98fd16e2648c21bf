# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Proxy tokens: format, binding to user and VM, every refusal class, keys and revocations."""

from __future__ import annotations

import random
import re

import pytest

from ansible_collections.vmconsole.secure.plugins.module_utils import _tickets
from ansible_collections.vmconsole.secure.plugins.module_utils._tickets import (
    TOKEN_CLOCK_SKEW, TOKEN_MAX_LENGTH, TOKEN_TTL_DEFAULT, dump_public_keys, dump_signing_keys, load_proxy_keys,
    load_proxy_signer, load_revocations, load_signing_keys, mint_proxy_token, new_proxy_signer, parse_proxy_keys,
    parse_proxy_username, parse_public_keys, parse_revocations, parse_signing_keys, private_key_text, proxy_key_id,
    proxy_keys_of, proxy_signer, proxy_username, public_key_text, validate_token_ttl, verify_proxy_token,
)

NOW = 1767225600
S1 = proxy_signer(b"\x01" * 32)
S2 = proxy_signer(b"\x02" * 32)
K1 = S1.key_id
KEYS = proxy_keys_of("hv1", S1)
ALPHABET = re.compile(r"[A-Za-z0-9_-]+\Z")


def mint(user="alice", vm="web1", signer=S1, console="spice", **kwargs):
    kwargs.setdefault("now", NOW)
    return mint_proxy_token(signer, user, vm, console, **kwargs)


def verify(minted, keys=KEYS, username=None, token=None, **kwargs):
    kwargs.setdefault("now", NOW + 10)
    return verify_proxy_token(keys, minted.username if username is None else username,
                              minted.token if token is None else token, **kwargs)


# --- format ----------------------------------------------------------------------------------

def test_round_trip():
    minted = mint()
    assert minted.username == "alice__web1"
    assert (minted.user, minted.vm, minted.key_id, minted.issued, minted.expires, minted.console, minted.client) == (
        "alice", "web1", K1, NOW, NOW + TOKEN_TTL_DEFAULT, "spice", None)
    assert re.match(r"^v3_[0-9a-f]{12}_spice_%d_%d_n_[0-9a-f]{8}_[A-Za-z0-9_-]{86}$" % (NOW, NOW + 28800), minted.token)
    check = verify(minted)
    assert check.ok and tuple(check) == ("ok", "alice", "web1", K1, NOW, NOW + 28800, "spice", None)


def test_the_key_id_is_the_start_of_the_public_keys_hash():
    public = S1.private.public_key().public_bytes_raw() if hasattr(S1.private.public_key(), "public_bytes_raw") \
        else _tickets._raw_public(S1.private.public_key())
    assert K1 == proxy_key_id(public) and re.fullmatch(r"[0-9a-f]{12}", K1)
    assert S2.key_id != K1


def test_the_verifying_side_cannot_sign():
    """What the helper holds (the public keys file) has nothing a token could be signed with."""
    keys = parse_proxy_keys(dump_public_keys({K1: {"node": "hv1", "public": public_key_text(S1)}}))
    assert verify(mint(), keys=keys).ok
    with pytest.raises(ValueError, match="signer must be a ProxySigner"):
        mint_proxy_token(keys, "alice", "web1", "spice")
    with pytest.raises(ValueError, match="signer must be a ProxySigner"):
        mint_proxy_token(_tickets.ProxySigner(K1, keys.keys[K1]), "alice", "web1", "spice")
    assert private_key_text(S1) not in dump_public_keys({K1: {"node": "hv1", "public": public_key_text(S1)}})


@pytest.mark.parametrize("console", ["spice", "vnc", "serial"])
def test_the_console_is_part_of_the_token(console):
    minted = mint(console=console)
    assert minted.token.startswith("v3_%s_%s_" % (K1, console))
    assert verify(minted).console == console


def test_tokens_of_one_second_differ():
    """Two .vv for one person, VM and console in the same second: two tokens, each binds to its own client."""
    first, second = mint(), mint()
    assert first.token != second.token and first.issued == second.issued
    assert verify(first).ok and verify(second).ok


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
    minted = mint("u" * 60, "v" * 64, now=99999999999 - 604800, console="serial")
    assert len(minted.token) == 144
    bound = mint("u" * 60, "v" * 64, now=99999999999 - 604800, console="serial", client="192.0.2.1")
    assert len(bound.token) == 152
    bound = mint("u" * 60, "v" * 64, now=99999999999 - 604800, console="serial", client="2001:db8::1")
    assert len(bound.token) == 176 <= TOKEN_MAX_LENGTH
    assert len(mint().token) == 141, "a SPICE token of today for any client"


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
    assert verify(mint(), keys=proxy_keys_of("hv2", S2)).status == "unknown_key"
    assert verify(mint(), keys={}).status == "unknown_key"


def test_another_nodes_key_under_this_id_is_a_bad_signature():
    assert verify(mint(), keys={K1: S2.private.public_key()}).status == "bad_signature"


def test_token_of_another_vm_or_user_is_a_bad_signature():
    minted = mint()
    assert verify(minted, username="alice__web2").status == "bad_signature"
    assert verify(minted, username="bob__web1").status == "bad_signature"


def _tamper(token, index, value):
    parts = token.split("_", 7)
    parts[index] = value
    return "_".join(parts)


@pytest.mark.parametrize("index, value, status", [
    (0, "v1", "malformed"),
    (1, S2.key_id, "bad_signature"),     # another key id that exists
    (1, "0123456789ab", "unknown_key"),
    (1, "k1", "malformed"),
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
    (6, "00000000", "bad_signature"),    # another nonce
    (6, "0000000", "malformed"),
])
def test_tampering_with_each_field(index, value, status):
    keys = proxy_keys_of("hv1", S1, S2)
    minted = mint()
    assert verify(minted, keys=keys, token=_tamper(minted.token, index, value)).status == status


def test_tampering_with_every_signature_character():
    minted = mint()
    prefix = "_".join(minted.token.split("_", 7)[:7]) + "_"
    signature = minted.token[len(prefix):]
    assert len(signature) == 86
    for i, char in enumerate(signature[:-1]):
        forged = prefix + signature[:i] + ("A" if char != "A" else "B") + signature[i + 1:]
        assert verify(minted, token=forged).status == "bad_signature", i
    # The last character carries 4 unused bits: only A, Q, g and w end a canonical signature, and a variant
    # decoding to the same bytes is refused (one text per token).
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    assert signature[-1] in "AQgw"
    variant = alphabet[alphabet.index(signature[-1]) ^ 1]
    assert verify(minted, token=prefix + signature[:-1] + variant).status == "malformed"
    other = "AQgw"[("AQgw".index(signature[-1]) + 1) % 4]
    assert verify(minted, token=prefix + signature[:-1] + other).status == "bad_signature"


def test_signature_is_checked_before_time():
    """A forged expired token learns 'bad_signature', not 'expired'."""
    minted = mint(ttl=60)
    forged = minted.token[:-2] + ("A" if minted.token[-2] != "A" else "B") + minted.token[-1]
    assert verify(minted, token=forged, now=NOW + 10 ** 6).status == "bad_signature"


@pytest.mark.parametrize("username, token", [
    (None, None), (1, 2), (b"alice__web1", b"v1"), ("alice__web1", ""), ("alice__web1", "v1"),
    ("alice__web1", "v3_%s_spice_1_2_n_0badcafe_" % K1 + "A" * 85), ("alice__web1", "v3_%s_spice_1_2_n_0badcafe_" % K1 + "A" * 87),
    ("alice__web1", "v3_%s_spice_1_2_n_0badcafe_" % K1 + "A" * 85 + "="),
    ("alice__web1", "v3_%s_spice_1_2_n_0badcafe_" % K1 + "A" * 85 + "é"),
    ("alice__web1", "v3_%s_spice_1_2_n_0badcafe_" % K1 + "A" * 86 + "\n"), ("alice__web1", "v3__spice_1_2_n_0badcafe_" + "A" * 86),
    ("alice__web1", "v3_%s_spice_-1_2_n_0badcafe_" % K1 + "A" * 86),
    ("alice__web1", "v3_%s_spice_1_123456789012_n_0badcafe_" % K1 + "A" * 86),
    ("alice__web1", "v2_k1_spice_1_2_n_" + "A" * 43),     # a token of the HMAC format before
    ("alice__web1", "x" * 100000), ("a" * 100000, "v1"), ("alice__web1", ["v1"]),
])
def test_malformed_never_raises(username, token):
    check = verify_proxy_token(KEYS, username, token)
    assert check.status == "malformed" and not check.ok


def test_verify_never_raises_on_random_garbage():
    rng = random.Random(42)
    pool = "v3_spice_" + K1 + "AZaz09-=é\n\0 %:" + chr(0xD800)
    minted = mint()
    for dummy in range(3000):
        token = "".join(rng.choice(pool) for dummy2 in range(rng.randint(0, 120)))
        if rng.random() < 0.5:
            token = minted.token[:rng.randint(0, len(minted.token))] + token
        username = rng.choice([minted.username, token[:20], "", None])
        status = verify_proxy_token(KEYS, username, token, now=NOW).status
        assert status in _tickets.TOKEN_STATUSES and status != "ok"
    assert verify_proxy_token({K1: b"not a key"}, minted.username, minted.token).status == "unknown_key"
    assert verify_proxy_token(None, minted.username, minted.token).status == "malformed"


# --- keys: nodes, rotation and files -----------------------------------------------------------

def test_every_nodes_key_verifies_and_a_rotation_overlap_accepts_both():
    s3 = new_proxy_signer()
    cluster = proxy_keys_of("hv1", S1, S2)
    cluster = cluster._replace(keys=dict(cluster.keys, **proxy_keys_of("hv2", s3).keys))
    for signer in (S1, S2, s3):
        assert verify(mint(signer=signer), keys=cluster).ok
    assert verify(mint(signer=S1), keys=proxy_keys_of("hv1", S2, s3)).status == "unknown_key"


def test_signing_keys_file(tmp_path):
    path = tmp_path / "proxy-signing.json"
    path.write_text(dump_signing_keys(_tickets.SigningKeys(S2.key_id, None, [K1], NOW, {K1: S1, S2.key_id: S2})))
    signing = load_signing_keys(str(path))
    assert (signing.current, signing.pending, signing.retiring, signing.promoted) == (S2.key_id, None, [K1], NOW)
    assert signing.public() == {K1: public_key_text(S1), S2.key_id: public_key_text(S2)}
    assert load_proxy_signer(str(path)).key_id == S2.key_id
    token = mint(signer=load_proxy_signer(str(path)))
    assert token.key_id == S2.key_id and verify(token, keys=proxy_keys_of("hv1", S2)).ok


def test_public_keys_file(tmp_path):
    path = tmp_path / "proxy-keys.json"
    entries = {K1: {"node": "hv1", "public": public_key_text(S1)}, S2.key_id: {"node": "hv2", "public": public_key_text(S2)}}
    path.write_text(dump_public_keys(entries))
    assert parse_public_keys(path.read_text()) == entries
    keys = load_proxy_keys(str(path))
    assert set(keys.keys) == {K1, S2.key_id}
    assert verify(mint(signer=S2), keys=keys).ok


SECRET = private_key_text(S1)
PUBLIC = public_key_text(S1)


@pytest.mark.parametrize("text, message", [
    ("", "not valid JSON"),
    ("[]", "expected"),
    ('{"current": "%s", "keys": {}}' % K1, "current must name one of the keys \\(there are none\\)"),
    ('{"current": "k1", "keys": {"k1": "%s"}}' % SECRET, "key id 'k1' is not 12 hex digits"),
    ('{"current": "%s", "keys": {"%s": "c2hvcnQ"}}' % (K1, K1), "key %s is not 32 bytes of unpadded base64url" % K1),
    ('{"current": "%s", "keys": {"%s": "%s!"}}' % (K1, K1, SECRET[:-1]), "is not 32 bytes of unpadded base64url"),
    ('{"current": "%s", "keys": {"%s": 5}}' % (K1, K1), "is not 32 bytes of unpadded base64url"),
    ('{"current": "%s", "keys": {"%s": "%s"}}' % (S2.key_id, S2.key_id, SECRET), "is filed under an id that is not its own"),
    ('{"current": "%s", "pending": "%s", "keys": {"%s": "%s"}}' % (K1, K1, K1, SECRET), "pending must be null"),
    ('{"current": "%s", "retiring": ["%s"], "keys": {"%s": "%s"}}' % (K1, K1, K1, SECRET), "retiring must list"),
    ('{"current": "%s", "promoted": -1, "keys": {"%s": "%s"}}' % (K1, K1, SECRET), "promoted must be epoch seconds"),
    ('{"current": "%s", "keys": {"%s": "%s", "%s": "%s"}}' % (K1, K1, SECRET, S2.key_id, private_key_text(S2)),
     "every key must be current, pending or retiring"),
])
def test_bad_signing_keys_file_says_why_without_the_key(text, message):
    with pytest.raises(ValueError, match=message) as info:
        parse_signing_keys(text)
    assert SECRET not in str(info.value)


@pytest.mark.parametrize("text, message", [
    ("", "not valid JSON"),
    ('{"keys": []}', "expected"),
    ('{"keys": {"k1": {"node": "hv1", "public": "%s"}}}' % PUBLIC, "key id 'k1' is not 12 hex digits"),
    ('{"keys": {"%s": {"public": "%s"}}}' % (K1, PUBLIC), 'must be {"node": NAME, "public": PUBLIC_KEY}'),
    ('{"keys": {"%s": {"node": "hv1", "public": "abc"}}}' % K1, "is not 32 bytes of unpadded base64url"),
    ('{"keys": {"%s": {"node": "hv1", "public": "%s"}}}' % (S2.key_id, PUBLIC), "is filed under an id that is not its own"),
])
def test_bad_public_keys_file_says_why(text, message):
    with pytest.raises(ValueError, match=message):
        parse_proxy_keys(text)


def test_keys_files_missing(tmp_path):
    with pytest.raises(ValueError, match=r"proxy token keys .*/nope.json cannot be read: No such file or directory"):
        load_proxy_keys(str(tmp_path / "nope.json"))
    with pytest.raises(ValueError, match=r"proxy token signing keys .*/nope.json cannot be read: No such file"):
        load_proxy_signer(str(tmp_path / "nope.json"))


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
