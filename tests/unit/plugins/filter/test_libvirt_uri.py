# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The libvirt_uri and libvirt_uri_build filters and module_utils/_libvirt_uri.py.

Where the host has libvirt's own library (libvirt0: Debian's remote-viewer pulls it in), every
URI this code calls valid or writes is also parsed by libvirt's virURIParse (through ctypes), and
host, user, port, path and decoded parameters must be the same: the oracle is the real parser.
"""

from __future__ import annotations

import ctypes
import ipaddress
import random
import re
import string
from urllib.parse import quote

import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.vmconsole.secure.plugins.filter import libvirt_uri as filters
from ansible_collections.vmconsole.secure.plugins.module_utils._libvirt_uri import (
    CHOICE_PARAMS, COMMON_PARAMS, DEFAULT_PORTS, HOST_TRANSPORTS, INTEGER_PARAMS, REMOTE_PARAMS, SSHAUTH_METHODS,
    TRANSPORT_PARAMS, TRANSPORTS, LibvirtURIError, build_libvirt_uri, parse_libvirt_uri, unknown_param_warnings,
)

parse = filters.libvirt_uri
build = filters.libvirt_uri_build


# --- libvirt's own parser (virURIParse, libvirt >= 1.0; private but exported symbol) -------------

class _VirURIParam(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("value", ctypes.c_char_p), ("ignore", ctypes.c_bool)]


class _VirURI(ctypes.Structure):
    _fields_ = [("scheme", ctypes.c_char_p), ("server", ctypes.c_char_p), ("user", ctypes.c_char_p),
                ("port", ctypes.c_uint), ("path", ctypes.c_char_p), ("query", ctypes.c_char_p),
                ("fragment", ctypes.c_char_p), ("paramsCount", ctypes.c_size_t), ("paramsAlloc", ctypes.c_size_t),
                ("params", ctypes.POINTER(_VirURIParam))]


_ERROR_FUNC = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p)(lambda data, error: None)


def _load_libvirt():
    try:
        lib = ctypes.CDLL("libvirt.so.0")
        lib.virURIParse.restype = ctypes.POINTER(_VirURI)
        lib.virURIParse.argtypes = [ctypes.c_char_p]
        lib.virURIFormatParams.restype = ctypes.c_void_p
        lib.virURIFormatParams.argtypes = [ctypes.POINTER(_VirURI)]
        lib.virURIFree.argtypes = [ctypes.POINTER(_VirURI)]
        glib = ctypes.CDLL("libglib-2.0.so.0")  # libvirt allocates with GLib
        glib.g_free.argtypes = [ctypes.c_void_p]
        lib.g_free = glib.g_free
    except (OSError, AttributeError):
        return None
    if lib.virInitialize() != 0:
        return None
    lib.virSetErrorFunc(None, _ERROR_FUNC)  # keep libvirt's parse errors off stderr
    return lib


LIBVIRT = _load_libvirt()


def libvirt_parse(uri):
    """virURIParse's view of ``uri`` (None when libvirt refuses it)."""
    pointer = LIBVIRT.virURIParse(uri.encode("utf-8"))
    if not pointer:
        return None
    try:
        raw = pointer.contents

        def text(value):
            return None if value is None else value.decode("utf-8", "surrogateescape")

        params = [(text(raw.params[i].name), text(raw.params[i].value)) for i in range(raw.paramsCount)]
        formatted = LIBVIRT.virURIFormatParams(pointer)
        try:
            format_params = ctypes.string_at(formatted).decode("utf-8", "surrogateescape") if formatted else ""
        finally:
            LIBVIRT.g_free(formatted)
        return dict(scheme=text(raw.scheme), host=text(raw.server), user=text(raw.user), port=raw.port,
                    path=text(raw.path) or "", params=params, format_params=format_params)
    finally:
        LIBVIRT.virURIFree(pointer)


def assert_libvirt_agrees(parsed):
    """libvirt's parser reads ``parsed["uri"]`` into the same parts."""
    if LIBVIRT is None:
        return
    theirs = libvirt_parse(parsed["uri"])
    assert theirs is not None, "libvirt refuses %r" % parsed["uri"]
    scheme = parsed["driver"] + ("+" + parsed["transport"] if parsed["transport_explicit"] else "")
    assert theirs["scheme"] == scheme
    assert theirs["host"] == parsed["host"]
    assert theirs["user"] == parsed["user"]
    assert theirs["port"] == (parsed["port"] or 0)
    assert theirs["path"] == parsed["path"]
    assert theirs["params"] == list(parsed["params"].items())
    # libvirt's own (stricter) encoding of the same parameters reads back to the same values
    # (virURIFormatParams writes names as they are, so only for names that need no encoding).
    if theirs["format_params"] and all(re.fullmatch(r"[A-Za-z0-9._~-]+", name) for name in parsed["params"]):
        scheme_host = parsed["uri"].split("?", 1)[0]
        again = parse_libvirt_uri(scheme_host + "?" + theirs["format_params"])
        assert again["params"] == parsed["params"]


def test_libvirt_oracle_is_available_on_the_lab_host():
    if LIBVIRT is None:
        pytest.skip("libvirt.so.0 is not installed here; the cross-check against libvirt's parser is skipped")
    assert libvirt_parse("qemu+ssh://root@[2001:db8::1]:2222/system?netcat=/usr/bin/nc%20-q%200")["params"] == [
        ("netcat", "/usr/bin/nc -q 0")]
    assert libvirt_parse("qemu://h/ x") is None


# --- every example of libvirt's URI pages --------------------------------------------------------

