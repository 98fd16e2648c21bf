# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Console tickets and proxy tokens.

Tickets are the one-time passwords QEMU checks when a SPICE or VNC client links. Proxy
tokens are the signed HTTP proxy credentials squid's helpers check before a CONNECT.

Private to the collection. Stdlib, the collection's ``_addresses`` and, for proxy tokens,
``cryptography`` (Ed25519) only, no Ansible imports: it runs on managed hosts, on the controller,
and as a plain module next to the squid helper of the connect_proxy role (with ``_addresses.py``
beside it).

Error texts never contain a ticket, a token or a key: they say which rule was broken.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import ipaddress
import json
import re
import secrets
import string
import struct
import time

try:
    from ansible_collections.vmconsole.secure.plugins.module_utils._addresses import ip_address
except ImportError:      # installed next to the squid helper (roles/connect_proxy), with _addresses.py
    from _addresses import ip_address  # type: ignore[no-redef]  # pylint: disable=import-error

try:   # proxy tokens only; tickets need nothing beyond the standard library
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
    HAS_CRYPTOGRAPHY = True
except ImportError:      # pragma: no cover  # the managed node lacks python3-cryptography
    HAS_CRYPTOGRAPHY = False

PROTOCOLS = ("spice", "vnc")

# Letters and digits only: remote-viewer takes `password=` verbatim from the .vv, the
# SPICE link and the VNC DES challenge take raw bytes, and nothing in the path ever
# needs to escape them. 62 symbols give 5.95 bits each (40 chars: 238 bits).
TICKET_ALPHABET = string.ascii_letters + string.digits
SPICE_TICKET_LENGTH = 40
SPICE_TICKET_MAX = 59      # QEMU 7.2 answers "Could not set password" from 60 on
VNC_TICKET_LENGTH = 8      # VNC authentication DES-encrypts the first 8 bytes only

TTL_MIN = 1
TTL_MAX = 86400            # one day; a console ticket is meant to live seconds

_MAX_LENGTH = {"spice": SPICE_TICKET_MAX, "vnc": VNC_TICKET_LENGTH}
_INTEGER_TEXT = re.compile(r"^[+-]?[0-9]+$")


def _check_protocol(protocol):
    if protocol not in PROTOCOLS:
        raise ValueError("protocol must be one of %s, got %r" % (", ".join(PROTOCOLS), protocol))


def new_ticket(protocol):
    """A fresh random ticket of the protocol's full length, from `secrets`."""
    _check_protocol(protocol)
    length = SPICE_TICKET_LENGTH if protocol == "spice" else VNC_TICKET_LENGTH
    return "".join(secrets.choice(TICKET_ALPHABET) for dummy in range(length))


def validate_ticket(protocol, value):
    """Raise ValueError (saying why, never echoing the value) unless `value` is a usable ticket."""
    _check_protocol(protocol)
    if not isinstance(value, str):
        raise ValueError("a ticket must be a string, got %s" % type(value).__name__)
    limit = _MAX_LENGTH[protocol]
    if not 1 <= len(value) <= limit:
        raise ValueError("a %s ticket must be 1 to %d characters long, this one has %d"
                         % (protocol.upper(), limit, len(value)))
    if value.strip(TICKET_ALPHABET):
        raise ValueError("a %s ticket may contain only letters and digits [A-Za-z0-9]" % protocol.upper())


def validate_ttl(value):
    """Return the ticket lifetime in whole seconds (1..86400) or raise ValueError naming `ttl`.

    Accepts an int, an integral float (30.0) or a string holding a decimal integer ("30"),
    as they arrive from YAML, `-a k=v` and `-e`. Refuses booleans (`true` is not a
    duration), fractions (QEMU expires in whole seconds), other strings, 0 and negatives.
    """
    return _whole_seconds("ttl", value, TTL_MIN, TTL_MAX, " (QEMU expires in whole seconds)")


