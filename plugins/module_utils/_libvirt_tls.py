# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The decisions of the ``libvirt_tls`` role: its input checks, the socket units' state, and
which SASL users to set or remove (private; filters libvirt_tls_plan and libvirt_tls_sasl_plan).

``settings`` holds the role's variables keyed by name, plus the private ``__libvirt_tls_qemu_settings``
(the qemu.conf settings the role owns). No message holds a password.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import string

from ansible_collections.vmconsole.secure.plugins.module_utils._values import is_list as _is_list, text as _text, to_bool

AUTHS = ("none", "sasl")
USER_STATES = ("present", "absent")
_DN = re.compile(r'^[A-Za-z*][A-Za-z0-9.*-]*=[^"\n]*$')
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
_SETTING = re.compile(r"^[a-z][a-z0-9_]*$")
_SALT_ALPHABET = string.ascii_letters + string.digits


def _users_errors(var, users):
    if not _is_list(users):
        return ["%s must be a list of {name, password, state}" % var]
    out = []
    for user in users:
        name = user.get("name", "") if isinstance(user, dict) else ""
        if not isinstance(name, str) or not _NAME.match(name):
            shown = _text(user.get("name", "?")) if isinstance(user, dict) else "?"
            out.append("%s has an entry without a valid name (1-64 letters, digits, _ . @ -): %s" % (var, shown))
        elif user.get("state", "present") not in USER_STATES:
            out.append("%s user '%s' has state '%s': it must be present or absent" % (var, name, _text(user["state"])))
        elif user.get("state", "present") == "present" and not (isinstance(user.get("password", ""), str)
                                                                and user.get("password", "")):
            out.append("%s user '%s' has no password (a non-empty string)" % (var, name))
    names = [user.get("name", "") for user in users if isinstance(user, dict)]
    if len(set(map(_text, names))) != len(names):
        out.append("%s names a user more than once" % var)
    return out


def _setting_errors(extra, owned):
    if not isinstance(extra, dict):
        return ["libvirt_tls_qemu_extra_settings must be a mapping of qemu.conf setting names to values"]
    out = []
    for key, value in extra.items():
        if not isinstance(key, str) or not _SETTING.match(key):
            out.append("libvirt_tls_qemu_extra_settings has '%s', which is not a qemu.conf setting name" % _text(key))
        elif key in owned:
            out.append("libvirt_tls_qemu_extra_settings sets '%s', which the role owns (console listeners and TLS); "
                       "use the role's variables" % key)
        elif not (isinstance(value, (str, int, float, bool))
                  or (_is_list(value) and all(isinstance(v, str) for v in value))):
            out.append("libvirt_tls_qemu_extra_settings.%s must be a string, number, boolean or list of strings" % key)
        elif isinstance(value, str) and ('"' in value or "\n" in value):
            out.append("libvirt_tls_qemu_extra_settings.%s contains a double quote or newline" % key)
    return out


def input_errors(s):
    """What is wrong with the role's input; each message names the variable."""
    out = []
    auth, enabled = s["libvirt_tls_auth"], to_bool(s["libvirt_tls_enabled"])
    if auth not in AUTHS:
        out.append("libvirt_tls_auth is '%s': it must be none (the client certificate alone) or sasl (the certificate,"
                   " then a SASL user)" % _text(auth))
    dns = s["libvirt_tls_allowed_dn_list"]
    if not _is_list(dns):
        out.append("libvirt_tls_allowed_dn_list must be a list of distinguished names")
    else:
        if enabled and not dns:
            out.append("libvirt_tls_allowed_dn_list is empty while libvirt_tls_enabled is true: libvirtd would refuse"
                       " every client certificate and lock everyone out. List the client subjects to admit,"
                       ' e.g. "O=vmconsole.secure,CN=admin"')
        for dn in dns:
            if not isinstance(dn, str) or not _DN.match(dn):
                out.append("libvirt_tls_allowed_dn_list contains '%s', which is not a distinguished name such as"
                           " 'O=vmconsole.secure,CN=admin' (KEY=value pairs joined by ',', no double quote or newline)"
                           % _text(dn))
    for var in ("libvirt_tls_vnc_sasl_users", "libvirt_tls_sasl_users"):
        out.extend(_users_errors(var, s[var]))
    users = s["libvirt_tls_sasl_users"]
    if auth == "sasl" and enabled and _is_list(users) and not [
            u for u in users if isinstance(u, dict) and u.get("state", "present") == "present"]:
        out.append("libvirt_tls_auth is sasl but libvirt_tls_sasl_users has no present user: every client would be "
                   "locked out")
    out.extend(_setting_errors(s["libvirt_tls_qemu_extra_settings"], s["__libvirt_tls_qemu_settings"]))
    return out


def host_errors(s, missing_pki, pki_dry_run):
    """The input's errors and the pki files this host lacks (``pki_dry_run``: a dry run right
    after a dry run of the pki role, which cannot have made them yet)."""
    out = input_errors(s)
    if missing_pki and not pki_dry_run:
        out.append("%s missing: run vmconsole.secure.pki first (it installs the CA, certificate and key libvirtd uses)"
                   % ", ".join(missing_pki))
    return out


def units(show_output):
    """``systemctl show`` of several units, by unit: ``{Id: {property: value}}``."""
    out = {}
    for block in (show_output or "").split("\n\n"):
        props = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        if "Id" in props:
            out[props["Id"]] = props
    return out


def password_record(salt, password):
    """What the role keeps of a password it set: ``salt$sha512(salt + password)``."""
    return "%s$%s" % (salt, hashlib.sha512((salt + password).encode("utf-8")).hexdigest())


def new_salt():
    return "".join(secrets.choice(_SALT_ALPHABET) for dummy in range(16))


def sasl_plan(users, probe_output, salt=new_salt):
    """Which users of a realm to set (new, or the password changed) and to remove, and the
    records to keep: ``{db, set, remove, hashes}``. ``probe_output``: ``db`` or ``none``, the
    users in the sasldb (one line), the records kept last time (JSON)."""
    lines = (probe_output or "").split("\n", 2)
    in_db = lines[1].split() if len(lines) > 1 else []
    try:
        known = json.loads(lines[2]) if len(lines) > 2 and lines[2].strip() else {}
    except ValueError:
        known = {}
    if not isinstance(known, dict):
        known = {}
    plan = {"db": lines[0] == "db", "set": [], "remove": [], "hashes": {}}
    listed = [user["name"] for user in users]
    for user in users:
        name = user["name"]
        if user.get("state", "present") == "present":
            old = known.get(name, "")
            record = password_record(old.split("$")[0] if "$" in old else salt(), user["password"])
            if record != old or name not in in_db:
                plan["set"].append(name)
            plan["hashes"][name] = record
        elif name in in_db:
            plan["remove"].append(name)
    for name, old in known.items():
        if name not in plan["hashes"] and name in in_db and name not in listed:
            plan["hashes"][name] = old
    return plan
