# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""A stand-in for the ``libvirt`` Python binding, injected as ``sys.modules["libvirt"]`` by unit tests.

``FakeLibvirt.install(monkeypatch, domains)`` puts a module object with the names the collection uses
(``open``, ``libvirtError``, ``registerErrorHandler`` and the constants, with libvirt's values) in place.
``domains`` maps a name to a :class:`FakeDomain`. Every call is recorded in ``calls``; device updates in
``FakeDomain.updates`` as ``(xml, flags)``. An update fails with a libvirtError carrying ``update_error``
when that is set (the first ``fail_updates`` ones only, when that is set too).
"""

from __future__ import annotations

import sys
import types
import xml.etree.ElementTree as ET

VIR_ERR_OPERATION_INVALID = 55
VIR_ERR_NO_DOMAIN = 42
VIR_ERR_INTERNAL_ERROR = 1


class libvirtError(Exception):  # pylint: disable=invalid-name
    """The binding's exception, under the binding's own name."""

    def __init__(self, message, code=VIR_ERR_INTERNAL_ERROR):
        super().__init__(message)
        self.code = code

    def get_error_code(self):
        return self.code

    def get_error_message(self):
        return self.args[0]


class FakeDomain:
    def __init__(self, xml, active=True, state=1, update_error=None, fail_updates=None):
        self.xml = xml
        self.active = active
        self.state_code = state
        self.update_error = update_error
        self.fail_updates = fail_updates   # how many updates fail (None: all, when update_error is set)
        self.updates = []
        self.xml_flags = []

    def isActive(self):  # noqa: N802  (libvirt's names)
        return 1 if self.active else 0

    def state(self, flags=0):
        return [self.state_code, 1]

    def XMLDesc(self, flags=0):  # noqa: N802
        self.xml_flags.append(flags)
        return self.xml

    def updateDeviceFlags(self, xml, flags=0):  # noqa: N802
        self.updates.append((xml, flags))
        if self.update_error and (self.fail_updates is None or len(self.updates) <= self.fail_updates):
            raise libvirtError(self.update_error, VIR_ERR_OPERATION_INVALID)
        return 0


class FakeConnection:
    def __init__(self, lib, uri):
        self.lib = lib
        self.uri = uri
        self.closed = False

    def lookupByName(self, name):  # noqa: N802
        self.lib.calls.append(("lookupByName", name))
        try:
            return self.lib.domains[name]
        except KeyError:
            raise libvirtError("Domain not found: no domain with matching name '%s'" % name, VIR_ERR_NO_DOMAIN) from None

    def getVersion(self):  # noqa: N802
        return 7002022

    def close(self):
        self.closed = True
        return 0


class FakeLibvirt:
    """The fake binding's state: domains, connections and calls."""

    def __init__(self, domains, open_error=None):
        self.domains = domains
        self.open_error = open_error
        self.connections = []
        self.calls = []
        self.handlers = []

    def open(self, uri=None):
        self.calls.append(("open", uri))
        if self.open_error:
            raise libvirtError(self.open_error)
        conn = FakeConnection(self, uri)
        self.connections.append(conn)
        return conn

    def module(self):
        mod = types.ModuleType("libvirt")
        mod.open = self.open
        mod.libvirtError = libvirtError
        mod.registerErrorHandler = lambda f, ctx: self.handlers.append(f)
        mod.VIR_DOMAIN_XML_SECURE = 1
        mod.VIR_DOMAIN_AFFECT_LIVE = 1
        mod.VIR_ERR_NO_DOMAIN = VIR_ERR_NO_DOMAIN
        mod.VIR_DOMAIN_RUNNING = 1
        return mod

    @classmethod
    def install(cls, monkeypatch, domains, **kwargs):
        lib = cls(domains, **kwargs)
        monkeypatch.setitem(sys.modules, "libvirt", lib.module())
        return lib


def graphics_of(device_xml):
    """The attributes of a device XML sent to updateDeviceFlags."""
    element = ET.fromstring(device_xml)
    assert element.tag == "graphics"
    return dict(element.attrib)