def _whole_seconds(name, value, low, high, why=""):
    """`value` as an int of seconds in low..high, or ValueError naming option `name`."""
    if isinstance(value, bool):
        raise ValueError("%s must be a number of seconds, got a boolean (%r)" % (name, value))
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError("%s must be a whole number of seconds%s, got %r" % (name, why, value))
        value = int(value)
    elif isinstance(value, str):
        if not _INTEGER_TEXT.match(value.strip()):
            raise ValueError("%s must be a whole number of seconds, got %r (not an integer)" % (name, value))
        value = int(value.strip())
    elif not isinstance(value, int):
        raise ValueError("%s must be a whole number of seconds, got %s" % (name, type(value).__name__))
    if not low <= value <= high:
        raise ValueError("%s must be between %d and %d seconds, got %d" % (name, low, high, value))
    return value


# --- Proxy tokens ----------------------------------------------------------------------------
#
# The HTTP proxy credentials of a .vv: `proxy=http://USERNAME:TOKEN@node:3128`. spice-gtk
# sends them on every channel it opens and again on every reconnection (seamless migration),
# and squid's helper (roles/connect_proxy/files/) checks them with the code below, from a
# copy of this file installed next to it: one token format, one implementation.
#
# USERNAME = enc(user) "__" enc(vm). Not a secret (squid's access log shows it): it says who
#   and which VM. enc() keeps [A-Za-z0-9-] and writes every other UTF-8 byte as "_" and two
#   upper-case hex digits ("alice@example.org" -> "alice_40example_2Eorg", "web1.prod" ->
#   "web1_2Eprod"). An escape always puts a hex digit after "_", so "__" occurs only as the
#   separator and each (user, VM) pair has exactly one username.
# TOKEN = "v3_" KEY_ID "_" CONSOLE "_" ISSUED "_" EXPIRES "_" CLIENT "_" NONCE "_" SIGNATURE, at most 176
#   characters (at most 144 for any client, 152 bound to an IPv4 address; 141 for a SPICE token of today):
#   KEY_ID is the signing key's id (12 lower-case hex digits, see proxy_key_id()): each node signs with
#   a key of its own that never leaves it, and every node verifies with the public keys of all;
#   CONSOLE is the one console the token opens (spice, vnc or serial: the helper admits only that
#   console's ports); ISSUED and EXPIRES are decimal epoch seconds; CLIENT is "n" (any client address)
#   or "a" and the lower-case hex of the one client address the token works from (8 digits for IPv4,
#   32 for IPv6); NONCE is 8 random lower-case hex digits, so that two tokens minted for the same
#   person, VM and console in the same second differ (each binds to its own client); SIGNATURE is
#   unpadded base64url (86 characters) of the Ed25519 signature over TOKEN_CONTEXT and then each of
#   (version, key id, console, user, VM, issued, expires, client address or "", nonce) as a 4-byte
#   big-endian length and its UTF-8 bytes. The token is bound to the username's user and VM: the
#   same token under another username (another VM) is a bad signature, and so is a token whose
#   console, client or nonce was changed. Whoever verifies (squid's helper, user
#   proxy) holds public keys only: it can check a token and cannot make one.

TOKEN_VERSION = "v3"
TOKEN_CONSOLES = ("spice", "vnc", "serial")
TOKEN_ALPHABET = string.ascii_letters + string.digits + "_-"
TOKEN_MAX_LENGTH = 200
TOKEN_TTL_DEFAULT = 28800          # 8 h: a whole console session, migrations included
TOKEN_TTL_MIN = 60
TOKEN_TTL_MAX = 7 * 86400
TOKEN_CLOCK_SKEW = 60              # seconds a token's issue time may lie ahead of the checker's clock
TOKEN_CONTEXT = b"vmconsole.secure proxy token"
KEY_ID_PATTERN = re.compile(r"[0-9a-f]{12}")          # used with fullmatch: "$" accepts a final "\n"
KEY_BYTES = 32                     # an Ed25519 private key (its seed) and a public key alike
PROXY_USER_MAX = 64                # characters of a user name
PROXY_USERNAME_MAX = 128           # characters of the encoded proxy username
VM_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")

