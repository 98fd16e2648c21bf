# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import random
import re
import threading

import pytest

from ansible_collections.vmconsole.secure.plugins.module_utils import _portal_auth
from ansible_collections.vmconsole.secure.plugins.module_utils import _tickets
from ansible_collections.vmconsole.secure.plugins.module_utils._portal_auth import (
    DUMMY_HASH, NAME_MAX, PASSWORD_MAX_BYTES, ROLES, TRACKED_MAX, LoginLimiter, Rule, Session, SessionStore, User,
    address_key, csrf_ok, dummy_verify, parse_acl, parse_users, password_hash_kind, verify_password, vm_role,
)

try:
    import argon2
    HAS_ARGON2 = hasattr(argon2, "PasswordHasher")
except ImportError:
    HAS_ARGON2 = False


# --- hashes made by libxcrypt itself, independently of the module under test -----------------

def _libcrypt():
    lib = ctypes.CDLL(ctypes.util.find_library("crypt"))
    lib.crypt_gensalt_rn.argtypes = [ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                                     ctypes.c_int]
    lib.crypt_gensalt_rn.restype = ctypes.c_char_p
    lib.crypt_rn.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int]
    lib.crypt_rn.restype = ctypes.c_char_p
    return lib


LIB = _libcrypt()


def make_hash(password, prefix="$y$", count=1):
    """libxcrypt's hash of ``password``: a salt from crypt_gensalt_rn, then crypt_rn (low costs keep tests fast)."""
    out = ctypes.create_string_buffer(192)
    setting = LIB.crypt_gensalt_rn(prefix.encode(), count, None, 0, out, 192)
    assert setting, "libxcrypt made no %s salt" % prefix
    data = ctypes.create_string_buffer(32768)
    result = LIB.crypt_rn(password.encode("utf-8"), setting, data, 32768)
    assert result and not result.startswith(b"*")
    return result.decode("ascii")


PASSWORD = "correct horse battery staple"
HASHES = {
    "yescrypt": make_hash(PASSWORD, "$y$"),
    "gost-yescrypt": make_hash(PASSWORD, "$gy$"),
    "scrypt": make_hash(PASSWORD, "$7$", 6),
}
# argon2-cffi 25.1's PasswordHasher().hash("secret") (and with type=Type.I): form tests need no library.
ARGON2ID = "$argon2id$v=19$m=65536,t=3,p=4$7n54D+yKP39/zHbkXjfiCw$dFPORJHgAvW1mI3I0/dXqRjS4kyOL1zkr1X/F9sakEc"
ARGON2I = "$argon2i$v=19$m=65536,t=3,p=4$7P+SUz1K8uLBjkoLXWTI4A$d2nbtsBjiJm20UEGznBfnElQG8nHfjfhyLqn2Bnvi58"


# --- password_hash_kind ----------------------------------------------------------------------

@pytest.mark.parametrize("kind", sorted(HASHES))
def test_kind_of_libxcrypt_hashes(kind):
    assert password_hash_kind(HASHES[kind]) == kind


def test_kind_of_default_cost_yescrypt():
    assert password_hash_kind(make_hash("x", "$y$", 0)) == "yescrypt"    # what `mkpasswd -m yescrypt` writes
    assert password_hash_kind(DUMMY_HASH) == "yescrypt"


@pytest.mark.parametrize("text, kind", [
    (ARGON2ID, "argon2id"), (ARGON2I, "argon2i"),
    ("$argon2id$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo", "argon2id"),      # the form before v=19
])
def test_kind_of_argon2_hashes(text, kind):
    assert password_hash_kind(text) == kind


SHA512 = make_hash("hunter2-secret", "$6$", 5000)
REFUSALS = [
    # (text, words the message must have)
    ("hunter2-secret", ["clear-text password", "mkpasswd -m yescrypt", "whois"]),
    ("Tr0ub4dor&3 long one", ["clear-text password", "mkpasswd -m yescrypt"]),
    (SHA512, ["SHA-512", "$6$", "not accepted", "not memory-hard", "mkpasswd -m yescrypt"]),
    (make_hash("hunter2-secret", "$5$", 5000), ["SHA-256", "$5$", "not memory-hard"]),
    (make_hash("hunter2-secret", "$1$", 0), ["MD5", "$1$", "not memory-hard"]),
    (make_hash("hunter2-secret", "$2b$", 4), ["bcrypt", "$2b$", "not memory-hard"]),
    ("$2y$10$abcdefghijklmnopqrstuu5Y3r0bNpR9vP2lN6zU8m6sZ8a2y6Y7e", ["bcrypt", "not memory-hard"]),
    (make_hash("hunter2-secret", "", 0), ["DES", "not memory-hard", "or a clear-text password"]),
    (make_hash("hunter2-secret", "_", 725), ["DES", "not memory-hard"]),
    ("$argon2d$v=19$m=65536,t=3,p=4$y5eJzt8Pt+rCybLrjyNR8Q$5+62HSpEnCT0swjcxUp4uKkG7dFhp1PyBnbMKkdNlr0",
     ["argon2d", "side-channel", "argon2id"]),
    ("$scrypt$ln=16,r=8,p=1$c2FsdA$aGFzaA", ["passlib", "$7$"]),
    ("$pbkdf2-sha256$29000$c2FsdA$aGFzaA", ["PBKDF2", "not memory-hard"]),
    ("$hunter2$secret", ["not a hash of an accepted scheme", "clear-text password", "mkpasswd"]),
    ("!" + HASHES["yescrypt"], ["locked or disabled"]),
    ("*", ["locked or disabled"]),
    ("", ["empty", "mkpasswd"]),
    (HASHES["yescrypt"][:-5], ["yescrypt", "malformed"]),
    (HASHES["scrypt"].replace("$", "", 3), ["clear-text"]),
    (HASHES["yescrypt"] + "\n", ["yescrypt", "line break", "echo -n"]),
    (" " + HASHES["gost-yescrypt"], ["clear-text"]),
    (ARGON2ID[:-1] + "=", ["argon2id", "malformed"]),
    (ARGON2ID.replace("m=65536,", ""), ["argon2id", "malformed"]),
]


