# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""_libvirt: the <graphics> parse and patch without libvirt, and the thin connection part against a fake binding."""

from __future__ import annotations

import calendar
import sys
import time
import xml.etree.ElementTree as ET

import pytest

from ansible_collections.vmconsole.secure.plugins.module_utils import _libvirt
from ansible_collections.vmconsole.secure.tests.unit.fakelibvirt import FakeDomain, FakeLibvirt, graphics_of

OLD = "0ldSecretPassw0rd"
# What libvirt 9.0 shows with VIR_DOMAIN_XML_SECURE for a running domain (shortened).
DOMAIN_XML = """<domain type='kvm' id='3'>
  <name>lv1</name>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <graphics type='spice' port='61101' tlsPort='61100' autoport='no' listen='127.0.0.1' passwd='%s'
              passwdValidTo='2026-01-01T00:00:00' connected='disconnect'>
      <listen type='address' address='127.0.0.1'/>
      <channel name='main' mode='secure'/>
      <image compression='off'/>
    </graphics>
    <graphics type='vnc' port='5910' autoport='no' listen='127.0.0.1' keymap='de'>
      <listen type='address' address='127.0.0.1'/>
    </graphics>
    <video><model type='qxl'/></video>
  </devices>
</domain>""" % OLD
TLS_ONLY = DOMAIN_XML.replace("port='61101' ", "port='-1' ")
NO_GRAPHICS = "<domain type='kvm'><name>lv2</name><devices/></domain>"
VNC_SOCKET = """<domain type='kvm'><name>lv3</name><devices>
  <graphics type='vnc' socket='/run/libvirt/qemu/lv3.vnc'><listen type='socket' socket='/run/libvirt/qemu/lv3.vnc'/></graphics>
</devices></domain>"""
VNC_V6_AUTOPORT = """<domain type='kvm'><name>lv4</name><devices>
  <graphics type='vnc' port='5901' autoport='yes' listen='::1'><listen type='address' address='::1'/></graphics>
</devices></domain>"""
NEW = "N3wTicketN3wTicketN3wTicketN3wTicket0000"


def test_parse_graphics_reads_both_consoles_without_the_password():
    consoles = _libvirt.parse_graphics(DOMAIN_XML)
    assert consoles["spice"] == dict(listen_type="address", host="127.0.0.1", socket=None, port=61101, tls_port=61100,
                                     autoport=False, password_set=True,
                                     password_valid_to=calendar.timegm((2026, 1, 1, 0, 0, 0)),
                                     connected="disconnect")
    assert consoles["vnc"] == dict(listen_type="address", host="127.0.0.1", socket=None, port=5910, tls_port=None,
                                   autoport=False, password_set=False, password_valid_to=None, connected=None)
    assert OLD not in repr(consoles)


def test_parse_graphics_ports_none_socket_and_ipv6():
    assert _libvirt.parse_graphics(TLS_ONLY)["spice"]["port"] is None
    assert _libvirt.parse_graphics(NO_GRAPHICS) == {"spice": None, "vnc": None}
    vnc = _libvirt.parse_graphics(VNC_SOCKET)["vnc"]
    assert (vnc["listen_type"], vnc["socket"], vnc["port"], vnc["host"]) == (
        "socket", "/run/libvirt/qemu/lv3.vnc", None, None)
    vnc = _libvirt.parse_graphics(VNC_V6_AUTOPORT)["vnc"]
    assert (vnc["host"], vnc["port"], vnc["autoport"]) == ("::1", 5901, True)


@pytest.mark.parametrize("xml, message", [
    ("<domain", "the domain XML from libvirt cannot be parsed"),
    ("<network/>", "the XML from libvirt is not a <domain> but a <network>"),
])
def test_parse_graphics_refuses_what_is_no_domain(xml, message):
    with pytest.raises(ValueError, match=message):
        _libvirt.parse_graphics(xml)