# verify_proxy_token() statuses
TOKEN_OK = "ok"
TOKEN_EXPIRED = "expired"
TOKEN_BAD_SIGNATURE = "bad_signature"
TOKEN_MALFORMED = "malformed"
TOKEN_UNKNOWN_KEY = "unknown_key"
TOKEN_NOT_YET_VALID = "not_yet_valid"
TOKEN_REVOKED = "revoked"
TOKEN_WRONG_CLIENT = "wrong_client"
TOKEN_STATUSES = (TOKEN_OK, TOKEN_EXPIRED, TOKEN_BAD_SIGNATURE, TOKEN_MALFORMED, TOKEN_UNKNOWN_KEY,
                  TOKEN_NOT_YET_VALID, TOKEN_REVOKED, TOKEN_WRONG_CLIENT)

_USERNAME_PART = r"(?:[A-Za-z0-9-]|_[0-9A-F]{2})+"
_USERNAME = re.compile(r"(%s)__(%s)" % (_USERNAME_PART, _USERNAME_PART))
_TOKEN = re.compile(r"v3_([0-9a-f]{12})_(%s)_([1-9][0-9]{0,10})_([1-9][0-9]{0,10})_(n|a[0-9a-f]{8}|a[0-9a-f]{32})"
                    r"_([0-9a-f]{8})_([A-Za-z0-9_-]{85}[AQgw])" % "|".join(TOKEN_CONSOLES))
_PLAIN_BYTES = frozenset((string.ascii_letters + string.digits + "-").encode("ascii"))
_ESCAPE = re.compile(r"_([0-9A-F]{2})")


class ProxyKeys(collections.namedtuple("ProxyKeys", "keys")):
    """The public keys that verify tokens: ``keys`` ({key id: Ed25519PublicKey}). Every key listed verifies
    (every node's, and a node's new and old key during a rotation)."""


class ProxySigner(collections.namedtuple("ProxySigner", "key_id private")):
    """A node's signing key: ``key_id`` (see :func:`proxy_key_id`) and ``private`` (an Ed25519PrivateKey)."""


class ProxyToken(collections.namedtuple("ProxyToken", "username token user vm key_id issued expires console client")):
    """A minted token: ``username`` and ``token`` are the proxy credentials; times in epoch seconds;
    ``console`` the console it opens; ``client`` the address it is bound to (None: any)."""


class TokenCheck(collections.namedtuple("TokenCheck", "status user vm key_id issued expires console client")):
    """What :func:`verify_proxy_token` found. ``status`` is one of TOKEN_STATUSES.

    ``user``/``vm`` come from the username when it parses, the others from the token when it
    parses (None otherwise; ``client`` is None for a token of any address); only ``ok`` means
    they were proven.
    """

    @property
    def ok(self):
        return self.status == TOKEN_OK


def _encode_name(text):
    return "".join(chr(b) if b in _PLAIN_BYTES else "_%02X" % b for b in text.encode("utf-8"))


def _decode(text):
    """Inverse of _encode_name for a string that matched _USERNAME_PART; None unless canonical UTF-8.

    Canonical: only bytes _encode_name escapes are escaped (never a letter, digit or "-"), so each
    name has one form. Runs for every CONNECT in squid's helper: regular expressions, no loop in Python.
    """
    if any(int(code, 16) in _PLAIN_BYTES for code in _ESCAPE.findall(text)):
        return None
    try:
        return _ESCAPE.sub(lambda match: chr(int(match.group(1), 16)), text).encode("latin-1").decode("utf-8")
    except UnicodeDecodeError:
        return None


def check_proxy_user(user):
    """Raise ValueError (naming ``proxy_user``) unless ``user`` can go into a proxy username."""
    if not isinstance(user, str) or not user:
        raise ValueError("proxy_user must be a non-empty string")
    if len(user) > PROXY_USER_MAX:
        raise ValueError("proxy_user must be at most %d characters, got %d" % (PROXY_USER_MAX, len(user)))
    if not user.isprintable():
        raise ValueError("proxy_user must not contain control characters or line breaks")


