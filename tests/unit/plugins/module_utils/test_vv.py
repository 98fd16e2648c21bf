# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import ctypes
import ctypes.util

import pytest

from ansible_collections.vmconsole.secure.plugins.module_utils._vv import (
    DEFAULT_HOTKEYS, VV_MIME_TYPE, check_proxy_url, parse_vv, proxy_url, render_vv,
)

CA_PEM = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\nAbCd+/==\n-----END CERTIFICATE-----\n"
SUBJECT = "C=XX,O=vmconsole\\, test,CN=hv1.example.org"


def parse(text):
    """The [virt-viewer] group as a dict, read the plain INI way (for structure checks)."""
    lines = text.splitlines()
    assert lines[0] == "[virt-viewer]"
    entries = [line.split("=", 1) for line in lines[1:]]
    keys = [k for k, dummy in entries]
    assert len(keys) == len(set(keys)), "duplicate keys"
    return dict(entries)


class GKeyFile:
    """GLib's own parser, the one remote-viewer uses, through ctypes (skipped without GLib)."""

    def __init__(self):
        name = ctypes.util.find_library("glib-2.0")
        if not name:
            pytest.skip("libglib-2.0 not found")
        lib = ctypes.CDLL(name)
        lib.g_key_file_new.restype = ctypes.c_void_p
        lib.g_key_file_load_from_data.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_ssize_t, ctypes.c_int,
                                                  ctypes.c_void_p]
        lib.g_key_file_get_keys.restype = ctypes.POINTER(ctypes.c_char_p)
        lib.g_key_file_get_keys.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_void_p]
        lib.g_key_file_get_string.restype = ctypes.c_void_p
        lib.g_key_file_get_string.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p]
        lib.g_key_file_free.argtypes = [ctypes.c_void_p]
        lib.g_free.argtypes = [ctypes.c_void_p]
        self.lib = lib

    def load(self, text):
        lib = self.lib
        kf = lib.g_key_file_new()
        try:
            data = text.encode("utf-8")
            assert lib.g_key_file_load_from_data(kf, data, len(data), 0, None), "GKeyFile refused the .vv"
            keys_p = lib.g_key_file_get_keys(kf, b"virt-viewer", None, None)
            keys = []
            i = 0
            while keys_p[i] is not None:
                keys.append(keys_p[i].decode())
                i += 1
            result = {}
            for key in keys:
                ptr = lib.g_key_file_get_string(kf, b"virt-viewer", key.encode(), None)
                assert ptr, "GKeyFile could not read %r as a string (bad escape?)" % key
                result[key] = ctypes.string_at(ptr).decode("utf-8")
                lib.g_free(ptr)
            return result
        finally:
            lib.g_key_file_free(kf)


@pytest.fixture(scope="module")
def gkeyfile():
    return GKeyFile()


def spice(**kwargs):
    args = dict(protocol="spice", host="hv1.example.org", password="T1cket", tls_port=61001)
    args.update(kwargs)
    return render_vv(**args)


def test_mime_type():
    assert VV_MIME_TYPE == "application/x-virt-viewer"


def test_spice_full_file():
    text = spice(proxy="http://hv1.example.org:3128", ca_pem=CA_PEM, host_subject=SUBJECT, title="web01 (hv1)")
    assert text.endswith("\n")
    assert parse(text) == {
        "type": "spice",
        "host": "hv1.example.org",
        "tls-port": "61001",
        "password": "T1cket",
        "proxy": "http://hv1.example.org:3128",
        "ca": "-----BEGIN CERTIFICATE-----\\nMIIBszCCAVmgAwIBAgIU\\nAbCd+/==\\n-----END CERTIFICATE-----\\n",
        "host-subject": "C=XX,O=vmconsole\\\\, test,CN=hv1.example.org",
        "secure-channels": "all",
        "title": "web01 (hv1)",
        "delete-this-file": "1",
        "toggle-fullscreen": "shift+f11",
        "release-cursor": "shift+f12",
        "secure-attention": "ctrl+alt+end",
    }


def test_glib_reads_back_exactly_what_was_meant(gkeyfile):
    title = " lead\\ing\tspace, back\\slash, ünïcode"
    text = spice(port=5901, proxy="http://[2001:db8::1]:3128", ca_pem=CA_PEM, host_subject=SUBJECT, title=title)
    values = gkeyfile.load(text)
    assert values["ca"] == CA_PEM
    assert values["host-subject"] == SUBJECT
    assert values["title"] == title
    assert values["proxy"] == "http://[2001:db8::1]:3128"
    assert values["port"] == "5901" and values["tls-port"] == "61001"
    assert values["password"] == "T1cket"


