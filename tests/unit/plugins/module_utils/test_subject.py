# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import ctypes
import ctypes.util
import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import NameOID, ObjectIdentifier

from ansible_collections.vmconsole.secure.plugins.module_utils._subject import (
    parse_subject, subject_from_der, subject_from_pem, subject_matches,
)

_KEY = ec.generate_private_key(ec.SECP256R1())


def cert_der(name):
    """A self-signed certificate with subject ``name`` (x509.Name), as DER."""
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "CA")]))
            .public_key(_KEY.public_key()).serial_number(1)
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(_KEY, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.DER)


def name(*attrs):
    return x509.Name([x509.NameAttribute(*attr) for attr in attrs])


CASES = [
    # (subject, expected host-subject string)
    (name((NameOID.COUNTRY_NAME, "XX"), (NameOID.ORGANIZATION_NAME, "vmconsole test"), (NameOID.COMMON_NAME, "vmc-test-node")),
     "C=XX,O=vmconsole test,CN=vmc-test-node"),
    # Order is the certificate's own, not RFC 4514's reversed one.
    (name((NameOID.COMMON_NAME, "node1"), (NameOID.ORGANIZATIONAL_UNIT_NAME, "Virt"), (NameOID.DOMAIN_COMPONENT, "example")),
     "CN=node1,OU=Virt,DC=example"),
    # Only ',' and '\' are escaped; '=', '+', '"', '#', ';', '<' and leading spaces stay.
    (name((NameOID.ORGANIZATION_NAME, "Acme, Inc. \\ R&D"), (NameOID.COMMON_NAME, "a=b+c \"q\" #1;<x>")),
     "O=Acme\\, Inc. \\\\ R&D,CN=a=b+c \"q\" #1;<x>"),
    (name((NameOID.COMMON_NAME, "  padded ")), "CN=  padded "),
    # Non-ASCII in UTF8String, BMPString and UniversalString.
    (name((NameOID.LOCALITY_NAME, "Zürich"), (NameOID.COMMON_NAME, "東京-1")), "L=Zürich,CN=東京-1"),
    (name((NameOID.COMMON_NAME, "bmp-Ω", _ASN1Type.BMPString)), "CN=bmp-Ω"),
    (name((NameOID.COMMON_NAME, "univ-Ж", _ASN1Type.UniversalString)), "CN=univ-Ж"),
    # Long-tail attribute types: OpenSSL short names, dotted OID when OpenSSL has none.
    (name((NameOID.EMAIL_ADDRESS, "ops@example.com"), (NameOID.SERIAL_NUMBER, "42"), (NameOID.STATE_OR_PROVINCE_NAME, "ZH"),
          (NameOID.USER_ID, "u1"), (ObjectIdentifier("1.3.6.1.4.1.99999.1"), "private")),
     "emailAddress=ops@example.com,serialNumber=42,ST=ZH,UID=u1,1.3.6.1.4.1.99999.1=private"),
]


@pytest.mark.parametrize("subject, expected", CASES)
def test_subject_from_der(subject, expected):
    der = cert_der(subject)
    assert subject_from_der(der) == expected
    assert subject_matches(der, expected)


def test_subject_from_pem_str_and_bytes():
    der = cert_der(CASES[0][0])
    cert = x509.load_der_x509_certificate(der)
    pem = cert.public_bytes(serialization.Encoding.PEM)
    assert subject_from_pem(pem) == subject_from_pem(pem.decode()) == CASES[0][1]
    # The first certificate of a bundle, with text around it.
    other = cert_der(CASES[1][0])
    bundle = "issuer: x\n" + pem.decode() + x509.load_der_x509_certificate(other).public_bytes(serialization.Encoding.PEM).decode()
    assert subject_from_pem(bundle) == CASES[0][1]


def test_multi_valued_rdn_is_listed_but_never_matches():
    rdn = x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.COMMON_NAME, "node1"),
                                          x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Virt")])
    der = cert_der(x509.Name([x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.COUNTRY_NAME, "XX")]), rdn]))
    text = subject_from_der(der)
    assert text.startswith("C=XX,") and sorted(text.split(",")[1:]) == ["CN=node1", "OU=Virt"]
    assert not subject_matches(der, text)      # spice-gtk builds one RDN per entry


