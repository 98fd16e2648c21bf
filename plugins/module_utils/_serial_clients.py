# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Who may open a guest's serial console: QEMU's TLS authorization list (private).

Stdlib only and no Ansible imports. The serial chardev of a qemu_vm guest checks the client
certificate against the cluster CA (``verify-peer=on``) and then asks the ``authz-list`` object
:data:`AUTHZ_ID` (``tls-authz=`` of the chardev) whether the certificate's subject may connect.
The list denies by default; each listed identity is an ``allow`` rule with ``format: exact``.

What QEMU compares (QEMU 7.2, ``crypto/tlssession.c``): the client certificate's distinguished
name from GnuTLS's ``gnutls_x509_crt_get_dn``: attributes in the certificate's own order (not
RFC 4514's reverse), joined by ``,`` without spaces, special characters escaped with ``\\`` as
RFC 4514 writes them. The pki role's client certificates (``playbooks/client_cert.yml``) are
``O=<pki_organization>,CN=<name>``, e.g. ``O=vmconsole.secure,CN=alice``; its host
certificates ``O=<pki_organization>,CN=<inventory_hostname>``, so a host is admitted only when
it is listed. QEMU checks the list only while ``verify-peer=on``.

QEMU looks the object up by its id at every TLS handshake (``qauthz_is_allowed_by_id``) and its
``rules`` property can be read and replaced over QMP (``qom-get``/``qom-set``, one step: no
moment without a list), so :func:`apply_identities` changes who may connect to a running
guest without restarting it; sessions already open stay open. A guest's next start takes the
list from its command line: :func:`authz_object_json` is the ``-object`` argument.
"""

from __future__ import annotations

import json
import re

from ansible_collections.vmconsole.secure.plugins.module_utils._qmp import QMPCommandError

AUTHZ_ID = "vmconsole-serial-authz"
#: The environment variable of a guest's unit that holds the ``-object`` argument (qemu_vm).
AUTHZ_ENV = "VMCONSOLE_SERIAL_AUTHZ"
MAX_IDENTITY = 1024

# RFC 4514 attribute type: a descriptor or a dotted OID.
_TYPE = re.compile(r"[A-Za-z][A-Za-z0-9-]*|[0-9]+(?:\.[0-9]+)+")
# Characters GnuTLS always escapes inside a value (RFC 4514 section 2.4), besides a leading
# '#' or space and a trailing space.
_SPECIAL = '"+,;<>\\'
_ESCAPABLE = ' "#+,;<=>\\'
_HEX = "0123456789abcdefABCDEF"
_HEX_VALUE = re.compile(r"#(?:[0-9A-Fa-f]{2})+")


def _value_error(value):
    """Why ``value`` (one attribute value, escapes included) cannot be what GnuTLS prints, or None."""
    if not value:
        return "a value is empty"
    if _HEX_VALUE.fullmatch(value):     # a value that is not a string: '#' and the hex of its DER
        return None
    if value[0] in " #":
        return "a value starts with %r: GnuTLS writes it as '\\%s'" % (value[0], value[0])
    if value[-1] == " " and not value.endswith("\\ "):
        return "a value ends with a space: GnuTLS writes a trailing space as '\\ '"
    i = 0
    while i < len(value):
        char = value[i]
        if char == "\\":
            pair = value[i + 1:i + 3]
            if value[i + 1:i + 2] and value[i + 1] in _ESCAPABLE:
                i += 2
                continue
            if len(pair) == 2 and all(c in _HEX for c in pair):
                i += 3
                continue
            return "'\\' is followed by %r: an escape is '\\' and one of %s or two hex digits" % (
                value[i + 1:i + 2] or "nothing", _ESCAPABLE)
        if char in _SPECIAL:
            return "%r inside a value must be escaped as '\\%s' (GnuTLS escapes it)" % (char, char)
        i += 1
    return None


def _split(text, separators):
    """``text`` cut at every unescaped character of ``separators``."""
    parts, current, i = [], "", 0
    while i < len(text):
        char = text[i]
        if char == "\\" and i + 1 < len(text):
            current += text[i:i + 2]
            i += 2
            continue
        if char in separators:
            parts.append(current)
            current = ""
        else:
            current += char
        i += 1
    parts.append(current)
    return parts


def identity_error(identity):
    """Why ``identity`` can never equal a certificate subject as QEMU compares it, or None.

    A valid identity is ``TYPE=value`` pairs joined by ``,`` (``+`` inside a multi-valued RDN),
    no space around the separators, RFC 4514 escapes inside values, no control characters.
    """
    if not isinstance(identity, str):
        return "it is a %s, not a string" % type(identity).__name__
    if not identity:
        return "it is empty"
    if len(identity) > MAX_IDENTITY:
        return "it is longer than %d characters" % MAX_IDENTITY
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in identity):
        return "it contains a control character (newline, tab, ...)"
    for rdn in _split(identity, ","):
        for pair in _split(rdn, "+"):
            name, sep, value = pair.partition("=")
            if not sep:
                return "%r is not TYPE=value" % pair
            if not _TYPE.fullmatch(name):
                if name.strip() != name:
                    return "%r has a space around the attribute name (GnuTLS writes none after ',')" % pair
                return "%r is not an attribute name such as O, OU, CN or a dotted OID" % name
            reason = _value_error(value)
            if reason:
                return "in %r, %s" % (pair, reason)
    return None


def identities_errors(var, identities):
    """What is wrong with the list ``identities``; each message names ``var`` (and the index)."""
    if not isinstance(identities, (list, tuple)):
        return ["%s must be a list of client certificate subjects (e.g. 'O=vmconsole.secure,CN=alice'), not %s"
                % (var, type(identities).__name__)]
    out, seen = [], {}
    for index, identity in enumerate(identities):
        at = "%s[%d]" % (var, index)
        reason = identity_error(identity)
        if reason:
            shown = identity if isinstance(identity, str) else repr(identity)
            out.append("%s %s is not a client certificate subject as QEMU compares it: %s. Write it as GnuTLS "
                       "prints it, in the certificate's order, e.g. 'O=vmconsole.secure,CN=alice'"
                       % (at, json.dumps(shown)[:200], reason))
        elif identity in seen:
            out.append("%s %s is also %s" % (at, json.dumps(identity), seen[identity]))
        else:
            seen[identity] = at
    return out


def authz_rules(identities):
    """The ``rules`` of the list: one exact ``allow`` rule per identity, in order."""
    return [{"match": identity, "policy": "allow", "format": "exact"} for identity in identities]


def authz_object(identities):
    """The ``authz-list`` object (QMP ``object-add`` arguments, ``-object`` JSON): deny unless listed."""
    return {"qom-type": "authz-list", "id": AUTHZ_ID, "policy": "deny", "rules": authz_rules(identities)}


def authz_object_json(identities):
    """The ``-object`` argument of QEMU's command line (JSON, one line, UTF-8 kept)."""
    return json.dumps(authz_object(identities), separators=(",", ":"), ensure_ascii=False)


def systemd_environment(name, value):
    """An ``Environment=`` value that sets ``name`` to exactly ``value`` (a quoted word).

    systemd unquotes the word and undoes C escapes (``\\\\``, ``\\"``), then expands specifiers
    (``%`` is written ``%%``); ``$`` has no meaning there. ``${NAME}`` as a word of its own in
    ``ExecStart=`` then gives QEMU exactly ``value``, spaces included, as one argument.
    """
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise ValueError("an environment value must not hold control characters")
    text = "%s=%s" % (name, value)
    for old, new in (("\\", "\\\\"), ('"', '\\"'), ("%", "%%")):
        text = text.replace(old, new)
    return '"%s"' % text


def _unescape(value):
    out, i = bytearray(), 0
    while i < len(value):
        pair = value[i + 1:i + 3]
        if value[i] == "\\" and len(pair) == 2 and all(c in _HEX for c in pair):
            out.append(int(value[i + 1:i + 3], 16))
            i += 3
        elif value[i] == "\\" and i + 1 < len(value):
            out += value[i + 1].encode("utf-8")
            i += 2
        else:
            out += value[i].encode("utf-8")
            i += 1
    return out.decode("utf-8", "replace")


def common_names(identity):
    """The CN values of ``identity`` (a subject as QEMU compares it), escapes undone."""
    names = []
    for part in _split(identity, ",+"):
        kind, sep, value = part.partition("=")
        if sep and kind.strip().upper() in ("CN", "2.5.4.3"):
            names.append(_unescape(value))
    return names


def identities_from_rules(rules):
    """The identities of ``rules`` (as ``qom-get`` returns them) when every rule is one this
    module writes (exact, allow); None otherwise."""
    if not isinstance(rules, list):
        return None
    out = []
    for rule in rules:
        if not isinstance(rule, dict) or rule.get("policy") != "allow" or rule.get("format", "exact") != "exact" \
                or not isinstance(rule.get("match"), str):
            return None
        out.append(rule["match"])
    return out


class AuthzMissing(Exception):
    """The running guest has no object :data:`AUTHZ_ID` (it started without a client list)."""


def apply_identities(qmp, identities, check_mode=False):
    """Make the running guest behind ``qmp`` (a connected ``QMPClient``) admit exactly ``identities``.

    Reads ``policy`` and ``rules`` of :data:`AUTHZ_ID` and replaces what differs (``qom-set``),
    unless ``check_mode``. Returns ``{'changed': bool, 'before': [...] or None, 'after': [...]}``
    (``before`` None: the rules were not all this module's). Raises :class:`AuthzMissing` when
    the object does not exist, ``QMPError`` for any other QMP failure.
    """
    try:
        policy = qmp.execute("qom-get", {"path": "/objects/" + AUTHZ_ID, "property": "policy"})
    except QMPCommandError as exc:
        if exc.error_class == "DeviceNotFound" or "not found" in (exc.desc or ""):
            raise AuthzMissing(exc.desc or str(exc)) from None
        raise
    rules = qmp.execute("qom-get", {"path": "/objects/" + AUTHZ_ID, "property": "rules"})
    want = authz_rules(identities)
    before = identities_from_rules(rules)
    changed = policy != "deny" or before != list(identities)
    if changed and not check_mode:
        # Rules first: while they are set, the default policy still denies everyone not listed.
        if before != list(identities):
            qmp.execute("qom-set", {"path": "/objects/" + AUTHZ_ID, "property": "rules", "value": want})
        if policy != "deny":
            qmp.execute("qom-set", {"path": "/objects/" + AUTHZ_ID, "property": "policy", "value": "deny"})
    return {"changed": changed, "before": before, "after": list(identities)}
