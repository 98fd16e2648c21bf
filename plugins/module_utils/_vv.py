# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The one renderer (and reader) of virt-viewer connection files (`.vv`) and of their proxy URLs.

Private to the collection. Stdlib only. Used on the controller (console_ticket's action
plugin) and by anything else that hands a `.vv` to a person, e.g. a web service, which
serves it as VV_MIME_TYPE.

remote-viewer reads the file with GLib's GKeyFile (`man remote-viewer`, CONNECTION FILE):
one `[virt-viewer]` group, `key=value` lines, string values with GKeyFile escapes. A value
holding a line break would start a new key (an attacker-chosen `ca=`, say), so every value
except `ca` must be a single line; `ca` is PEM written with literal `\\n` escapes.
parse_vv reads such a file back the way GKeyFile does (for tests and tools that check what a
person was handed); its errors name keys and line numbers, never a value (a .vv holds secrets).
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

VV_MIME_TYPE = "application/x-virt-viewer"

DEFAULT_HOTKEYS = {
    "toggle-fullscreen": "shift+f11",
    "release-cursor": "shift+f12",
    "secure-attention": "ctrl+alt+end",
}

# Proxy credentials end up in `proxy=http://user:pass@host:port`: remote-viewer does not
# decode percent escapes and ends the user name at the first ':'. Used with fullmatch: "$"
# would accept a final "\n".
PROXY_CREDENTIAL = re.compile(r"[A-Za-z0-9_-]+")

_KEY = re.compile(r"^[a-z][a-z0-9-]*$")
_FORBIDDEN = ("\n", "\r", "\0")


def _escape(key, value):
    """GKeyFile string escaping for one single-line value; ValueError names the key."""
    if any(c in value for c in _FORBIDDEN):
        raise ValueError(".vv value for %r contains a line break or NUL character" % key)
    value = value.replace("\\", "\\\\").replace("\t", "\\t")
    if value.startswith(" "):
        value = "\\s" + value[1:]     # GKeyFile strips leading blanks of a value
    return value


def _escape_pem(key, pem):
    """A PEM document as one GKeyFile value: its lines joined by literal `\\n`."""
    if "\0" in pem:
        raise ValueError(".vv value for %r contains a NUL character" % key)
    lines = pem.replace("\r\n", "\n").strip("\n").split("\n")
    return "".join(_escape(key, line) + "\\n" for line in lines)


def _port(what, value):
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ValueError("%s must be a TCP port number 1..65535, got %r" % (what, value))
    return str(value)


def _text(key, value):
    if not isinstance(value, str) or not value:
        raise ValueError(".vv %r must be a non-empty string" % key)
    return _escape(key, value)


def _scalar(key, value):
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    return _text(key, value)


def check_proxy_url(url):
    """Return `url` if remote-viewer can use it as `proxy=`, else raise ValueError saying why.

    spice-gtk tunnels through an HTTP proxy with CONNECT only: `http://[user:pass@]host[:port]`.
    """
    if not isinstance(url, str) or any(c in url for c in _FORBIDDEN):
        raise ValueError("proxy must be a single-line string like http://host:3128")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError("proxy is not a valid URL (%s)" % exc) from None
    if parts.scheme != "http":
        raise ValueError("proxy must be an http:// URL (remote-viewer speaks HTTP CONNECT only), got scheme %r" % parts.scheme)
    if not parts.hostname:
        raise ValueError("proxy URL has no host name")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("proxy URL must not have a path, query or fragment")
    if port == 0:
        raise ValueError("proxy URL port must be 1..65535")
    for what, value in (("user name", parts.username), ("password", parts.password)):
        if value is not None and not PROXY_CREDENTIAL.fullmatch(value):
            raise ValueError("proxy URL %s may contain only [A-Za-z0-9_-] (remote-viewer does not decode escapes)" % what)
    return url


def proxy_url(host, port, username=None, password=None):
    """`http://[username:password@]host:port`, an IPv6 address in brackets.

    Credentials are either both given or both omitted, each `[A-Za-z0-9_-]+`.
    """
    if not isinstance(host, str) or not host or any(c in host for c in "/@?#[] \t\r\n\0"):
        raise ValueError("proxy host must be a host name or an IP address, got %r" % (host,))
    _port("proxy port", port)
    if ":" in host:
        host = "[%s]" % host
    if (username is None) != (password is None):
        raise ValueError("proxy username and password go together: give both or neither")
    userinfo = ""
    if username is not None:
        for what, value in (("username", username), ("password", password)):
            if not isinstance(value, str) or not PROXY_CREDENTIAL.fullmatch(value):
                raise ValueError("proxy %s may contain only [A-Za-z0-9_-] and must not be empty" % what)
        userinfo = "%s:%s@" % (username, password)
    return "http://%s%s:%d" % (userinfo, host, port)