def P(transport, explicit, host=None, path="", user=None, port=None, params=None, driver="qemu", unknown=()):
    effective = DEFAULT_PORTS.get(transport) if port is None or transport not in DEFAULT_PORTS else port
    return dict(driver=driver, transport=transport, transport_explicit=explicit, user=user, host=host, port=port,
                effective_port=effective, path=path, params=params or {}, unknown_params=list(unknown))


# (uri, expected parts) from https://libvirt.org/uri.html, https://libvirt.org/remote.html, the older
# uri.html/remote.html tables (local URI -> remote URI), https://libvirt.org/drvqemu.html and the
# example value of every parameter in the "Transport configuration" section.
DOC_EXAMPLES = [
    # local URIs: neither transport nor server -> unix
    ("test:///default", P("unix", False, path="/default", driver="test")),
    ("test:///path/to/host/definitions", P("unix", False, path="/path/to/host/definitions", driver="test")),
    ("xen:///system", P("unix", False, path="/system", driver="xen")),
    ("xen:///", P("unix", False, path="/", driver="xen")),
    ("qemu:///system", P("unix", False, path="/system")),
    ("qemu:///session", P("unix", False, path="/session")),
    ("qemu:///embed?root=/some/dir", P("unix", False, path="/embed", params={"root": "/some/dir"}, unknown=["root"])),
    # only a transport given
    ("qemu+unix:///system", P("unix", True, path="/system")),
    ("qemu+unix:///session", P("unix", True, path="/session")),
    ("qemu+unix:///system?socket=/opt/libvirt/run/libvirt/libvirt-sock",
     P("unix", True, path="/system", params={"socket": "/opt/libvirt/run/libvirt/libvirt-sock"})),
    ("xen+unix:///?socket=/opt/libvirt/run/libvirt/libvirt-sock",
     P("unix", True, path="/", driver="xen", params={"socket": "/opt/libvirt/run/libvirt/libvirt-sock"})),
    # only a server given -> tls
    ("xen://towada/system", P("tls", False, host="towada", path="/system", driver="xen")),
    ("xen://towada/system?no_verify=1", P("tls", False, host="towada", path="/system", driver="xen",
                                          params={"no_verify": "1"})),
    ("xen://towada/", P("tls", False, host="towada", path="/", driver="xen")),
    ("xen://towada/?no_verify=1", P("tls", False, host="towada", path="/", driver="xen", params={"no_verify": "1"})),
    ("xen://oirase/", P("tls", False, host="oirase", path="/", driver="xen")),
    ("qemu://oirase/system", P("tls", False, host="oirase", path="/system")),
    ("qemu://compute1.libvirt.org/system", P("tls", False, host="compute1.libvirt.org", path="/system")),
    ("qemu://example.com/system", P("tls", False, host="example.com", path="/system")),
    # transport and server
    ("xen+ssh://rjones@towada/system", P("ssh", True, host="towada", user="rjones", path="/system", driver="xen")),
    ("xen+ssh://rjones@towada/", P("ssh", True, host="towada", user="rjones", path="/", driver="xen")),
    ("xen+ssh://oirase/", P("ssh", True, host="oirase", path="/", driver="xen")),
    ("test+tcp://localhost:5000/default", P("tcp", True, host="localhost", port=5000, path="/default", driver="test")),
    ("test+tcp://oirase/default", P("tcp", True, host="oirase", path="/default", driver="test")),
    ("qemu+tcp://example.com/system", P("tcp", True, host="example.com", path="/system")),
    ("qemu+ssh://root@example.com/system", P("ssh", True, host="example.com", user="root", path="/system")),
    ("qemu+ssh://root@hail.cloud.example.com/system",
     P("ssh", True, host="hail.cloud.example.com", user="root", path="/system")),
    ("qemu+libssh2://user@host/system?known_hosts=/home/user/.ssh/known_hosts",
     P("libssh2", True, host="host", user="user", path="/system",
       params={"known_hosts": "/home/user/.ssh/known_hosts"})),
    ("qemu+libssh://user@host/system?known_hosts=/home/user/.ssh/known_hosts",
     P("libssh", True, host="host", user="user", path="/system",
       params={"known_hosts": "/home/user/.ssh/known_hosts"})),
    # the example value of each documented parameter, with a transport that uses it
    ("qemu+ssh://host/system?name=qemu:///system", P("ssh", True, host="host", path="/system",
                                                     params={"name": "qemu:///system"})),
    ("qemu+ssh://host/system?command=/opt/openssh/bin/ssh",
     P("ssh", True, host="host", path="/system", params={"command": "/opt/openssh/bin/ssh"})),
    ("qemu+ssh://host/system?no_verify=1", P("ssh", True, host="host", path="/system", params={"no_verify": "1"})),
    ("qemu+ssh://host/system?no_tty=1", P("ssh", True, host="host", path="/system", params={"no_tty": "1"})),
    ("qemu+ssh://host/system?mode=direct", P("ssh", True, host="host", path="/system", params={"mode": "direct"})),
    ("qemu+ssh://host/system?proxy=native", P("ssh", True, host="host", path="/system", params={"proxy": "native"})),
    ("qemu+ssh://host/system?socket=/opt/libvirt/run/libvirt/libvirt-sock",
     P("ssh", True, host="host", path="/system", params={"socket": "/opt/libvirt/run/libvirt/libvirt-sock"})),
    ("qemu+ssh://host/system?netcat=/opt/netcat/bin/nc",
     P("ssh", True, host="host", path="/system", params={"netcat": "/opt/netcat/bin/nc"})),
    ("qemu+ssh://host/system?keyfile=/root/.ssh/example_key",
     P("ssh", True, host="host", path="/system", params={"keyfile": "/root/.ssh/example_key"})),
    ("qemu+libssh://host/system?known_hosts=/root/.ssh/known_hosts",
     P("libssh", True, host="host", path="/system", params={"known_hosts": "/root/.ssh/known_hosts"})),
    ("qemu+libssh2://host/system?known_hosts_verify=ignore",
     P("libssh2", True, host="host", path="/system", params={"known_hosts_verify": "ignore"})),
    ("qemu+libssh://host/system?sshauth=privkey,agent",
     P("libssh", True, host="host", path="/system", params={"sshauth": "privkey,agent"})),
    ("qemu://host/system?tls_priority=NORMAL:-VERS-SSL3.0",
     P("tls", False, host="host", path="/system", params={"tls_priority": "NORMAL:-VERS-SSL3.0"})),
    ("qemu://host/system?pkipath=/tmp/pki/client",
     P("tls", False, host="host", path="/system", params={"pkipath": "/tmp/pki/client"})),
    ("qemu+unix:///system?mode=direct", P("unix", True, path="/system", params={"mode": "direct"})),
    ("qemu+ext:///system?command=/usr/local/bin/tunnel",
     P("ext", True, path="/system", params={"command": "/usr/local/bin/tunnel"})),
    # the forms named in this collection's issue
    ("qemu+tls://hv1.example.org/system?pkipath=/etc/pki/alice",
     P("tls", True, host="hv1.example.org", path="/system", params={"pkipath": "/etc/pki/alice"})),
    ("qemu://", P("unix", False)),
    ("qemu+ssh://hv1", P("ssh", True, host="hv1")),
    ("remote://hv1/", P("tls", False, host="hv1", path="/", driver="remote")),
    ("qemu+ssh://root@[2001:db8::1]:2222/system", P("ssh", True, host="2001:db8::1", user="root", port=2222,
                                                    path="/system")),
    ("qemu+tls://[fe80::1%25eth0]:16514/system", P("tls", True, host="fe80::1%eth0", port=16514, path="/system")),
    ("qemu+tcp://192.0.2.7:16509/system", P("tcp", True, host="192.0.2.7", port=16509, path="/system")),
]


