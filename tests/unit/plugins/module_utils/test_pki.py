# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""module_utils/_pki.py and the filters pki_days_errors, pki_sans and pki_outdated."""

from __future__ import annotations

import pytest

from ansible_collections.vmconsole.secure.plugins.filter import pki as filters


@pytest.mark.parametrize("days, expect", [
    ((3650, 365, 30), []),
    ((0, 365, 30), ["pki_ca_days is 0: the CA must be valid for at least one day.",
                    "pki_cert_days (365) is longer than pki_ca_days (0): a certificate cannot outlive the CA that "
                    "signs it."]),
    (("ten", 365, 30), ["pki_ca_days is ten: the CA must be valid for at least one day.",
                        "pki_cert_days (365) is longer than pki_ca_days (ten): a certificate cannot outlive the CA "
                        "that signs it."]),
    ((3650, -1, 30), ["pki_cert_days is -1: a certificate must be valid for at least one day."]),
    ((100, 365, 30), ["pki_cert_days (365) is longer than pki_ca_days (100): a certificate cannot outlive the CA that "
                      "signs it."]),
    ((3650, 365, 0), ["pki_renew_days is 0: renewal needs a margin of at least one day."]),
    ((3650, 365, 365), ["pki_renew_days (365) must be smaller than pki_cert_days (365): otherwise every run re-issues "
                        "every certificate."]),
    ((3650, "365", "30.0"), []),
])
def test_days(days, expect):
    assert filters.pki_days_errors(*days) == expect


def test_sans():
    found = filters.pki_sans([
        {"var": "inventory_hostname", "values": ["hv1"]},
        {"var": "vmconsole_cluster_address", "values": ["10.0.0.1", None, " ", "::ffff:10.0.0.1"]},
        {"var": "pki_extra_sans", "values": ["DNS:console.example.org", "ip:192.0.2.7", "*.example.org", "IP:hv1",
                                             "DNS:10.0.0.9", "bad name", "10.0.0", "fe80::1%eth0", 42]},
    ])
    assert [(f["var"], f["value"], f["san"]) for f in found] == [
        ("inventory_hostname", "hv1", "DNS:hv1"),
        ("vmconsole_cluster_address", "10.0.0.1", "IP:10.0.0.1"),
        ("vmconsole_cluster_address", "::ffff:10.0.0.1", "IP:::ffff:10.0.0.1"),
        ("pki_extra_sans", "DNS:console.example.org", "DNS:console.example.org"),
        ("pki_extra_sans", "ip:192.0.2.7", "IP:192.0.2.7"),
        ("pki_extra_sans", "*.example.org", "DNS:*.example.org"),
        ("pki_extra_sans", "IP:hv1", ""),            # says IP, is a name
        ("pki_extra_sans", "DNS:10.0.0.9", ""),      # says DNS, is an address
        ("pki_extra_sans", "bad name", ""),
        ("pki_extra_sans", "10.0.0", ""),            # digits and dots: neither
        ("pki_extra_sans", "fe80::1%eth0", ""),      # a zone is not part of an address in a certificate
        ("pki_extra_sans", "42", ""),
    ]


ATTRS = {"cert": {"mode": "0644", "owner": "root", "group": "root"},
         "key": {"mode": "0640", "owner": "root", "group": "libvirt-qemu"}}


def test_outdated():
    files = [{"kind": "cert", "path": "/a/cert.pem"}, {"kind": "key", "path": "/a/key.pem"},
             {"kind": "cert", "path": "/b/cert.pem"}]
    installed = {"/a/cert.pem": dict(ATTRS["cert"], sha256="c1"), "/a/key.pem": dict(ATTRS["key"], sha256="k1"),
                 "/b/cert.pem": dict(ATTRS["cert"], sha256="c1", mode="0600")}
    assert filters.pki_outdated(files, installed, ATTRS, {"cert": "c1", "key": "k1"}) == ["/b/cert.pem"]
    assert filters.pki_outdated(files, installed, ATTRS, {"cert": "c2", "key": "k1"}) == ["/a/cert.pem", "/b/cert.pem"]
    # A key made in this run: its SHA-256 is not known yet, so it is written.
    assert filters.pki_outdated(files[1:2], installed, ATTRS, {"cert": "c1", "key": None}) == ["/a/key.pem"]
    assert filters.pki_outdated(files[:1], {}, ATTRS, {"cert": "c1", "key": "k1"}) == ["/a/cert.pem"]


def test_host_errors():
    checked = filters.pki_sans([{"var": "pki_extra_sans", "values": ["ok.example", "bad name"]}])
    assert filters.pki_host_errors(checked, "", {}) == [
        "pki_extra_sans contains 'bad name', which is neither a DNS name nor an IP address"]
    assert filters.pki_host_errors(checked[:1], "libvirt-qemu", {"libvirt-qemu": None}) == [
        "pki_key_group is 'libvirt-qemu', but the host has no such group"]
    assert filters.pki_host_errors(checked[:1], "libvirt-qemu", {"libvirt-qemu": ["x", "64055", ""]}) == []