def check_vm_name(vm):
    """Raise ValueError unless ``vm`` is a VM name ([A-Za-z0-9][A-Za-z0-9_.-]*, at most 64 characters)."""
    if not isinstance(vm, str) or not VM_NAME_PATTERN.fullmatch(vm):
        raise ValueError("vm %r is not a valid VM name ([A-Za-z0-9][A-Za-z0-9_.-]*, at most 64 characters)" % (vm,))


def client_address(value):
    """The canonical text of one client address (an IPv4-mapped IPv6 address as its IPv4 form), or
    ValueError. What squid's ``%>a`` gives and what a token's CLIENT field holds are compared in this form."""
    address = ip_address(value)
    mapped = getattr(address, "ipv4_mapped", None)
    return str(mapped or address)


def proxy_username(user, vm):
    """The proxy username for ``user`` opening ``vm``'s console; ValueError says why not."""
    check_proxy_user(user)
    check_vm_name(vm)
    username = "%s__%s" % (_encode_name(user), _encode_name(vm))
    if len(username) > PROXY_USERNAME_MAX:
        raise ValueError("proxy_user and vm make a proxy username of %d characters, more than %d: use a shorter "
                         "user name" % (len(username), PROXY_USERNAME_MAX))
    return username


def parse_proxy_username(username):
    """``(user, vm)`` of a proxy username, or None when it is not one. Never raises."""
    try:
        if not isinstance(username, str) or len(username) > PROXY_USERNAME_MAX:
            return None
        match = _USERNAME.fullmatch(username)
        if not match:
            return None
        user, vm = _decode(match.group(1)), _decode(match.group(2))
        if user is None or vm is None:
            return None
        check_proxy_user(user)
        check_vm_name(vm)
        return user, vm
    except Exception:    # pylint: disable=broad-except  # a checker answers, it never raises
        return None


def _signed_message(key_id, console, user, vm, issued, expires, client, nonce):
    message = bytearray(TOKEN_CONTEXT)
    for field in (TOKEN_VERSION, key_id, console, user, vm, str(issued), str(expires), client or "", nonce):
        data = field.encode("utf-8")
        message += struct.pack(">I", len(data)) + data
    return bytes(message)