@pytest.mark.parametrize("text, words", REFUSALS)
def test_kind_refusals_say_why_and_never_quote_the_text(text, words):
    with pytest.raises(ValueError) as info:
        password_hash_kind(text)
    message = str(info.value)
    assert message.startswith("the password hash ")
    for word in words:
        assert word in message
    if text:
        assert text not in message and text.strip() not in message
    assert "hunter2" not in message and "Tr0ub4dor" not in message


@pytest.mark.parametrize("value", [None, 42, b"$y$abc", ["$y$"]])
def test_kind_refuses_what_is_no_string(value):
    with pytest.raises(ValueError, match="must be a string"):
        password_hash_kind(value)


# --- verify_password -------------------------------------------------------------------------

@pytest.mark.parametrize("kind", sorted(HASHES))
def test_verify_right_and_wrong_password(kind):
    assert verify_password(HASHES[kind], PASSWORD) is True
    assert verify_password(HASHES[kind], PASSWORD + "!") is False
    assert verify_password(HASHES[kind], PASSWORD.upper()) is False
    assert verify_password(HASHES[kind], "") is False


def test_verify_utf8_and_empty_passwords():
    assert verify_password(make_hash("pässwörd ✓"), "pässwörd ✓") is True
    assert verify_password(make_hash("pässwörd ✓"), "passwort ✓") is False
    assert verify_password(make_hash(""), "") is True


def test_verify_default_cost_hash():
    text = make_hash(PASSWORD, "$y$", 0)
    assert verify_password(text, PASSWORD) is True
    assert verify_password(text, "nope") is False


@pytest.mark.parametrize("hash_text, password", [
    (None, PASSWORD), (42, PASSWORD), (b"$y$", PASSWORD),
    (HASHES["yescrypt"], None), (HASHES["yescrypt"], 42), (HASHES["yescrypt"], PASSWORD.encode()),
])
def test_verify_refuses_what_is_no_string(hash_text, password):
    assert verify_password(hash_text, password) is False


@pytest.mark.parametrize("text", [
    HASHES["yescrypt"][:-1], HASHES["yescrypt"] + "\n", HASHES["scrypt"][:20], "$y$", "$7$$",
    HASHES["gost-yescrypt"][:-1] + "!", ARGON2ID[:40],
])
def test_verify_malformed_hash_of_an_accepted_scheme_is_false(text):
    assert verify_password(text, PASSWORD) is False


def test_verify_altered_hash_is_false():
    text = HASHES["yescrypt"]
    altered = text[:-1] + ("A" if text[-1] != "A" else "B")
    assert password_hash_kind(altered) == "yescrypt"
    assert verify_password(altered, PASSWORD) is False


@pytest.mark.parametrize("text", [SHA512, "hunter2-secret", "$2b$05$abc"])
def test_verify_refuses_schemes_not_accepted(text):
    with pytest.raises(ValueError, match="the password hash") as info:
        verify_password(text, "hunter2-secret")
    assert text not in str(info.value) and "hunter2" not in str(info.value)


def test_verify_nul_in_password_is_false():
    # C would stop at the NUL and hash "secret": without the check this would log in.
    text = make_hash("secret")
    assert verify_password(text, "secret") is True
    assert verify_password(text, "secret\0anything") is False


def test_verify_lone_surrogate_is_false():
    assert verify_password(HASHES["yescrypt"], "pass\udc80") is False