def test_ca_with_crlf_and_no_final_newline(gkeyfile):
    text = spice(ca_pem=CA_PEM.replace("\n", "\r\n").rstrip())
    assert gkeyfile.load(text)["ca"] == CA_PEM


def test_plain_spice_has_no_secure_channels():
    values = parse(render_vv(protocol="spice", host="127.0.0.1", password="x", port=5901))
    assert values["port"] == "5901"
    assert "tls-port" not in values and "secure-channels" not in values


def test_secure_channels_list_and_off():
    assert parse(spice(secure_channels=["main", "inputs"]))["secure-channels"] == "main;inputs"
    assert "secure-channels" not in parse(spice(secure_channels=None))


def test_delete_this_file_off_and_hotkeys():
    values = parse(spice(delete_this_file=False, hotkeys={"release-cursor": "ctrl+alt", "secure-attention": None,
                                                          "zoom-in": "ctrl+plus"}))
    assert "delete-this-file" not in values
    assert values["release-cursor"] == "ctrl+alt"
    assert values["toggle-fullscreen"] == DEFAULT_HOTKEYS["toggle-fullscreen"]
    assert "secure-attention" not in values
    assert values["zoom-in"] == "ctrl+plus"


def test_extra_keys():
    values = parse(spice(extra={"fullscreen": True, "enable-usbredir": False, "color-depth": 32}))
    assert (values["fullscreen"], values["enable-usbredir"], values["color-depth"]) == ("1", "0", "32")
    with pytest.raises(ValueError, match="'password' is already set"):
        spice(extra={"password": "other"})
    with pytest.raises(ValueError, match="not a valid key name"):
        spice(extra={"x\n[y]": "1"})
    with pytest.raises(ValueError, match="not a valid key name"):
        spice(extra={"a=b": "1"})


def test_vnc_file():
    values = parse(render_vv(protocol="vnc", host="hv1", password="abcd1234", port=5901, title="web01"))
    assert values == {"type": "vnc", "host": "hv1", "port": "5901", "password": "abcd1234", "title": "web01",
                      "delete-this-file": "1", **DEFAULT_HOTKEYS}


@pytest.mark.parametrize("key, kwargs", [
    ("tls-port", {"tls_port": 5999}),
    ("proxy", {"proxy": "http://hv1:3128"}),
    ("ca", {"ca_pem": CA_PEM}),
    ("host-subject", {"host_subject": SUBJECT}),
])
def test_vnc_refuses_spice_only_keys(key, kwargs):
    with pytest.raises(ValueError, match="'%s' is SPICE-only" % key):
        render_vv(protocol="vnc", host="hv1", password="abcd1234", port=5901, **kwargs)


