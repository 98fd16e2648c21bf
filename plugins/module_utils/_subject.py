# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Certificate subjects in the text form spice-gtk compares (``.vv`` ``host-subject``).

Private to the collection. Stdlib only: a minimal DER walk down to the subject Name.

spice-gtk (spice-common ``ssl_verify.c``) splits ``host-subject`` at every comma that is
not escaped, turns each ``key=value`` into its own X509_NAME entry, in order, and compares
the result with the certificate's subject using ``X509_NAME_cmp``. So the string must:

- list the attributes in the certificate's own order (DER order, not RFC 4514's reverse);
- escape ``\\`` and ``,`` with a backslash, and nothing else (the parser knows no other
  escape; ``=``, ``+`` and quotes are plain characters inside a value);
- name each attribute as OpenSSL does (``C``, ``O``, ``CN``, ...; a dotted OID otherwise).

``X509_NAME_cmp`` compares canonical encodings: values are compared as UTF-8 with ASCII
case folded and runs of white space collapsed, which :func:`subject_matches` mirrors.
A multi-valued RDN (``CN=a+OU=b`` in RFC 4514) can never match, because spice-gtk makes one
RDN per entry; :func:`subject_from_der` still lists its entries so people can see them.
"""

from __future__ import annotations

import base64
import re
import socket
import ssl

# OpenSSL short names (what spice-gtk's OBJ_txt2obj accepts and X509_NAME_oneline prints).
_SHORT_NAMES = {
    "2.5.4.3": "CN",
    "2.5.4.4": "SN",
    "2.5.4.5": "serialNumber",
    "2.5.4.6": "C",
    "2.5.4.7": "L",
    "2.5.4.8": "ST",
    "2.5.4.9": "street",
    "2.5.4.10": "O",
    "2.5.4.11": "OU",
    "2.5.4.12": "title",
    "2.5.4.13": "description",
    "2.5.4.15": "businessCategory",
    "2.5.4.17": "postalCode",
    "2.5.4.42": "GN",
    "2.5.4.43": "initials",
    "2.5.4.44": "generationQualifier",
    "2.5.4.46": "dnQualifier",
    "2.5.4.65": "pseudonym",
    "2.5.4.97": "organizationIdentifier",
    "1.2.840.113549.1.9.1": "emailAddress",
    "0.9.2342.19200300.100.1.1": "UID",
    "0.9.2342.19200300.100.1.25": "DC",
    "1.3.6.1.4.1.311.60.2.1.1": "jurisdictionL",
    "1.3.6.1.4.1.311.60.2.1.2": "jurisdictionST",
    "1.3.6.1.4.1.311.60.2.1.3": "jurisdictionC",
}
# OpenSSL long names that differ from the short ones (OBJ_txt2obj accepts both).
_LONG_NAMES = {
    "2.5.4.3": "commonName",
    "2.5.4.4": "surname",
    "2.5.4.6": "countryName",
    "2.5.4.7": "localityName",
    "2.5.4.8": "stateOrProvinceName",
    "2.5.4.9": "streetAddress",
    "2.5.4.10": "organizationName",
    "2.5.4.11": "organizationalUnitName",
    "2.5.4.42": "givenName",
    "0.9.2342.19200300.100.1.1": "userId",
    "0.9.2342.19200300.100.1.25": "domainComponent",
    "1.3.6.1.4.1.311.60.2.1.1": "jurisdictionLocalityName",
    "1.3.6.1.4.1.311.60.2.1.2": "jurisdictionStateOrProvinceName",
    "1.3.6.1.4.1.311.60.2.1.3": "jurisdictionCountryName",
}
_OID_BY_NAME = {name: oid for table in (_SHORT_NAMES, _LONG_NAMES) for oid, name in table.items()}
_DOTTED_OID = re.compile(r"^[0-2](\.(0|[1-9][0-9]*))+$")

# DER tags used on the way to the subject and in attribute values.
_SEQUENCE, _SET, _OID, _CONTEXT_0 = 0x30, 0x31, 0x06, 0xA0
_STRING_CODECS = {
    0x0C: "utf-8",       # UTF8String
    0x12: "latin-1",     # NumericString
    0x13: "latin-1",     # PrintableString
    0x14: "latin-1",     # T61String (OpenSSL reads it as Latin-1 too)
    0x16: "latin-1",     # IA5String
    0x1A: "latin-1",     # VisibleString
    0x1C: "utf-32-be",   # UniversalString
    0x1E: "utf-16-be",   # BMPString
}
_PEM_CERT = re.compile(r"-----BEGIN CERTIFICATE-----\s*(.+?)\s*-----END CERTIFICATE-----", re.S)
_WHITESPACE = " \t\n\v\f\r"          # OpenSSL's ossl_isspace()
_ASCII_LOWER = {code: code + 32 for code in range(ord("A"), ord("Z") + 1)}


def _tlv(data, pos):
    """One DER element at ``pos``: (tag, start of contents, end of contents)."""
    try:
        tag = data[pos]
        length = data[pos + 1]
    except IndexError:
        raise ValueError("truncated DER at offset %d" % pos) from None
    if tag & 0x1F == 0x1F:
        raise ValueError("unexpected multi-byte DER tag at offset %d" % pos)
    pos += 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 4 or pos + count > len(data):
            raise ValueError("bad DER length at offset %d" % (pos - 1))
        length = int.from_bytes(data[pos:pos + count], "big")
        pos += count
    if pos + length > len(data):
        raise ValueError("truncated DER at offset %d" % pos)
    return tag, pos, pos + length


def _expect(data, pos, tag, what):
    got, start, end = _tlv(data, pos)
    if got != tag:
        raise ValueError("not an X.509 certificate: expected %s (tag 0x%02x) at offset %d, got tag 0x%02x"
                         % (what, tag, pos, got))
    return start, end


def _decode_oid(raw):
    if not raw or raw[-1] & 0x80:
        raise ValueError("malformed OID in the certificate subject")
    arcs, value = [], 0
    for byte in raw:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    first = min(arcs[0] // 40, 2)
    return ".".join(str(arc) for arc in [first, arcs[0] - 40 * first] + arcs[1:])


def _subject_entries(der):
    """[(oid, value, rdn_index)] of the certificate's subject, in DER order."""
    der = bytes(der)
    pos = _expect(der, 0, _SEQUENCE, "Certificate")[0]
    pos = _expect(der, pos, _SEQUENCE, "TBSCertificate")[0]
    if _tlv(der, pos)[0] == _CONTEXT_0:       # [0] EXPLICIT version
        pos = _tlv(der, pos)[2]
    for dummy in range(4):                    # serialNumber, signature, issuer, validity
        pos = _tlv(der, pos)[2]
    pos, name_end = _expect(der, pos, _SEQUENCE, "subject Name")
    entries, rdn_index = [], 0
    while pos < name_end:
        set_pos, set_end = _expect(der, pos, _SET, "RelativeDistinguishedName")
        while set_pos < set_end:
            atv_pos, atv_end = _expect(der, set_pos, _SEQUENCE, "AttributeTypeAndValue")
            oid_start, oid_end = _expect(der, atv_pos, _OID, "attribute type")
            tag, value_start, value_end = _tlv(der, oid_end)
            codec = _STRING_CODECS.get(tag)
            if codec is None:   # not a string type: RFC 4514's '#' + hex of the whole DER value
                value = "#" + der[oid_end:value_end].hex()
            else:
                value = der[value_start:value_end].decode(codec, "replace")
            entries.append((_decode_oid(der[oid_start:oid_end]), value, rdn_index))
            set_pos = atv_end
        pos = set_end
        rdn_index += 1
    return entries


