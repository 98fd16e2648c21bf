# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Who may use the console portal and for what: password hashes, users, the ACL, sessions, login limits.

Private to the collection. Standard library only, no Ansible imports: the role's preflight
(``parse_users``, ``parse_acl``, ``password_hash_kind``) and the portal daemon (all of it) use the same
code. Passwords are checked with libxcrypt (Debian's libcrypt1, Essential) through ``ctypes``, since
the ``crypt`` module is gone from Python 3.13; argon2 hashes need python3-argon2 (argon2-cffi), imported
when present (``HAS_ARGON2``). Everything here is thread-safe: the daemon checks passwords in worker
threads.

Error texts never contain a password, a hash, a cookie or a CSRF token: they name the option
(``console_portal_users.alice.password_hash``, ``console_portal_acl[2].vms[0]``) and the rule broken.
"""

from __future__ import annotations

import collections
import ctypes
import ctypes.util
import fnmatch
import hashlib
import hmac
import ipaddress
import math
import re
import secrets
import string
import threading
import time

from ansible_collections.vmconsole.secure.plugins.module_utils._tickets import PROXY_USER_MAX, VM_NAME_PATTERN

try:   # argon2id/argon2i hashes only; the crypt schemes need nothing beyond libxcrypt
    import argon2
    import argon2.exceptions
    HAS_ARGON2 = hasattr(argon2, "PasswordHasher")   # not PyPI's unrelated, older "argon2" package
except ImportError:      # the host lacks python3-argon2
    HAS_ARGON2 = False

# --- Password hashes -------------------------------------------------------------------------

HASH_KINDS = ("yescrypt", "gost-yescrypt", "scrypt", "argon2id", "argon2i")
PASSWORD_MAX_BYTES = 1024      # longer passwords are refused unhashed: hashing them is work an attacker chooses

_MAKE_HASH = "make one with `mkpasswd -m yescrypt` (Debian package whois) and keep it in ansible-vault"
_CRYPT64 = "[./0-9A-Za-z]"
_HASH_FORMS = {
    # libxcrypt's yescrypt and gost-yescrypt: $y$PARAMS$SALT$HASH (the hash is 32 bytes, 43 characters)
    "yescrypt": re.compile(r"\$y\$%s+\$%s*\$%s{43}" % (_CRYPT64, _CRYPT64, _CRYPT64)),
    "gost-yescrypt": re.compile(r"\$gy\$%s+\$%s*\$%s{43}" % (_CRYPT64, _CRYPT64, _CRYPT64)),
    # libxcrypt's scrypt: $7$ N(1) r(5) p(5) SALT $HASH
    "scrypt": re.compile(r"\$7\$%s{11}%s*\$%s{43}" % (_CRYPT64, _CRYPT64, _CRYPT64)),
    # the PHC string argon2-cffi writes: $argon2id$v=19$m=65536,t=3,p=4$SALT$HASH (unpadded base64)
    "argon2id": re.compile(r"\$argon2id\$(?:v=[0-9]+\$)?m=[0-9]+,t=[0-9]+,p=[0-9]+\$[A-Za-z0-9+/]+\$[A-Za-z0-9+/]+"),
    "argon2i": re.compile(r"\$argon2i\$(?:v=[0-9]+\$)?m=[0-9]+,t=[0-9]+,p=[0-9]+\$[A-Za-z0-9+/]+\$[A-Za-z0-9+/]+"),
}
_HASH_PREFIXES = (("$y$", "yescrypt"), ("$gy$", "gost-yescrypt"), ("$7$", "scrypt"),
                  ("$argon2id$", "argon2id"), ("$argon2i$", "argon2i"))
_ARGON2_KINDS = ("argon2id", "argon2i")
# Schemes people meet in /etc/shadow and elsewhere that are not accepted, and why.
_NOT_MEMORY_HARD = "it is not memory-hard (cheap to guess on a GPU)"
_REFUSED_PREFIXES = (
    ("$6$", "a SHA-512 crypt hash ($6$)", _NOT_MEMORY_HARD),
    ("$5$", "a SHA-256 crypt hash ($5$)", _NOT_MEMORY_HARD),
    ("$1$", "an MD5 crypt hash ($1$)", _NOT_MEMORY_HARD),
    ("$2a$", "a bcrypt hash ($2a$)", _NOT_MEMORY_HARD),
    ("$2b$", "a bcrypt hash ($2b$)", _NOT_MEMORY_HARD),
    ("$2x$", "a bcrypt hash ($2x$)", _NOT_MEMORY_HARD),
    ("$2y$", "a bcrypt hash ($2y$)", _NOT_MEMORY_HARD),
    ("$sha1$", "a NetBSD SHA-1 crypt hash ($sha1$)", _NOT_MEMORY_HARD),
    ("$md5", "a Sun MD5 crypt hash ($md5)", _NOT_MEMORY_HARD),
    ("$3$", "an NT hash ($3$)", _NOT_MEMORY_HARD),
    ("$pbkdf2", "a PBKDF2 hash", _NOT_MEMORY_HARD),
    ("$argon2d$", "an argon2d hash ($argon2d$)", "argon2d is not side-channel resistant (argon2id is)"),
    ("$scrypt$", "passlib's scrypt form ($scrypt$)", "libxcrypt does not read it (`mkpasswd -m scrypt` writes $7$)"),
)
_DES = re.compile(r"%s{13}" % _CRYPT64)
_BSDI_DES = re.compile(r"_%s{19}" % _CRYPT64)

# libxcrypt, through ctypes. struct crypt_data (crypt.h): output[384] setting[384] input[512]
# reserved[767] initialized[1] internal[30720]; crypt_rn takes its size and fails on less.
CRYPT_DATA_SIZE = 384 + 384 + 512 + 767 + 1 + 30720
CRYPT_GENSALT_OUTPUT_SIZE = 192


def _load_libcrypt():
    """libxcrypt's ``(crypt function, crypt_gensalt_rn)``, or ``(None, None)`` when it cannot be loaded.

    The soname first (no subprocess: ``find_library`` runs ``ldconfig``, which a hardened unit may
    not allow), then ``find_library``. ``crypt_rn`` returns NULL on failure; ``crypt_r`` (older
    libraries) returns a failure token starting with "*", which never equals a hash either.
    """
    for name in ("libcrypt.so.1", ctypes.util.find_library("crypt")):
        if not name:
            continue
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        function = getattr(lib, "crypt_rn", None) or getattr(lib, "crypt_r", None)
        if function is None:
            continue
        if function.__name__ == "crypt_rn":
            function.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int]
        else:
            function.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p]
        function.restype = ctypes.c_char_p
        gensalt = getattr(lib, "crypt_gensalt_rn", None)
        if gensalt is not None:
            gensalt.argtypes = [ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                                ctypes.c_int]
            gensalt.restype = ctypes.c_char_p
        return function, gensalt
    return None, None


_CRYPT, _CRYPT_GENSALT = _load_libcrypt()
HAS_LIBCRYPT = _CRYPT is not None


def _crypt(phrase, setting):
    """libxcrypt's hash of ``phrase`` (bytes) with ``setting`` (bytes), or None. A buffer of its own per call."""
    data = ctypes.create_string_buffer(CRYPT_DATA_SIZE)
    try:
        if _CRYPT.__name__ == "crypt_rn":
            return _CRYPT(phrase, setting, data, CRYPT_DATA_SIZE)
        return _CRYPT(phrase, setting, data)
    finally:
        ctypes.memset(data, 0, CRYPT_DATA_SIZE)    # it held a copy of the password


def _hash_problem(text):
    """``(kind, None)`` for a well-formed accepted hash, else ``(kind or None, reason)``.

    ``kind`` is set when the prefix names an accepted scheme, even when the rest is malformed.
    A reason completes a sentence that starts with the option's name; it never quotes ``text``.
    """
    if not isinstance(text, str):
        return None, "must be a string (a password hash), got %s" % type(text).__name__
    if not text:
        return None, "is empty; %s" % _MAKE_HASH
    kind = next((kind for prefix, kind in _HASH_PREFIXES if text.startswith(prefix)), None)
    if kind is not None:
        if text != text.strip() or any(c in string.whitespace for c in text):
            return kind, ("looks like a %s hash but contains white space or a line break (remove it: `echo -n` or "
                          "`printf %%s` when piping into `ansible-vault encrypt_string`)" % kind)
        if not _HASH_FORMS[kind].fullmatch(text):
            return kind, ("looks like a %s hash but is malformed (cut short or altered?); copy the whole line that "
                          "the hashing command printed" % kind)
        return kind, None
    accepted = "accepted are yescrypt ($y$), gost-yescrypt ($gy$), scrypt ($7$), argon2id and argon2i"
    for prefix, what, why in _REFUSED_PREFIXES:
        if text.startswith(prefix):
            return None, "is %s, which is not accepted: %s; %s; %s" % (what, why, accepted, _MAKE_HASH)
    if _DES.fullmatch(text) or _BSDI_DES.fullmatch(text):
        return None, ("looks like a DES crypt hash, or a clear-text password; neither is accepted (DES is not "
                      "memory-hard and keeps 8 characters of a password); %s" % _MAKE_HASH)
    if text.startswith("$"):
        return None, "is not a hash of an accepted scheme (%s); if it is a clear-text password, %s" % (
            accepted, _MAKE_HASH)
    if text[0] in "!*":
        return None, "looks like a locked or disabled /etc/shadow entry, not a password hash; %s" % _MAKE_HASH
    return None, "looks like a clear-text password, not a hash: only hashes are stored; %s" % _MAKE_HASH


def password_hash_kind(text):
    """The scheme of a password hash: "yescrypt", "gost-yescrypt", "scrypt", "argon2id" or "argon2i".

    Checks the form only (prefix, fields, lengths); it needs neither libxcrypt nor argon2, so the
    controller's preflight can use it. Raises ValueError with a reason a person can act on for
    anything else: a clear-text password (how to make a hash), a scheme that is not memory-hard
    ($6$, $5$, $1$, bcrypt, DES, ...), a hash cut short or with a line break. The message never
    contains ``text``.
    """
    kind, reason = _hash_problem(text)
    if reason:
        raise ValueError("the password hash %s" % reason)
    return kind


def _password_bytes(password):
    """The UTF-8 bytes of ``password``, or None when it cannot be a password (not str, too long, NUL)."""
    if not isinstance(password, str) or len(password) > PASSWORD_MAX_BYTES:
        return None
    try:
        phrase = password.encode("utf-8")
    except UnicodeEncodeError:     # a lone surrogate
        return None
    if len(phrase) > PASSWORD_MAX_BYTES or b"\0" in phrase:    # C ends the string at a NUL: "pw\0x" would be "pw"
        return None
    return phrase


def _verify_crypt(hash_text, phrase):
    if not HAS_LIBCRYPT:
        raise ValueError("checking a password against a crypt hash needs libxcrypt (Debian package libcrypt1), "
                         "which could not be loaded")
    setting = hash_text.encode("ascii")
    result = _crypt(phrase, setting)
    return result is not None and hmac.compare_digest(result, setting)


def _verify_argon2(hash_text, password):
    if not HAS_ARGON2:
        raise ValueError("checking a password against an argon2 hash needs python3-argon2 (argon2-cffi), which is "
                         "not installed")
    try:
        return argon2.PasswordHasher().verify(hash_text, password) is True
    except (argon2.exceptions.Argon2Error, ValueError, TypeError):   # mismatch, bad hash (InvalidHashError)
        return False


def verify_password(hash_text, password):
    """True when ``password`` matches ``hash_text``, else False.

    ``hash_text`` is a hash ``password_hash_kind`` accepts. crypt schemes are checked with libxcrypt
    (``crypt_rn``, a buffer per call, so threads may check at once) and compared with
    ``hmac.compare_digest``; argon2 with ``argon2.PasswordHasher().verify``. Returns False, never
    raising, for a wrong password, a malformed hash of an accepted scheme, a ``hash_text`` or
    ``password`` that is not a str, and a password over PASSWORD_MAX_BYTES UTF-8 bytes or holding a NUL
    (refused without hashing). Raises ValueError when ``hash_text`` is not of an accepted scheme (the
    reason of ``password_hash_kind``) and when the library the scheme needs is missing (argon2:
    python3-argon2; crypt: libcrypt1).
    """
    if not isinstance(hash_text, str) or not isinstance(password, str):
        return False
    kind, reason = _hash_problem(hash_text)
    if kind is None:
        raise ValueError("the password hash %s" % reason)
    if reason:
        return False
    phrase = _password_bytes(password)
    if phrase is None:
        return False
    if kind in _ARGON2_KINDS:
        return _verify_argon2(hash_text, password)
    return _verify_crypt(hash_text, phrase)


def hash_password(password):
    """A yescrypt hash of ``password`` at libxcrypt's default cost (what ``mkpasswd -m yescrypt`` makes).

    For tools that make a portal user (the lab's demo user). ValueError for a password that cannot be hashed
    (not a string, empty, a NUL, over :data:`PASSWORD_MAX_BYTES`) or without libxcrypt.
    """
    phrase = _password_bytes(password) if isinstance(password, str) and password else None
    if phrase is None:
        raise ValueError("a password must be a non-empty string of at most %d bytes without NUL" % PASSWORD_MAX_BYTES)
    if not HAS_LIBCRYPT or _CRYPT_GENSALT is None:
        raise ValueError("libxcrypt (libcrypt.so.1) with crypt_gensalt_rn is needed to make a yescrypt hash")
    out = ctypes.create_string_buffer(CRYPT_GENSALT_OUTPUT_SIZE)
    setting = _CRYPT_GENSALT(b"$y$", 0, None, 0, out, CRYPT_GENSALT_OUTPUT_SIZE)
    result = _crypt(phrase, setting) if setting else None
    if not result or not _HASH_FORMS["yescrypt"].fullmatch(result.decode("ascii")):
        raise ValueError("libxcrypt made no yescrypt hash")
    return result.decode("ascii")


def _make_dummy_hash():
    """A yescrypt hash (libxcrypt's default cost, as ``mkpasswd -m yescrypt``) of a random password, or None."""
    try:
        return hash_password(secrets.token_urlsafe(32))
    except ValueError:
        return None


DUMMY_HASH = _make_dummy_hash()


def dummy_verify(password):
    """Do the work of ``verify_password`` against a fixed yescrypt hash made at import; return False.

    For a login whose user is unknown (or has no password): it then takes as long as a known
    user's, with a yescrypt hash of the default cost, so the answer's time does not tell which
    names exist. Never raises. Without libxcrypt it runs ``hashlib.scrypt`` with the same memory
    (16 MiB) instead.
    """
    phrase = _password_bytes(password)
    if phrase is None:
        return False
    if DUMMY_HASH is not None:
        _verify_crypt(DUMMY_HASH, phrase)
    elif hasattr(hashlib, "scrypt"):    # pragma: no cover  # libcrypt1 is Essential on Debian
        hashlib.scrypt(phrase, salt=b"vmconsole.secure dummy", n=2 ** 14, r=8, p=1, maxmem=64 * 1024 * 1024)
    return False


# --- Users and the ACL -----------------------------------------------------------------------

ROLES = ("console", "operator")    # lowest first: operator includes console
METHODS = ("password", "certificate")
NAME_MAX = PROXY_USER_MAX           # characters of a user or group name: portal users become proxy users
VM_NAME_MAX = 64                    # what VM_NAME_PATTERN (the collection's one VM name grammar) allows
VM_PATTERN_MAX = 256               # characters of an ACL pattern
USER_KEYS = ("groups", "password_hash")
ACL_KEYS = ("groups", "role", "users", "vms")

_VM_CHARS = frozenset(string.ascii_letters + string.digits + "_.-")
_VM_FIRST = frozenset(string.ascii_letters + string.digits)
_PATTERN_CHARS = _VM_CHARS | frozenset("*?[]!")


class User(collections.namedtuple("User", "name password_hash groups")):
    """A portal user: ``name``, ``password_hash`` (None: certificate login only) and ``groups`` (a tuple)."""

    def __repr__(self):
        return "User(name=%r, password_hash=%s, groups=%r)" % (self.name, "None" if self.password_hash is None
                                                               else "'<hidden>'", self.groups)


class Rule(collections.namedtuple("Rule", "users groups vms role")):
    """One ACL entry: ``users`` and ``groups`` (tuples of names), ``vms`` (a tuple of patterns), ``role``."""


def _show(name):
    """A name as error texts write it: itself when plain, else its repr, cut to 70 characters."""
    if isinstance(name, str) and name and name.isprintable() and len(name) <= NAME_MAX:
        return name
    return repr(name[:70] if isinstance(name, str) else name)


def _name_problem(name, what):
    """Why ``name`` is no user or group name, or None."""
    if not isinstance(name, str):
        return "%s must be a string, got %s (quote it in YAML)" % (what, type(name).__name__)
    if not name:
        return "%s is empty" % what
    if len(name) > NAME_MAX:
        return "%s is longer than %d characters (%d)" % (what, NAME_MAX, len(name))
    if not name.isprintable():
        return "%s contains a control character or a line break" % what
    if "/" in name:
        return "%s contains '/'" % what
    if name != name.strip():
        return "%s begins or ends with white space" % what
    return None


def _names(value, where, what):
    """A tuple of distinct names from a list, or ValueError naming ``where``."""
    if isinstance(value, str):
        raise ValueError("%s must be a list of %s names, got a string (write [%s])" % (where, what, _show(value)))
    if not isinstance(value, (list, tuple)):
        raise ValueError("%s must be a list of %s names, got %s" % (where, what, type(value).__name__))
    out = []
    for index, name in enumerate(value):
        problem = _name_problem(name, "the %s name" % what)
        if problem:
            raise ValueError("%s[%d]: %s" % (where, index, problem))
        if name not in out:
            out.append(name)
    return tuple(out)


def parse_users(mapping):
    """``{name: User}`` from ``console_portal_users``; raises ValueError naming the field and why.

    ``mapping`` is ``{"alice": {"password_hash": "$y$...", "groups": ["ops"]}, "bob": {"groups": []}}``;
    None is no users, and a user's settings may be None (no password, no groups: certificate
    login only). Refused: a mapping that is not one; a user name that is not a string, empty,
    longer than NAME_MAX characters, with a control character, '/' or surrounding white space;
    keys other than USER_KEYS (``password`` gets its own hint); groups that are not a list of such
    names; a password hash that ``password_hash_kind`` refuses. Messages name
    ``console_portal_users.<name>.<field>`` and never contain a password or a hash.
    """
    if mapping is None:
        return {}
    if not isinstance(mapping, dict):
        raise ValueError("console_portal_users must be a mapping of user name to settings, got %s"
                         % type(mapping).__name__)
    users = {}
    for name, settings in mapping.items():
        where = "console_portal_users.%s" % _show(name)
        problem = _name_problem(name, "the user name")
        if problem:
            raise ValueError("%s: %s" % (where, problem))
        if settings is None:
            settings = {}
        if not isinstance(settings, dict):
            raise ValueError("%s must be a mapping (keys %s), got %s" % (where, ", ".join(USER_KEYS), type(settings).__name__))
        for key in settings:
            if key == "password":
                raise ValueError("%s.password: a clear-text password is not accepted; write password_hash: %s"
                                 % (where, _MAKE_HASH))
            if key not in USER_KEYS:
                raise ValueError("%s.%s: unknown key (known: %s)" % (where, _show(key), ", ".join(USER_KEYS)))
        password_hash = settings.get("password_hash")
        if password_hash is not None:
            dummy, reason = _hash_problem(password_hash)
            if reason:
                raise ValueError("%s.password_hash %s" % (where, reason))
        groups = settings.get("groups")
        groups = () if groups is None else _names(groups, where + ".groups", "group")
        users[name] = User(name, password_hash, groups)
    return users


def _pattern_tokens(pattern):
    """The pattern as fnmatch reads it: a list of "*" or frozensets of the VM-name characters a position takes.

    Splits where ``fnmatch.translate`` does ("[" without a closing "]" is a plain "["; "]" right after
    "[" or "[!" is a member) and asks ``fnmatch.fnmatchcase`` which characters each part matches, so
    classes, ranges and negation mean what they will mean when matching. Raises ValueError (a reason)
    for a part that matches no character a VM name may have.
    """
    tokens = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        i += 1
        if c == "*":
            if not tokens or tokens[-1] != "*":
                tokens.append("*")
        elif c == "?":
            tokens.append(_VM_CHARS)
        elif c == "[":
            j = i
            if j < n and pattern[j] == "!":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            while j < n and pattern[j] != "]":
                j += 1
            if j >= n:
                raise ValueError("has a '[' without its ']'")
            part = pattern[i - 1:j + 1]
            chars = frozenset(ch for ch in _VM_CHARS if fnmatch.fnmatchcase(ch, part))
            if not chars:
                raise ValueError("has %s, which matches no character a VM name may have ([A-Za-z0-9_.-])" % part)
            tokens.append(chars)
            i = j + 1
        elif c == "]":
            raise ValueError("has a ']' that closes no '['")
        elif c == "!":
            raise ValueError("has a '!' outside [...] (only [!...] negates)")
        else:
            tokens.append(frozenset(c))
    return tokens


def _pattern_problem(pattern):
    """Why ``pattern`` can never match a VM name, or None."""
    if not isinstance(pattern, str):
        return "must be a string, got %s" % type(pattern).__name__
    if not pattern:
        return "is empty"
    if len(pattern) > VM_PATTERN_MAX:
        return "is longer than %d characters" % VM_PATTERN_MAX
    bad = sorted(set(pattern) - _PATTERN_CHARS)
    if bad:
        return ("contains %s, which no VM name has (VM names are [A-Za-z0-9][A-Za-z0-9_.-]*; patterns add * ? [ ] !)"
                % ", ".join(repr(c) for c in bad[:5]))
    try:
        tokens = _pattern_tokens(pattern)
    except ValueError as exc:
        return str(exc)
    fixed = [t for t in tokens if t != "*"]
    # The shortest name it matches, with each position's first choice (a letter or digit where one fits).
    witness = [sorted(t, key=lambda ch: (ch not in _VM_FIRST, ch))[0] for t in fixed]
    if tokens[0] != "*" and not tokens[0] & _VM_FIRST:
        return "can only match names that begin with %s; a VM name begins with a letter or digit" % (
            " or ".join(repr(ch) for ch in sorted(tokens[0])))
    if tokens[0] == "*" and (not witness or witness[0] not in _VM_FIRST):
        witness.insert(0, "a")        # the leading "*" supplies the first character
    if len(witness) > VM_NAME_MAX:
        return "needs at least %d characters; a VM name has at most %d" % (len(witness), VM_NAME_MAX)
    witness = "".join(witness)
    if not (VM_NAME_PATTERN.fullmatch(witness) and fnmatch.fnmatchcase(witness, pattern)):   # pragma: no cover
        return "can never match a VM name"     # a safety net: the analysis above found a name it does not match
    return None


def parse_acl(entries):
    """A tuple of Rule from ``console_portal_acl``; raises ValueError naming ``console_portal_acl[INDEX].field``.

    ``entries`` is a list of ``{"users": [...], "groups": [...], "vms": ["web*", "db-?"], "role": "console"}``
    (None: no entries, so everyone is denied). Each entry needs ``vms`` and at least one user or group;
    ``role`` is one of ROLES and defaults to "console" (the lesser one). Refused: keys other than
    ACL_KEYS, names as ``parse_users`` refuses them, an empty ``vms``, and a pattern that can never match
    a VM name (VM names are ``[A-Za-z0-9][A-Za-z0-9_.-]*``, at most 64 characters; patterns add ``*``,
    ``?``, ``[...]`` and ``[!...]``, matched case-sensitively).
    """
    if entries is None:
        return ()
    if not isinstance(entries, (list, tuple)):
        raise ValueError("console_portal_acl must be a list of entries (users, groups, vms, role), got %s"
                         % type(entries).__name__)
    rules = []
    for index, entry in enumerate(entries):
        where = "console_portal_acl[%d]" % index
        if not isinstance(entry, dict):
            raise ValueError("%s must be a mapping (keys %s), got %s" % (where, ", ".join(ACL_KEYS), type(entry).__name__))
        for key in entry:
            if key not in ACL_KEYS:
                raise ValueError("%s.%s: unknown key (known: %s)" % (where, _show(key), ", ".join(ACL_KEYS)))
        role = entry.get("role", "console")
        if role not in ROLES:
            raise ValueError("%s.role: unknown role %s (one of %s)" % (where, _show(role), ", ".join(ROLES)))
        users = () if entry.get("users") is None else _names(entry["users"], where + ".users", "user")
        groups = () if entry.get("groups") is None else _names(entry["groups"], where + ".groups", "group")
        if not users and not groups:
            raise ValueError("%s.users: the entry names no user and no group (give users, groups or both)" % where)
        if entry.get("vms") is None:
            raise ValueError("%s.vms: missing (a list of VM name patterns, e.g. [\"web*\"])" % where)
        vms = entry["vms"]
        if isinstance(vms, str) or not isinstance(vms, (list, tuple)):
            raise ValueError("%s.vms must be a list of VM name patterns, got %s" % (
                where, "a string (write [%s])" % _show(vms) if isinstance(vms, str) else type(vms).__name__))
        if not vms:
            raise ValueError("%s.vms is empty (a list of VM name patterns, e.g. [\"web*\"])" % where)
        for number, pattern in enumerate(vms):
            problem = _pattern_problem(pattern)
            if problem:
                raise ValueError("%s.vms[%d]: the pattern %s%s" % (
                    where, number, repr(pattern) + " " if isinstance(pattern, str) else "", problem))
        rules.append(Rule(users, groups, tuple(dict.fromkeys(vms)), role))
    return tuple(rules)


def vm_role(rules, user, groups, vm):
    """The role ``user`` (a member of ``groups``) has on ``vm``: None, "console" or "operator".

    The highest role of every rule that names the user or one of the groups and has a pattern
    matching ``vm`` (``fnmatch.fnmatchcase``: case-sensitive). Default deny: None when no rule
    matches, and for a ``vm`` that is no VM name (path tricks) or a ``user`` that is not a string.
    Never raises for such input.
    """
    if not isinstance(user, str) or not isinstance(vm, str) or not VM_NAME_PATTERN.fullmatch(vm):
        return None
    if isinstance(groups, str):      # one group, not its letters
        groups = (groups,)
    member = frozenset(g for g in (groups or ()) if isinstance(g, str))
    best = -1
    for rule in rules:
        if user in rule.users or member.intersection(rule.groups):
            if any(fnmatch.fnmatchcase(vm, pattern) for pattern in rule.vms):
                best = max(best, ROLES.index(rule.role))
    return ROLES[best] if best >= 0 else None


# --- Sessions --------------------------------------------------------------------------------

COOKIE_MAX = 256       # characters of a cookie value get() looks up


def _positive(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError("%s must be a positive number of seconds, got %r" % (name, value))
    return value


def _count(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError("%s must be a whole number of at least 1, got %r" % (name, value))
    return value


def _cookie_key(cookie_value):
    return hashlib.sha256(cookie_value.encode("utf-8", "surrogatepass")).hexdigest()


class Session:
    """A logged-in user: ``user``, ``groups`` (tuple), ``method`` ("password" or "certificate"), ``address``,
    ``created`` and ``last_seen`` (the store's clock), ``csrf`` (the session's CSRF token) and ``id``
    (12 hex digits, not a secret: for audit logs). Its repr shows no token."""

    __slots__ = ("user", "groups", "method", "address", "created", "last_seen", "csrf", "id", "_key")

    def __init__(self, key, user, groups, method, address, now):
        self._key = key
        self.id = key[:12]
        self.user = user
        self.groups = groups
        self.method = method
        self.address = address
        self.created = now
        self.last_seen = now
        self.csrf = secrets.token_urlsafe(32)

    def __repr__(self):
        return "Session(id=%r, user=%r, method=%r, address=%r)" % (self.id, self.user, self.method, self.address)


def csrf_ok(session, token):
    """True when ``token`` is ``session``'s CSRF token (``hmac.compare_digest``); False for anything else,
    a missing session or a token that is not a non-empty str included. Never raises."""
    if not isinstance(session, Session) or not isinstance(token, str) or not token or len(token) > COOKIE_MAX:
        return False
    return hmac.compare_digest(session.csrf.encode("utf-8"), token.encode("utf-8", "surrogatepass"))


class SessionStore:
    """The portal's sessions, in memory, keyed by the SHA-256 of the cookie (the cookie itself is never kept).

    A session ends ``idle`` seconds after its last use or ``absolute`` seconds after its login,
    whichever comes first (both as ``clock`` counts; the session is still valid at exactly that
    many seconds); a user has at most ``max_per_user`` sessions (a new one drops the oldest).
    Raises ValueError for a limit that is not positive. Thread-safe.
    """

    def __init__(self, idle=900, absolute=28800, clock=time.monotonic, max_per_user=20):
        self.idle = _positive("idle", idle)
        self.absolute = _positive("absolute", absolute)
        self.max_per_user = _count("max_per_user", max_per_user)
        self.clock = clock
        self._sessions = {}          # sha256 hex of the cookie -> Session
        self._by_user = {}           # user -> {key: None}, oldest first
        self._lock = threading.RLock()

    csrf_ok = staticmethod(csrf_ok)

    def __len__(self):
        """The number of sessions held (expired ones included until ``expire`` or a lookup removes them)."""
        with self._lock:
            return len(self._sessions)

    def _expired(self, session, now):
        return now - session.last_seen > self.idle or now - session.created > self.absolute

    def _remove(self, key):
        session = self._sessions.pop(key, None)
        if session is not None:
            keys = self._by_user.get(session.user)
            if keys is not None:
                keys.pop(key, None)
                if not keys:
                    del self._by_user[session.user]
        return session

    def create(self, user, groups, method, address):
        """Log ``user`` in: returns ``(cookie_value, Session)``.

        ``cookie_value`` (``secrets.token_urlsafe(32)``) goes into the cookie and is not kept here.
        ``method`` is one of METHODS; ``groups`` any iterable of names (kept as a tuple). Drops
        expired sessions, and the user's oldest when this one is over ``max_per_user``. Raises
        ValueError for an unknown method or a user that is not a non-empty str.
        """
        if method not in METHODS:
            raise ValueError("method must be one of %s, got %r" % (", ".join(METHODS), method))
        if not isinstance(user, str) or not user:
            raise ValueError("user must be a non-empty string")
        if isinstance(groups, str):
            raise ValueError("groups must be a list of group names, got a string")
        groups = tuple(groups or ())
        with self._lock:
            now = self.clock()
            self._expire(now)
            while True:
                cookie_value = secrets.token_urlsafe(32)
                key = _cookie_key(cookie_value)
                if key not in self._sessions:
                    break
            session = Session(key, user, groups, method, address, now)
            self._sessions[key] = session
            keys = self._by_user.setdefault(user, {})
            keys[key] = None
            while len(keys) > self.max_per_user:
                self._remove(next(iter(keys)))
            return cookie_value, session

    def get(self, cookie_value):
        """The Session of ``cookie_value``, or None: unknown, expired (then removed), not a str or over
        COOKIE_MAX characters. A hit sets the session's ``last_seen``. Never raises."""
        if not isinstance(cookie_value, str) or not cookie_value or len(cookie_value) > COOKIE_MAX:
            return None
        key = _cookie_key(cookie_value)
        with self._lock:
            session = self._sessions.get(key)
            if session is None:
                return None
            now = self.clock()
            if self._expired(session, now):
                self._remove(key)
                return None
            session.last_seen = now
            return session

    def drop(self, cookie_value):
        """End the session of ``cookie_value`` (a logout). Returns True when there was one. Never raises."""
        if not isinstance(cookie_value, str) or not cookie_value or len(cookie_value) > COOKIE_MAX:
            return False
        with self._lock:
            return self._remove(_cookie_key(cookie_value)) is not None

    def drop_user(self, user):
        """End every session of ``user``; returns how many there were."""
        with self._lock:
            keys = list(self._by_user.get(user, ()))
            for key in keys:
                self._remove(key)
            return len(keys)

    def _expire(self, now):
        gone = [key for key, session in self._sessions.items() if self._expired(session, now)]
        for key in gone:
            self._remove(key)
        return len(gone)

    def expire(self):
        """Remove every expired session; returns how many."""
        with self._lock:
            return self._expire(self.clock())


# --- Login rate limit and lockout ------------------------------------------------------------

TRACKED_MAX = 10000    # names and addresses the limiter remembers, each


def address_key(address):
    """What the limiter counts an address as: an IPv4 address (also IPv4-mapped IPv6) itself, an IPv6
    address its /64 (one host owns a whole /64), anything else its text. None stays None."""
    if address is None:
        return None
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return str(address)
    mapped = getattr(ip, "ipv4_mapped", None)
    if mapped is not None:
        return str(mapped)
    if ip.version == 6:      # by number: a scope ("fe80::1%eth0") does not change the /64
        return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))
    return str(ip)


class _Tracker:
    """Failures and locks of one kind of key (users or addresses), at most TRACKED_MAX keys."""

    def __init__(self, limit, window, lockout):
        self.limit, self.window, self.lockout = limit, window, lockout
        self.entries = collections.OrderedDict()    # key -> [deque of failure times, locked until], oldest first

    def locked_until(self, key, now):
        entry = self.entries.get(key)
        return entry[1] if entry is not None and entry[1] > now else None

    def failure(self, key, now):
        """Count a failure; True when it locks ``key``. Not counted while ``key`` is locked."""
        if self.locked_until(key, now) is not None:
            return False
        entry = self.entries.get(key)
        if entry is None:
            self._make_room(now)
            entry = self.entries[key] = [collections.deque(), 0]
        else:
            self.entries.move_to_end(key)
        times = entry[0]
        while times and now - times[0] >= self.window:
            times.popleft()
        times.append(now)
        if len(times) >= self.limit:
            times.clear()
            entry[1] = now + self.lockout
            return True
        return False

    def clear(self, key, now):
        entry = self.entries.get(key)
        if entry is not None:
            entry[0].clear()
            if entry[1] <= now:
                del self.entries[key]

    def _make_room(self, now):
        """Forget the oldest keys until one more fits; a locked key only when every key is locked."""
        passes = len(self.entries)
        while len(self.entries) >= TRACKED_MAX:
            key, entry = next(iter(self.entries.items()))
            if entry[1] > now and passes > 0:
                self.entries.move_to_end(key)
                passes -= 1
                continue
            del self.entries[key]


class LoginLimiter:
    """Login rate limit and lockout, in memory, for password logins.

    A user is locked for ``lockout`` seconds after ``max_failures`` failures within ``window``
    seconds, from any address; an address is locked after ``address_max_failures`` failures within
    ``window``, for any users (name spraying). IPv6 addresses count by their /64 (``address_key``).
    At most TRACKED_MAX users and TRACKED_MAX addresses are remembered, the least recently failed
    forgotten first (a locked one only when all are locked). Raises ValueError for a limit that is
    not positive. Thread-safe.
    """

    def __init__(self, max_failures=5, window=300, lockout=900, address_max_failures=20, clock=time.monotonic):
        self.max_failures = _count("max_failures", max_failures)
        self.window = _positive("window", window)
        self.lockout = _positive("lockout", lockout)
        self.address_max_failures = _count("address_max_failures", address_max_failures)
        self.clock = clock
        self._users = _Tracker(self.max_failures, self.window, self.lockout)
        self._addresses = _Tracker(self.address_max_failures, self.window, self.lockout)
        self._lock = threading.Lock()

    def locked(self, user, address):
        """Seconds (an int, rounded up) until ``user`` and ``address`` may try again, or 0 when neither is
        locked. Either may be None (not checked)."""
        with self._lock:
            now = self.clock()
            ends = [self._users.locked_until(user, now) if user is not None else None,
                    self._addresses.locked_until(address_key(address), now)]
            ends = [end for end in ends if end is not None]
            return int(math.ceil(max(ends) - now)) if ends else 0

    def failure(self, user, address):
        """Count a failed login of ``user`` from ``address``: returns "locked" when this failure locks the
        user or the address, else None. A failure while a side is locked is not counted for that side
        (the lock is not extended)."""
        with self._lock:
            now = self.clock()
            locks = self._users.failure(user, now) if user is not None else False
            key = address_key(address)
            if key is not None and self._addresses.failure(key, now):
                locks = True
            return "locked" if locks else None

    def success(self, user, address):
        """A successful login: forget ``user``'s failures (an active lock stays; ``address``'s failures stay)."""
        with self._lock:
            if user is not None:
                self._users.clear(user, self.clock())
