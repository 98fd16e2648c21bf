# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""module_utils/_addresses.py through the test plugins ip_address, ip_network and host_name: the one address
check of connect_proxy, console_firewall and pki. Before it, each role had its own regexes and
they disagreed: connect_proxy refused ::ffff:10.0.0.1 and 64:ff9b::192.0.2.1, the others took them.
"""

from __future__ import annotations

import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.vmconsole.secure.plugins.test import addresses

TESTS = addresses.TestModule().tests()
ip_address, ip_network, host_name = TESTS["ip_address"], TESTS["ip_network"], TESTS["host_name"]

ADDRESSES = ["192.0.2.1", "0.0.0.0", "255.255.255.255", "::", "::1", "2001:db8::1", "fe80::1",
             "2001:DB8:0:0:0:0:0:1", "::ffff:10.0.0.1", "::ffff:0:10.0.0.1", "64:ff9b::192.0.2.1",
             "1:2:3:4:5:6:7:8", "1::", "::2:3:4:5:6:7:8"]
NOT_ADDRESSES = ["", " 192.0.2.1", "192.0.2.1 ", "192.0.2", "192.0.2.256", "010.0.0.1", "1.2.3.4.5",
                 "fe80::1%eth0", "fe80::1%25eth0", "1:2:3:4:5:6:7:8:9", "1::2::3", ":::", "2001:db8::g",
                 "[::1]", "hv1", "localhost", None, 3232235521, True, ["192.0.2.1"], {"a": 1}]


@pytest.mark.parametrize("value", ADDRESSES)
def test_addresses(value):
    assert ip_address(value) is True
    assert ip_network(value, prefix="optional") is True
    assert ip_network(value) is False
    assert host_name(value) is False


@pytest.mark.parametrize("value", NOT_ADDRESSES)
def test_not_addresses(value):
    assert ip_address(value) is False
    assert ip_network(value, prefix="optional") is False


NETWORKS = ["192.0.2.0/24", "192.0.2.1/24", "0.0.0.0/0", "10.0.0.1/32", "::/0", "2001:db8::/64", "::1/128",
            "::ffff:10.0.0.0/104", "64:ff9b::/96", "64:ff9b::192.0.2.1/128"]
NOT_NETWORKS = ["192.0.2.0/33", "192.0.2.0/-1", "192.0.2.0/", "192.0.2.0/24/1", "192.0.2.0/024", "192.0.2.0/+8",
                "192.0.2.0/255.255.255.0", "2001:db8::/129", "fe80::%eth0/64", "hv1/24", "/24", 24]


def test_an_address_with_a_prefix_is_a_network_not_an_address():
    assert ip_address("192.0.2.1/32") is False
    assert ip_network("192.0.2.1/32") is True


@pytest.mark.parametrize("value", NETWORKS)
def test_networks(value):
    assert ip_network(value) is True
    assert ip_network(value, prefix="optional") is True
    assert ip_address(value) is False


@pytest.mark.parametrize("value", NOT_NETWORKS)
def test_not_networks(value):
    assert ip_network(value) is False
    assert ip_network(value, prefix="optional") is False


def test_a_wrong_prefix_choice_is_an_error():
    with pytest.raises(AnsibleFilterError, match="prefix must be 'required' or 'optional', not 'maybe'"):
        ip_network("10.0.0.0/8", prefix="maybe")


@pytest.mark.parametrize("value", ["hv1", "hv1.example.org", "a", "a-b.c-d", "x" * 63 + ".org", "1a.example",
                                   "HV1.Example.ORG", ".".join(["a" * 63] * 3) + "." + "b" * 61])
def test_host_names(value):
    assert len(value) <= 253
    assert host_name(value) is True


@pytest.mark.parametrize("value", ["", "-hv1", "hv1-", "hv_1", "hv1..org", ".hv1", "hv1.", "x" * 64 + ".org",
                                   "10.0.0", "1234", "hv 1", "hv1\n", "*.example.org", "ä.example",
                                   ".".join(["a" * 63] * 4), None, 1, ["hv1"]])
def test_not_host_names(value):
    assert host_name(value) is False