def test_update_xml_is_the_live_element_with_ticket_expiry_in_utc_and_connected():
    expires = calendar.timegm((2026, 11, 21, 11, 30, 45))
    device = _libvirt.graphics_update_xml(DOMAIN_XML, "spice", NEW, expires, "keep")
    attrs = graphics_of(device)
    assert attrs == {"type": "spice", "port": "61101", "tlsPort": "61100", "autoport": "no", "listen": "127.0.0.1",
                     "passwd": NEW, "passwdValidTo": "2026-11-21T11:30:45", "connected": "keep"}
    element = ET.fromstring(device)
    assert [child.tag for child in element] == ["listen", "channel", "image"], "the element's children go back as read"
    assert OLD not in device


def test_update_xml_is_utc_whatever_the_local_zone(monkeypatch):
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        device = _libvirt.graphics_update_xml(DOMAIN_XML, "spice", NEW, 0, "fail")
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    assert graphics_of(device)["passwdValidTo"] == "1970-01-01T00:00:00"
    assert graphics_of(device)["connected"] == "fail"


def test_update_xml_for_vnc_keeps_keymap_and_sets_no_connected():
    device = _libvirt.graphics_update_xml(DOMAIN_XML.replace("keymap='de'", "keymap='de' connected='keep'"), "vnc",
                                          "Vnc12345", 1767225630, None)
    attrs = graphics_of(device)
    assert attrs["keymap"] == "de" and attrs["passwd"] == "Vnc12345" and "connected" not in attrs
    assert attrs["passwdValidTo"] == "2026-01-01T00:00:30"


@pytest.mark.parametrize("xml, kind, password, connected, message", [
    (NO_GRAPHICS, "spice", NEW, "keep", "the domain has no <graphics type='spice'>"),
    (DOMAIN_XML, "rdp", NEW, "keep", "graphics type must be one of spice, vnc"),
    (DOMAIN_XML, "spice", "", "keep", "the password must be a non-empty string"),
    (DOMAIN_XML, "spice", NEW, None, "connected must be one of keep, disconnect, fail for SPICE"),
    (DOMAIN_XML, "vnc", "Vnc12345", "disconnect", "connected=disconnect is SPICE-only"),
])
def test_update_xml_refusals_never_show_the_password(xml, kind, password, connected, message):
    with pytest.raises(ValueError) as info:
        _libvirt.graphics_update_xml(xml, kind, password, 0, connected)
    assert str(info.value).startswith(message)
    assert not password or password not in str(info.value)


@pytest.mark.parametrize("name, message", [
    ("", "libvirt_domain must be a non-empty domain name"),
    ("a/b", "libvirt_domain 'a/b' is not a valid libvirt domain name: it must not contain '/'"),
    ("a\nb", "libvirt_domain 'a\\nb' is not a valid libvirt domain name: it must not contain control characters"),
    ("x" * 201, "libvirt_domain is not a valid libvirt domain name: it is longer than 200 bytes"),
    ("ä" * 101, "libvirt_domain is not a valid libvirt domain name: it is longer than 200 bytes"),
])
def test_domain_name_rules(name, message):
    with pytest.raises(ValueError) as info:
        _libvirt.check_domain_name(name)
    assert str(info.value) == message


@pytest.mark.parametrize("name", ["lv1", "web 1 (prod)", "x" * 200, "ä" * 100, "a.b_c-d"])
def test_domain_names_libvirt_takes(name):
    assert _libvirt.check_domain_name(name) == name


def test_check_libvirt_options_checks_the_uri_and_passes_warnings():
    assert _libvirt.check_libvirt_options(dict(libvirt_domain="lv1", libvirt_uri="qemu:///system")) == []
    warnings = _libvirt.check_libvirt_options(dict(libvirt_domain="lv1", libvirt_uri="qemu:///system?foo=1"))
    assert len(warnings) == 1 and "'foo'" in warnings[0]
    with pytest.raises(ValueError, match=r"^libvirt_uri: libvirt URI 'qemu\+tls:///system': transport 'tls' needs a host"):
        _libvirt.check_libvirt_options(dict(libvirt_domain="lv1", libvirt_uri="qemu+tls:///system"))


