# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Tests ``ip_address``, ``ip_network`` and ``host_name``: the collection's one address check.

The documentation of each test is in the ``.yml`` file of its name next to this file; the
logic is in ``module_utils/_addresses.py``.
"""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.vmconsole.secure.plugins.module_utils._addresses import (
    is_host_name, is_ip_address, is_ip_network,
)


def ip_address(value):
    """Whether the value is one IPv4 or IPv6 address (see ip_address.yml)."""
    return is_ip_address(value)


def ip_network(value, prefix="required"):
    """Whether the value is a network in CIDR form (see ip_network.yml)."""
    try:
        return is_ip_network(value, prefix)
    except ValueError as exc:
        raise AnsibleFilterError("ip_network: %s" % exc) from None


def host_name(value):
    """Whether the value is a DNS host name (see host_name.yml)."""
    return is_host_name(value)


class TestModule:
    """IP addresses, networks and host names."""

    def tests(self):
        return {
            "ip_address": ip_address,
            "ip_network": ip_network,
            "host_name": host_name,
        }