def _b64(raw):
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _unb64(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _need_cryptography():
    if not HAS_CRYPTOGRAPHY:
        raise ValueError("proxy tokens need the Python package cryptography (Debian: python3-cryptography)")


def _client_field(client):
    return "n" if client is None else "a" + ip_address(client).packed.hex()


def _field_client(field):
    return None if field == "n" else str(ipaddress.ip_address(bytes.fromhex(field[1:])))


def validate_token_ttl(value):
    """The token lifetime in whole seconds (60..604800) or ValueError naming ``proxy_token_ttl``."""
    return _whole_seconds("proxy_token_ttl", value, TOKEN_TTL_MIN, TOKEN_TTL_MAX)


def mint_proxy_token(signer, user, vm, console, *, ttl=TOKEN_TTL_DEFAULT, now=None, client=None):
    """A new :class:`ProxyToken` for ``user`` to open ``vm``'s ``console`` (spice, vnc or serial), signed by
    ``signer`` (a :class:`ProxySigner`: this node's current key); with ``client``, it works from that one
    address only.

    Raises ValueError (never echoing a key) for a bad user, VM, console, lifetime, address or signer.
    """
    username = proxy_username(user, vm)
    if console not in TOKEN_CONSOLES:
        raise ValueError("console must be one of %s, got %r" % (", ".join(TOKEN_CONSOLES), console))
    ttl = validate_token_ttl(ttl)
    if client is not None:
        try:
            client = client_address(client)
        except ValueError:
            raise ValueError("proxy_client_address must be one IP address, got %r" % (client,)) from None
    _need_cryptography()
    if not isinstance(signer, ProxySigner) or not isinstance(signer.private, Ed25519PrivateKey):
        raise ValueError("signer must be a ProxySigner (see load_proxy_signer)")
    issued = int(time.time() if now is None else now)
    expires = issued + ttl
    nonce = secrets.token_hex(4)
    signature = signer.private.sign(_signed_message(signer.key_id, console, user, vm, issued, expires, client, nonce))
    token = "%s_%s_%s_%d_%d_%s_%s_%s" % (TOKEN_VERSION, signer.key_id, console, issued, expires,
                                         _client_field(client), nonce, _b64(signature))
    return ProxyToken(username, token, user, vm, signer.key_id, issued, expires, console, client)


def verify_proxy_token(keys, username, token, *, now=None, revocations=None, skew=TOKEN_CLOCK_SKEW, client=None):
    """Check the proxy credentials ``username``/``token``; returns a :class:`TokenCheck`. Never raises.

    ``keys``: a ProxyKeys or {key id: Ed25519PublicKey}, every key accepted (nodes, rotation overlap).
    ``revocations``: as from :func:`parse_revocations`; a token of a revoked user or VM issued at
    or before the revocation is ``revoked``. ``client``: the address the token arrived from; a
    token bound to another address is ``wrong_client`` (a bound token needs ``client``). The
    signature is checked before the rest, so a forged token learns nothing but ``bad_signature``.
    """
    user = vm = key_id = issued = expires = console = bound = None
    try:
        names = parse_proxy_username(username)
        if names is not None:
            user, vm = names
        match = _TOKEN.fullmatch(token) if isinstance(token, str) else None
        if match:
            key_id, console, issued, expires = match.group(1), match.group(2), int(match.group(3)), int(match.group(4))
            bound = _field_client(match.group(5))
        if names is None or match is None or not 0 < expires - issued <= TOKEN_TTL_MAX:
            return TokenCheck(TOKEN_MALFORMED, user, vm, key_id, issued, expires, console, bound)
        table = keys.keys if isinstance(keys, ProxyKeys) else keys
        key = table.get(key_id)
        if not HAS_CRYPTOGRAPHY or not isinstance(key, Ed25519PublicKey):
            return TokenCheck(TOKEN_UNKNOWN_KEY, user, vm, key_id, issued, expires, console, bound)
        try:
            key.verify(_unb64(match.group(7)),
                       _signed_message(key_id, console, user, vm, issued, expires, bound, match.group(6)))
        except InvalidSignature:
            return TokenCheck(TOKEN_BAD_SIGNATURE, user, vm, key_id, issued, expires, console, bound)
        now = time.time() if now is None else now
        if issued > now + skew:
            status = TOKEN_NOT_YET_VALID
        elif now >= expires:
            status = TOKEN_EXPIRED
        elif revocations and _revoked(revocations, user, vm, issued):
            status = TOKEN_REVOKED
        elif bound is not None and (client is None or client_address(client) != bound):
            status = TOKEN_WRONG_CLIENT
        else:
            status = TOKEN_OK
        return TokenCheck(status, user, vm, key_id, issued, expires, console, bound)
    except Exception:    # pylint: disable=broad-except  # garbage of any kind is "malformed"
        return TokenCheck(TOKEN_MALFORMED, user, vm, key_id, issued, expires, console, bound)


# --- Token keys: JSON files on the nodes ---------------------------------------------------------
#
# Signing keys (/etc/vmconsole/proxy-signing.json, 0600 root:root): made on the node by the module
# vmconsole.secure.proxy_token_key, never copied anywhere; console_ticket signs with "current":
#   {"current": KID, "pending": KID or null, "retiring": [KID, ...], "promoted": EPOCH,
#    "keys": {KID: "<unpadded base64url of the 32-byte Ed25519 private key>"}}
#   A rotation (connect_proxy_rotate_stage, every node at once) makes a "pending" key (stage 1), makes
#   it current and the old one "retiring" at "promoted" (stage 2), and drops the retiring keys once no
#   token of theirs can be alive (stage 3).
# Public keys (/etc/vmconsole/proxy-keys.json, 0644, the same on every node): every node's keys,
#   current, pending and retiring alike; all of them verify:
#   {"keys": {KID: {"node": NAME, "public": "<unpadded base64url of the 32-byte public key>"}}}
#   squid's helper (user proxy) reads only this file.
# A key id is the start of the SHA-256 of the public key: a file cannot give a key another's id.


class SigningKeys(collections.namedtuple("SigningKeys", "current pending retiring promoted keys")):
    """A node's signing keys file: ``keys`` is {key id: :class:`ProxySigner`}; ``current`` signs, ``pending``
    (or None) is the next one, ``retiring`` the ids still accepted after a switch at ``promoted``."""

    def signer(self):
        """The :class:`ProxySigner` that signs now."""
        return self.keys[self.current]

    def public(self):
        """{key id: unpadded base64url public key} of every key held."""
        return {key_id: public_key_text(signer) for key_id, signer in sorted(self.keys.items())}


def proxy_key_id(public_raw):
    """The id of the key whose raw 32-byte public key is ``public_raw``: 12 hex digits of its SHA-256."""
    return hashlib.sha256(public_raw).hexdigest()[:12]


def _raw_public(public_key):
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_key_text(signer):
    """The unpadded base64url of ``signer``'s raw public key (what the public keys file holds)."""
    return _b64(_raw_public(signer.private.public_key()))


def private_key_text(signer):
    """The unpadded base64url of ``signer``'s raw private key (what the signing keys file holds). A secret."""
    return _b64(signer.private.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                             serialization.NoEncryption()))


