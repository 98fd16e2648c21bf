# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""A libvirt domain's consoles, for the modules that also serve libvirt guests (private).

A guest that libvirt runs has its QMP monitor owned by libvirtd, so the console modules do not
talk QMP to it: they read the live domain XML and change the ``<graphics>`` password with a live
device update (``virDomainUpdateDeviceFlags(VIR_DOMAIN_AFFECT_LIVE)``), which makes libvirt send
``set_password`` and ``expire_password`` to QEMU itself.

No Ansible imports. The XML work is pure functions on strings (:func:`parse_graphics`,
:func:`graphics_update_xml`); :class:`LibvirtDomain` is the thin part that needs the ``libvirt``
Python binding (Debian package python3-libvirt), imported only when a domain is opened.

Secrets: the live XML is read with ``VIR_DOMAIN_XML_SECURE`` (to see whether a password is set);
:func:`parse_graphics` keeps only *whether* there is one. The update XML holds the new password and
goes to libvirt only; every text that leaves this file goes through :func:`scrub`.
"""

from __future__ import annotations

import calendar
import re
import socket
import time
import xml.etree.ElementTree as ET

from ansible_collections.vmconsole.secure.plugins.module_utils._libvirt_uri import (
    parse_libvirt_uri,
    unknown_param_warnings,
)
from ansible_collections.vmconsole.secure.plugins.module_utils._qmp_module import QMP_MUTUALLY_EXCLUSIVE

LIBVIRT_ARGUMENT_SPEC = dict(
    libvirt_domain=dict(type="str"),
    libvirt_uri=dict(type="str", default="qemu:///system"),
)
# A console module names its VM in one of three ways: a qemu_vm guest (vm), a QMP socket, or a libvirt domain.
CONSOLE_MUTUALLY_EXCLUSIVE = QMP_MUTUALLY_EXCLUSIVE + [("libvirt_domain", "vm"), ("libvirt_domain", "socket")]
CONSOLE_REQUIRED_ONE_OF = [("vm", "socket", "libvirt_domain")]
DOMAIN_NAME_MAX = 200   # bytes in UTF-8; libvirt keeps <name>.xml and <name>.pid files (NAME_MAX 255)
GRAPHICS_TYPES = ("spice", "vnc")
CONNECTED = ("keep", "disconnect", "fail")
MISSING_BINDING = "libvirt_domain needs the python3-libvirt package on %s"

# libvirt's virDomainState, as virsh domstate names them.
DOMAIN_STATES = {0: "nostate", 1: "running", 2: "blocked", 3: "paused", 4: "shutdown", 5: "shutoff", 6: "crashed",
                 7: "pmsuspended"}
_VIR_DOMAIN_XML_SECURE = 1
_VIR_DOMAIN_AFFECT_LIVE = 1
_VIR_ERR_NO_DOMAIN = 42
_PASSWD_ATTR = re.compile(r"""passwd\s*=\s*(?:'[^']*'|"[^"]*")""")


class LibvirtError(Exception):
    """A libvirt call failed or the domain cannot serve the request; ``str(e)`` is human text without secrets.

    ``domain`` and ``uri`` name what was asked; ``code`` is libvirt's error code (None when not from libvirt).
    """

    def __init__(self, message, domain=None, uri=None, code=None):
        super().__init__(message)
        self.message = message
        self.domain = domain
        self.uri = uri
        self.code = code


class LibvirtMissing(LibvirtError):
    """The ``libvirt`` Python binding cannot be imported."""


class DomainNotFound(LibvirtError):
    """No domain of that name on that connection."""


class DomainNotRunning(LibvirtError):
    """The domain exists but is not active, so it has no console to serve."""


def check_domain_name(name):
    """``name`` if libvirt can hold it as a domain name, else ValueError naming libvirt_domain and the reason."""
    if not isinstance(name, str) or not name:
        raise ValueError("libvirt_domain must be a non-empty domain name")
    if "/" in name:
        raise ValueError("libvirt_domain %r is not a valid libvirt domain name: it must not contain '/'" % name)
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise ValueError("libvirt_domain %r is not a valid libvirt domain name: it must not contain control characters"
                         % name)
    if len(name.encode("utf-8")) > DOMAIN_NAME_MAX:
        raise ValueError("libvirt_domain is not a valid libvirt domain name: it is longer than %d bytes"
                         % DOMAIN_NAME_MAX)
    return name


def check_libvirt_options(params):
    """Check libvirt_domain and libvirt_uri before anything is read or sent; returns warnings for the module.

    ValueError names the option and the reason (the URI check is _libvirt_uri's, the one the filters use).
    """
    check_domain_name(params["libvirt_domain"])
    try:
        parsed = parse_libvirt_uri(params["libvirt_uri"])
    except ValueError as exc:
        raise ValueError("libvirt_uri: %s" % exc) from None
    return unknown_param_warnings(parsed)


