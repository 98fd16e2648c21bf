# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The collection's one check of IP addresses, networks and host names (Python's ``ipaddress``).

Private to this collection. The roles reach it through the tests ``vmconsole.secure.ip_address``,
``vmconsole.secure.ip_network`` and ``vmconsole.secure.host_name``. What they accept is what
squid's ACLs, iptables/nftables and X.509 subjectAltNames take: every IPv4 and IPv6 address form
``ipaddress`` knows (IPv4-mapped ``::ffff:10.0.0.1`` and NAT64 ``64:ff9b::192.0.2.1`` included),
without an IPv6 zone (``fe80::1%eth0`` is a link-local address of one interface: none of those
take it), and without leading zeros in IPv4 (``010.0.0.1``: octal to some parsers).
"""

from __future__ import annotations

import ipaddress
import re

# A DNS host name: labels of letters, digits and '-', not starting or ending with '-' (what
# squid's dstdomain and the proxy helper compare), at most 253 characters.
_HOST_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?([.][A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\Z")
_ALL_DIGITS = re.compile(r"[0-9.]+\Z")


def ip_address(value):
    """The address of ``value`` (an ``ipaddress`` object); ValueError unless one IP address."""
    if not isinstance(value, str) or "%" in value or "/" in value:
        raise ValueError("not an IP address: %r" % (value,))
    return ipaddress.ip_address(value)


def ip_network(value, prefix="required"):
    """The network of ``value``: ``address/prefix`` (host bits may be set, as iptables and squid
    allow); with ``prefix='optional'`` also a single address. ValueError otherwise."""
    if prefix not in ("required", "optional"):
        raise ValueError("prefix must be 'required' or 'optional', not %r" % (prefix,))
    if not isinstance(value, str):
        raise ValueError("not a network: %r" % (value,))
    address, sep, length = value.partition("/")
    if not sep and prefix == "required":
        raise ValueError("not a network in CIDR form: %r" % (value,))
    ip_address(address)
    if sep and not (length.isdigit() and length == str(int(length))):
        raise ValueError("not a prefix length: %r" % (value,))
    return ipaddress.ip_network(value, strict=False)


def is_ip_address(value):
    try:
        ip_address(value)
    except ValueError:
        return False
    return True


def is_ip_network(value, prefix="required"):
    try:
        ip_network(value, prefix)
    except ValueError as exc:
        if str(exc).startswith("prefix must be"):
            raise
        return False
    return True


def is_host_name(value):
    """A DNS host name that is not an IP address (nor all digits and dots, which resolvers
    may read as one)."""
    return (isinstance(value, str) and len(value) <= 253 and bool(_HOST_NAME.match(value))
            and not _ALL_DIGITS.match(value))