@pytest.mark.parametrize("uri, expected", DOC_EXAMPLES, ids=[u for u, e in DOC_EXAMPLES])
def test_documented_examples_parse(uri, expected):
    parsed = parse(uri)
    uri_out = parsed.pop("uri")
    assert parsed == expected
    assert uri_out == uri  # every documented example is canonical already


@pytest.mark.parametrize("uri", [u for u, e in DOC_EXAMPLES])
def test_documented_examples_round_trip(uri):
    parsed = parse(uri)
    assert build(parsed) == uri
    assert parse(build(parsed)) == parsed
    assert_libvirt_agrees(parsed)


def test_only_the_server_implies_tls_and_only_a_transport_keeps_it():
    assert parse("qemu://hv1/system")["transport"] == "tls"
    assert parse("qemu:///system")["transport"] == "unix"
    assert parse("qemu+tcp://hv1/system")["transport"] == "tcp"
    assert parse("qemu+unix:///system")["transport"] == "unix"
    uris = ("qemu://hv1/", "qemu+tcp://hv1/", "qemu+ssh://hv1/", "qemu+libssh://hv1/", "qemu+libssh2://hv1/",
            "qemu:///", "qemu+ext://hv1/?command=x", "qemu+ssh://hv1:2222/")
    assert [parse(u)["effective_port"] for u in uris] == [16514, 16509, 22, 22, 22, None, None, 2222]


# --- normalization: what a non-canonical input becomes -------------------------------------------

@pytest.mark.parametrize("uri, canonical", [
    ("qemu+TLS://hv1/system", "qemu+tls://hv1/system"),
    ("qemu+ssh://hv1/system?No_TTY=1&KEYFILE=/k", "qemu+ssh://hv1/system?no_tty=1&keyfile=/k"),
    ("qemu+ssh://hv1/system?netcat=%2Fusr%2Fbin%2Fnc%20-q%200", "qemu+ssh://hv1/system?netcat=/usr/bin/nc%20-q%200"),
    ("qemu+ssh://hv1/system?netcat=/usr/bin/nc%20-q%200", "qemu+ssh://hv1/system?netcat=/usr/bin/nc%20-q%200"),
    ("qemu+ssh://%72oot@hv1/sys%74em", "qemu+ssh://root@hv1/system"),
    ("qemu+ssh://hv1:022/system", "qemu+ssh://hv1:22/system"),
    ("qemu+ssh://hv1/system?&no_tty=1&&", "qemu+ssh://hv1/system?no_tty=1"),
    ("qemu+ssh://hv1/system?no_tty=1;keyfile=/k", "qemu+ssh://hv1/system?no_tty=1&keyfile=/k"),
    ("qemu://hv1/system?name=qemu:///system?x=y", "qemu://hv1/system?name=qemu:///system%3Fx%3Dy"),
    ("qemu://hv1/system?tls_priority=NORMAL:%25SERVER_PRECEDENCE:+VERS-TLS1.3",
     "qemu://hv1/system?tls_priority=NORMAL:%25SERVER_PRECEDENCE:+VERS-TLS1.3"),
    ("qemu+ssh://hv1/system?keyfile=/home/%C3%A9l%C3%A8ve/k", "qemu+ssh://hv1/system?keyfile=/home/%C3%A9l%C3%A8ve/k"),
])
def test_normalization(uri, canonical):
    parsed = parse(uri)
    assert parsed["uri"] == canonical
    assert parse(canonical) == parsed
    assert_libvirt_agrees(parsed)


