# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""libvirt connection URIs: ``driver[+transport]://[user@][host][:port][/path][?params]``.

Private to the collection. Stdlib only and no Ansible imports: used by the ``libvirt_uri`` and
``libvirt_uri_build`` filters on the controller and reusable by modules on managed hosts.

What libvirt does, and what this file follows (in libvirt's source: ``uri.rst`` and ``remote.rst`` in its docs,
``src/util/viruri.c``, ``src/remote/remote_sockets.c`` and ``doRemoteOpen`` in
``src/remote/remote_driver.c``):

- The scheme is ``driver`` or ``driver+transport``. The transport is compared without regard to
  case; one of tls, unix, ssh, libssh, libssh2, ext, tcp. Without a transport libvirt uses tls
  when a host is given and unix when not. unix together with a host is refused by libvirt.
- Default ports: tls 16514, tcp 16509; ssh, libssh and libssh2 leave the port to SSH (22).
  unix and ext have no port.
- Host, user and path are percent-decoded (libxml2); an IPv6 address is written in brackets and
  given to the transport without them.
- The query is split at ``&`` (or, when the rest holds no ``&``, at ``;``); each ``name=value``
  is percent-decoded; ``+`` stays ``+``. The remote driver takes out the names below (compared
  without regard to case) and passes every other parameter unchanged to the driver on the
  remote side.

Stricter than libvirt, on purpose (every case is a mistake in a playbook, not a style):