def proxy_signer(raw):
    """The :class:`ProxySigner` of the raw 32-byte Ed25519 private key ``raw``."""
    _need_cryptography()
    private = Ed25519PrivateKey.from_private_bytes(raw)
    return ProxySigner(proxy_key_id(_raw_public(private.public_key())), private)


def new_proxy_signer():
    """A fresh Ed25519 signing key as a :class:`ProxySigner`."""
    return proxy_signer(secrets.token_bytes(KEY_BYTES))


def _key_bytes(what, text):
    if not isinstance(text, str) or not re.fullmatch(r"[A-Za-z0-9_-]{43}", text):
        raise ValueError("%s is not 32 bytes of unpadded base64url" % what)
    return _unb64(text)


def _json_object(text, shape):
    try:
        data = json.loads(text)
    except ValueError:
        raise ValueError("not valid JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("keys"), dict):
        raise ValueError("expected %s" % shape)
    return data


def _epoch(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def parse_signing_keys(text):
    """:class:`SigningKeys` from the signing keys file's text; ValueError says what is wrong (never a key)."""
    _need_cryptography()
    data = _json_object(text, '{"current": KEY_ID, "pending": KEY_ID or null, "retiring": [KEY_ID...], '
                              '"promoted": EPOCH, "keys": {KEY_ID: PRIVATE_KEY}}')
    keys = {}
    for key_id, private in data["keys"].items():
        if not (isinstance(key_id, str) and KEY_ID_PATTERN.fullmatch(key_id)):
            raise ValueError("key id %r is not 12 hex digits" % (key_id,))
        signer = proxy_signer(_key_bytes("key %s" % key_id, private))
        if signer.key_id != key_id:
            raise ValueError("key %s is filed under an id that is not its own (%s)" % (key_id, signer.key_id))
        keys[key_id] = signer
    current, pending, retiring, promoted = (data.get("current"), data.get("pending"), data.get("retiring", []),
                                            data.get("promoted", 0))
    if current not in keys:
        raise ValueError("current must name one of the keys (%s)" % (", ".join(sorted(keys)) or "there are none"))
    if pending is not None and (pending not in keys or pending == current):
        raise ValueError("pending must be null or name a key other than the current one")
    if not isinstance(retiring, list) or not all(k in keys and k not in (current, pending) for k in retiring):
        raise ValueError("retiring must list keys that are neither current nor pending")
    if not _epoch(promoted):
        raise ValueError("promoted must be epoch seconds")
    if set(keys) != {current, pending, *retiring} - {None}:
        raise ValueError("every key must be current, pending or retiring")
    return SigningKeys(current, pending, sorted(retiring), promoted, keys)


def dump_signing_keys(signing):
    """The signing keys file's text for a :class:`SigningKeys`. It holds private keys: write it 0600."""
    data = dict(current=signing.current, pending=signing.pending, retiring=sorted(signing.retiring),
                promoted=signing.promoted,
                keys={key_id: private_key_text(signer) for key_id, signer in sorted(signing.keys.items())})
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


_NO_DEFAULT = object()


def _load(path, what, parse, missing=_NO_DEFAULT, limit=1 << 20):
    """``parse(text)`` of the file at ``path`` (``missing`` when there is none, if given); ValueError names ``what``,
    the file and the reason."""
    try:
        with open(path, "r", encoding="utf-8") as f:
            text = f.read(limit)
    except FileNotFoundError as exc:
        if missing is not _NO_DEFAULT:
            return missing
        raise ValueError("%s %s cannot be read: %s" % (what, path, exc.strerror)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError("%s %s cannot be read: %s" % (what, path, getattr(exc, "strerror", None) or exc)) from None
    try:
        return parse(text)
    except ValueError as exc:
        raise ValueError("%s %s: %s" % (what, path, exc)) from None


def load_signing_keys(path):
    """:class:`SigningKeys` from the file at ``path``; ValueError names the file and the reason (never a key)."""
    return _load(path, "proxy token signing keys", parse_signing_keys)


def load_proxy_signer(path):
    """This node's current :class:`ProxySigner`, from the signing keys file at ``path``."""
    return load_signing_keys(path).signer()


def parse_public_keys(text):
    """{key id: {"node": NAME, "public": TEXT}} from the public keys file's text; ValueError when it is not that."""
    data = _json_object(text, '{"keys": {KEY_ID: {"node": NAME, "public": PUBLIC_KEY}}}')
    entries = {}
    for key_id, entry in data["keys"].items():
        if not (isinstance(key_id, str) and KEY_ID_PATTERN.fullmatch(key_id)):
            raise ValueError("key id %r is not 12 hex digits" % (key_id,))
        if not isinstance(entry, dict) or not isinstance(entry.get("node"), str) or not entry["node"]:
            raise ValueError('key %s must be {"node": NAME, "public": PUBLIC_KEY}' % key_id)
        if proxy_key_id(_key_bytes("key %s" % key_id, entry.get("public"))) != key_id:
            raise ValueError("key %s is filed under an id that is not its own" % key_id)
        entries[key_id] = {"node": entry["node"], "public": entry["public"]}
    return entries


def dump_public_keys(entries):
    """The public keys file's text for {key id: {"node": NAME, "public": TEXT}}."""
    return json.dumps({"keys": entries}, indent=2, sort_keys=True) + "\n"


def proxy_keys(entries):
    """:class:`ProxyKeys` from {key id: {"node": NAME, "public": TEXT}} (as from :func:`parse_public_keys`)."""
    _need_cryptography()
    return ProxyKeys({key_id: Ed25519PublicKey.from_public_bytes(_unb64(entry["public"]))
                      for key_id, entry in entries.items()})


def proxy_keys_of(node, *signers):
    """:class:`ProxyKeys` that verify the tokens of ``signers`` (all of node ``node``)."""
    return proxy_keys({signer.key_id: {"node": node, "public": public_key_text(signer)} for signer in signers})


def parse_proxy_keys(text):
    """:class:`ProxyKeys` from the public keys file's text; ValueError says what is wrong."""
    return proxy_keys(parse_public_keys(text))


def load_proxy_keys(path):
    """:class:`ProxyKeys` from the public keys file at ``path``; ValueError names the file and the reason."""
    return _load(path, "proxy token keys", parse_proxy_keys)


def load_public_keys(path):
    """The public keys file's entries (as :func:`parse_public_keys`), {} when there is none; ValueError otherwise."""
    return _load(path, "proxy token keys", parse_public_keys, missing={})


# --- Revocations: a JSON file on the nodes --------------------------------------------------------
#
# Revocations (optional): {"users": {"alice": 1767225630}, "vms": {"web1": 1767225630},
#   "pairs": {"alice__web1": 1767225630}}: tokens of that user (for that VM, of that user for that VM)
#   issued at or before that epoch second are refused.


REVOCATION_KINDS = ("users", "vms", "pairs")


def parse_revocations(text):
    """{"users": {user: epoch}, "vms": {vm: epoch}, "pairs": {user__vm: epoch}} from JSON text; ValueError when
    it is not that. "pairs" is optional (files written before it existed have none); its keys are proxy
    usernames (:func:`proxy_username`), one person's access to one VM."""
    try:
        data = json.loads(text) if text.strip() else {}
    except ValueError:
        raise ValueError("not valid JSON") from None
    if not isinstance(data, dict):
        raise ValueError('expected {"users": {USER: EPOCH}, "vms": {VM: EPOCH}, "pairs": {USER__VM: EPOCH}}')
    result = {}
    for kind in REVOCATION_KINDS:
        table = data.get(kind, {})
        if not isinstance(table, dict) or not all(
                isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) for k, v in table.items()):
            raise ValueError("%s must map names to epoch seconds" % kind)
        if kind == "pairs" and not all(parse_proxy_username(k) for k in table):
            raise ValueError("pairs must map proxy usernames (USER__VM) to epoch seconds")
        result[kind] = dict(table)
    return result


def load_revocations(path):
    """Revocations from ``path``; a missing file is an empty list. ValueError for anything else wrong."""
    return _load(path, "revocations", parse_revocations, missing={kind: {} for kind in REVOCATION_KINDS}, limit=16 << 20)


def _revoked(revocations, user, vm, issued):
    pairs = revocations.get("pairs")          # the pair's username only when there are pairs (every CONNECT asks)
    for since in ((revocations.get("users") or {}).get(user), (revocations.get("vms") or {}).get(vm),
                  pairs.get(proxy_username(user, vm)) if pairs else None):
        if since is not None and issued <= since:
            return True
    return False


# --- Writing revocations (vmconsole.secure.console_session) ---------------------------------
#
# An entry {name: SINCE} refuses the tokens of that user (or for that VM) issued at or before SINCE.
# Such a token expires at the latest TOKEN_TTL_MAX seconds after SINCE (verify_proxy_token refuses a
# longer lifetime as malformed), so from SINCE + TOKEN_TTL_MAX on the entry refuses nothing that
# is not expired anyway and can go: the file holds at most one entry per name, for at most a week.

def revocation_expired(since, now=None):
    """True when every token an entry ``since`` could refuse has expired on its own."""
    return since + TOKEN_TTL_MAX <= int(time.time() if now is None else now)


def add_revocation(revocations, kind, name, since, now=None):
    """Refuse the tokens of ``name`` issued at or before ``since``: a user (``kind`` "users"), a VM ("vms"), or
    one user's tokens for one VM ("pairs", ``name`` the proxy username ``user__vm``).

    Changes ``revocations`` (as from :func:`parse_revocations`) in place; returns True when it
    refuses more than before. An entry never moves back in time, and a ``since`` so old that the
    tokens it would refuse have all expired adds nothing.
    """
    if kind not in REVOCATION_KINDS:
        raise ValueError("kind must be one of %s, got %r" % (", ".join(REVOCATION_KINDS), kind))
    if isinstance(since, bool) or not isinstance(since, int):
        raise ValueError("since must be epoch seconds (an int)")
    if kind == "users":
        check_proxy_user(name)
    elif kind == "vms":
        check_vm_name(name)
    elif not isinstance(name, str) or parse_proxy_username(name) is None:
        raise ValueError("a pair is a proxy username USER__VM, got %r" % (name,))
    table = revocations.setdefault(kind, {})
    if revocation_expired(since, now) or table.get(name, since - 1) >= since:
        return False
    table[name] = since
    return True


def prune_revocations(revocations, now=None):
    """Drop the entries that refuse nothing any more (see :func:`revocation_expired`), in place.

    Returns the dropped entries as {"users": {...}, "vms": {...}, "pairs": {...}}.
    """
    dropped = {}
    for kind in REVOCATION_KINDS:
        table = revocations.setdefault(kind, {})
        dropped[kind] = {name: since for name, since in table.items() if revocation_expired(since, now)}
        for name in dropped[kind]:
            del table[name]
    return dropped


def dump_revocations(revocations):
    """The revocations file's text: stable (sorted, one entry a line) so that diffs stay readable."""
    data = {kind: dict(sorted(revocations.get(kind, {}).items())) for kind in REVOCATION_KINDS}
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