def test_libvirt_splits_at_semicolons_only_without_ampersands():
    # virURIParseParams looks for '&' first; only a query without any '&' is split at ';'.
    assert parse("qemu+ssh://h/?no_tty=1;keyfile=/k")["params"] == {"no_tty": "1", "keyfile": "/k"}
    assert parse("qemu+ssh://h/?keyfile=/k;x&no_tty=1")["params"] == {"keyfile": "/k;x", "no_tty": "1"}
    if LIBVIRT is not None:
        assert libvirt_parse("qemu+ssh://h/?keyfile=/k;x&no_tty=1")["params"] == [("keyfile", "/k;x"), ("no_tty", "1")]


def test_plus_stays_plus_and_value_escapes_decode():
    parsed = parse("qemu://h/?tls_priority=NORMAL:+AES-256-GCM&pkipath=/a%2Bb%26c%3Bd%3De%23f%25g%3Fh")
    assert parsed["params"] == {"tls_priority": "NORMAL:+AES-256-GCM", "pkipath": "/a+b&c;d=e#f%g?h"}
    assert parsed["uri"] == "qemu://h/?tls_priority=NORMAL:+AES-256-GCM&pkipath=/a+b%26c%3Bd%3De%23f%25g%3Fh"
    assert_libvirt_agrees(parsed)


def test_name_only_parameter_has_an_empty_value():
    parsed = parse("qemu:///system?socket")
    assert parsed["params"] == {"socket": ""}
    assert parsed["uri"] == "qemu:///system?socket="


# --- errors ------------------------------------------------------------------------------------

BAD_URIS = [
    ("qemu+tlz://hv1/system", r"unknown transport 'tlz' \(one of tls, unix, ssh, libssh, libssh2, ext, tcp\)"),
    ("qemu+://hv1/system", r"unknown transport ''"),
    ("qemu+tls+x://hv1/system", r"unknown transport 'tls\+x'"),
    ("qemu+ssh://hv1:ssh/system", r"malformed port 'ssh'"),
    ("qemu+ssh://hv1:/system", r"malformed port ''"),
    ("qemu+ssh://hv1:-1/system", r"malformed port '-1'"),
    ("qemu+ssh://hv1:0/system", r"port 0 is out of range \(1 to 65535\)"),
    ("qemu+ssh://hv1:65536/system", r"port 65536 is out of range"),
    ("qemu+ssh:///system", r"transport 'ssh' needs a host .*qemu:///system"),
    ("qemu+tls:///system", r"transport 'tls' needs a host"),
    ("qemu+tcp:///system", r"transport 'tcp' needs a host"),
    ("qemu+libssh:///system", r"transport 'libssh' needs a host"),
    ("qemu+libssh2:///system", r"transport 'libssh2' needs a host"),
    ("qemu+ssh://", r"transport 'ssh' needs a host"),
    ("qemu+unix://hv1/system", r"transport 'unix' reaches the local daemon only, it cannot take a host \('hv1'\)"),
    ("://hv1/system", r"the driver is empty"),
    ("+ssh://hv1/system", r"the driver is empty"),
    ("", r"the libvirt URI is empty"),
    ("qemu", r"'://' is missing"),
    ("qemu:/system", r"'://' is missing"),
    ("1qemu:///system", r"malformed scheme '1qemu'"),
    ("qe_mu:///system", r"malformed scheme 'qe_mu'"),
    ("qemu://hv1/system#frag", r"a fragment"),
    ("qemu://hv1/sys tem", r"whitespace is not allowed"),
    ("qemu://hv1/system\n", r"whitespace is not allowed"),
    ("qemu://hv1/sys\x01tem", r"control characters are not allowed"),
    ("qemu://hv1/sys<tem", r"character '<' is not allowed unencoded in the path"),
    ("qemu://hv1/system?pkipath=/a\"b", r"character '\"' is not allowed unencoded in the value of parameter 'pkipath'"),
    ("qemu://hv1/system?pkipath=/a%zz", r"'%' is not followed by two hex digits"),
    ("qemu://hv1/system?pkipath=/a%ff", r"does not decode to UTF-8"),
    ("qemu://hv1/sys%GGtem", r"not followed by two hex digits in the path"),
    ("qemu://hv1/system?=x", r"a parameter has no name \('=x'\)"),
    ("qemu://hv1/system?pkipath=/a&PKIPATH=/b", r"parameter 'pkipath' given twice"),
    ("qemu://hv1/system?foo=1&foo=2", r"parameter 'foo' given twice"),
    ("qemu+ssh://a@b@hv1/system", r"more than one '@'"),
    ("qemu+ssh://@hv1/system", r"the user name before '@' is empty"),
    ("qemu+ssh://hv1%2Fx/system", r"malformed host 'hv1%2Fx'"),
    ("qemu+ssh://hv1!/system", r"malformed host 'hv1!'"),
    ("qemu+ssh://::1/system", r"an IPv6 address must be written in brackets"),
    ("qemu+ssh://[::1/system", r"'\[' without '\]'"),
    ("qemu+ssh://[::g]/system", r"malformed IPv6 address '::g'"),
    ("qemu+ssh://[192.0.2.1]/system", r"malformed IPv6 address"),
    ("qemu+ssh://[::1]x/system", r"unexpected 'x' after the IPv6 address"),
    ("qemu+ssh://[fe80::1%25]/system", r"malformed IPv6 zone ''"),
    ("qemu://:16514/system", r"a port needs a host"),
    ("qemu://root@/system", r"a user name needs a host"),
    ("qemu+ext:///system", r"transport 'ext' needs the parameter 'command'"),
    ("qemu://hv1/system?socket=/run/x", r"parameter 'socket' has no effect with transport 'tls' "
                                        r"\(libvirt ignores it there; it applies to libssh, libssh2, ssh, unix\)"),
    ("qemu+ssh://hv1/system?pkipath=/etc/pki/x", r"parameter 'pkipath' has no effect with transport 'ssh'.*tls"),
    ("qemu+tcp://hv1/system?pkipath=/etc/pki/x", r"'pkipath' has no effect with transport 'tcp'.*use tls for"),
    ("qemu+libssh://hv1/system?no_verify=1", r"'no_verify' has no effect .*use known_hosts_verify=auto"),
    ("qemu+ssh://hv1/system?known_hosts=/k", r"'known_hosts' has no effect with transport 'ssh'"),
    ("qemu+unix:///system?no_tty=1", r"'no_tty' has no effect with transport 'unix'"),
    ("qemu+ext:///system?command=/x&socket=/y", r"'socket' has no effect with transport 'ext'"),
    ("qemu+tcp://hv1/system?mode=legacy", r"'mode' has no effect with transport 'tcp'"),
    ("qemu://hv1/system?no_verify=yes", r"parameter 'no_verify' must be an integer \(0 = off, any other = on\)"),
    ("qemu://hv1/system?no_verify", r"parameter 'no_verify' must be an integer"),
    ("qemu://hv1/system?no_sanity=1.0", r"parameter 'no_sanity' must be an integer"),
    ("qemu+ssh://hv1/system?mode=fast", r"parameter 'mode' must be one of auto, legacy, direct, not 'fast'"),
    ("qemu+ssh://hv1/system?proxy=socat", r"parameter 'proxy' must be one of auto, netcat, native"),
    ("qemu+libssh://hv1/system?known_hosts_verify=yes", r"'known_hosts_verify' must be one of normal, auto, ignore"),
    ("qemu+libssh://hv1/system?sshauth=agent,kerberos", r"'sshauth' takes a comma-separated list of .* not 'kerberos'"),
    ("qemu+ssh://hv1/system?proxy=native&netcat=nc", r"'netcat' cannot be used with proxy=native"),
]


