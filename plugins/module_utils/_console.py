# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The console layer (private): a VM's consoles as the console modules see them.

``console_info``, ``console_ticket`` and ``console_session`` reach a VM the same way::

    with open_console(module) as console:      # QMPConsole, or LibvirtConsole for libvirt_domain
        try:
            info = console.info()                # status, version, normalized SPICE and VNC state
            tls_port, port = console.ports("spice", "keep")
            expires = console.set_ticket("spice", password, ttl, "keep")
        except OptionError as exc:               # an option, or the VM's set-up, makes it impossible
            module.fail_json(msg=str(exc))
        except console.errors as exc:            # QMP or libvirt failed
            console.fail(exc)

:func:`run_on_console` is that block for a module whose whole work happens on one console.
A VM that may not run on this node (``console_session`` runs on every node) is opened with
:meth:`QMPConsole.find`, which gives None instead of failing.

The audit log every change is written to is opened with :func:`open_audit_log` before
anything changes, and written with :func:`write_audit` after.
"""

from __future__ import annotations

import ipaddress
import time

from ansible_collections.vmconsole.secure.plugins.module_utils._files import AuditLog
from ansible_collections.vmconsole.secure.plugins.module_utils._libvirt import (
    LibvirtDomain,
    LibvirtError,
    fail_libvirt,
    graphics_update_xml,
)
from ansible_collections.vmconsole.secure.plugins.module_utils._qmp import (
    QMPClient,
    QMPCommandError,
    QMPConnectionRefused,
    QMPError,
    QMPSocketMissing,
)
from ansible_collections.vmconsole.secure.plugins.module_utils._qmp_module import fail_qmp, open_qmp, query_optional
from ansible_collections.vmconsole.secure.plugins.module_utils._serial import SERIAL_CHARDEV, serial_chardev_port
from ansible_collections.vmconsole.secure.plugins.module_utils._serial_clients import AUTHZ_ID, identities_from_rules
from ansible_collections.vmconsole.secure.plugins.module_utils._subject import subject_from_pem
from ansible_collections.vmconsole.secure.plugins.module_utils._tickets import new_ticket

SPICE_GONE_WAIT = 3.0     # seconds lock() waits for spice-server to drop the channels


class OptionError(Exception):
    """An option (or a file it names, or the VM's console set-up) is unusable; the text says which and why."""


class Failed(Exception):
    """What :meth:`LocalModule.fail_json` raises: ``result`` is what a module would have failed with (``msg`` ...)."""

    def __init__(self, result):
        super().__init__(result.get("msg", "failed"))
        self.result = result


class LocalModule:
    """The part of ``AnsibleModule`` that the issuing and cutting code uses, for a caller without Ansible.

    The console portal's agent runs ``_issue`` and ``_sessions`` through this: ``params`` are the options of
    ``argument_spec`` with their defaults, updated with ``params`` (an unknown name is a ValueError);
    ``fail_json`` raises :class:`Failed`; warnings are collected in ``warnings``; ``audit_fields`` go into
    every audit record the code writes.
    """

    check_mode = False
    _diff = False

    def __init__(self, argument_spec, params, audit_fields=None):
        unknown = sorted(set(params) - set(argument_spec))
        if unknown:
            raise ValueError("unknown options: %s" % ", ".join(unknown))
        self.params = {name: spec.get("default") for name, spec in argument_spec.items()}
        self.params.update(params)
        self.no_log_values = set()
        self.warnings = []
        self.audit_fields = dict(audit_fields or {})

    def warn(self, text):
        self.warnings.append(text)

    def fail_json(self, **result):
        raise Failed(result)


# --- the audit log ------------------------------------------------------------------------------

def open_audit_log(path, check_mode):
    """The audit log, opened (its folder made) before anything changes; OptionError names ``audit_log``."""
    try:
        return AuditLog(path, check_mode)
    except OSError as exc:
        raise OptionError("audit_log %s cannot be written: %s" % (path, exc.strerror or exc)) from None


def write_audit(audit, record, consequence):
    """Append ``record`` after the change; OptionError says the log failed and ``consequence`` (what holds now)."""
    try:
        audit.write(record)
    except OSError as exc:
        raise OptionError("audit_log %s cannot be written: %s; %s" % (audit.path, exc.strerror or exc, consequence)) from None


# --- what a client needs to trust the console ---------------------------------------------------

def read_pem(option, path):
    """(text, subject) of the PEM certificate file named by ``option``; OptionError says why not."""
    try:
        with open(path, "r", encoding="ascii") as f:
            pem = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise OptionError("%s %s cannot be read: %s" % (option, path, getattr(exc, "strerror", None) or exc)) from None
    try:
        subject = subject_from_pem(pem)
    except ValueError as exc:
        raise OptionError("%s %s is not a PEM certificate: %s" % (option, path, exc)) from None
    return pem, subject


def spice_tls(params):
    """(CA certificate text, host subject) for a SPICE client, from ``ca_file`` and ``host_subject``/``server_cert_file``."""
    ca_pem = read_pem("ca_file", params["ca_file"])[0]
    host_subject = params["host_subject"]
    if host_subject is None:
        host_subject = read_pem("server_cert_file", params["server_cert_file"])[1]
    return ca_pem, host_subject


# --- normalized state (console_info's return values) ---------------------------------------------

def _port(value):
    """QMP reports ports as strings ("service"); an int, or None if not numeric."""
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def spice_info(raw):
    """A ``query-spice`` answer in console_info's form (None: QEMU without SPICE)."""
    raw = raw or {}
    enabled = bool(raw.get("enabled", False))
    return dict(
        enabled=enabled,
        host=raw.get("host"),
        port=raw.get("port"),
        tls_port=raw.get("tls-port"),
        auth=raw.get("auth"),
        mouse_mode=raw.get("mouse-mode") if enabled else None,
        migrated=bool(raw.get("migrated", False)),
        compiled_version=raw.get("compiled-version"),
        channels=[
            dict(
                host=ch.get("host"),
                port=_port(ch.get("port")),
                family=ch.get("family"),
                connection_id=ch.get("connection-id"),
                channel_type=ch.get("channel-type"),
                channel_id=ch.get("channel-id"),
                tls=bool(ch.get("tls", False)),
            )
            for ch in raw.get("channels") or []
        ],
    )


def vnc_info(raw):
    """A ``query-vnc`` answer in console_info's form (None: QEMU without VNC)."""
    raw = raw or {}
    return dict(
        enabled=bool(raw.get("enabled", False)),
        host=raw.get("host"),
        service=raw.get("service"),
        port=_port(raw.get("service")),
        family=raw.get("family"),
        auth=raw.get("auth"),
        clients=[
            dict(
                host=cl.get("host"),
                service=cl.get("service"),
                port=_port(cl.get("service")),
                family=cl.get("family"),
                websocket=bool(cl.get("websocket", False)),
            )
            for cl in raw.get("clients") or []
        ],
    )


def spice_counts(spice):
    """(channels, clients) connected, from :func:`spice_info`."""
    channels = spice["channels"]
    return len(channels), len({c["connection_id"] for c in channels})


def _family(graphics):
    """QEMU's address family for a libvirt listen: unix for a socket, ipv4/ipv6 for an address, else None."""
    if graphics["listen_type"] == "socket":
        return "unix"
    try:
        return "ipv%d" % ipaddress.ip_address(graphics["host"]).version
    except ValueError:
        return None


def _libvirt_only(graphics):
    """What the domain XML tells beyond QEMU's own query (never the password itself)."""
    if graphics is None:
        return dict(autoport=None, password_set=None, password_valid_to=None)
    return dict(autoport=graphics["autoport"], password_set=graphics["password_set"],
                password_valid_to=graphics["password_valid_to"])


def libvirt_spice_info(graphics):
    """:func:`spice_info` for a libvirt domain's <graphics type='spice'> (None: none); libvirt lists no channels."""
    raw = None
    if graphics is not None:
        raw = {"enabled": True, "host": graphics["host"], "port": graphics["port"], "tls-port": graphics["tls_port"]}
    return dict(spice_info(raw), **_libvirt_only(graphics))


def libvirt_vnc_info(graphics):
    """:func:`vnc_info` for a libvirt domain's <graphics type='vnc'> (None: none); libvirt lists no clients."""
    raw = None
    if graphics is not None:
        service = str(graphics["port"]) if graphics["port"] is not None else graphics["socket"]
        raw = {"enabled": True, "host": graphics["host"], "service": service, "family": _family(graphics)}
    return dict(vnc_info(raw), **_libvirt_only(graphics))


# --- the consoles -------------------------------------------------------------------------------

class QMPConsole:
    """The consoles of a VM reached through its QMP monitor (a qemu_vm guest by ``vm``, or ``socket``)."""

    errors = (QMPError,)

    def __init__(self, module, qmp=None, name=None):
        self.module = module
        self.qmp = qmp
        self.name = name

    @classmethod
    def find(cls, module, name, path):
        """The console of VM ``name`` at QMP socket ``path``, or None when the VM does not run on this node.

        Raises QMPError when the socket is there but QEMU does not answer as it should.
        """
        client = QMPClient(path, timeout=module.params["timeout"])
        try:
            client.connect()
        except (QMPSocketMissing, QMPConnectionRefused):
            client.close()
            return None
        return cls(module, client, name)

    def __enter__(self):
        if self.qmp is None:
            self.qmp = open_qmp(self.module)
        return self

    def __exit__(self, *exc_info):
        self.close()

    def close(self):
        if self.qmp is not None:
            self.qmp.close()

    def info(self):
        """dict(qemu_version, status=dict(running, status), spice=spice_info, vnc=vnc_info)."""
        status = self.qmp.execute("query-status")
        return dict(
            qemu_version=self.qmp.version_string,
            status=dict(running=bool(status.get("running")), status=status.get("status")),
            spice=spice_info(query_optional(self.qmp, "query-spice")),
            vnc=vnc_info(query_optional(self.qmp, "query-vnc")),
        )

    def _query(self, protocol):
        """The console's state (:func:`spice_info`/:func:`vnc_info`); OptionError when QEMU has none."""
        try:
            raw = self.qmp.execute("query-" + protocol)
        except QMPCommandError as exc:
            if exc.error_class == "CommandNotFound":
                raise OptionError("QEMU has no %s: this QEMU binary was built without it (protocol=%s)"
                                  % (protocol.upper(), protocol)) from None
            raise
        if not raw.get("enabled"):
            raise OptionError("QEMU has no %s: the VM was started without -%s (protocol=%s)"
                              % (protocol.upper(), protocol, protocol))
        return spice_info(raw) if protocol == "spice" else vnc_info(raw)

    def ports(self, protocol, connected):
        """(tls_port, port) of the console, after checking a ticket protects it; OptionError says why not."""
        info = self._query(protocol)
        if protocol == "spice":
            if info["auth"] != "spice":
                raise OptionError("SPICE of this VM does not use tickets (auth=%s, started with disable-ticketing?): "
                                  "a ticket would not protect its console" % info["auth"])
            if connected == "fail" and info["channels"]:
                raise OptionError("connected=fail: a SPICE client is connected (%d channels), no ticket was set"
                                  % len(info["channels"]))
            return info["tls_port"], info["port"]
        if info["auth"] == "none":
            raise OptionError("VNC of this VM has no password authentication (start it with -vnc ...,password=on): "
                              "a ticket would not protect its console")
        if info["port"] is None:
            raise OptionError("VNC of this VM does not listen on a TCP port (%s): remote-viewer cannot reach it"
                              % info["family"])
        return None, info["port"]

    def set_ticket(self, protocol, password, ttl, connected):
        """set_password, then expire_password; the expiry (epoch seconds). A failed expiry leaves an unknown ticket."""
        arguments = dict(protocol=protocol, password=password)
        if protocol == "spice":
            arguments["connected"] = connected
        self.qmp.execute("set_password", arguments)
        expires = int(time.time()) + ttl
        try:
            self.qmp.execute("expire_password", dict(protocol=protocol, time="+%d" % ttl))
        except QMPError:
            try:
                self.qmp.execute("set_password", dict(arguments, password=new_ticket(protocol)))
            except QMPError:
                pass
            raise
        return expires

    def serial_port(self):
        """The TCP port of the serial console (chardev vmconsole-serial), from the read-only query-chardev."""
        try:
            return serial_chardev_port(self.qmp.execute("query-chardev"))
        except LookupError:
            raise OptionError("the VM has no serial console: QEMU has no chardev %s (the guest was started with "
                              "serial: false, or not by vmconsole.secure.qemu_vm) (protocol=serial)"
                              % SERIAL_CHARDEV) from None
        except ValueError as exc:
            raise OptionError("the VM's serial console cannot be reached through the proxy: %s (protocol=serial)"
                              % exc) from None

    def serial_clients(self):
        """The client identities the serial console admits (read-only ``qom-get``), or None when the guest has no
        list of this collection's (a guest started before the role managed one) or it cannot be read."""
        try:
            return identities_from_rules(self.qmp.execute("qom-get", {"path": "/objects/" + AUTHZ_ID,
                                                                      "property": "rules"}))
        except QMPCommandError:
            return None

    def lockable(self):
        """(spice_info, vnc_info) now, after checking that a ticket protects every enabled console."""
        spice = spice_info(query_optional(self.qmp, "query-spice"))
        vnc = vnc_info(query_optional(self.qmp, "query-vnc"))
        if spice["enabled"] and spice["auth"] != "spice":
            raise OptionError("vm %s: its SPICE console does not use tickets (auth=%s, started with "
                              "disable-ticketing?): anyone who reaches the port gets in, so its sessions cannot be "
                              "locked; nothing was changed" % (self.name, spice["auth"]))
        if vnc["enabled"] and vnc["auth"] == "none":
            raise OptionError("vm %s: its VNC console has no password authentication (start it with -vnc "
                              "...,password=on): it cannot be locked; nothing was changed" % self.name)
        return spice, vnc

    def lock(self, spice, vnc):
        """Disconnect SPICE clients, leave every enabled console with a random expired ticket; (spice, vnc) after.

        Waits up to SPICE_GONE_WAIT for spice-server to drop the channels. QEMU allows only
        connected=keep for VNC: connected VNC clients stay (the caller reports them).
        """
        if spice["enabled"]:
            # spice-server drops every client (all channels) when its main channel is connected, then takes the
            # ticket; expire_password "now" makes it unusable even for a client that would learn it.
            self.qmp.execute("set_password", dict(protocol="spice", password=new_ticket("spice"), connected="disconnect"))
            self.qmp.execute("expire_password", dict(protocol="spice", time="now"))
        if vnc["enabled"]:
            self.qmp.execute("set_password", dict(protocol="vnc", password=new_ticket("vnc")))
            self.qmp.execute("expire_password", dict(protocol="vnc", time="now"))
        deadline = time.monotonic() + SPICE_GONE_WAIT
        while True:
            spice_after = spice_info(query_optional(self.qmp, "query-spice"))
            if not spice_after["channels"] or time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        return spice_after, vnc_info(query_optional(self.qmp, "query-vnc"))

    def fail(self, exc, **extra):
        fail_qmp(self.module, exc, **extra)


class LibvirtConsole:
    """The consoles of a libvirt domain: libvirt owns its monitor, so a ticket goes in as a live <graphics> update."""

    errors = (LibvirtError,)

    def __init__(self, module):
        self.module = module
        self.domain = LibvirtDomain(module.params["libvirt_domain"], module.params["libvirt_uri"])
        self.xml = self.graphics = None

    def __enter__(self):
        try:
            self.domain.open()
        except LibvirtError as exc:
            self.fail(exc)
        return self

    def __exit__(self, *exc_info):
        self.domain.close()

    def info(self):
        """:meth:`QMPConsole.info` from the live domain XML and state (libvirt lists no channels or clients)."""
        state, running = self.domain.state()
        graphics = self.domain.graphics()[1]
        return dict(
            qemu_version=self.domain.hypervisor_version(),
            status=dict(running=running, status=state),
            spice=libvirt_spice_info(graphics["spice"]),
            vnc=libvirt_vnc_info(graphics["vnc"]),
        )

    def ports(self, protocol, connected):
        """(tls_port, port) of the domain's <graphics type=protocol>; OptionError when it has none usable."""
        self.xml, consoles = self.domain.graphics()
        graphics = self.graphics = consoles[protocol]
        where = "libvirt domain %s (%s)" % (self.domain.name, self.domain.uri)
        if graphics is None:
            raise OptionError("%s has no <graphics type='%s'>: it has no %s console (protocol=%s)"
                              % (where, protocol, protocol.upper(), protocol))
        if graphics["port"] is None and graphics["tls_port"] is None:
            raise OptionError("%s of %s does not listen on a TCP port (listen type %s): remote-viewer cannot reach it"
                              % (protocol.upper(), where, graphics["listen_type"]))
        return graphics["tls_port"], graphics["port"]

    def set_ticket(self, protocol, password, ttl, connected):
        """The ticket and its expiry in one live update (libvirt sends set_password and expire_password)."""
        connected = connected if protocol == "spice" else None
        expires = int(time.time()) + ttl
        try:
            self.domain.update_live(graphics_update_xml(self.xml, protocol, password, expires, connected), password)
        except LibvirtError as exc:
            # libvirt may have set the ticket without our expiry: replace it with one nobody knows.
            unknown = new_ticket(protocol)
            try:
                self.domain.update_live(graphics_update_xml(self.xml, protocol, unknown, expires, connected),
                                        password, unknown)
            except LibvirtError:
                pass
            if self.graphics["password_set"]:
                raise
            raise LibvirtError(
                "%s (the domain's <graphics type='%s'> has no passwd: libvirt then starts QEMU without %s password "
                "authentication unless qemu.conf sets %s_password, and QEMU refuses tickets; define the domain with a "
                "passwd, e.g. a random one with a passwdValidTo in the past)" % (exc, protocol, protocol.upper(), protocol),
                exc.domain, exc.uri, exc.code) from None
        return expires

    def serial_clients(self):
        """None: a libvirt domain's serial console has no list of this collection's."""
        return None

    def serial_port(self):
        raise OptionError("protocol=serial is not supported for a libvirt_domain yet: libvirt names the serial chardev "
                          "differently and its TLS settings are libvirt's; use vm (a qemu_vm guest)")

    def fail(self, exc, **extra):
        fail_libvirt(self.module, exc, **extra)


def open_console(module):
    """The VM's console as the module's options name it (``libvirt_domain``, else ``vm``/``socket``).

    A context manager; entering it fails the module when the console cannot be reached.
    """
    if module.params.get("libvirt_domain") is not None:
        return LibvirtConsole(module)
    return QMPConsole(module)


def run_on_console(module, work):
    """``work(console)`` on the VM's console, then exit the module with the result it returns.

    An OptionError fails the module with its text, an error of the console through ``console.fail``.
    """
    with open_console(module) as console:
        try:
            result = work(console)
        except OptionError as exc:
            module.fail_json(msg=str(exc))
        except console.errors as exc:
            console.fail(exc)
    module.exit_json(**result)
