# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""proxy_token_key: a node's signing keys made on the node, 0600, rotated in three stages; only public keys leave."""

from __future__ import annotations

import json
import os
import stat

from ansible_collections.vmconsole.secure.plugins.module_utils._tickets import (
    dump_public_keys, load_proxy_signer, load_signing_keys, mint_proxy_token, parse_proxy_keys, private_key_text,
    proxy_signer, public_key_text, verify_proxy_token,
)
from ansible_collections.vmconsole.secure.plugins.modules import proxy_token_key


def args(tmp_path, **changes):
    return dict(dict(path=str(tmp_path / "proxy-signing.json"), public_keys_file=str(tmp_path / "proxy-keys.json"),
                     stage=0, overlap=28800), **changes)


def secrets_in(tmp_path):
    return [private_key_text(signer) for signer in load_signing_keys(str(tmp_path / "proxy-signing.json")).keys.values()]


def test_the_first_run_makes_a_key_0600_and_returns_only_its_public_key(tmp_path, run_module):
    result = run_module(proxy_token_key.main, args(tmp_path))
    path = tmp_path / "proxy-signing.json"
    assert result["changed"] is True and stat.S_IMODE(os.stat(path).st_mode) == 0o600
    signer = load_proxy_signer(str(path))
    assert result["key_id"] == signer.key_id and result["public_keys"] == {signer.key_id: public_key_text(signer)}
    assert (result["pending"], result["retiring"], result["known_keys"]) == (None, [], {})
    assert not any(secret in json.dumps(result) for secret in secrets_in(tmp_path))
    # What the node signs, every node verifies with the public key the result gave.
    keys = parse_proxy_keys(dump_public_keys({signer.key_id: {"node": "hv1", "public": result["public_keys"][signer.key_id]}}))
    token = mint_proxy_token(signer, "alice", "web1", "spice")
    assert verify_proxy_token(keys, token.username, token.token).ok
    again = run_module(proxy_token_key.main, args(tmp_path))
    assert again["changed"] is False and again["public_keys"] == result["public_keys"]


def test_check_mode_makes_nothing(tmp_path, run_module):
    result = run_module(proxy_token_key.main, args(tmp_path), check_mode=True)
    assert result["changed"] is True and result["public_keys"] == {} and result["key_id"] is None
    assert not (tmp_path / "proxy-signing.json").exists()
    run_module(proxy_token_key.main, args(tmp_path))
    one = run_module(proxy_token_key.main, args(tmp_path, stage=1), check_mode=True)
    assert one["changed"] is True and one["pending"] is None and len(one["public_keys"]) == 1
    assert load_signing_keys(str(tmp_path / "proxy-signing.json")).pending is None


def test_a_rotation_in_three_stages(tmp_path, run_module):
    first = run_module(proxy_token_key.main, args(tmp_path))["key_id"]
    one = run_module(proxy_token_key.main, args(tmp_path, stage=1))
    assert one["changed"] is True and one["key_id"] == first and one["pending"] not in (None, first)
    assert set(one["public_keys"]) == {first, one["pending"]}
    assert run_module(proxy_token_key.main, args(tmp_path, stage=1))["changed"] is False
    two = run_module(proxy_token_key.main, args(tmp_path, stage=2))
    assert (two["key_id"], two["pending"], two["retiring"]) == (one["pending"], None, [first])
    assert load_proxy_signer(str(tmp_path / "proxy-signing.json")).key_id == one["pending"]
    early = run_module(proxy_token_key.main, args(tmp_path, stage=3))
    assert early["failed"] is True and early["msg"].startswith("connect_proxy_rotate_stage 3: key %s became current"
                                                               % two["key_id"])
    three = run_module(proxy_token_key.main, args(tmp_path, stage=3, overlap=0))
    assert three["changed"] is True and set(three["public_keys"]) == {two["key_id"]} and three["retiring"] == []
    assert first not in secrets_in(tmp_path) and len(secrets_in(tmp_path)) == 1


def test_a_key_file_others_can_read_is_made_0600_again(tmp_path, run_module):
    run_module(proxy_token_key.main, args(tmp_path))
    path = tmp_path / "proxy-signing.json"
    os.chmod(path, 0o644)
    result = run_module(proxy_token_key.main, args(tmp_path))
    assert result["changed"] is True and stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_known_keys_are_the_public_keys_file(tmp_path, run_module):
    other = proxy_signer(b"\x07" * 32)
    entries = {other.key_id: {"node": "hv2", "public": public_key_text(other)}}
    (tmp_path / "proxy-keys.json").write_text(dump_public_keys(entries))
    assert run_module(proxy_token_key.main, args(tmp_path))["known_keys"] == entries


def test_bad_files_and_stages_fail_before_anything_changes(tmp_path, run_module):
    path = tmp_path / "proxy-signing.json"
    none = run_module(proxy_token_key.main, args(tmp_path, stage=2))
    assert none["failed"] is True and "this node has no token signing key to rotate yet" in none["msg"]
    assert not path.exists()
    secret = private_key_text(proxy_signer(b"\x09" * 32))
    path.write_text(json.dumps({"current": "0123456789ab", "keys": {"0123456789ab": secret}}))
    bad = run_module(proxy_token_key.main, args(tmp_path))
    assert bad["failed"] is True and "is filed under an id that is not its own" in bad["msg"]
    assert "repair or remove it" in bad["msg"] and secret not in bad["msg"]
    (tmp_path / "proxy-keys.json").write_text("{")
    path.unlink()
    broken = run_module(proxy_token_key.main, args(tmp_path))
    assert broken["failed"] is True and broken["msg"].startswith("public_keys_file: proxy token keys %s: not valid JSON"
                                                                 % (tmp_path / "proxy-keys.json"))
    assert not path.exists()
    negative = run_module(proxy_token_key.main, args(tmp_path, overlap=-1))
    assert negative["failed"] is True and negative["msg"] == "overlap must be 0 or more seconds, got -1"


def test_without_cryptography_a_preflight_on_a_new_node_passes(tmp_path, monkeypatch):
    monkeypatch.setattr(proxy_token_key, "HAS_CRYPTOGRAPHY", False)
    result, error = proxy_token_key.run(args(tmp_path), check_mode=True)
    assert error is None and result["changed"] is True and result["public_keys"] == {}
    result, error = proxy_token_key.run(args(tmp_path), check_mode=False)
    assert result is None and "needs the Python package cryptography" in error