def _escape(value):
    return value.replace("\\", "\\\\").replace(",", "\\,")


def _pem_to_der(pem):
    if isinstance(pem, bytes):
        pem = pem.decode("ascii", "replace")
    match = _PEM_CERT.search(pem)
    if not match:
        raise ValueError("no PEM certificate (-----BEGIN CERTIFICATE-----) found")
    try:
        return base64.b64decode("".join(match.group(1).split()), validate=True)
    except ValueError as exc:
        raise ValueError("bad base64 in PEM certificate: %s" % exc) from None


def subject_from_der(der):
    """The certificate's subject as ``C=XX,O=Org,CN=node`` (spice-gtk ``host-subject`` form).

    Raises ValueError when ``der`` is not a DER X.509 certificate.
    """
    return ",".join("%s=%s" % (_SHORT_NAMES.get(oid, oid), _escape(value)) for oid, value, dummy in _subject_entries(der))


def subject_from_pem(pem):
    """Like :func:`subject_from_der`, for the first certificate in a PEM text (str or bytes)."""
    return subject_from_der(_pem_to_der(pem))


def subject_from_pairs(pairs):
    """The subject written like :func:`subject_from_der` from ``(name, value)`` pairs in RDN
    order; a name is a short (``CN``), long (``commonName``) or dotted (``2.5.4.3``) one."""
    short_of = dict((_LONG_NAMES[oid], short) for oid, short in _SHORT_NAMES.items() if oid in _LONG_NAMES)
    short_of.update((short, short) for short in _SHORT_NAMES.values())
    short_of.update(_SHORT_NAMES)
    out = []
    for name, value in pairs:
        if name not in short_of:
            raise ValueError("unknown subject attribute %r" % (name,))
        out.append("%s=%s" % (short_of[name], _escape(value)))
    return ",".join(out)


