# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The decisions of the ``pki`` role: validity periods, the subjectAltNames of a host, and the
installed files that differ from what they must be (private; filters pki_days_errors, pki_sans
and pki_outdated). The certificate subject is ``_subject.py``'s."""

from __future__ import annotations

import re

from ansible_collections.vmconsole.secure.plugins.module_utils._addresses import is_host_name, is_ip_address
from ansible_collections.vmconsole.secure.plugins.module_utils._values import to_int as _int

_TYPED = re.compile(r"^(DNS|IP):", re.IGNORECASE)


def days_errors(ca_days, cert_days, renew_days):
    """What is wrong with the validity periods."""
    ca, cert, renew = _int(ca_days), _int(cert_days), _int(renew_days)
    out = []
    if ca <= 0:
        out.append("pki_ca_days is %s: the CA must be valid for at least one day." % ca_days)
    if cert <= 0:
        out.append("pki_cert_days is %s: a certificate must be valid for at least one day." % cert_days)
    elif cert > ca:
        out.append("pki_cert_days (%s) is longer than pki_ca_days (%s): a certificate cannot outlive the CA that signs "
                   "it." % (cert_days, ca_days))
    if renew <= 0:
        out.append("pki_renew_days is %s: renewal needs a margin of at least one day." % renew_days)
    elif cert > 0 and renew >= cert:
        out.append("pki_renew_days (%s) must be smaller than pki_cert_days (%s): otherwise every run re-issues every "
                   "certificate." % (renew_days, cert_days))
    return out


def san_kind(value):
    """``IP`` or ``DNS`` (a host name, or ``*.`` and one), or '' when the value is neither."""
    if is_ip_address(value):
        return "IP"
    if is_host_name(value) or (value.startswith("*.") and is_host_name(value[2:])):
        return "DNS"
    return ""


def sans(candidates):
    """Each candidate value classified: ``{var, value, san}`` with san ``DNS:x``/``IP:x``, or ''
    when the value is neither (or not the kind it says it is: ``DNS:``/``IP:`` prefixes)."""
    out = []
    for source in candidates:
        for raw in source["values"] or []:
            if raw is None or not str(raw).strip():
                continue
            value = str(raw).strip()
            wanted = ""
            if _TYPED.match(value):
                wanted, value = value.split(":", 1)
                wanted = wanted.upper()
            kind = san_kind(value)
            if wanted and kind != wanted:
                kind = ""
            out.append({"var": source["var"], "value": str(raw), "san": "%s:%s" % (kind, value) if kind else ""})
    return out


def host_errors(checked, key_group, groups):
    """The subjectAltNames that are neither a DNS name nor an IP address, and a key group the host
    lacks (``groups``: getent's answer, a group it does not have maps to None)."""
    out = ["%s contains '%s', which is neither a DNS name nor an IP address" % (bad["var"], bad["value"])
           for bad in checked if not bad["san"]]
    if key_group and (groups or {}).get(key_group) is None:
        out.append("pki_key_group is '%s', but the host has no such group" % key_group)
    return out


def outdated(files, installed, wanted_attrs, wanted_sha256):
    """The paths of ``files`` (``{kind, path}``) whose content, mode, owner or group differ from
    what their kind must have; a kind whose SHA-256 cannot be known yet (None) always differs."""
    out = []
    for file in files:
        have = installed.get(file["path"]) or {}
        want = wanted_attrs[file["kind"]]
        sha = wanted_sha256[file["kind"]]
        if (sha is None or have.get("sha256", "") != sha or have.get("mode", "") != want["mode"]
                or have.get("owner", "") != want["owner"] or have.get("group", "") != want["group"]):
            out.append(file["path"])
    return out