@pytest.mark.parametrize("uri, message", BAD_URIS, ids=[repr(u) for u, m in BAD_URIS])
def test_bad_uris_fail_with_a_clear_message(uri, message):
    with pytest.raises(AnsibleFilterError, match=message) as failure:
        parse(uri)
    if uri and "://" in uri and not re.search("empty|control|whitespace", message):
        assert "libvirt URI '%s'" % uri in str(failure.value)  # names the URI it refused
    with pytest.raises(LibvirtURIError, match=message):
        parse_libvirt_uri(uri)


@pytest.mark.parametrize("uri", ["qemu+ssh://alice:s3cret@hv1/system", "qemu+ssh://alice%3As3cret@hv1/system"])
def test_a_password_is_refused_without_being_shown(uri):
    with pytest.raises(AnsibleFilterError, match="a password in a libvirt URI is not supported") as failure:
        parse(uri)
    assert "s3cret" not in str(failure.value)


@pytest.mark.parametrize("uri", ["qemu+tlz://alice:s3cret@hv1/system", "qemu+tlz://alice%3as3cret@hv1/system",
                                 "qemu+tlz://alice:s3:cr@t@hv1/system"])
def test_a_password_is_masked_in_other_errors(uri):
    with pytest.raises(AnsibleFilterError, match="unknown transport") as failure:
        parse(uri)
    assert "s3" not in str(failure.value)
    assert "'qemu+tlz://alice:****@hv1/system'" in str(failure.value)


@pytest.mark.parametrize("value", [None, 16514, ["qemu:///system"], {"uri": "qemu:///system"}])
def test_parse_needs_a_string(value):
    with pytest.raises(AnsibleFilterError, match="a libvirt URI must be a string"):
        parse(value)


# --- warnings for parameters the remote driver does not know ------------------------------------

@pytest.fixture
def warnings(monkeypatch):
    seen = []
    monkeypatch.setattr(filters.display, "warning", seen.append)
    return seen


def test_unknown_parameter_warns_with_name_and_transport(warnings):
    parsed = parse("qemu+ssh://hv1/system?keyfile=/k&foo=bar&Baz=1")
    assert parsed["params"] == {"keyfile": "/k", "foo": "bar", "Baz": "1"}
    assert parsed["unknown_params"] == ["foo", "Baz"]
    assert len(warnings) == 2
    assert "parameter 'foo'" in warnings[0] and "transport 'ssh'" in warnings[0]
    assert "parameter 'Baz'" in warnings[1] and "transport 'ssh'" in warnings[1]
    assert "command, keyfile, mode, name, netcat, no_tty, no_verify, proxy, socket" in warnings[0]


def test_implied_transport_is_named_in_the_warning(warnings):
    parse("qemu://hv1/system?verify=0")
    assert warnings == [
        "libvirt URI parameter 'verify' is not one the remote driver knows for transport 'tls' (known: auth, "
        "authfile, name, no_sanity, no_verify, pkipath, tls_priority); libvirt passes it unchanged to the driver "
        "on the other side"]


def test_known_parameters_do_not_warn(warnings):
    for uri, dummy in DOC_EXAMPLES:
        if "root=" not in uri:
            parse(uri)
    assert warnings == []


def test_build_warns_too(warnings):
    assert build(dict(driver="qemu", host="hv1", path="/system", params={"x_debug": "1"})) == \
        "qemu://hv1/system?x_debug=1"
    assert len(warnings) == 1 and "'x_debug'" in warnings[0] and "'tls'" in warnings[0]