def test_scrub_masks_secrets_and_passwd_attributes():
    text = "XML error: <graphics passwd='%s' passwdValidTo='x'/> and %s, passwd = \"abc\"" % (OLD, NEW)
    assert _libvirt.scrub(text, NEW) == ("XML error: <graphics passwd='********' passwdValidTo='x'/> and ********, "
                                         "passwd='********'")


# --- the connection part, against a fake binding --------------------------------------------------

def test_missing_binding_names_the_package_and_the_host(monkeypatch):
    monkeypatch.setitem(sys.modules, "libvirt", None)   # import libvirt -> ImportError
    with pytest.raises(_libvirt.LibvirtMissing) as info:
        _libvirt.LibvirtDomain("lv1").open()
    assert str(info.value).startswith("libvirt_domain needs the python3-libvirt package on ")


def test_open_reads_and_updates_live(monkeypatch):
    domain = FakeDomain(DOMAIN_XML)
    lib = FakeLibvirt.install(monkeypatch, {"lv1": domain})
    with _libvirt.LibvirtDomain("lv1", "qemu:///system") as dom:
        assert dom.live_xml() == DOMAIN_XML
        assert dom.state() == ("running", True)
        assert dom.hypervisor_version() == "7.2.22"
        dom.update_live("<graphics type='spice'/>")
    assert lib.calls == [("open", "qemu:///system"), ("lookupByName", "lv1")]
    assert domain.xml_flags == [1], "read with VIR_DOMAIN_XML_SECURE"
    assert domain.updates == [("<graphics type='spice'/>", 1)], "VIR_DOMAIN_AFFECT_LIVE"
    assert lib.connections[0].closed and lib.handlers, "closed, and libvirt's stderr printing silenced"


def test_unknown_domain_names_domain_and_uri(monkeypatch):
    FakeLibvirt.install(monkeypatch, {})
    with pytest.raises(_libvirt.DomainNotFound) as info:
        _libvirt.LibvirtDomain("lv9", "qemu:///session").open()
    assert str(info.value) == ("libvirt domain lv9 does not exist on qemu:///session "
                               "(check libvirt_domain and libvirt_uri)")
    assert (info.value.domain, info.value.uri, info.value.code) == ("lv9", "qemu:///session", 42)


def test_stopped_domain_is_refused(monkeypatch):
    FakeLibvirt.install(monkeypatch, {"lv1": FakeDomain(DOMAIN_XML, active=False, state=5)})
    with pytest.raises(_libvirt.DomainNotRunning, match="^libvirt domain lv1 on qemu:///system is not running"):
        _libvirt.LibvirtDomain("lv1").open()


def test_connection_error_is_reported(monkeypatch):
    FakeLibvirt.install(monkeypatch, {}, open_error="Failed to connect socket to '/run/libvirt/libvirt-sock'")
    with pytest.raises(_libvirt.LibvirtError) as info:
        _libvirt.LibvirtDomain("lv1").open()
    assert str(info.value) == ("libvirt domain lv1 (qemu:///system): connecting to qemu:///system failed: "
                               "Failed to connect socket to '/run/libvirt/libvirt-sock'")


def test_update_error_never_shows_the_password(monkeypatch):
    FakeLibvirt.install(monkeypatch, {"lv1": FakeDomain(DOMAIN_XML, update_error="internal error: %s" % NEW)})
    with _libvirt.LibvirtDomain("lv1") as dom:
        with pytest.raises(_libvirt.LibvirtError) as info:
            dom.update_live("<graphics passwd='%s'/>" % NEW, NEW)
    assert NEW not in str(info.value)
    assert str(info.value).endswith("the live update of its <graphics> failed: internal error: ********")