@pytest.mark.parametrize("bad, message", [
    (b"", "truncated"),
    (b"\x04\x03abc", "expected Certificate"),
    (b"\x30\x84\x00\x00\x10\x00", "truncated"),
])
def test_not_a_certificate(bad, message):
    with pytest.raises(ValueError, match=message):
        subject_from_der(bad)


def test_pem_without_certificate():
    with pytest.raises(ValueError, match="no PEM certificate"):
        subject_from_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")


# --- parse_subject / subject_matches: spice-gtk's reading of host-subject ---------------------------

def test_parse_subject_like_spice_gtk():
    assert parse_subject(" C=XX, O=Acme\\, Inc.,CN=a=b") == [("2.5.4.6", "XX"), ("2.5.4.10", "Acme, Inc."), ("2.5.4.3", "a=b")]
    assert parse_subject("commonName=x,2.5.4.11=y,") == [("2.5.4.3", "x"), ("2.5.4.11", "y")]   # a trailing comma ends it
    assert parse_subject("CN=back\\\\slash") == [("2.5.4.3", "back\\slash")]


@pytest.mark.parametrize("text, message", [
    ("", "empty"),
    ("CN", "has no '='"),
    ("CN=a,O", "has no '='"),
    ("CN=a,,O=b", "has no '='"),
    ("CN=", "empty value"),
    ("cn=a", "unknown attribute name 'cn'"),      # OBJ_txt2obj is case-sensitive
    ("CN=a\\+b", "valid escapes"),
    ("CN=a\\", "valid escapes"),
])
def test_parse_subject_errors(text, message):
    with pytest.raises(ValueError, match=message):
        parse_subject(text)


def test_subject_matches_canonical_values_but_strict_order_and_count():
    der = cert_der(CASES[0][0])
    assert subject_matches(der, "C=xx,O=VMCONSOLE   test ,CN= vmc-test-node")
    assert subject_matches(der, "countryName=XX,organizationName=vmconsole test,commonName=vmc-test-node")
    assert not subject_matches(der, "CN=vmc-test-node,O=vmconsole test,C=XX")
    assert not subject_matches(der, "O=vmconsole test,CN=vmc-test-node")
    assert not subject_matches(der, "C=XX,O=vmconsole test,CN=vmc-test-node,OU=x")
    assert not subject_matches(der, "C=XX,O=vmconsole-test,CN=vmc-test-node")


# --- cross-check with OpenSSL itself: X509_NAME_cmp, as spice-gtk calls it -------------------------

class _OpenSSL:
    MBSTRING_UTF8 = 0x1000

    def __init__(self):
        path = ctypes.util.find_library("crypto")
        if not path:
            pytest.skip("libcrypto not found")
        lib = ctypes.CDLL(path)
        lib.d2i_X509.restype = ctypes.c_void_p
        lib.d2i_X509.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_char_p), ctypes.c_long]
        lib.X509_get_subject_name.restype = ctypes.c_void_p
        lib.X509_get_subject_name.argtypes = [ctypes.c_void_p]
        lib.X509_NAME_new.restype = ctypes.c_void_p
        lib.X509_NAME_add_entry_by_txt.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                                                   ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.X509_NAME_cmp.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        lib.X509_NAME_entry_count.argtypes = [ctypes.c_void_p]
        lib.X509_NAME_free.argtypes = [ctypes.c_void_p]
        lib.X509_free.argtypes = [ctypes.c_void_p]
        self.lib = lib

    @staticmethod
    def split_like_spice_gtk(text):
        """spice-common ssl_verify.c subject_to_x509_name(), transcribed: [(key, value)] or None."""
        entries, key, value, state, i = [], "", "", "key", 0
        while True:
            char = text[i] if i < len(text) else ""
            escape = False
            if char == "\\":
                i += 1
                char = text[i] if i < len(text) else ""
                if char not in ("\\", ","):
                    return None
                escape = True
            if state == "key":
                if char == " " and not key:
                    pass
                elif char == "":
                    return entries if not key else None
                elif char == "," and not escape:
                    return None
                elif char == "=" and not escape:
                    state, value = "value", ""
                else:
                    key += char
            else:
                if char == "" or (char == "," and not escape):
                    if not value:
                        return None
                    entries.append((key, value))
                    if char == "":
                        return entries
                    state, key = "key", ""
                else:
                    value += char
            i += 1

    def spice_gtk_accepts(self, der, text):
        """verify_subject(): entry count, then X509_NAME_cmp == 0."""
        entries = self.split_like_spice_gtk(text)
        if entries is None:
            return False
        buf = ctypes.c_char_p(der)
        cert = self.lib.d2i_X509(None, ctypes.byref(buf), len(der))
        assert cert, "OpenSSL could not parse the test certificate"
        wanted = self.lib.X509_NAME_new()
        try:
            for key, value in entries:
                if not self.lib.X509_NAME_add_entry_by_txt(wanted, key.encode(), self.MBSTRING_UTF8, value.encode(), -1, -1, 0):
                    return False
            subject = self.lib.X509_get_subject_name(cert)
            if self.lib.X509_NAME_entry_count(subject) != len(entries):
                return False
            return self.lib.X509_NAME_cmp(subject, wanted) == 0
        finally:
            self.lib.X509_NAME_free(wanted)
            self.lib.X509_free(cert)