def parse_subject(text):
    """Split a ``host-subject`` string the way spice-gtk does: [(oid, value)].

    Raises ValueError with the reason spice-gtk would reject it for (bad escape, missing
    ``=``, empty value, attribute name OpenSSL does not know).
    """
    entries, key, value, in_value = [], [], [], False
    chars = iter(text)
    for char in chars:
        escaped = char == "\\"
        if escaped:
            char = next(chars, "")
            if char not in ("\\", ","):
                raise ValueError("host subject: only '\\\\' and '\\,' are valid escapes")
        if not in_value:
            if char == " " and not key:
                continue                              # spaces before a key are skipped
            if char == "," and not escaped:
                raise ValueError("host subject: '%s' has no '='" % "".join(key))
            if char == "=" and not escaped:
                in_value = True
            else:
                key.append(char)
        elif char == "," and not escaped:
            entries.append(_entry("".join(key), "".join(value)))
            key, value, in_value = [], [], False
        else:
            value.append(char)
    if in_value:
        entries.append(_entry("".join(key), "".join(value)))
    elif key:
        raise ValueError("host subject: '%s' has no '='" % "".join(key))
    if not entries:
        raise ValueError("host subject is empty")
    return entries


def _entry(key, value):
    oid = key if _DOTTED_OID.match(key) else _OID_BY_NAME.get(key)
    if oid is None:
        raise ValueError("host subject: unknown attribute name '%s' (use C, ST, L, O, OU, CN, ... or a dotted OID)" % key)
    if not value:
        raise ValueError("host subject: attribute '%s' has an empty value" % key)
    return oid, value


def _canonical(value):
    """OpenSSL's canonical form for X509_NAME_cmp: trimmed, runs of space collapsed, ASCII lower case."""
    words = value.strip(_WHITESPACE)
    for char in _WHITESPACE[1:]:
        words = words.replace(char, " ")
    return " ".join(word for word in words.split(" ") if word).translate(_ASCII_LOWER)


def subject_matches(der, text):
    """True when spice-gtk would accept the certificate ``der`` for ``host-subject=text``.

    Raises ValueError when ``text`` is not a valid host subject (see :func:`parse_subject`).
    """
    wanted = parse_subject(text)
    entries = _subject_entries(der)
    if len({rdn for dummy, dummy2, rdn in entries}) != len(entries):
        return False                                  # multi-valued RDN: spice-gtk makes one RDN per entry
    if len(entries) != len(wanted):
        return False
    return all(oid == want_oid and _canonical(value) == _canonical(want_value)
               for (oid, value, dummy), (want_oid, want_value) in zip(entries, wanted))


def tls_handshake(sock, context, *, address, timeout, mismatch, unreachable, server_hostname=None, hint=""):
    """Wrap ``sock`` in TLS with ``context``: the one TLS start of the console probes.

    A certificate the CA does not vouch for raises ``mismatch(text)``; a timeout or any other
    handshake failure raises ``unreachable(text)`` (``hint`` is appended, e.g. " (is this the
    SPICE TLS port?)"). The caller sets the socket's timeout; ``timeout`` only words the
    message. Returns ``(tls_socket, der, subject)``: check the subject with
    :func:`check_host_subject`.
    """
    try:
        tls = context.wrap_socket(sock, server_hostname=server_hostname)
    except ssl.SSLCertVerificationError as exc:
        raise mismatch("the certificate of %s is not trusted by the given CA: %s" % (address, exc.verify_message)) from None
    except socket.timeout:
        raise unreachable("timed out after %gs in the TLS handshake with %s" % (timeout, address)) from None
    except (ssl.SSLError, OSError) as exc:
        raise unreachable("TLS handshake with %s failed: %s%s" % (address, getattr(exc, "reason", None) or exc, hint)) from None
    der = tls.getpeercert(binary_form=True)
    return tls, der, subject_from_der(der)


def check_host_subject(der, subject, host_subject, *, address, mismatch):
    """Raise ``mismatch(text)`` when ``host_subject`` is given and the certificate has another."""
    if host_subject is not None and not subject_matches(der, host_subject):
        raise mismatch("the certificate subject of %s is '%s', not the expected '%s'" % (address, subject, host_subject))