def test_unknown_param_warnings_function():
    assert unknown_param_warnings(parse_libvirt_uri("qemu:///system")) == []
    assert len(unknown_param_warnings(parse_libvirt_uri("qemu:///embed?root=/x"))) == 1


# --- build from subsets --------------------------------------------------------------------------

@pytest.mark.parametrize("parts, uri", [
    (dict(driver="qemu"), "qemu://"),
    (dict(driver="qemu", path="/system"), "qemu:///system"),
    (dict(driver="qemu", path="system"), "qemu:///system"),
    (dict(driver="test", path="/default"), "test:///default"),
    (dict(driver="qemu", host="hv1"), "qemu://hv1"),
    (dict(driver="qemu", transport="ssh", host="hv1"), "qemu+ssh://hv1"),
    (dict(driver="qemu", transport="TLS", host="hv1", path="/system"), "qemu+tls://hv1/system"),
    (dict(driver="qemu", transport="", host="hv1", path="/system"), "qemu://hv1/system"),
    (dict(driver="qemu", transport=None, path="/system"), "qemu:///system"),
    (dict(driver="qemu", transport="unix", path="/system"), "qemu+unix:///system"),
    (dict(driver="qemu", transport="unix", transport_explicit=False, path="/system"), "qemu:///system"),
    (dict(driver="qemu", transport="tls", transport_explicit=False, host="hv1", path="/system"), "qemu://hv1/system"),
    # transport_explicit false, but the implied transport changed with the host: written out
    (dict(driver="qemu", transport="tls", transport_explicit=False, host="hv1", path="/system")
     | dict(transport="tcp"), "qemu+tcp://hv1/system"),
    (dict(driver="qemu", transport="tls", host="[2001:db8::2]", port=16514, path="/system"),
     "qemu+tls://[2001:db8::2]:16514/system"),
    (dict(driver="qemu", transport="tls", host="fe80::1%eth0", path="/system"), "qemu+tls://[fe80::1%25eth0]/system"),
    (dict(driver="qemu", transport="ssh", user="root", host="hv1", port="2222", path="/system"),
     "qemu+ssh://root@hv1:2222/system"),
    (dict(driver="qemu", transport="ssh", user="ad@corp", host="hv1", path="/system"),
     "qemu+ssh://ad%40corp@hv1/system"),
    (dict(driver="qemu", transport="ssh", user="", host="hv1", port="", path=None, params=None), "qemu+ssh://hv1"),
    (dict(driver="qemu", transport="ssh", host="hv1", path="/system",
          params={"netcat": "/usr/bin/nc -q 0", "no_tty": True, "no_verify": False, "keyfile": None}),
     "qemu+ssh://hv1/system?netcat=/usr/bin/nc%20-q%200&no_tty=1&no_verify=0"),
    (dict(driver="qemu", transport="ssh", host="hv1", path="/system", params={"NO_TTY": 1, "Socket": "/s"}),
     "qemu+ssh://hv1/system?no_tty=1&socket=/s"),
    # parameter order is kept as given
    (dict(driver="qemu", host="hv1", path="/system", params={"pkipath": "/p", "no_verify": 0, "name": "qemu:///system"}),
     "qemu://hv1/system?pkipath=/p&no_verify=0&name=qemu:///system"),
    (dict(driver="qemu", host="hv1", path="/system", params={"name": "qemu:///system", "pkipath": "/p"}),
     "qemu://hv1/system?name=qemu:///system&pkipath=/p"),
    (dict(driver="qemu", transport="ext", path="/system", params={"command": "/usr/bin/ssh -W h:1 j"}),
     "qemu+ext:///system?command=/usr/bin/ssh%20-W%20h:1%20j"),
    (dict(driver="qemu", path="/a b/ü?#"), "qemu:///a%20b/%C3%BC%3F%23"),
    # the parse output, with the derived keys stale: they are recomputed
    (dict(driver="qemu", transport="tls", transport_explicit=True, user=None, host="hv2", port=None,
          effective_port=1, path="/system", params={}, unknown_params=["x"], uri="qemu:///nothing"),
     "qemu+tls://hv2/system"),
])
def test_build(parts, uri):
    assert build(parts) == uri
    parsed = parse(uri)
    assert parsed["uri"] == uri
    assert_libvirt_agrees(parsed)


BAD_PARTS = [
    ("qemu:///system", r"the parts of a libvirt URI must be a dict, not str"),
    ({}, r"'driver' is required"),
    (dict(driver=""), r"'driver' is required"),
    (dict(driver="qemu+ssh"), r"malformed driver 'qemu\+ssh'"),
    (dict(driver=5), r"'driver' must be a string, not int"),
    (dict(driver="qemu", hots="hv1"), r"unknown key 'hots' in the parts of a libvirt URI \(known: driver, transport"),
    (dict(driver="qemu", transport="tlz", host="hv1"), r"unknown transport 'tlz'"),
    (dict(driver="qemu", transport="ssh"), r"transport 'ssh' needs a host"),
    (dict(driver="qemu", transport="ssh", path="/system"), r"libvirt URI 'qemu\+ssh:///system': transport 'ssh' needs"),
    (dict(driver="qemu", transport="unix", host="hv1"), r"transport 'unix' reaches the local daemon only"),
    (dict(driver="qemu", host="hv1", port="22a"), r"malformed port '22a'"),
    (dict(driver="qemu", host="hv1", port=0), r"port 0 is out of range"),
    (dict(driver="qemu", host="hv1", port=70000), r"port 70000 is out of range"),
    (dict(driver="qemu", host="hv1", port=True), r"malformed port True"),
    (dict(driver="qemu", host="hv1", port=22.5), r"malformed port 22.5"),
    (dict(driver="qemu", port=22), r"'port' needs a host"),
    (dict(driver="qemu", user="root"), r"'user' needs a host"),
    (dict(driver="qemu", transport="ssh", host="hv1", user="alice:pw"), r"a password in a libvirt URI"),
    (dict(driver="qemu", host="hv 1"), r"whitespace is not allowed"),
    (dict(driver="qemu", host="hv1", transport_explicit="yes"), r"'transport_explicit' must be a boolean"),
    (dict(driver="qemu", host="hv1", params=["pkipath=/x"]), r"'params' must be a dict, not list"),
    (dict(driver="qemu", host="hv1", params={"pkipath": ["/x"]}), r"value of parameter 'pkipath' must be a string"),
    (dict(driver="qemu", host="hv1", params={"": "x"}), r"parameter names must be non-empty strings"),
    (dict(driver="qemu", host="hv1", params={"pkipath": "/a", "PKIPATH": "/b"}), r"parameter 'pkipath' given twice"),
    (dict(driver="qemu", host="hv1", params={"socket": "/x"}), r"'socket' has no effect with transport 'tls'"),
    (dict(driver="qemu", host="hv1", params={"no_verify": "yes"}), r"'no_verify' must be an integer"),
    (dict(driver="qemu", transport="ext"), r"transport 'ext' needs the parameter 'command'"),
]