def test_verify_long_password_is_false_without_hashing(monkeypatch):
    calls = []
    monkeypatch.setattr(_portal_auth, "_crypt", lambda *args: calls.append(args))
    assert verify_password(HASHES["yescrypt"], "x" * (PASSWORD_MAX_BYTES + 1)) is False
    assert verify_password(HASHES["yescrypt"], "é" * (PASSWORD_MAX_BYTES // 2 + 1)) is False   # over in bytes
    assert verify_password(HASHES["yescrypt"], "x" * 10 ** 6) is False
    assert calls == []


def test_verify_password_at_the_limit_is_hashed(monkeypatch):
    calls = []
    monkeypatch.setattr(_portal_auth, "_crypt", lambda phrase, setting: calls.append(phrase))
    assert verify_password(HASHES["yescrypt"], "x" * PASSWORD_MAX_BYTES) is False
    assert calls == [b"x" * PASSWORD_MAX_BYTES]


def test_verify_compares_with_compare_digest(monkeypatch):
    seen = []
    real = _portal_auth.hmac.compare_digest

    def compare_digest(a, b):
        seen.append((a, b))
        return real(a, b)

    monkeypatch.setattr(_portal_auth.hmac, "compare_digest", compare_digest)
    assert verify_password(HASHES["yescrypt"], PASSWORD) is True
    assert seen == [(HASHES["yescrypt"].encode(), HASHES["yescrypt"].encode())]


def test_verify_in_threads_at_once():
    results = {}

    def check(index):
        password = PASSWORD if index % 2 == 0 else "wrong %d" % index
        results[index] = verify_password(HASHES["yescrypt"], password)

    threads = [threading.Thread(target=check, args=(index,)) for index in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == {index: index % 2 == 0 for index in range(16)}


def test_verify_without_libcrypt_says_what_is_missing(monkeypatch):
    monkeypatch.setattr(_portal_auth, "HAS_LIBCRYPT", False)
    with pytest.raises(ValueError, match="libcrypt1"):
        verify_password(HASHES["yescrypt"], PASSWORD)


def test_libcrypt_is_loaded():
    assert _portal_auth.HAS_LIBCRYPT
    assert _portal_auth._CRYPT.__name__ == "crypt_rn"     # pylint: disable=protected-access


def test_crypt_buffer_is_wiped(monkeypatch):
    buffers = []
    real = ctypes.create_string_buffer

    def create_string_buffer(size):
        buffers.append(real(size))
        return buffers[-1]

    monkeypatch.setattr(_portal_auth.ctypes, "create_string_buffer", create_string_buffer)
    assert verify_password(HASHES["yescrypt"], PASSWORD) is True
    assert len(buffers) == 1 and buffers[0].raw == b"\0" * _portal_auth.CRYPT_DATA_SIZE


class FakeArgon2:
    """Stands in for argon2-cffi: a "hash" is accepted for the password "secret" only."""

    class exceptions:      # pylint: disable=invalid-name
        class Argon2Error(Exception):
            pass

        class VerifyMismatchError(Argon2Error):
            pass

    class PasswordHasher:
        def verify(self, hash_text, password):
            if not hash_text.startswith("$argon2"):
                raise ValueError("invalid hash")     # argon2-cffi's InvalidHashError is a ValueError
            if password != "secret":
                raise FakeArgon2.exceptions.VerifyMismatchError("mismatch")
            return True


def test_verify_argon2_through_the_library(monkeypatch):
    monkeypatch.setattr(_portal_auth, "argon2", FakeArgon2, raising=False)
    monkeypatch.setattr(_portal_auth, "HAS_ARGON2", True)
    assert verify_password(ARGON2ID, "secret") is True
    assert verify_password(ARGON2I, "secret") is True
    assert verify_password(ARGON2ID, "wrong") is False
    assert verify_password(ARGON2ID, "x" * (PASSWORD_MAX_BYTES + 1)) is False
    assert verify_password(ARGON2ID[:30], "secret") is False      # malformed: not even handed over


def test_verify_argon2_without_the_library_says_which_package(monkeypatch):
    monkeypatch.setattr(_portal_auth, "HAS_ARGON2", False)
    with pytest.raises(ValueError, match="needs python3-argon2"):
        verify_password(ARGON2ID, "secret")


NO_ARGON2 = ("argon2-cffi is not in the test venv (requirements.txt/.lock are the lab's and the tests' one pinned set); "
             "FakeArgon2 covers the glue")


@pytest.mark.skipif(not HAS_ARGON2, reason=NO_ARGON2)
def test_verify_real_argon2id_and_argon2i():
    for kind in (argon2.Type.ID, argon2.Type.I):
        text = argon2.PasswordHasher(type=kind, memory_cost=1024, time_cost=1).hash(PASSWORD)
        assert password_hash_kind(text) == ("argon2id" if kind == argon2.Type.ID else "argon2i")
        assert verify_password(text, PASSWORD) is True
        assert verify_password(text, "wrong") is False
    assert verify_password(ARGON2ID, "secret") is True
    assert verify_password(ARGON2ID[:-2] + "AA", "secret") is False


# --- dummy_verify ----------------------------------------------------------------------------

def test_dummy_hash_is_default_cost_yescrypt():
    assert DUMMY_HASH.startswith("$y$j9T$")       # libxcrypt's default, as `mkpasswd -m yescrypt`
    assert password_hash_kind(DUMMY_HASH) == "yescrypt"


def test_dummy_verify_does_the_work_of_a_verify(monkeypatch):
    calls = []
    real = _portal_auth._crypt      # pylint: disable=protected-access

    def spy(phrase, setting):
        calls.append(setting)
        return real(phrase, setting)

    monkeypatch.setattr(_portal_auth, "_crypt", spy)
    assert dummy_verify(PASSWORD) is False
    assert dummy_verify("") is False
    assert calls == [DUMMY_HASH.encode()] * 2
    assert dummy_verify("x" * (PASSWORD_MAX_BYTES + 1)) is False     # as verify_password: no hashing
    assert dummy_verify(None) is False
    assert len(calls) == 2


# --- parse_users -----------------------------------------------------------------------------

def test_parse_users():
    users = parse_users({
        "alice": {"password_hash": HASHES["yescrypt"], "groups": ["ops", "dev", "ops"]},
        "bob": {"groups": []},
        "carol": None,
        "dave": {"password_hash": ARGON2ID},
        "Erin Example": {"password_hash": None, "groups": ("ops",)},
    })
    assert users == {
        "alice": User("alice", HASHES["yescrypt"], ("ops", "dev")),
        "bob": User("bob", None, ()),
        "carol": User("carol", None, ()),
        "dave": User("dave", ARGON2ID, ()),
        "Erin Example": User("Erin Example", None, ("ops",)),
    }
    assert isinstance(users["alice"].groups, tuple)


def test_parse_users_empty():
    assert parse_users(None) == {}
    assert parse_users({}) == {}


def test_user_repr_hides_the_hash():
    user = parse_users({"alice": {"password_hash": HASHES["yescrypt"]}})["alice"]
    assert HASHES["yescrypt"] not in repr(user) and "alice" in repr(user)


USER_REFUSALS = [
    (["alice"], "console_portal_users must be a mapping"),
    ({42: {}}, "console_portal_users.42: the user name must be a string, got int \\(quote it in YAML\\)"),
    ({"": {}}, "console_portal_users.'': the user name is empty"),
    ({"a" * 65: {}}, "the user name is longer than 64 characters \\(65\\)"),
    ({"al\nice": {}}, "console_portal_users.'al\\\\nice': the user name contains a control character"),
    ({"al\x1bice": {}}, "control character"),
    ({"../alice": {}}, "console_portal_users.../alice: the user name contains '/'"),
    ({" alice": {}}, "begins or ends with white space"),
    ({"alice": ["ops"]}, "console_portal_users.alice must be a mapping \\(keys groups, password_hash\\), got list"),
    ({"alice": {"group": ["ops"]}}, "console_portal_users.alice.group: unknown key \\(known: groups, password_hash\\)"),
    ({"alice": {"password": "hunter2-secret"}}, "console_portal_users.alice.password: a clear-text password is not "
                                                "accepted; write password_hash"),
    ({"alice": {"groups": "ops"}}, "console_portal_users.alice.groups must be a list of group names, got a string "
                                   "\\(write \\[ops\\]\\)"),
    ({"alice": {"groups": {"ops": 1}}}, "console_portal_users.alice.groups must be a list of group names, got dict"),
    ({"alice": {"groups": ["ops", ""]}}, "console_portal_users.alice.groups\\[1\\]: the group name is empty"),
    ({"alice": {"groups": ["o/ps"]}}, "console_portal_users.alice.groups\\[0\\]: the group name contains '/'"),
    ({"alice": {"groups": [7]}}, "console_portal_users.alice.groups\\[0\\]: the group name must be a string"),
    ({"alice": {"groups": ["x" * 65]}}, "groups\\[0\\]: the group name is longer than 64"),
    ({"alice": {"password_hash": "hunter2-secret"}}, "console_portal_users.alice.password_hash looks like a "
                                                     "clear-text password"),
    ({"alice": {"password_hash": SHA512}}, "console_portal_users.alice.password_hash is a SHA-512 crypt hash"),
    ({"alice": {"password_hash": HASHES["yescrypt"][:-3]}}, "console_portal_users.alice.password_hash looks like a "
                                                            "yescrypt hash but is malformed"),
    ({"alice": {"password_hash": 12345}}, "console_portal_users.alice.password_hash must be a string"),
]


@pytest.mark.parametrize("mapping, message", USER_REFUSALS)
def test_parse_users_refusals_name_the_field(mapping, message):
    with pytest.raises(ValueError, match=message) as info:
        parse_users(mapping)
    assert "hunter2" not in str(info.value)
    assert SHA512 not in str(info.value) and HASHES["yescrypt"][:-3] not in str(info.value)


def test_user_names_fit_proxy_usernames():
    # The portal mints proxy tokens for its users: every name it accepts is a proxy user.
    assert NAME_MAX == _tickets.PROXY_USER_MAX
    for name in ("alice", "a" * NAME_MAX, "Erin Example", "alice@example.org", "émile", "x.y-z_1"):
        parse_users({name: None})
        _tickets.check_proxy_user(name)


# --- parse_acl -------------------------------------------------------------------------------

def test_parse_acl():
    rules = parse_acl([
        {"users": ["alice"], "vms": ["web*", "db-?", "web*"], "role": "operator"},
        {"groups": ["ops"], "vms": ["*"]},
        {"users": ["bob"], "groups": ["dev"], "vms": ["[!p]*", "lab[0-9]"], "role": "console"},
    ])
    assert rules == (
        Rule(("alice",), (), ("web*", "db-?"), "operator"),
        Rule((), ("ops",), ("*",), "console"),
        Rule(("bob",), ("dev",), ("[!p]*", "lab[0-9]"), "console"),
    )


def test_parse_acl_empty():
    assert parse_acl(None) == ()
    assert parse_acl([]) == ()


ACL_REFUSALS = [
    ({"users": ["a"]}, "console_portal_acl must be a list"),
    ([["a"]], "console_portal_acl\\[0\\] must be a mapping \\(keys groups, role, users, vms\\), got list"),
    ([{"users": ["a"], "vms": ["x"], "vm": ["y"]}], "console_portal_acl\\[0\\].vm: unknown key \\(known: groups, role, "
                                                    "users, vms\\)"),
    ([{"users": ["a"], "vms": ["x"]}, {"users": ["a"], "vms": ["x"], "role": "admin"}],
     "console_portal_acl\\[1\\].role: unknown role admin \\(one of console, operator\\)"),
    ([{"users": ["a"], "vms": ["x"], "role": None}], "console_portal_acl\\[0\\].role: unknown role None"),
    ([{"vms": ["x"]}], "console_portal_acl\\[0\\].users: the entry names no user and no group"),
    ([{"users": [], "groups": [], "vms": ["x"]}], "console_portal_acl\\[0\\].users: the entry names no user"),
    ([{"users": "alice", "vms": ["x"]}], "console_portal_acl\\[0\\].users must be a list of user names, got a string "
                                         "\\(write \\[alice\\]\\)"),
    ([{"users": ["a/b"], "vms": ["x"]}], "console_portal_acl\\[0\\].users\\[0\\]: the user name contains '/'"),
    ([{"groups": ["ok", "\t"], "vms": ["x"]}], "console_portal_acl\\[0\\].groups\\[1\\]: the group name contains a "
                                               "control character"),
    ([{"users": ["a"]}], "console_portal_acl\\[0\\].vms: missing"),
    ([{"users": ["a"], "vms": []}], "console_portal_acl\\[0\\].vms is empty"),
    ([{"users": ["a"], "vms": "web*"}], "console_portal_acl\\[0\\].vms must be a list of VM name patterns, got a string "
                                        "\\(write \\[web\\*\\]\\)"),
    ([{"users": ["a"], "vms": {"web": 1}}], "console_portal_acl\\[0\\].vms must be a list of VM name patterns, got dict"),
    ([{"users": ["a"], "vms": ["ok", 5]}], "console_portal_acl\\[0\\].vms\\[1\\]: the pattern must be a string, got int"),
    ([{"users": ["a"], "vms": [""]}], "vms\\[0\\]: the pattern '' is empty"),
    ([{"users": ["a"], "vms": ["web/*"]}], "vms\\[0\\]: the pattern 'web/\\*' contains '/', which no VM name has"),
    ([{"users": ["a"], "vms": ["../*"]}], "contains '/'"),
    ([{"users": ["a"], "vms": ["Web *"]}], "contains ' '"),
    ([{"users": ["a"], "vms": ["web{1,2}"]}], "contains ',', '\\{', '\\}'"),
    ([{"users": ["a"], "vms": [".hidden*"]}], "can only match names that begin with '.'; a VM name begins with a "
                                              "letter or digit"),
    ([{"users": ["a"], "vms": ["[-_]*"]}], "can only match names that begin with '-' or '_'"),
    ([{"users": ["a"], "vms": ["web[0-9"]}], "has a '\\[' without its '\\]'"),
    ([{"users": ["a"], "vms": ["web]"]}], "has a '\\]' that closes no '\\['"),
    ([{"users": ["a"], "vms": ["!web*"]}], "has a '!' outside \\[...\\]"),
    ([{"users": ["a"], "vms": ["web[!]"]}], "has a '\\[' without its '\\]'"),
    ([{"users": ["a"], "vms": ["web[[]"]}], "has \\[\\[\\], which matches no character a VM name may have"),
    ([{"users": ["a"], "vms": ["x" * 65]}], "needs at least 65 characters; a VM name has at most 64"),
    ([{"users": ["a"], "vms": ["*" + "[_]" * 64]}], "needs at least 65 characters"),
    ([{"users": ["a"], "vms": ["?" * 65]}], "needs at least 65 characters"),
    ([{"users": ["a"], "vms": ["*" * 257]}], "is longer than 256 characters"),
]


@pytest.mark.parametrize("entries, message", ACL_REFUSALS)
def test_parse_acl_refusals_name_the_field(entries, message):
    with pytest.raises(ValueError, match=message):
        parse_acl(entries)


@pytest.mark.parametrize("pattern", [
    "web*", "db-?", "*", "?", "[!w]*", "lab[0-9]", "*[.]prod", "*-*", "[]a]x", "[!]]*", "x" * 64, "*" + "[_]" * 63,
    "[A-Z]*", "*.example", "[a-c][!a-c]?*", "w*e*b",
])
def test_parse_acl_accepts_patterns_that_can_match(pattern):
    assert parse_acl([{"users": ["a"], "vms": [pattern]}])[0].vms == (pattern,)


def test_pattern_verdicts_agree_with_fnmatch():
    # A pattern refused as never matching must match no VM name: random patterns against random names.
    rng = random.Random(18)
    alphabet = "ab_.-*?[]!"
    names = ["".join(rng.choice("ab_.-") for dummy in range(rng.randint(0, 5))) for dummy in range(400)]
    names = [name for name in ["a" + n for n in names] + ["b" + n for n in names] if _tickets.VM_NAME_PATTERN.fullmatch(name)]
    refused = 0
    for dummy in range(3000):
        pattern = "".join(rng.choice(alphabet) for dummy in range(rng.randint(1, 6)))
        problem = _portal_auth._pattern_problem(pattern)     # pylint: disable=protected-access
        if problem is not None:
            refused += 1
            assert not [name for name in names if _portal_auth.fnmatch.fnmatchcase(name, pattern)], (pattern, problem)
    assert refused > 500


def test_vm_grammar_is_the_tickets_one():
    assert _portal_auth.VM_NAME_PATTERN.pattern == _tickets.VM_NAME_PATTERN.pattern


# --- vm_role ---------------------------------------------------------------------------------

RULES = parse_acl([
    {"users": ["alice"], "vms": ["web*"], "role": "console"},
    {"groups": ["ops"], "vms": ["web*", "db-?"], "role": "operator"},
    {"users": ["bob"], "groups": ["dev"], "vms": ["lab[0-9]"]},
    {"users": ["carol"], "vms": ["*"], "role": "console"},
    {"users": ["carol"], "vms": ["db-1"], "role": "operator"},
])


@pytest.mark.parametrize("user, groups, vm, role", [
    ("alice", (), "web1", "console"),
    ("alice", (), "web", "console"),
    ("alice", (), "db-1", None),
    ("alice", ["ops"], "web1", "operator"),          # the highest role of every matching rule
    ("alice", ("ops",), "db-1", "operator"),
    ("alice", ("ops",), "db-10", None),
    ("zoe", ("ops",), "db-x", "operator"),
    ("zoe", ("dev",), "lab3", "console"),
    ("zoe", ("dev",), "lab10", None),
    ("bob", (), "lab0", "console"),
    ("carol", (), "anything.at-all", "console"),
    ("carol", (), "db-1", "operator"),
    ("alice", (), "Web1", None),                    # case-sensitive
    ("Alice", (), "web1", None),
    ("zoe", ("OPS",), "web1", None),
    ("zoe", (), "web1", None),                      # default deny
    ("zoe", None, "web1", None),
    ("zoe", "ops", "web1", "operator"),             # a string is one group
    ("zoe", "o", "web1", None),                     # not its letters
    ("carol", (), "../etc/passwd", None),           # no VM name: denied
    ("carol", (), "web1/..", None),
    ("carol", (), "", None),
    ("carol", (), ".web", None),
    ("carol", (), "x" * 65, None),
    ("carol", (), None, None),
    ("carol", (), "web1\n", None),
    (None, ("ops",), "web1", None),
    (["carol"], (), "web1", None),
])
def test_vm_role(user, groups, vm, role):
    assert vm_role(RULES, user, groups, vm) == role


def test_vm_role_without_rules_denies():
    assert vm_role((), "alice", ("ops",), "web1") is None
    assert ROLES == ("console", "operator")


# --- sessions --------------------------------------------------------------------------------

class Clock:
    def __init__(self, now=1000.0):
        self.now = now

    def __call__(self):
        return self.now


def test_create_and_get():
    clock = Clock()
    store = SessionStore(clock=clock)
    cookie, session = store.create("alice", ["ops"], "password", "192.0.2.7")
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", cookie)
    assert isinstance(session, Session)
    assert (session.user, session.groups, session.method, session.address) == ("alice", ("ops",), "password", "192.0.2.7")
    assert session.created == session.last_seen == 1000.0
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", session.csrf) and session.csrf != cookie
    assert session.id == hashlib.sha256(cookie.encode()).hexdigest()[:12]
    clock.now += 10
    assert store.get(cookie) is session
    assert session.last_seen == 1010.0 and session.created == 1000.0
    assert len(store) == 1


def test_store_keeps_no_cookie():
    store = SessionStore()
    cookie, session = store.create("alice", (), "certificate", "2001:db8::1")
    held = repr(store.__dict__) + repr(list(store._sessions)) + repr(session)     # pylint: disable=protected-access
    assert cookie not in held
    assert hashlib.sha256(cookie.encode()).hexdigest() in store._sessions        # pylint: disable=protected-access
    assert session.csrf not in repr(session)
    assert not hasattr(session, "__dict__")


def test_cookies_and_tokens_are_unique():
    store = SessionStore(max_per_user=1000)
    made = [store.create("alice", (), "password", "192.0.2.1") for dummy in range(200)]
    assert len({cookie for cookie, dummy in made}) == 200
    assert len({session.csrf for dummy, session in made}) == 200
    assert len({session.id for dummy, session in made}) == 200


def test_idle_timeout_at_exactly_idle_plus_one():
    clock = Clock(0)
    store = SessionStore(idle=900, clock=clock)
    cookie, session = store.create("alice", (), "password", "192.0.2.1")
    clock.now = 900
    assert store.get(cookie) is session          # still valid at exactly idle seconds
    clock.now = 900 + 900 + 1
    assert store.get(cookie) is None
    assert len(store) == 0
    clock.now = 900
    assert store.get(cookie) is None             # removed, not only hidden


def test_idle_is_counted_from_the_last_use():
    clock = Clock(0)
    store = SessionStore(idle=900, clock=clock)
    cookie, session = store.create("alice", (), "password", "192.0.2.1")
    for clock.now in range(800, 8000, 800):
        assert store.get(cookie) is session
    clock.now += 901
    assert store.get(cookie) is None


def test_absolute_timeout():
    clock = Clock(0)
    store = SessionStore(idle=900, absolute=28800, clock=clock)
    cookie, session = store.create("alice", (), "certificate", "192.0.2.1")
    for clock.now in range(600, 28801, 600):
        assert store.get(cookie) is session
    assert clock.now == 28800
    clock.now = 28801
    assert store.get(cookie) is None
    assert len(store) == 0


@pytest.mark.parametrize("value", [None, 42, b"cookie", "", "x" * 257, "unknown-cookie"])
def test_get_unknown_or_odd_cookies(value):
    store = SessionStore()
    store.create("alice", (), "password", "192.0.2.1")
    assert store.get(value) is None
    assert store.drop(value) is False
    assert len(store) == 1


def test_max_per_user_drops_the_oldest():
    clock = Clock(0)
    store = SessionStore(clock=clock, max_per_user=3)
    bob, dummy = store.create("bob", (), "password", "192.0.2.2")
    cookies = []
    for clock.now in range(1, 5):
        cookies.append(store.create("alice", (), "password", "192.0.2.1")[0])
    assert store.get(cookies[0]) is None
    assert [store.get(c).user for c in cookies[1:]] == ["alice"] * 3
    assert store.get(bob).user == "bob"
    assert len(store) == 4


def test_drop_drop_user_expire_and_len():
    clock = Clock(0)
    store = SessionStore(idle=100, clock=clock)
    a1 = store.create("alice", (), "password", "192.0.2.1")[0]
    store.create("alice", (), "certificate", "192.0.2.1")
    b1 = store.create("bob", (), "password", "192.0.2.2")[0]
    assert len(store) == 3
    assert store.drop(a1) is True
    assert store.drop(a1) is False
    assert store.get(a1) is None
    assert store.drop_user("alice") == 1
    assert store.drop_user("alice") == 0
    assert store.drop_user("nobody") == 0
    assert len(store) == 1
    clock.now = 50
    store.create("carol", (), "password", "192.0.2.3")
    clock.now = 101
    assert store.expire() == 1                   # bob's; carol's is 51 s idle
    assert store.get(b1) is None
    assert len(store) == 1
    clock.now = 151
    assert store.expire() == 1
    assert len(store) == 0


def test_create_drops_expired_sessions():
    clock = Clock(0)
    store = SessionStore(idle=10, clock=clock)
    for dummy in range(5):
        store.create("alice", (), "password", "192.0.2.1")
    clock.now = 11
    store.create("bob", (), "password", "192.0.2.2")
    assert len(store) == 1


@pytest.mark.parametrize("args, message", [
    (("alice", (), "basic", "192.0.2.1"), "method must be one of password, certificate"),
    (("", (), "password", "192.0.2.1"), "user must be a non-empty string"),
    ((None, (), "password", "192.0.2.1"), "user must be a non-empty string"),
    (("alice", "ops", "password", "192.0.2.1"), "groups must be a list of group names, got a string"),
])
def test_create_refusals(args, message):
    with pytest.raises(ValueError, match=message):
        SessionStore().create(*args)


@pytest.mark.parametrize("kwargs, message", [
    ({"idle": 0}, "idle must be a positive number of seconds"),
    ({"idle": True}, "idle must be a positive number of seconds"),
    ({"absolute": -1}, "absolute must be a positive number of seconds"),
    ({"absolute": "8h"}, "absolute must be a positive number of seconds"),
    ({"max_per_user": 0}, "max_per_user must be a whole number of at least 1"),
    ({"max_per_user": 2.5}, "max_per_user must be a whole number of at least 1"),
])
def test_store_limits(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SessionStore(**kwargs)


def test_csrf_ok():
    store = SessionStore()
    dummy, session = store.create("alice", (), "password", "192.0.2.1")
    dummy, other = store.create("bob", (), "password", "192.0.2.2")
    assert csrf_ok(session, session.csrf) is True
    assert store.csrf_ok(session, session.csrf) is True
    assert csrf_ok(session, other.csrf) is False
    assert csrf_ok(session, session.csrf[:-1]) is False
    assert csrf_ok(session, session.csrf + "x") is False
    for token in (None, 42, b"x", "", "é" * 43, "\udc80", "x" * 10000):
        assert csrf_ok(session, token) is False
    assert csrf_ok(None, session.csrf) is False
    assert csrf_ok("alice", session.csrf) is False


def test_csrf_ok_uses_compare_digest(monkeypatch):
    seen = []
    monkeypatch.setattr(_portal_auth.hmac, "compare_digest", lambda a, b: seen.append((a, b)) or a == b)
    dummy, session = SessionStore().create("alice", (), "password", "192.0.2.1")
    assert csrf_ok(session, session.csrf) is True
    assert seen == [(session.csrf.encode(), session.csrf.encode())]


def test_sessions_in_threads():
    store = SessionStore(max_per_user=10000)
    made = []

    def work():
        for dummy in range(200):
            cookie, session = store.create("alice", (), "password", "192.0.2.1")
            made.append((cookie, session))
            assert store.get(cookie) is session

    threads = [threading.Thread(target=work) for dummy in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(store) == 800 == len(made)
    assert store.drop_user("alice") == 800


# --- login limiter ---------------------------------------------------------------------------

def test_fifth_failure_locks_and_the_lock_ends_at_lockout():
    clock = Clock(0)
    limiter = LoginLimiter(clock=clock)
    for second in range(4):
        clock.now = second
        assert limiter.failure("alice", "192.0.2.1") is None
        assert limiter.locked("alice", "192.0.2.1") == 0
    clock.now = 4
    assert limiter.failure("alice", "192.0.2.1") == "locked"
    assert limiter.locked("alice", "192.0.2.1") == 900
    assert limiter.locked("alice", "198.51.100.9") == 900      # the user, from anywhere
    assert limiter.locked("bob", "192.0.2.1") == 0              # the address is not locked
    clock.now = 4 + 899.5
    assert limiter.locked("alice", None) == 1                   # rounded up
    clock.now = 4 + 900
    assert limiter.locked("alice", "192.0.2.1") == 0
    for dummy in range(4):                                      # the count starts again
        assert limiter.failure("alice", "192.0.2.1") is None
    assert limiter.failure("alice", "192.0.2.1") == "locked"


def test_failures_count_within_the_window_only():
    clock = Clock(0)
    limiter = LoginLimiter(clock=clock)
    for second in (0, 100, 200, 299):
        clock.now = second
        assert limiter.failure("alice", "192.0.2.1") is None
    clock.now = 300                                             # the first one is 300 s old: gone
    assert limiter.failure("alice", "192.0.2.1") is None
    clock.now = 301
    assert limiter.failure("alice", "192.0.2.1") == "locked"   # 100, 200, 299, 300, 301


def test_user_failures_from_many_addresses_lock_the_user():
    limiter = LoginLimiter(clock=Clock())
    results = [limiter.failure("alice", "192.0.2.%d" % n) for n in range(5)]
    assert results == [None] * 4 + ["locked"]
    assert limiter.locked("alice", "203.0.113.1") == 900


def test_a_failure_while_locked_is_not_counted():
    clock = Clock(0)
    limiter = LoginLimiter(clock=clock)
    for dummy in range(5):
        limiter.failure("alice", "192.0.2.1")
    clock.now = 800
    assert limiter.failure("alice", "192.0.2.1") is None        # the lock is not extended
    assert limiter.locked("alice", None) == 100


def test_success_clears_the_user_not_the_address():
    limiter = LoginLimiter(clock=Clock(), address_max_failures=8)
    for dummy in range(4):
        limiter.failure("alice", "192.0.2.1")
    limiter.success("alice", "192.0.2.1")
    for dummy in range(3):
        assert limiter.failure("alice", "192.0.2.1") is None
    assert limiter.failure("alice", "192.0.2.1") == "locked"    # the address's 8th failure
    assert limiter.locked("alice", "198.51.100.1") == 0         # alice herself has 4
    assert limiter.locked("bob", "192.0.2.1") == 900


def test_success_keeps_an_active_lock():
    limiter = LoginLimiter(clock=Clock())
    for dummy in range(5):
        limiter.failure("alice", "192.0.2.1")
    limiter.success("alice", "192.0.2.1")
    assert limiter.locked("alice", None) == 900
    limiter.success("nobody", None)


def test_spraying_names_locks_the_address():
    clock = Clock(0)
    limiter = LoginLimiter(clock=clock)
    results = [limiter.failure("user%d" % n, "192.0.2.66") for n in range(20)]
    assert results == [None] * 19 + ["locked"]
    assert limiter.locked("someone-else", "192.0.2.66") == 900
    assert limiter.locked(None, "192.0.2.66") == 900
    assert limiter.locked("user1", "192.0.2.67") == 0
    clock.now = 900
    assert limiter.locked("someone-else", "192.0.2.66") == 0


def test_ipv6_counts_by_slash_64():
    limiter = LoginLimiter(clock=Clock(), address_max_failures=3)
    assert limiter.failure("a", "2001:db8:1:2::1") is None
    assert limiter.failure("b", "2001:db8:1:2:ffff::9") is None
    assert limiter.failure("c", "2001:db8:1:3::1") is None      # another /64
    assert limiter.failure("d", "2001:db8:1:2:1:2:3:4") == "locked"
    assert limiter.locked("e", "2001:db8:1:2::abcd") == 900
    assert limiter.locked("e", "2001:db8:1:3::1") == 0


@pytest.mark.parametrize("address, key", [
    ("192.0.2.1", "192.0.2.1"), ("::ffff:192.0.2.1", "192.0.2.1"), ("2001:db8::1", "2001:db8::/64"),
    ("2001:DB8:0:0:1::1", "2001:db8::/64"), ("fe80::1%eth0", "fe80::/64"), ("unix", "unix"), (None, None),
])
def test_address_key(address, key):
    assert address_key(address) == key


def test_memory_is_bounded_oldest_first_locked_kept():
    clock = Clock(0)
    limiter = LoginLimiter(clock=clock)
    for dummy in range(5):
        limiter.failure("victim", None)
    assert limiter.locked("victim", None) == 900
    for n in range(TRACKED_MAX + 500):
        clock.now = 1 + n / 100000.0
        limiter.failure("name%d" % n, None)
    entries = limiter._users.entries          # pylint: disable=protected-access
    assert len(entries) == TRACKED_MAX
    assert "name0" not in entries and "name%d" % (TRACKED_MAX + 499) in entries
    assert limiter.locked("victim", None) == 899                # a lock is forgotten last


def test_memory_bound_for_addresses():
    limiter = LoginLimiter(clock=Clock())
    for n in range(TRACKED_MAX + 10):
        limiter.failure(None, "10.%d.%d.%d" % (n >> 16, (n >> 8) & 255, n & 255))
    assert len(limiter._addresses.entries) == TRACKED_MAX      # pylint: disable=protected-access


def test_when_every_entry_is_locked_the_oldest_goes():
    clock = Clock(0)
    limiter = LoginLimiter(clock=clock, max_failures=1)
    limiter._users.entries.clear()      # pylint: disable=protected-access
    for n in range(TRACKED_MAX + 1):
        assert limiter.failure("n%d" % n, None) == "locked"
    assert len(limiter._users.entries) == TRACKED_MAX          # pylint: disable=protected-access
    assert limiter.locked("n0", None) == 0 and limiter.locked("n1", None) == 900


@pytest.mark.parametrize("kwargs, message", [
    ({"max_failures": 0}, "max_failures must be a whole number of at least 1"),
    ({"window": 0}, "window must be a positive number of seconds"),
    ({"lockout": -5}, "lockout must be a positive number of seconds"),
    ({"address_max_failures": "20"}, "address_max_failures must be a whole number"),
])
def test_limiter_limits(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LoginLimiter(**kwargs)


def test_hash_password_makes_a_yescrypt_hash_that_verifies():
    made = _portal_auth.hash_password("demo passphrase")
    assert _portal_auth.password_hash_kind(made) == "yescrypt"
    assert _portal_auth.verify_password(made, "demo passphrase")
    assert not _portal_auth.verify_password(made, "demo passphrase ")
    assert made != _portal_auth.hash_password("demo passphrase")       # a fresh salt each time


@pytest.mark.parametrize("bad", ["", None, "a\0b", "x" * 1025])
def test_hash_password_refuses_what_cannot_be_a_password(bad):
    with pytest.raises(ValueError, match="a password must be a non-empty string"):
        _portal_auth.hash_password(bad)