def fail_libvirt(module, exc, **extra):
    """Turn a :class:`LibvirtError` into ``module.fail_json`` with libvirt_domain, libvirt_uri and libvirt_error_code."""
    result = dict(extra)
    result.update(msg=str(exc), libvirt_domain=exc.domain, libvirt_uri=exc.uri, libvirt_error_code=exc.code)
    module.fail_json(**result)


def scrub(text, *secrets):
    """``text`` with every ``secret`` and every ``passwd='...'`` attribute masked."""
    text = _PASSWD_ATTR.sub("passwd='********'", str(text))
    for secret in secrets:
        if secret:
            text = text.replace(secret, "********")
    return text


def valid_to(epoch):
    """libvirt's ``passwdValidTo`` form of ``epoch``: ``YYYY-MM-DDTHH:MM:SS`` in UTC (libvirt reads it with timegm)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch))


def _epoch(text):
    """A ``passwdValidTo`` text (UTC) as epoch seconds, or None."""
    try:
        return calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%S"))
    except (TypeError, ValueError):
        return None


def _int_or_none(value):
    """A port attribute as int; None for a missing, non-numeric, -1 (none) or 0 value."""
    try:
        port = int(value)
    except (TypeError, ValueError):
        return None
    return port if port > 0 else None


def _first_graphics(root, graphics_type):
    for element in root.iterfind("./devices/graphics"):
        if element.get("type") == graphics_type:
            return element
    return None


def _domain_root(xml):
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise ValueError("the domain XML from libvirt cannot be parsed: %s" % exc) from None
    if root.tag != "domain":
        raise ValueError("the XML from libvirt is not a <domain> but a <%s>" % root.tag)
    return root


def parse_graphics(xml):
    """The ``<graphics>`` consoles of a live domain XML: ``{"spice": dict|None, "vnc": dict|None}``.

    Each dict (the first element of its type, the one libvirt's device update changes): ``listen_type``
    (address, network, socket, none), ``host`` (listen address), ``socket`` (UNIX socket path), ``port``,
    ``tls_port`` (SPICE; None for -1 / none), ``autoport`` (bool), ``password_set`` (bool: a ``passwd``
    attribute is there, as read with VIR_DOMAIN_XML_SECURE), ``password_valid_to`` (``passwdValidTo`` as epoch
    seconds, or None), ``connected``. The password itself is never part of the result.
    """
    root = _domain_root(xml)
    consoles = {}
    for graphics_type in GRAPHICS_TYPES:
        element = _first_graphics(root, graphics_type)
        if element is None:
            consoles[graphics_type] = None
            continue
        listen = element.find("listen")
        listen_type = listen.get("type") if listen is not None else ("address" if element.get("listen") else None)
        host = element.get("listen")
        if listen is not None and listen.get("address"):
            host = listen.get("address")
        socket_path = element.get("socket") or (listen.get("socket") if listen is not None else None)
        consoles[graphics_type] = dict(
            listen_type=listen_type,
            host=host,
            socket=socket_path,
            port=_int_or_none(element.get("port")),
            tls_port=_int_or_none(element.get("tlsPort")) if graphics_type == "spice" else None,
            autoport=element.get("autoport") == "yes",
            password_set=element.get("passwd") is not None,
            password_valid_to=_epoch(element.get("passwdValidTo")),
            connected=element.get("connected"),
        )
    return consoles


def graphics_update_xml(xml, graphics_type, password, expires, connected=None):
    """The device XML for ``virDomainUpdateDeviceFlags`` that sets a ticket on the domain's ``graphics_type``.

    It is the domain's own live ``<graphics type=...>`` element (libvirt refuses an update that changes
    ports, listen addresses or the keymap) with ``passwd``, ``passwdValidTo`` (``expires``, epoch seconds,
    as UTC) and, for SPICE, ``connected`` set; a VNC element loses ``connected`` (VNC knows only keep).
    ValueError (without the password) when the domain has no such console or an argument is wrong.
    """
    if graphics_type not in GRAPHICS_TYPES:
        raise ValueError("graphics type must be one of %s, not %r" % (", ".join(GRAPHICS_TYPES), graphics_type))
    if not isinstance(password, str) or not password:
        raise ValueError("the password must be a non-empty string")
    if graphics_type == "spice" and connected not in CONNECTED:
        raise ValueError("connected must be one of %s for SPICE, not %r" % (", ".join(CONNECTED), connected))
    if graphics_type == "vnc" and connected not in (None, "keep"):
        raise ValueError("connected=%s is SPICE-only: libvirt takes only keep for VNC" % connected)
    element = _first_graphics(_domain_root(xml), graphics_type)
    if element is None:
        raise ValueError("the domain has no <graphics type='%s'>" % graphics_type)
    element.tail = None
    element.set("passwd", password)
    element.set("passwdValidTo", valid_to(expires))
    if graphics_type == "spice":
        element.set("connected", connected)
    elif "connected" in element.attrib:
        del element.attrib["connected"]
    return ET.tostring(element, encoding="unicode")


def import_libvirt():
    """The ``libvirt`` binding module; LibvirtMissing when it is not installed."""
    try:
        import libvirt  # pylint: disable=import-outside-toplevel
    except ImportError:
        raise LibvirtMissing(MISSING_BINDING % socket.gethostname()) from None
    return libvirt


class LibvirtDomain:
    """One running domain on one libvirt connection; a context manager that closes the connection.

    ``open()`` connects, looks the domain up and checks it is active; each method raises
    :class:`LibvirtError` (subclasses for the cases a user must tell apart) with a scrubbed text.
    """

    def __init__(self, name, uri="qemu:///system"):
        self.name = name
        self.uri = uri
        self.conn = None
        self.dom = None
        self._libvirt = None

    def _error(self, what, exc, *secrets):
        try:
            code = exc.get_error_code()
        except AttributeError:
            code = None
        detail = scrub(getattr(exc, "get_error_message", lambda: str(exc))() or str(exc), *secrets)
        return LibvirtError("libvirt domain %s (%s): %s failed: %s" % (self.name, self.uri, what, detail),
                            self.name, self.uri, code)

    def open(self):
        libvirt = self._libvirt = import_libvirt()
        # libvirt prints every error on stderr by default; errors reach the caller as exceptions instead.
        libvirt.registerErrorHandler(lambda ctx, err: None, None)
        try:
            self.conn = libvirt.open(self.uri)
        except libvirt.libvirtError as exc:
            raise self._error("connecting to %s" % self.uri, exc) from None
        try:
            self.dom = self.conn.lookupByName(self.name)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == getattr(libvirt, "VIR_ERR_NO_DOMAIN", _VIR_ERR_NO_DOMAIN):
                raise DomainNotFound("libvirt domain %s does not exist on %s (check libvirt_domain and libvirt_uri)"
                                     % (self.name, self.uri), self.name, self.uri, exc.get_error_code()) from None
            raise self._error("looking the domain up", exc) from None
        try:
            active = self.dom.isActive()
        except libvirt.libvirtError as exc:
            raise self._error("asking whether the domain runs", exc) from None
        if not active:
            raise DomainNotRunning("libvirt domain %s on %s is not running: it has no console (start it first)"
                                   % (self.name, self.uri), self.name, self.uri)
        return self

    def close(self):
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:  # pylint: disable=broad-except
                pass
            self.conn = self.dom = None

    def __enter__(self):
        return self.open()

    def __exit__(self, *exc_info):
        self.close()

    def live_xml(self):
        """The live domain XML, read with VIR_DOMAIN_XML_SECURE (it may hold the current password: keep it here)."""
        flags = getattr(self._libvirt, "VIR_DOMAIN_XML_SECURE", _VIR_DOMAIN_XML_SECURE)
        try:
            return self.dom.XMLDesc(flags)
        except self._libvirt.libvirtError as exc:
            raise self._error("reading the live domain XML", exc) from None

    def graphics(self):
        """(the live XML, :func:`parse_graphics` of it); LibvirtError when libvirt's XML cannot be read."""
        xml = self.live_xml()
        try:
            return xml, parse_graphics(xml)
        except ValueError as exc:
            raise LibvirtError("libvirt domain %s (%s): %s" % (self.name, self.uri, exc), self.name, self.uri) from None

    def state(self):
        """(state name as virsh shows it, running: bool)."""
        try:
            state = self.dom.state()[0]
        except self._libvirt.libvirtError as exc:
            raise self._error("reading the domain state", exc) from None
        return DOMAIN_STATES.get(state, "unknown"), state == 1

    def hypervisor_version(self):
        """The hypervisor version libvirt reports (QEMU's for the qemu driver) as "major.minor.micro", or None."""
        try:
            version = self.conn.getVersion()
        except self._libvirt.libvirtError:
            return None
        return "%d.%d.%d" % (version // 1000000, version // 1000 % 1000, version % 1000)

    def update_live(self, device_xml, *secrets):
        """``virDomainUpdateDeviceFlags(device_xml, VIR_DOMAIN_AFFECT_LIVE)``; ``secrets`` are masked in errors."""
        flags = getattr(self._libvirt, "VIR_DOMAIN_AFFECT_LIVE", _VIR_DOMAIN_AFFECT_LIVE)
        try:
            self.dom.updateDeviceFlags(device_xml, flags)
        except self._libvirt.libvirtError as exc:
            raise self._error("the live update of its <graphics>", exc, *secrets) from None