@pytest.mark.parametrize("parts, message", BAD_PARTS, ids=[str(i) for i in range(len(BAD_PARTS))])
def test_build_refuses_bad_parts(parts, message):
    with pytest.raises(AnsibleFilterError, match=message) as failure:
        build(parts)
    assert str(failure.value).startswith("libvirt_uri_build: ")
    with pytest.raises(LibvirtURIError, match=message):
        build_libvirt_uri(parts)


# --- property-style tests over generated inputs -------------------------------------------------

# Everything a value may hold: printable ASCII (all the URI delimiters), spaces, a tab, a line
# break, and characters beyond ASCII (two-, three- and four-byte UTF-8).
VALUE_CHARS = string.printable.replace("\x0b", "").replace("\x0c", "") + "  éü€漢😀"
URI_CHARS = set(string.ascii_letters + string.digits + "-._~!$&'()*+,;=:@/?%[]")


class Generator:
    """Deterministic random libvirt URI parts (hypothesis is not available here)."""

    def __init__(self, seed):
        self.rng = random.Random(seed)

    def text(self, chars=VALUE_CHARS, low=0, high=12):
        return "".join(self.rng.choice(chars) for dummy in range(self.rng.randint(low, high)))

    def host(self):
        kind = self.rng.randrange(6)
        if kind == 0:
            return "localhost"
        if kind == 1:
            labels = [self.text(string.ascii_lowercase + string.digits + "-_~", 1, 10) for dummy in range(3)]
            return ".".join(labels[:self.rng.randint(1, 3)])
        if kind == 2:
            return str(ipaddress.IPv4Address(self.rng.getrandbits(32)))
        address = str(ipaddress.IPv6Address(self.rng.getrandbits(128) >> self.rng.choice((0, 64, 100))))
        if kind == 3:
            return address
        if kind == 4:
            return "[%s]" % address
        return "fe80::%x%%%s" % (self.rng.getrandbits(16), self.rng.choice(("eth0", "br-lab", "enp1s0.10")))

    def value(self, name):
        if name in INTEGER_PARAMS:
            return self.rng.choice((0, 1, True, False, "0", "1", "-3", "+7", 42))
        if name in CHOICE_PARAMS:
            return self.rng.choice(CHOICE_PARAMS[name])
        if name == "sshauth":
            return ",".join(self.rng.sample(SSHAUTH_METHODS, self.rng.randint(1, len(SSHAUTH_METHODS))))
        if self.rng.random() < 0.3:
            return "/" + "/".join(self.text(string.ascii_letters + "-._ ", 1, 8) for dummy in range(3))
        return self.text()

    def parts(self):
        rng = self.rng
        transport = rng.choice(TRANSPORTS + (None, None))
        parts = dict(driver=rng.choice(("qemu", "xen", "test", "lxc", "remote", "vz", "bhyve", "ch", "network"))
                     if rng.random() < 0.8 else rng.choice(string.ascii_letters) + self.text(
                         string.ascii_lowercase + string.digits + ".-", 0, 6))
        if transport is not None or rng.random() < 0.5:
            parts["transport"] = transport
        wants_host = transport in HOST_TRANSPORTS or (transport in (None, "ext") and rng.random() < 0.6)
        if wants_host:
            parts["host"] = self.host()
            if rng.random() < 0.4:
                parts["user"] = self.text(VALUE_CHARS.replace(":", ""), 1, 8)
            if rng.random() < 0.4:
                parts["port"] = rng.choice((rng.randint(1, 65535), str(rng.randint(1, 65535)), 1, 65535))
        if rng.random() < 0.9:
            parts["path"] = rng.choice(("/system", "/session", "/default", "/", "/embed",
                                        "/" + self.text(low=1), self.text(low=1)))
        effective = transport or ("tls" if wants_host else "unix")
        if transport is not None and transport == ("tls" if wants_host else "unix") and rng.random() < 0.3:
            parts["transport_explicit"] = False
        params = {}
        known = list(COMMON_PARAMS + TRANSPORT_PARAMS[effective])
        rng.shuffle(known)
        for name in known[:rng.randint(0, len(known))]:
            params[name.upper() if rng.random() < 0.1 else name] = self.value(name)
        if rng.random() < 0.1 and known:
            params[rng.choice(known)] = None  # None leaves it out
        if effective == "ext":
            params = {k: v for k, v in params.items() if k.lower() != "command"}
            params["command"] = "/usr/bin/" + self.text(string.ascii_lowercase, 1, 6) + " -W %h:%p"
        if any(k.lower() == "proxy" and v == "native" for k, v in params.items()):
            params = {k: v for k, v in params.items() if k.lower() != "netcat"}
        for dummy in range(rng.choice((0, 0, 1, 2))):
            name = self.text(string.ascii_letters + string.digits + "_.-", 1, 8)
            if name.lower() not in REMOTE_PARAMS and name not in params:
                params[name] = self.value(name)
        if params or rng.random() < 0.5:
            parts["params"] = params
        return parts