@pytest.mark.parametrize("kwargs, message", [
    ({"protocol": "rdp"}, "'type' must be spice or vnc"),
    ({"tls_port": None}, "needs 'tls-port' or 'port'"),
    ({"tls_port": 0}, "'tls-port' must be a TCP port"),
    ({"tls_port": 70000}, "'tls-port' must be a TCP port"),
    ({"tls_port": "61001"}, "'tls-port' must be a TCP port"),
    ({"tls_port": True}, "'tls-port' must be a TCP port"),
    ({"port": -1}, "'port' must be a TCP port"),
    ({"host": ""}, "'host' must be a non-empty string"),
    ({"password": None}, "'password' must be a non-empty string"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        spice(**kwargs)


def test_vnc_needs_port():
    with pytest.raises(ValueError, match="'port' is required for VNC"):
        render_vv(protocol="vnc", host="hv1", password="abcd1234")


@pytest.mark.parametrize("key, kwargs", [
    ("host", {"host": "hv1\n[virt-viewer]\nca=evil"}),
    ("host", {"host": "hv1\rtls-port=1"}),
    ("password", {"password": "abc\ntls-port=1"}),
    ("password", {"password": "abc\0"}),
    ("title", {"title": "web01\nproxy=http://evil:3128"}),
    ("host-subject", {"host_subject": "CN=a\nca=x"}),
    ("ca", {"ca_pem": CA_PEM + "\0"}),
    ("release-cursor", {"hotkeys": {"release-cursor": "ctrl\nhost=evil"}}),
    ("fullscreen", {"extra": {"fullscreen": "1\nhost=evil"}}),
])
def test_ini_injection_is_refused_naming_the_key(key, kwargs):
    with pytest.raises(ValueError, match="value for '%s' contains a (line break or )?NUL" % key) as info:
        spice(**kwargs)
    assert "evil" not in str(info.value) and "abc" not in str(info.value)


def test_injection_in_proxy_is_refused():
    with pytest.raises(ValueError, match="proxy must be a single-line"):
        spice(proxy="http://hv1:3128\nhost=evil")


@pytest.mark.parametrize("args, expected", [
    (("hv1.example.org", 3128), "http://hv1.example.org:3128"),
    (("192.0.2.7", 3128), "http://192.0.2.7:3128"),
    (("2001:db8::7", 3128), "http://[2001:db8::7]:3128"),
    (("::1", 8080, "alice", "tok_en-1"), "http://alice:tok_en-1@[::1]:8080"),
    (("hv1", 3128, "u", "p"), "http://u:p@hv1:3128"),
])
def test_proxy_url(args, expected):
    assert proxy_url(*args) == expected
    assert check_proxy_url(expected) == expected


@pytest.mark.parametrize("args, message", [
    (("hv1", 3128, "alice", None), "give both or neither"),
    (("hv1", 3128, None, "secret"), "give both or neither"),
    (("hv1", 3128, "alice", "se:cret"), "password may contain only"),
    (("hv1", 3128, "alice", "se%3Acret"), "password may contain only"),
    (("hv1", 3128, "al@ice", "secret"), "username may contain only"),
    (("hv1", 3128, "", "secret"), "username may contain only"),
    (("hv1", 3128, "alice", "secret\n"), "password may contain only"),
    (("hv1", 3128, "alice\n", "secret"), "username may contain only"),
    (("hv1", 0), "port must be a TCP port"),
    (("hv1", "3128"), "port must be a TCP port"),
    (("", 3128), "proxy host"),
    (("hv1/x", 3128), "proxy host"),
    (("[::1]", 3128), "proxy host"),
    (("hv1\n", 3128), "proxy host"),
])
def test_proxy_url_refuses(args, message):
    with pytest.raises(ValueError, match=message):
        proxy_url(*args)


@pytest.mark.parametrize("url, message", [
    ("https://hv1:3128", "must be an http:// URL"),
    ("socks5://hv1:1080", "must be an http:// URL"),
    ("hv1:3128", "must be an http:// URL"),
    ("http://:3128", "no host name"),
    ("http://hv1:3128/path", "path, query or fragment"),
    ("http://hv1:3128?x=1", "path, query or fragment"),
    ("http://hv1:99999", "not a valid URL"),
    ("http://hv1:0", "port must be 1..65535"),
    ("http://al:se%3Acret@hv1:3128", "password may contain only"),
    ("http://a.b:pw@hv1:3128", "user name may contain only"),
    (3128, "single-line string"),
])
def test_check_proxy_url_refuses(url, message):
    with pytest.raises(ValueError, match=message):
        check_proxy_url(url)


# --- parse_vv: the reader --------------------------------------------------------------------

def test_parse_reads_back_what_render_wrote():
    title = " lead\\ing\tspace, back\\slash, trailing blank , ünïcode "
    text = spice(port=5901, proxy="http://carol__vm1:v1_tok-EN@hv1:3128", ca_pem=CA_PEM, host_subject=SUBJECT,
                 title=title, extra={"fullscreen": True, "color-depth": 32})
    assert parse_vv(text) == {
        "type": "spice", "host": "hv1.example.org", "port": "5901", "tls-port": "61001", "password": "T1cket",
        "proxy": "http://carol__vm1:v1_tok-EN@hv1:3128", "ca": CA_PEM, "host-subject": SUBJECT,
        "secure-channels": "all", "title": title, "delete-this-file": "1", **DEFAULT_HOTKEYS,
        "fullscreen": "1", "color-depth": "32",
    }


def test_parse_keeps_file_order():
    text = render_vv(protocol="vnc", host="hv1", password="abcd1234", port=5901, title="web01")
    assert list(parse_vv(text)) == ["type", "host", "port", "password", "title", "delete-this-file",
                                    *DEFAULT_HOTKEYS]


# Texts GLib reads; parse_vv must read each exactly as GKeyFile does.
GLIB_TEXTS = {
    "comments and blank lines": "# made by hand\n\n[virt-viewer]\n  # indented comment\ntype=spice\n\nhost=hv1\n",
    "CRLF": "[virt-viewer]\r\ntype=spice\r\nhost=hv1\r\n",
    "no final newline": "[virt-viewer]\nhost=hv1",
    "blanks around key and =": "[virt-viewer]\n  host \t=  hv1\n",
    "trailing blanks kept": "[virt-viewer]\ntitle=web01  \n",
    "escapes": "[virt-viewer]\ntitle=\\sa\\tb\\nc\\rd\\\\e\\s\n",
    "= in a value": "[virt-viewer]\nproxy=http://u:p@h:1\ntitle=a=b\n",
    "empty value": "[virt-viewer]\ntitle=\n",
    "bare CR inside a value": "[virt-viewer]\ntitle=a\rb\n",
    "other groups skipped": "[ovirt]\nhost=engine\n[virt-viewer]\nhost=hv1\n[other]\nx=1\n",
    "repeated group merged": "[virt-viewer]\na=1\n[other]\nb=2\n[virt-viewer]\nc=3\n",
    "blanks around group": " [virt-viewer] \nhost=hv1\n",
    "localized key skipped": "[virt-viewer]\ntitle[fr]=bonjour\ntitle=hello\n",
}


@pytest.mark.parametrize("name", sorted(GLIB_TEXTS))
def test_parse_agrees_with_glib(name, gkeyfile):
    text = GLIB_TEXTS[name]
    assert parse_vv(text) == gkeyfile.load(text)


@pytest.mark.parametrize("value", [" lead", "trail ", "a\\b", "tab\there", "\\s literal", "ünï", "x" * 300])
def test_parse_round_trip_of_any_single_line_value(value, gkeyfile):
    text = spice(title=value, extra={"x-note": value})
    assert parse_vv(text)["title"] == value == gkeyfile.load(text)["title"]
    assert parse_vv(text)["x-note"] == value


SECRET = "Sup3rS3cret"


@pytest.mark.parametrize("text, message", [
    ("host=hv1\n[virt-viewer]\n", "line 1 comes before the first group"),
    ("[virt-viewer]\nhost\n", "line 2 is neither a group, a comment nor a key=value pair"),
    ("[virt-viewer]\n%s\n" % SECRET, "line 2 is neither"),
    ("[virt-viewer]\n=%s\n" % SECRET, "line 2 is neither"),
    ("[virt-viewer]x\nhost=hv1\n", "line 1 is not a valid group header"),
    ("[virt-viewer\nhost=hv1\n", "line 1 is not a valid group header"),
    ("[]\nhost=hv1\n", "line 1 is not a valid group header"),
    ("[ovirt]\nhost=hv1\n", "no \\[virt-viewer\\] group"),
    ("", "no \\[virt-viewer\\] group"),
    ("[virt-viewer]\npassword=%s\nhost=hv1\npassword=other\n" % SECRET, "sets 'password' more than once \\(line 4\\)"),
    ("[virt-viewer]\npassword=a\\q%s\n" % SECRET, "value for 'password' holds an escape GKeyFile does not know"),
    ("[virt-viewer]\npassword=%s\\\n" % SECRET, "value for 'password' ends with a lone backslash"),
    ("[virt-viewer]\npassword=%s\0\n" % SECRET, "contains a NUL character"),
])
def test_parse_refuses_naming_line_or_key_never_the_value(text, message):
    with pytest.raises(ValueError, match=message) as info:
        parse_vv(text)
    assert SECRET not in str(info.value) and "other" not in str(info.value)


@pytest.mark.parametrize("text", [None, b"[virt-viewer]\nhost=hv1\n", {"host": "hv1"}, 42])
def test_parse_refuses_what_is_not_text(text):
    with pytest.raises(ValueError, match="must be text"):
        parse_vv(text)


@pytest.mark.parametrize("text", ["host=hv1\n[virt-viewer]\n", "[virt-viewer]\nhost\n", "[virt-viewer]x\nk=1\n",
                                  "[virt-viewer]\n=1\n"])
def test_what_parse_refuses_glib_refuses_too(text, gkeyfile):
    with pytest.raises(AssertionError, match="GKeyFile refused"):
        gkeyfile.load(text)