- A transport that connects to a host (tls, tcp, ssh, libssh, libssh2) needs the host written
  out; libvirt would silently use ``localhost`` (``qemu+ssh:///system``).
- A parameter the remote driver knows but ignores for the transport in use (``pkipath`` with
  ssh, ``socket`` with tls) is an error: libvirt would drop it without a word.
- Values libvirt refuses when it connects (``no_verify=yes``, ``mode=fast``, ``ext`` without
  ``command``, ``netcat`` with ``proxy=native``) and things it cannot mean (a password in the
  URI, a fragment, a parameter given twice, a port outside 1..65535) are errors here already.

Parameters the remote driver does not know are not errors: they are listed in
``unknown_params`` and ``unknown_param_warnings()`` words a warning for each.

Building: values are percent-encoded except for the unreserved characters and
``! $ ' ( ) * + , / : @``, which RFC 3986 allows in a query and which libvirt reads back
unchanged, so paths, ``name=qemu:///system`` and GnuTLS priority strings stay readable. libvirt's
own formatter (``virURIFormatParams``) encodes those too; both forms decode to the same value.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from urllib.parse import quote, unquote_to_bytes

TRANSPORTS = ("tls", "unix", "ssh", "libssh", "libssh2", "ext", "tcp")
DEFAULT_PORTS = {"tls": 16514, "tcp": 16509, "ssh": 22, "libssh": 22, "libssh2": 22}
HOST_TRANSPORTS = ("tls", "tcp", "ssh", "libssh", "libssh2")

# Parameters the remote driver takes out of the URI (doRemoteOpen), per transport that uses them.
COMMON_PARAMS = ("name", "auth", "authfile")
_SSH_LIB_PARAMS = ("mode", "proxy", "socket", "netcat", "keyfile", "known_hosts", "known_hosts_verify", "sshauth")
TRANSPORT_PARAMS = {
    "tls": ("pkipath", "tls_priority", "no_verify", "no_sanity"),
    "tcp": (),
    "unix": ("mode", "socket"),
    "ssh": ("mode", "proxy", "command", "socket", "netcat", "keyfile", "no_verify", "no_tty"),
    "libssh": _SSH_LIB_PARAMS,
    "libssh2": _SSH_LIB_PARAMS,
    "ext": ("command",),
}
REMOTE_PARAMS = tuple(sorted(set(COMMON_PARAMS).union(*TRANSPORT_PARAMS.values())))

# Values libvirt checks when it opens the connection.
INTEGER_PARAMS = ("no_verify", "no_tty", "no_sanity")
CHOICE_PARAMS = {
    "mode": ("auto", "legacy", "direct"),
    "proxy": ("auto", "netcat", "native"),
    "known_hosts_verify": ("normal", "auto", "ignore"),
}
SSHAUTH_METHODS = ("agent", "privkey", "password", "keyboard-interactive")

# Hints for a known parameter used with a transport that ignores it.
_HINTS = {
    ("no_verify", "libssh"): "use known_hosts_verify=auto or known_hosts_verify=ignore",
    ("no_verify", "libssh2"): "use known_hosts_verify=auto or known_hosts_verify=ignore",
    ("known_hosts", "ssh"): "the ssh binary reads UserKnownHostsFile from ssh_config; or use libssh",
    ("known_hosts_verify", "ssh"): "use no_verify=1 with the ssh transport",
    ("pkipath", "tcp"): "tcp is unencrypted; use tls for certificates",
}

_UNRESERVED = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
_SUB_DELIMS = "!$&'()*+,;="
# Characters written as they are when building; every other one is percent-encoded.
_SAFE_USER = _SUB_DELIMS.replace("&", "").replace(";", "").replace("=", "")
_SAFE_PATH = _SUB_DELIMS + ":@/"
_SAFE_QUERY = "!$'()*+,/:@"
# Characters accepted unencoded when parsing (RFC 3986); "%" only as the start of an escape.
_RAW_USER = set(_UNRESERVED + _SUB_DELIMS + "%")
_RAW_PATH = set(_UNRESERVED + _SUB_DELIMS + ":@/%")
_RAW_QUERY = set(_UNRESERVED + _SUB_DELIMS + ":@/?%")

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")
_DRIVER = re.compile(r"[A-Za-z][A-Za-z0-9.-]*")
_REG_NAME = re.compile(r"[A-Za-z0-9._~-]+")
_PORT = re.compile(r"[0-9]+")
_INTEGER = re.compile(r"[+-]?[0-9]+")
_ZONE = re.compile(r"[A-Za-z0-9._~-]+")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_USERINFO = re.compile(r"^([^/?#]*//)([^/?#]*)@")

BUILD_KEYS = ("driver", "transport", "transport_explicit", "user", "host", "port", "path", "params")
# Keys of parse_libvirt_uri()'s result that build_libvirt_uri() accepts and recomputes.
DERIVED_KEYS = ("effective_port", "unknown_params", "uri")


class LibvirtURIError(ValueError):
    """A URI (or the parts of one) that libvirt would refuse or silently misread; str(e) says why."""


def _shown(uri):
    """The URI for an error text, with a password (never valid here) masked."""
    match = _USERINFO.search(uri)
    if match and (":" in match.group(2) or "%3a" in match.group(2).lower()):
        user = re.split(r":|%3[aA]", match.group(2), maxsplit=1)[0]
        return uri[:match.start(2)] + user + ":****" + uri[match.end(2):]
    return uri


def _password_error():
    # No URI in this message: it would show the password.
    return LibvirtURIError("a password in a libvirt URI is not supported (libvirt would take 'user:password' as "
                           "the user name); authenticate with keys, sshauth, authfile or certificates")


def _fail(uri, reason):
    raise LibvirtURIError("libvirt URI '%s': %s" % (_shown(uri), reason))


def _decode(uri, raw, allowed, what):
    """Percent-decode one component as libxml2 does, refusing characters a URI cannot hold."""
    for char in raw:
        if char not in allowed:
            _fail(uri, "character %r is not allowed unencoded in the %s (percent-encode it)" % (char, what))
    if _BAD_ESCAPE.search(raw):
        _fail(uri, "'%%' is not followed by two hex digits in the %s" % what)
    try:
        return unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        _fail(uri, "the %s does not decode to UTF-8 text" % what)


def default_transport(host):
    """The transport libvirt uses when the scheme names none."""
    return "tls" if host else "unix"


def _split_params(query):
    """(raw name, raw value) pairs, split like libvirt's virURIParseParams."""
    pairs = []
    while query:
        end = query.find("&")
        if end < 0:
            end = query.find(";")
        if end < 0:
            end = len(query)
        section, query = query[:end], query[end + 1:]
        if section:
            name, sep, value = section.partition("=")
            pairs.append((name, value if sep else ""))
    return pairs


def _check_param(uri, transport, name, value):
    """Refuse a known parameter the transport ignores, or a value libvirt would refuse."""
    if name not in COMMON_PARAMS and name not in TRANSPORT_PARAMS[transport]:
        users = sorted(t for t in TRANSPORTS if name in TRANSPORT_PARAMS[t])
        reason = "parameter '%s' has no effect with transport '%s' (libvirt ignores it there; it applies to %s)" % (
            name, transport, ", ".join(users))
        hint = _HINTS.get((name, transport))
        _fail(uri, reason + ("; " + hint if hint else ""))
    if name in INTEGER_PARAMS and not _INTEGER.fullmatch(value):
        _fail(uri, "parameter '%s' must be an integer (0 = off, any other = on), not '%s'" % (name, value))
    if name in CHOICE_PARAMS and value not in CHOICE_PARAMS[name]:
        _fail(uri, "parameter '%s' must be one of %s, not '%s'" % (name, ", ".join(CHOICE_PARAMS[name]), value))
    if name == "sshauth":
        methods = value.split(",")
        for method in methods:
            if method.lower() not in SSHAUTH_METHODS:
                _fail(uri, "parameter 'sshauth' takes a comma-separated list of %s, not '%s'" % (
                    ", ".join(SSHAUTH_METHODS), method))


def _parse_authority(uri, authority):
    """(user, host, port) of ``[user@]host[:port]``; host without IPv6 brackets."""
    user = None
    if "@" in authority:
        userinfo, dummy, authority = authority.rpartition("@")
        if "@" in userinfo:
            _fail(uri, "more than one '@' in the authority (percent-encode '@' in a user name as %40)")
        if ":" in userinfo:
            raise _password_error()
        if not userinfo:
            _fail(uri, "the user name before '@' is empty")
        user = _decode(uri, userinfo, _RAW_USER, "user name")
        if ":" in user:
            raise _password_error()
    port_text = None
    if authority.startswith("["):
        end = authority.find("]")
        if end < 0:
            _fail(uri, "'[' without ']' around the IPv6 address")
        host, rest = authority[1:end], authority[end + 1:]
        if rest:
            if not rest.startswith(":"):
                _fail(uri, "unexpected '%s' after the IPv6 address" % rest)
            port_text = rest[1:]
        host = _ipv6_host(uri, host)
    else:
        if authority.count(":") > 1:
            _fail(uri, "an IPv6 address must be written in brackets, e.g. qemu+ssh://[2001:db8::1]/system")
        host, sep, port_text = authority.partition(":")
        if not sep:
            port_text = None
        if host and not _REG_NAME.fullmatch(host):
            _fail(uri, "malformed host '%s' (letters, digits, '.', '-', '_', '~', or an IPv6 address in brackets)" % host)
    host = host or None
    port = None
    if port_text is not None:
        if not _PORT.fullmatch(port_text):
            _fail(uri, "malformed port '%s' (a number from 1 to 65535)" % port_text)
        port = int(port_text)
        if not 1 <= port <= 65535:
            _fail(uri, "port %d is out of range (1 to 65535)" % port)
    if host is None and port is not None:
        _fail(uri, "a port needs a host")
    if host is None and user is not None:
        _fail(uri, "a user name needs a host")
    return user, host, port


def _ipv6_host(uri, text):
    """The address inside brackets: an IPv6 address with an optional RFC 6874 zone (``%25eth0``)."""
    address, sep, zone = text.partition("%25")
    try:
        if "%" in address:  # Python >= 3.9 would take it as a scope
            raise ValueError(address)
        ipaddress.IPv6Address(address)
    except ValueError:
        _fail(uri, "malformed IPv6 address '%s'" % text)
    if sep:
        if not _ZONE.fullmatch(zone):
            _fail(uri, "malformed IPv6 zone '%s'" % zone)
        return "%s%%%s" % (address, zone)
    return address


def parse_libvirt_uri(uri):
    """Parse a libvirt connection URI into a dict; raise LibvirtURIError with the reason.

    Keys: driver, transport (explicit, or the one libvirt implies), transport_explicit (bool),
    user, host (IPv6 without brackets), port (int when written, else None), effective_port
    (port, or the transport's default; None for unix and ext), path ("" when none), params
    (decoded values in URI order; known names in lower case), unknown_params (names the remote
    driver does not know) and uri (the canonical form; equal to the input when that was canonical).
    """
    if not isinstance(uri, str):
        raise LibvirtURIError("a libvirt URI must be a string, not %s" % type(uri).__name__)
    if not uri:
        raise LibvirtURIError("the libvirt URI is empty")
    if any(c.isspace() for c in uri):
        _fail(uri, "whitespace is not allowed (percent-encode a space in a value as %20)")
    if any(ord(c) < 32 or ord(c) == 127 for c in uri):
        _fail(uri, "control characters are not allowed")
    scheme, sep, rest = uri.partition("://")
    if not sep:
        _fail(uri, "'://' is missing (the form is driver[+transport]://[user@][host][:port][/path][?params])")
    if not scheme or scheme.startswith("+"):
        _fail(uri, "the driver is empty")
    if not _SCHEME.fullmatch(scheme):
        _fail(uri, "malformed scheme '%s' (driver[+transport])" % scheme)
    driver, plus, transport = scheme.partition("+")
    if not _DRIVER.fullmatch(driver):
        _fail(uri, "malformed driver '%s'" % driver)
    if plus:
        transport = transport.lower()
        if transport not in TRANSPORTS:
            _fail(uri, "unknown transport '%s' (one of %s)" % (transport, ", ".join(TRANSPORTS)))
    if "#" in rest:
        _fail(uri, "a fragment ('#...') is not part of a libvirt URI (percent-encode '#' in a value as %23)")
    rest, qmark, query = rest.partition("?")
    slash = rest.find("/")
    authority, raw_path = (rest, "") if slash < 0 else (rest[:slash], rest[slash:])
    user, host, port = _parse_authority(uri, authority)
    path = _decode(uri, raw_path, _RAW_PATH, "path")

    explicit = bool(plus)
    if not explicit:
        transport = default_transport(host)
    if transport == "unix" and host:
        _fail(uri, "transport 'unix' reaches the local daemon only, it cannot take a host ('%s')" % host)
    if transport in HOST_TRANSPORTS and not host:
        _fail(uri, "transport '%s' needs a host (libvirt would silently connect to localhost; write the host, "
                   "or use %s:///%s for the local daemon)" % (transport, driver, path.lstrip("/")))

    params = {}
    unknown = []
    for raw_name, raw_value in _split_params(query):
        name = _decode(uri, raw_name, _RAW_QUERY, "parameter name")
        value = _decode(uri, raw_value, _RAW_QUERY, "value of parameter '%s'" % name)
        if not name:
            _fail(uri, "a parameter has no name ('=%s')" % value)
        if name.lower() in REMOTE_PARAMS:
            name = name.lower()
            _check_param(uri, transport, name, value)
        else:
            unknown.append(name)
        if name in params:
            _fail(uri, "parameter '%s' given twice" % name)
        params[name] = value
    if transport == "ext" and "command" not in params:
        _fail(uri, "transport 'ext' needs the parameter 'command' (the program that carries the connection)")
    if params.get("proxy") == "native" and "netcat" in params:
        _fail(uri, "parameter 'netcat' cannot be used with proxy=native")

    result = dict(
        driver=driver, transport=transport, transport_explicit=explicit, user=user, host=host, port=port,
        effective_port=port if port is not None and transport in DEFAULT_PORTS else DEFAULT_PORTS.get(transport),
        path=path, params=params, unknown_params=unknown,
    )
    result["uri"] = _format(result)
    return result


def _format(parts):
    """The canonical text of already checked parts."""
    out = [parts["driver"]]
    if parts["transport_explicit"]:
        out.append("+" + parts["transport"])
    out.append("://")
    host = parts["host"]
    if host:
        if parts["user"] is not None:
            out.append(quote(parts["user"], safe=_SAFE_USER) + "@")
        if ":" in host:
            address, dummy, zone = host.partition("%")
            out.append("[" + address + ("%25" + zone if zone else "") + "]")
        else:
            out.append(host)
        if parts["port"] is not None:
            out.append(":%d" % parts["port"])
    out.append(quote(parts["path"], safe=_SAFE_PATH))
    if parts["params"]:
        out.append("?" + "&".join(
            "%s=%s" % (quote(name, safe=_SAFE_QUERY), quote(value, safe=_SAFE_QUERY))
            for name, value in parts["params"].items()))
    return "".join(out)


def _text(key, value):
    if isinstance(value, bool) or not isinstance(value, str):
        raise LibvirtURIError("'%s' must be a string, not %s" % (key, type(value).__name__))
    return value


def _param_value(name, value):
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return value
    raise LibvirtURIError("the value of parameter '%s' must be a string, an integer or a boolean, not %s" % (
        name, type(value).__name__))


def build_libvirt_uri(parts):
    """The canonical URI of ``parts`` (a parse_libvirt_uri() result, or a subset of it).

    Keys: driver (required), transport, transport_explicit, user, host, port, path, params;
    effective_port, unknown_params and uri are accepted and ignored (they are recomputed). A
    missing, None or empty transport lets libvirt imply it; transport_explicit false writes the
    transport only when it differs from the implied one. Param values may be strings, integers
    or booleans (1/0); a None value leaves the parameter out. The result is checked by parsing it,
    so everything parse_libvirt_uri() refuses is refused here too.
    """
    if not isinstance(parts, Mapping):
        raise LibvirtURIError("the parts of a libvirt URI must be a dict, not %s" % type(parts).__name__)
    extra = sorted(str(k) for k in parts if k not in BUILD_KEYS and k not in DERIVED_KEYS)
    if extra:
        raise LibvirtURIError("unknown key %s in the parts of a libvirt URI (known: %s)" % (
            ", ".join("'%s'" % k for k in extra), ", ".join(BUILD_KEYS)))
    driver = parts.get("driver")
    if driver is None or driver == "":
        raise LibvirtURIError("'driver' is required (e.g. qemu)")
    driver = _text("driver", driver)
    if not _DRIVER.fullmatch(driver):
        raise LibvirtURIError("malformed driver '%s' (a letter, then letters, digits, '.' or '-')" % driver)

    host = parts.get("host")
    if host is not None:
        host = _text("host", host)
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
    host = host or None
    transport = parts.get("transport")
    if transport is not None:
        transport = _text("transport", transport).lower()
    explicit = parts.get("transport_explicit")
    if explicit is None:
        explicit = True
    if not isinstance(explicit, bool):
        raise LibvirtURIError("'transport_explicit' must be a boolean, not %s" % type(explicit).__name__)
    if not transport:
        transport, explicit = default_transport(host), False
    elif not explicit and transport != default_transport(host):
        explicit = True
    if transport not in TRANSPORTS:
        raise LibvirtURIError("unknown transport '%s' (one of %s)" % (transport, ", ".join(TRANSPORTS)))

    user = parts.get("user")
    user = _text("user", user) if user is not None else None
    if user == "":
        user = None
    port = parts.get("port")
    if port is not None and port != "":
        if isinstance(port, str) and _PORT.fullmatch(port):
            port = int(port)
        if isinstance(port, bool) or not isinstance(port, int):
            raise LibvirtURIError("malformed port %r (a number from 1 to 65535)" % (port,))
        if not 1 <= port <= 65535:
            raise LibvirtURIError("port %d is out of range (1 to 65535)" % port)
    else:
        port = None
    if host is None and (port is not None or user is not None):
        raise LibvirtURIError("'%s' needs a host" % ("port" if port is not None else "user"))
    path = parts.get("path")
    path = _text("path", path) if path is not None else ""
    if path and not path.startswith("/"):
        path = "/" + path

    params = parts.get("params")
    if params is None:
        params = {}
    if not isinstance(params, Mapping):
        raise LibvirtURIError("'params' must be a dict, not %s" % type(params).__name__)
    values = {}
    for name, value in params.items():
        if not isinstance(name, str) or not name:
            raise LibvirtURIError("parameter names must be non-empty strings, not %r" % (name,))
        if value is None:
            continue
        key = name.lower() if name.lower() in REMOTE_PARAMS else name
        if key in values:
            raise LibvirtURIError("parameter '%s' given twice" % key)
        values[key] = _param_value(name, value)
    if user is not None and ":" in user:
        raise _password_error()

    text = _format(dict(driver=driver, transport=transport, transport_explicit=explicit, user=user,
                        host=host, port=port, path=path, params=values))
    return parse_libvirt_uri(text)["uri"]


def unknown_param_warnings(parsed):
    """One warning text per parameter in ``parsed["unknown_params"]``."""
    return [
        "libvirt URI parameter '%s' is not one the remote driver knows for transport '%s' (known: %s); "
        "libvirt passes it unchanged to the driver on the other side" % (
            name, parsed["transport"], ", ".join(sorted(COMMON_PARAMS + TRANSPORT_PARAMS[parsed["transport"]])))
        for name in parsed["unknown_params"]
    ]