def expected_parse(parts):
    """What parse(build(parts)) must be, worked out from the parts alone."""
    host = parts.get("host") or None
    if host and host.startswith("["):
        host = host[1:-1]
    transport = (parts.get("transport") or "").lower() or ("tls" if host else "unix")
    explicit = bool(parts.get("transport")) and (parts.get("transport_explicit", True)
                                                 or transport != ("tls" if host else "unix"))
    port = int(parts["port"]) if parts.get("port") not in (None, "") else None
    path = parts.get("path") or ""
    if path and not path.startswith("/"):
        path = "/" + path
    params, unknown = {}, []
    for name, value in (parts.get("params") or {}).items():
        if value is None:
            continue
        if name.lower() in REMOTE_PARAMS:
            name = name.lower()
        else:
            unknown.append(name)
        params[name] = ("1" if value else "0") if isinstance(value, bool) else str(value)
    return dict(driver=parts["driver"], transport=transport, transport_explicit=explicit, user=parts.get("user") or None,
                host=host, port=port,
                effective_port=(port if port is not None else DEFAULT_PORTS[transport])
                if transport in DEFAULT_PORTS else None,
                path=path, params=params, unknown_params=unknown)


@pytest.mark.parametrize("seed", range(8))
def test_generated_parts_round_trip(seed):
    gen = Generator(seed)
    for dummy in range(250):
        parts = gen.parts()
        uri = build_libvirt_uri(parts)
        assert set(uri) <= URI_CHARS, uri
        parsed = parse_libvirt_uri(uri)
        assert parsed["uri"] == uri
        assert {k: v for k, v in parsed.items() if k != "uri"} == expected_parse(parts), (parts, uri)
        assert build_libvirt_uri(parsed) == uri
        assert parse_libvirt_uri(build_libvirt_uri(parsed)) == parsed
        assert_libvirt_agrees(parsed)


def _variants(rng, parsed):
    """Other spellings of the same URI: case, libvirt's stricter escaping, escaped unreserved characters."""
    scheme = parsed["driver"] + ("+" + rng.choice((str.upper, str.title, str.lower))(parsed["transport"])
                                 if parsed["transport_explicit"] else "")
    authority = ""
    if parsed["host"]:
        if parsed["user"] is not None:
            authority = quote(parsed["user"], safe="") + "@"
        host = parsed["host"]
        authority += "[%s]" % host.replace("%", "%25") if ":" in host else host
        if parsed["port"] is not None:
            authority += ":%0*d" % (rng.randint(1, 7), parsed["port"])
    raw = string.ascii_letters + string.digits + "-._~!$&'()*+,;=:@/"
    path = "".join(c if c == "/" or (c in raw and rng.random() < 0.5) else quote(c, safe="") if c not in raw
                   else "%%%02X" % ord(c) for c in parsed["path"])
    params = "&".join("%s=%s" % (name.upper() if name in REMOTE_PARAMS and rng.random() < 0.5 else quote(name, safe=""),
                                 quote(value, safe=""))
                      for name, value in parsed["params"].items())
    return "%s://%s%s%s" % (scheme, authority, path, "?" + params if parsed["params"] else "")


@pytest.mark.parametrize("seed", range(4))
def test_generated_spellings_normalize_to_the_same_parts(seed):
    gen = Generator(100 + seed)
    for dummy in range(200):
        parsed = parse_libvirt_uri(build_libvirt_uri(gen.parts()))
        variant = _variants(gen.rng, parsed)
        assert parse_libvirt_uri(variant) == parsed, variant
        if LIBVIRT is not None:
            theirs = libvirt_parse(variant)
            assert theirs["host"] == parsed["host"] and theirs["path"] == parsed["path"]
            assert [v for n, v in theirs["params"]] == list(parsed["params"].values())


@pytest.mark.parametrize("seed", range(4))
def test_generated_broken_uris_fail_cleanly(seed):
    """Damaged URIs either parse or raise LibvirtURIError; never another exception."""
    gen = Generator(200 + seed)
    damage = "%:@[]/?#&;= +\x00\u00e9"
    for dummy in range(300):
        uri = build_libvirt_uri(gen.parts())
        position = gen.rng.randrange(len(uri) + 1)
        broken = uri[:position] + gen.rng.choice(damage) + uri[position + gen.rng.randint(0, 2):]
        try:
            parsed = parse_libvirt_uri(broken)
        except LibvirtURIError as exc:
            assert str(exc)
        else:
            assert parse_libvirt_uri(parsed["uri"]) == parsed
            assert_libvirt_agrees(parsed)
            if LIBVIRT is not None:  # what this code accepts, libvirt reads the same way
                theirs = libvirt_parse(broken)
                assert theirs is not None, broken
                assert (theirs["host"], theirs["user"], theirs["port"], theirs["path"]) == (
                    parsed["host"], parsed["user"], parsed["port"] or 0, parsed["path"]), broken
                assert [(n.lower() if n.lower() in REMOTE_PARAMS else n, v) for n, v in theirs["params"]] == \
                    list(parsed["params"].items()), broken
