# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import pytest

from ansible_collections.vmconsole.secure.plugins.module_utils import _tickets
from ansible_collections.vmconsole.secure.plugins.module_utils._tickets import (
    SPICE_TICKET_LENGTH, SPICE_TICKET_MAX, TICKET_ALPHABET, VNC_TICKET_LENGTH, new_ticket, validate_ticket, validate_ttl,
)


def test_alphabet_is_letters_and_digits():
    assert sorted(TICKET_ALPHABET) == sorted("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")


@pytest.mark.parametrize("protocol, length", [("spice", SPICE_TICKET_LENGTH), ("vnc", VNC_TICKET_LENGTH)])
def test_new_ticket_length_alphabet_and_validity(protocol, length):
    tickets = {new_ticket(protocol) for dummy in range(200)}
    assert len(tickets) == 200
    for ticket in tickets:
        assert len(ticket) == length
        assert set(ticket) <= set(TICKET_ALPHABET)
        validate_ticket(protocol, ticket)


def test_new_ticket_uses_secrets(monkeypatch):
    calls = []

    def choice(seq):
        calls.append(seq)
        return seq[0]

    monkeypatch.setattr(_tickets.secrets, "choice", choice)
    assert new_ticket("vnc") == TICKET_ALPHABET[0] * 8
    assert len(calls) == 8


def test_new_ticket_spreads_over_the_alphabet():
    seen = set("".join(new_ticket("spice") for dummy in range(100)))
    assert seen == set(TICKET_ALPHABET)


def test_unknown_protocol():
    with pytest.raises(ValueError, match="protocol must be one of spice, vnc"):
        new_ticket("rdp")
    with pytest.raises(ValueError, match="protocol"):
        validate_ticket("rdp", "abc")


@pytest.mark.parametrize("protocol, value", [
    ("spice", "a"), ("spice", "x" * SPICE_TICKET_MAX), ("spice", "Az09" * 10),
    ("vnc", "a"), ("vnc", "abcd1234"),
])
def test_valid_tickets(protocol, value):
    validate_ticket(protocol, value)


@pytest.mark.parametrize("protocol, value, reason", [
    ("spice", "", "1 to 59 characters long, this one has 0"),
    ("spice", "S3cretS3cret" * 5, "1 to 59 characters long, this one has 60"),
    ("vnc", "S3cretS3c", "1 to 8 characters long, this one has 9"),
    ("vnc", "", "1 to 8 characters"),
    ("spice", "S3cret:pw", r"only letters and digits \[A-Za-z0-9\]"),
    ("spice", "S3cret pw", "only letters and digits"),
    ("spice", "S3cret\npw", "only letters and digits"),
    ("spice", "S3cret_pw", "only letters and digits"),
    ("vnc", "S3cré", "only letters and digits"),
    ("spice", "S3cret%41", "only letters and digits"),
])
def test_invalid_tickets_say_why_and_never_echo(protocol, value, reason):
    with pytest.raises(ValueError, match=reason) as info:
        validate_ticket(protocol, value)
    if value:
        assert value not in str(info.value)
        assert "S3cret" not in str(info.value)


def test_ticket_must_be_text():
    with pytest.raises(ValueError, match="must be a string, got int"):
        validate_ticket("spice", 12345)


@pytest.mark.parametrize("value, expected", [
    (1, 1), (30, 30), (86400, 86400), (30.0, 30), ("30", 30), (" 45 ", 45), ("+7", 7),
])
def test_valid_ttl(value, expected):
    result = validate_ttl(value)
    assert result == expected and isinstance(result, int) and not isinstance(result, bool)


@pytest.mark.parametrize("value, reason", [
    (0, "between 1 and 86400 seconds, got 0"),
    (-5, "between 1 and 86400 seconds, got -5"),
    ("-5", "got -5"),
    ("0", "got 0"),
    (86401, "got 86401"),
    (True, "got a boolean"),
    (False, "got a boolean"),
    (1.5, "whole number of seconds .*got 1.5"),
    ("1.5", r"got '1.5' \(not an integer\)"),
    ("abc", r"got 'abc' \(not an integer\)"),
    ("", "not an integer"),
    ("+abc", "not an integer"),
    (None, "got NoneType"),
    ([30], "got list"),
])
def test_invalid_ttl_names_option_and_reason(value, reason):
    with pytest.raises(ValueError, match=reason) as info:
        validate_ttl(value)
    assert str(info.value).startswith("ttl ")