@pytest.fixture(scope="module")
def openssl():
    return _OpenSSL()


@pytest.mark.parametrize("subject, expected", CASES)
def test_openssl_accepts_what_we_produce(openssl, subject, expected):
    der = cert_der(subject)
    assert openssl.spice_gtk_accepts(der, subject_from_der(der))


@pytest.mark.parametrize("text", [
    "C=xx,O=VMCONSOLE   test ,CN= vmc-test-node",
    "countryName=XX,organizationName=vmconsole test,commonName=vmc-test-node",
    "CN=vmc-test-node,O=vmconsole test,C=XX",
    "O=vmconsole test,CN=vmc-test-node",
    "C=XX,O=vmconsole test,CN=vmc-test-node,OU=x",
    "C=XX,O=vmconsole-test,CN=vmc-test-node",
    "C=XX,O=vmconsole test,CN=vmc-test-node,",
    " C=XX,  O=vmconsole test,CN=VMC-TEST-NODE\t",
    "C=XX,O=vmconsole test,2.5.4.3=vmc-test-node",
])
def test_subject_matches_agrees_with_openssl(openssl, text):
    der = cert_der(CASES[0][0])
    assert subject_matches(der, text) == openssl.spice_gtk_accepts(der, text)


def test_multi_valued_rdn_openssl_agrees(openssl):
    rdn = x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.COMMON_NAME, "node1"),
                                          x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Virt")])
    der = cert_der(x509.Name([rdn]))
    assert not openssl.spice_gtk_accepts(der, subject_from_der(der))


# --- subject_from_pairs and the filter host_subject (the pki role's subject fact) -----------------

def _pairs(subject):
    """x509_certificate_info's subject_ordered for a name: [[long name or dotted OID, value]]."""
    return [[attr.oid._name if attr.oid._name != "Unknown OID" else attr.oid.dotted_string, attr.value]
            for attr in subject]


@pytest.mark.parametrize("subject, expected", [case for case in CASES if "1.3.6.1.4.1.99999.1" not in case[1]])
def test_subject_from_pairs_writes_what_the_certificate_says(subject, expected):
    from ansible_collections.vmconsole.secure.plugins.module_utils._subject import subject_from_pairs
    assert subject_from_pairs(_pairs(subject)) == expected == subject_from_der(cert_der(subject))


def test_subject_from_pairs_takes_short_long_and_dotted_names():
    from ansible_collections.vmconsole.secure.plugins.module_utils._subject import subject_from_pairs
    assert subject_from_pairs([("O", "Example, Inc."), ("commonName", "hv1"), ("2.5.4.11", "virt\\ops")]) == (
        "O=Example\\, Inc.,CN=hv1,OU=virt\\\\ops")
    with pytest.raises(ValueError, match="unknown subject attribute 'favouriteColour'"):
        subject_from_pairs([("favouriteColour", "blue")])


def test_the_host_subject_filter():
    from ansible.errors import AnsibleFilterError

    from ansible_collections.vmconsole.secure.plugins.filter.host_subject import host_subject
    pem = x509.load_der_x509_certificate(cert_der(CASES[2][0])).public_bytes(serialization.Encoding.PEM).decode()
    assert host_subject(pem) == CASES[2][1]
    assert host_subject([["O", "vmconsole.secure"], ["CN", "hv1"]]) == "O=vmconsole.secure,CN=hv1"
    with pytest.raises(AnsibleFilterError, match="host_subject: no PEM certificate"):
        host_subject("not a certificate")
    with pytest.raises(AnsibleFilterError, match="give a PEM certificate or a list of"):
        host_subject({"CN": "hv1"})