def render_vv(*, protocol, host, password, tls_port=None, port=None, proxy=None, ca_pem=None,
              host_subject=None, title=None, secure_channels="all", delete_this_file=True,
              hotkeys=None, extra=None):
    """Return the text of a `.vv` file for remote-viewer.

    protocol: "spice" (needs tls_port and/or port) or "vnc" (needs port; proxy, tls_port,
    ca_pem and host_subject are SPICE-only in remote-viewer and are refused).
    secure_channels: written for SPICE with a TLS port only ("all", or a list of channel
    names); None leaves it out.
    hotkeys: merged over DEFAULT_HOTKEYS; a value of None removes that binding.
    extra: further `key: value` pairs (str, int or bool) that must not repeat a key above.
    Raises ValueError naming the key for anything remote-viewer could misread.
    """
    if protocol not in ("spice", "vnc"):
        raise ValueError(".vv 'type' must be spice or vnc, got %r" % (protocol,))
    entries = [("type", protocol), ("host", _text("host", host))]
    if protocol == "vnc":
        for key, value in (("tls-port", tls_port), ("proxy", proxy), ("ca", ca_pem), ("host-subject", host_subject)):
            if value is not None:
                raise ValueError(".vv %r is SPICE-only in remote-viewer; a VNC .vv cannot carry it" % key)
        if port is None:
            raise ValueError(".vv 'port' is required for VNC")
    elif tls_port is None and port is None:
        raise ValueError(".vv needs 'tls-port' or 'port' for SPICE")
    if port is not None:
        entries.append(("port", _port(".vv 'port'", port)))
    if tls_port is not None:
        entries.append(("tls-port", _port(".vv 'tls-port'", tls_port)))
    entries.append(("password", _text("password", password)))
    if proxy is not None:
        entries.append(("proxy", _escape("proxy", check_proxy_url(proxy))))
    if ca_pem is not None:
        entries.append(("ca", _escape_pem("ca", ca_pem)))
    if host_subject is not None:
        entries.append(("host-subject", _text("host-subject", host_subject)))
    if protocol == "spice" and tls_port is not None and secure_channels:
        channels = secure_channels if isinstance(secure_channels, str) else ";".join(secure_channels)
        entries.append(("secure-channels", _text("secure-channels", channels)))
    if title is not None:
        entries.append(("title", _text("title", title)))
    if delete_this_file:
        entries.append(("delete-this-file", "1"))
    bindings = dict(DEFAULT_HOTKEYS)
    bindings.update(hotkeys or {})
    entries.extend((key, _text(key, value)) for key, value in bindings.items() if value is not None)

    seen = set(key for key, dummy in entries)
    for key, value in (extra or {}).items():
        if not isinstance(key, str) or not _KEY.match(key):
            raise ValueError(".vv key %r is not a valid key name" % (key,))
        if key in seen:
            raise ValueError(".vv key %r is already set by render_vv; pass it as its own argument" % key)
        seen.add(key)
        entries.append((key, _scalar(key, value)))
    for key, dummy in entries:
        if not _KEY.match(key):
            raise ValueError(".vv key %r is not a valid key name" % (key,))
    return "[virt-viewer]\n" + "".join("%s=%s\n" % entry for entry in entries)


_UNESCAPE = {"s": " ", "n": "\n", "t": "\t", "r": "\r", "\\": "\\"}
_LOCALIZED_KEY = re.compile(r"^[^\[\]]+\[[^\[\]]+\]$")


def _unescape(key, raw):
    """GKeyFile string unescaping of one raw value; ValueError names the key, never the value."""
    out = []
    chars = iter(raw)
    for char in chars:
        if char != "\\":
            out.append(char)
            continue
        escaped = next(chars, None)
        if escaped is None:
            raise ValueError(".vv value for %r ends with a lone backslash" % key)
        if escaped not in _UNESCAPE:
            raise ValueError(".vv value for %r holds an escape GKeyFile does not know "
                             "(it knows \\s, \\n, \\t, \\r and \\\\)" % key)
        out.append(_UNESCAPE[escaped])
    return "".join(out)


def parse_vv(text):
    """The `[virt-viewer]` keys of a `.vv` text as a dict of strings, unescaped as GKeyFile does.

    Reads what render_vv writes (numbers stay strings: `"61001"`, `"1"`) and any file GLib reads
    the same way: comments, blank lines, CRLF, blanks around keys and `=`, other groups (skipped),
    a repeated `[virt-viewer]` group (merged), localized keys (`title[fr]`, skipped: remote-viewer
    reads the plain key). Stricter than GLib where the file would be ambiguous or remote-viewer
    would refuse a value: a key set twice, an unknown escape or a lone backslash at the end of a
    value, a NUL. Raises ValueError naming the line or the key, never a value.
    """
    if not isinstance(text, str):
        raise ValueError(".vv must be text, got %s" % type(text).__name__)
    if "\0" in text:
        raise ValueError(".vv contains a NUL character")
    values = {}
    group = None
    found = False
    for number, line in enumerate(text.split("\n"), start=1):
        if line.endswith("\r"):
            line = line[:-1]
        stripped = line.lstrip(" \t\r\v\f")
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("["):
            header = stripped.rstrip(" \t\r\v\f")
            if not header.endswith("]") or len(header) < 3 or any(c in header[1:-1] for c in "[]"):
                raise ValueError(".vv line %d is not a valid group header" % number)
            group = header[1:-1]
            found = found or group == "virt-viewer"
            continue
        key, equals, raw = stripped.partition("=")
        key = key.rstrip(" \t\r\v\f")
        if not equals or not key:
            raise ValueError(".vv line %d is neither a group, a comment nor a key=value pair" % number)
        if group is None:
            raise ValueError(".vv line %d comes before the first group" % number)
        if group != "virt-viewer" or _LOCALIZED_KEY.match(key):
            continue
        if key in values:
            raise ValueError(".vv sets %r more than once (line %d)" % (key, number))
        values[key] = _unescape(key, raw.lstrip(" \t\r\v\f"))
    if not found:
        raise ValueError(".vv has no [virt-viewer] group")
    return values
