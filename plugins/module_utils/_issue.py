# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""How a console ticket is issued (private): what the console_ticket module and the console portal's agent run.

One implementation for both. ``module`` is an ``AnsibleModule`` or anything with the same ``params`` (every option
of console_ticket, defaults in :data:`ISSUE_ARGUMENT_SPEC`), ``check_mode`` and ``warn(text)``; no Ansible import here,
so the portal's agent runs it on a node that has no Ansible. Errors are ``OptionError`` (an option, or what it
names, is unusable) or the console's own errors (``console.errors``).
"""

from __future__ import annotations

import socket
import time
from urllib.parse import urlsplit

from ansible_collections.vmconsole.secure.plugins.module_utils._console import (
    OptionError,
    open_audit_log,
    spice_tls,
    write_audit,
)
from ansible_collections.vmconsole.secure.plugins.module_utils._files import audit_record
from ansible_collections.vmconsole.secure.plugins.module_utils._libvirt import (
    CONSOLE_MUTUALLY_EXCLUSIVE,
    CONSOLE_REQUIRED_ONE_OF,
    LIBVIRT_ARGUMENT_SPEC,
    check_libvirt_options,
)
from ansible_collections.vmconsole.secure.plugins.module_utils._migrate import (
    check_ticket_file_writable,
    default_ticket_file,
    write_ticket_file,
)
from ansible_collections.vmconsole.secure.plugins.module_utils._qmp_module import QMP_ARGUMENT_SPEC, qmp_socket_path
from ansible_collections.vmconsole.secure.plugins.module_utils._serial import (
    DEFAULT_PROXY_PORT,
    default_client_files,
    serial_console_argv,
    serial_console_command,
)
from ansible_collections.vmconsole.secure.plugins.module_utils._serial_clients import common_names
from ansible_collections.vmconsole.secure.plugins.module_utils._subject import parse_subject
from ansible_collections.vmconsole.secure.plugins.module_utils._tunnels import read_proxy_fact
from ansible_collections.vmconsole.secure.plugins.module_utils._tickets import (
    check_proxy_user,
    client_address,
    load_proxy_signer,
    mint_proxy_token,
    proxy_username,
    validate_ticket,
    validate_token_ttl,
    validate_ttl,
)
from ansible_collections.vmconsole.secure.plugins.module_utils._vv import check_proxy_url, proxy_url, render_vv

# The options of console_ticket (the module's argument_spec); the portal's agent takes its defaults from here.
ISSUE_ARGUMENT_SPEC = dict(QMP_ARGUMENT_SPEC, **LIBVIRT_ARGUMENT_SPEC)
ISSUE_ARGUMENT_SPEC.update(
    protocol=dict(type="str", choices=["spice", "vnc", "serial"], default="spice"),
    password=dict(type="str", no_log=True),
    ttl=dict(type="raw", default=30),
    connected=dict(type="str", choices=["keep", "disconnect", "fail"], default="keep"),
    console_host=dict(type="str"),
    proxy=dict(type="str"),
    ca_file=dict(type="path", default="/etc/pki/libvirt-spice/ca-cert.pem"),
    server_cert_file=dict(type="path", default="/etc/pki/libvirt-spice/server-cert.pem"),
    host_subject=dict(type="str"),
    title=dict(type="str"),
    proxy_user=dict(type="str"),
    proxy_token_key_file=dict(type="path", default="/etc/vmconsole/proxy-signing.json", no_log=False),
    proxy_token_ttl=dict(type="raw", default=28800, no_log=False),
    proxy_client_address=dict(type="str"),
    audit_log=dict(type="path", default="/var/log/vmconsole/tickets.log"),
    ticket_file=dict(type="path", no_log=False),
    dest=dict(type="path"),
    return_secret=dict(type="bool", default=False, no_log=False),
    client_cert_file=dict(type="str"),
    client_key_file=dict(type="str"),
    client_ca_file=dict(type="str"),
    proxy_fact_file=dict(type="path", default="/etc/ansible/facts.d/vmconsole_proxy.fact"),
    controller_user=dict(type="str"),
)
ISSUE_MUTUALLY_EXCLUSIVE = CONSOLE_MUTUALLY_EXCLUSIVE
ISSUE_REQUIRED_ONE_OF = CONSOLE_REQUIRED_ONE_OF


# The returned values a ticket could hide in (Ansible's no_log masking would garble them), and what sets each.
_RETURNED_FROM = dict(protocol="protocol", host="console_host", proxy="proxy", ca_pem="the CA certificate in ca_file",
                      host_subject="host_subject (or server_cert_file)", title="title",
                      proxy_username="the proxy username (proxy_user and vm)")


def _checked(check, value, prefix=""):
    """``check(value)``, its ValueError turned into an OptionError (text after ``prefix``)."""
    try:
        return check(value)
    except ValueError as exc:
        raise OptionError(prefix + str(exc)) from None


def node_proxy_defaults(params, relay=False):
    """``proxy`` (and ``proxy_user``) from the node's connect_proxy fact where they are not given; ``proxy=""``: none.

    Only for a qemu_vm guest (``vm``) and SPICE or serial (or VNC for the portal's ``relay``): the proxy's destination
    check knows those guests only, and remote-viewer takes a proxy for SPICE only.
    """
    if params["proxy"] == "":
        params["proxy"] = None
        return
    if params["proxy"] is not None or params["vm"] is None or (params["protocol"] == "vnc" and not relay):
        return
    fact = _checked(read_proxy_fact, params["proxy_fact_file"], "proxy_fact_file: ")
    if fact is None:
        return
    if not isinstance(fact.get("url"), str):
        raise OptionError("proxy_fact_file: %s has no proxy url: run the connect_proxy role on this node"
                          % params["proxy_fact_file"])
    params["proxy"] = fact["url"]
    if fact.get("tokens") and params["proxy_user"] is None:
        if not params["controller_user"]:
            raise OptionError("proxy_user is missing: the node's proxy (%s) checks proxy tokens, and the login name "
                              "on the controller is unknown; name the person with proxy_user" % fact["url"])
        _checked(check_proxy_user, params["controller_user"],
                 "controller_user (the default of proxy_user, the login name on the controller): ")
        params["proxy_user"] = params["controller_user"]


def check_options(params, warn, relay=False):
    """Validate everything that needs no QEMU; the ttl as int. ``warn(text)`` gets warnings.

    ``relay``: the console portal's relay is the VNC client (``_relay_vnc``), not remote-viewer: a VNC ticket may come
    with a proxy and a proxy token then (the relay goes through the VM node's proxy as remote-viewer does for SPICE).
    """
    protocol = params["protocol"]
    ttl = _checked(validate_ttl, params["ttl"])
    if protocol == "serial":
        check_serial_options(params)
    elif params["password"] is None:
        raise OptionError("password is missing: the console_ticket action plugin generates the ticket on the controller, "
                          "so run this module as vmconsole.secure.console_ticket through Ansible")
    else:
        _checked(lambda password: validate_ticket(protocol, password), params["password"], "password: ")
    if protocol == "vnc":
        for option in ("host_subject",) if relay else ("proxy", "host_subject"):
            if params[option] is not None:
                raise OptionError("%s is SPICE-only: remote-viewer cannot use it for a VNC console" % option)
        if params["connected"] != "keep":
            raise OptionError("connected=%s is SPICE-only: QEMU refuses it for VNC, use connected=keep with protocol=vnc"
                              % params["connected"])
    if params["proxy"] is not None:
        _checked(check_proxy_url, params["proxy"])
    if params["proxy_user"] is not None:
        check_proxy_token_options(params, relay)
    if params["host_subject"] is not None:
        _checked(parse_subject, params["host_subject"], "host_subject: ")
    if params["libvirt_domain"] is None:
        _checked(qmp_socket_path, params)
    else:
        for text in _checked(check_libvirt_options, params):
            warn(text)
    return ttl


def check_serial_options(params):
    """What protocol=serial refuses, before anything is read or sent: it issues a proxy token and nothing else."""
    if params["libvirt_domain"] is not None:
        raise OptionError("protocol=serial is not supported for a libvirt_domain yet: libvirt names the serial chardev "
                          "differently and its TLS settings are libvirt's; use vm (a qemu_vm guest)")
    if params["proxy_user"] is None:
        raise OptionError("protocol=serial needs proxy_user: the serial console has no ticket, the proxy token for "
                          "that person is the only thing issued (the client certificate is the other credential)")
    if params["password"] is not None:
        raise OptionError("password does not apply to protocol=serial: QEMU's serial chardev has no password "
                          "(the client certificate and the proxy token are the credentials)")
    if params["connected"] != "keep":
        raise OptionError("connected=%s is SPICE-only: a serial console takes one client at a time"
                          % params["connected"])
    for option in ("host_subject", "title"):
        if params[option] is not None:
            raise OptionError("%s does not apply to protocol=serial: it is for a .vv file" % option)
    for option in ("client_cert_file", "client_key_file", "client_ca_file"):
        value = params[option]
        if value is not None and (not value or "\0" in value or "\n" in value or value.startswith("-")):
            raise OptionError("%s must be a file path on the client's machine, got %r" % (option, value))


def vm_name(params):
    """The name the proxy token and the audit log give the VM: ``vm`` or ``libvirt_domain`` (None with ``socket``)."""
    return params["vm"] or params["libvirt_domain"]


def check_proxy_token_options(params, relay=False):
    """The options a proxy token needs, before anything is read or sent (``relay``: see :func:`check_options`)."""
    if params["protocol"] == "vnc" and not relay:
        raise OptionError("proxy_user is for SPICE and serial consoles only: remote-viewer uses a proxy for SPICE "
                          "consoles only")
    if params["proxy"] is None and params["protocol"] == "spice":
        raise OptionError("proxy_user needs proxy (the URL of the CONNECT proxy the token is for)")
    parts = urlsplit(params["proxy"] or "")
    if parts.username is not None or parts.password is not None:
        raise OptionError("proxy must not hold credentials with proxy_user: the module puts the proxy username and "
                          "token there")
    if vm_name(params) is None:
        raise OptionError("proxy_user needs vm or libvirt_domain (the token names the VM), not socket")
    _checked(lambda user: proxy_username(user, vm_name(params)), params["proxy_user"])
    _checked(validate_token_ttl, params["proxy_token_ttl"])
    if params["proxy_client_address"] is not None:
        _checked(client_address, params["proxy_client_address"], "proxy_client_address: ")


def read_proxy_signer(params):
    """This node's proxy token signing key (a ``_tickets.ProxySigner``), or None without proxy_user."""
    if params["proxy_user"] is None:
        return None
    return _checked(load_proxy_signer, params["proxy_token_key_file"], "proxy_token_key_file: ")


def mint_token(params, signer):
    """A fresh proxy token for proxy_user and the VM (a ``_tickets.ProxyToken``)."""
    return mint_proxy_token(signer, params["proxy_user"], vm_name(params), params["protocol"],
                            ttl=params["proxy_token_ttl"], client=params["proxy_client_address"])


def ticket_file_path(params):
    """Where the SPICE ticket is kept for a migration, or None (VNC, ticket_file='', or a libvirt domain by default).

    libvirt migrates a domain's graphics password with the domain, so a libvirt domain keeps a file only when
    ``ticket_file`` names one. OptionError when the file could not be written.
    """
    if params["protocol"] != "spice" or params["ticket_file"] == "":
        return None
    path = params["ticket_file"]
    if not path and params["libvirt_domain"] is None:
        path = default_ticket_file(qmp_socket_path(params))
    if path is not None:
        try:
            check_ticket_file_writable(path)
        except OSError as exc:
            raise OptionError("ticket_file %s cannot be written: %s" % (path, exc.strerror or exc)) from None
    return path


def issuance_record(params, result, extra=None):
    """One issuance for the audit log: who, which VM, when, until when (and ``extra``). Never a ticket or a token."""
    target = dict(vm=params["vm"], socket=None if params["vm"] else params["socket"])
    if params["libvirt_domain"] is not None:
        target.update(libvirt_domain=params["libvirt_domain"], libvirt_uri=params["libvirt_uri"])
    return audit_record(
        "console_ticket",
        protocol=result["protocol"],
        connected=params["connected"] if result["protocol"] == "spice" else None,
        ticket_expires=result["expires"] if result["protocol"] != "serial" else None,   # serial: no ticket
        proxy_user=params["proxy_user"],
        proxy_username=result.get("proxy_username"),
        proxy_token_key_id=result.get("proxy_token_key_id"),
        proxy_token_expires=result.get("proxy_token_expires"),
        **dict(target, **(extra or {}))
    )


def masked_somewhere(password, result):
    """Where a returned value contains the ticket, or None."""
    values = dict(result["vv"], protocol=result["protocol"], proxy_username=result.get("proxy_username"))
    for name, value in values.items():
        if isinstance(value, str) and password in value:
            return _RETURNED_FROM[name]
    return None


def client_command(params, node, serial_port, username):
    """(argv, one shell line) of the client command; the token comes from dest's file or VMC_PROXY_TOKEN."""
    defaults = default_client_files(params["proxy_user"])
    proxy = urlsplit(params["proxy"]) if params["proxy"] else None
    args = dict(
        node=node,
        port=serial_port,
        proxy_username=username,
        cert_file=params["client_cert_file"] or defaults[0],
        key_file=params["client_key_file"] or defaults[1],
        ca_file=params["client_ca_file"] or defaults[2],
        proxy_host=proxy.hostname if proxy else None,
        proxy_port=(proxy.port or DEFAULT_PROXY_PORT) if proxy else DEFAULT_PROXY_PORT,
        token_file=params["dest"],
    )
    return _checked(lambda kwargs: (serial_console_argv(**kwargs), serial_console_command(**kwargs)), args,
                    "cannot build the client command: ")


def issue_ticket(module, console, *, ttl, ca_pem, host_subject, keys, kept):
    """protocol=spice or vnc: check the console, set the ticket (and keep it), log it; the result with "vv"."""
    params = module.params
    protocol = params["protocol"]
    password = params["password"]
    tls_port, port = console.ports(protocol, params["connected"])
    result = dict(changed=True, protocol=protocol, ttl=ttl, expires=int(time.time()) + ttl, tls_port=tls_port,
                  port=port, console_host=params["console_host"] or socket.gethostname(), host_subject=host_subject,
                  ticket_file=kept)
    proxy = params["proxy"]
    if keys is not None:
        # The token leaves the node only inside "vv", which the action plugin drops.
        token = mint_token(params, keys)
        if protocol == "spice":
            parts = urlsplit(proxy)
            proxy = proxy_url(parts.hostname, parts.port or 3128, token.username, token.token)
        else:       # VNC for the portal's relay (prepare(relay=True)): remote-viewer's .vv has no proxy for VNC
            proxy = None
            result["relay_handover"] = dict(proxy_token=token.token)
        result.update(proxy_username=token.username, proxy_token_expires=token.expires,
                      proxy_token_key_id=token.key_id)
    # What the .vv holds besides the ticket; the action plugin renders it and drops this key. With TLS the
    # file offers only the TLS port: every channel is secure anyway.
    result["vv"] = dict(protocol=protocol, host=result["console_host"], tls_port=tls_port,
                        port=port if tls_port is None else None, proxy=proxy, ca_pem=ca_pem,
                        host_subject=host_subject, title=params["title"])
    _checked(lambda vv: render_vv(password=password, **vv), result["vv"], "cannot write a .vv with these options: ")
    clash = masked_somewhere(password, result)
    if clash:
        raise OptionError("password: it occurs in %s, which the module returns and Ansible's no_log masking "
                          "would garble; choose another, or let the module generate one" % clash)
    if protocol == "spice" and tls_port is None:
        module.warn("SPICE of this VM has no TLS port: the console, and its ticket, travel in plain text")
    audit = open_audit_log(params["audit_log"], module.check_mode)   # after the queries, before any change
    try:
        if not module.check_mode:
            result["expires"] = console.set_ticket(protocol, password, ttl, params["connected"])
            if kept is not None:
                try:
                    write_ticket_file(kept, password, result["expires"])
                except OSError as exc:
                    raise OptionError("ticket_file %s cannot be written: %s; the ticket is set but not handed out"
                                      % (kept, exc.strerror or exc)) from None
            write_audit(audit, issuance_record(params, result, getattr(module, "audit_fields", None)),
                        "the ticket is set but not handed out")
    finally:
        audit.close()
    return result


def warn_unlisted(module, clients, user, vm):
    """Warn when the serial console's client list names no certificate of ``user`` (its CN): QEMU would refuse the
    TLS handshake of that person's certificate, although the token works."""
    if clients is None or any(user in common_names(identity) for identity in clients):
        return
    module.warn("proxy_user %s is not on the serial console's client list of %s (no certificate with CN=%s among %d "
                "admitted; qemu_vm_serial_clients or the guest's serial_clients): QEMU will refuse that certificate's "
                "TLS handshake" % (user, vm, user, len(clients)))


def issue_serial(module, console, keys):
    """protocol=serial: read the port (query-chardev only), mint and log a proxy token; nothing is set in QEMU."""
    params = module.params
    token_ttl = validate_token_ttl(params["proxy_token_ttl"])
    port = console.serial_port()
    warn_unlisted(module, console.serial_clients(), params["proxy_user"], vm_name(params))
    node = params["console_host"] or socket.gethostname()
    username = proxy_username(params["proxy_user"], vm_name(params))
    argv, command = client_command(params, node, port, username)
    result = dict(changed=True, protocol="serial", ttl=token_ttl, expires=int(time.time()) + token_ttl,
                  serial_port=port, console_host=node, proxy_username=username, proxy_token_key_id=keys.key_id,
                  command=command, argv=argv)
    audit = open_audit_log(params["audit_log"], module.check_mode)   # after the query, before the token
    try:
        if module.check_mode:
            result["proxy_token_expires"] = result["expires"]   # when a token would expire
            return result
        token = mint_token(params, keys)
        result.update(expires=token.expires, proxy_token_expires=token.expires, proxy_token_key_id=token.key_id)
        write_audit(audit, issuance_record(params, result, getattr(module, "audit_fields", None)),
                    "the ticket is set but not handed out")
    finally:
        audit.close()
    # The token leaves the node only here; the action plugin drops this key from every result.
    result["serial_handover"] = dict(proxy_token=token.token)
    return result


def prepare(module, relay=False):
    """Everything that needs no console, in the order the module checks it: ``(ttl, ca_pem, host_subject, keys, kept)``.

    Fills ``proxy``/``proxy_user`` from the node's proxy fact (:func:`node_proxy_defaults`); OptionError on bad input,
    before anything is read from or sent to QEMU. ``relay``: for the console portal's VNC relay (see
    :func:`check_options`); console_ticket never sets it.
    """
    params = module.params
    node_proxy_defaults(params, relay)
    ttl = check_options(params, module.warn, relay)
    ca_pem, host_subject = spice_tls(params) if params["protocol"] == "spice" else (None, None)
    keys = read_proxy_signer(params)
    kept = ticket_file_path(params)
    return ttl, ca_pem, host_subject, keys, kept


def issue(module, console, prepared):
    """Issue on ``console`` what ``module.params`` ask for (after :func:`prepare`): the result of
    :func:`issue_ticket` or :func:`issue_serial`."""
    ttl, ca_pem, host_subject, keys, kept = prepared
    if module.params["protocol"] == "serial":
        return issue_serial(module, console, keys)
    return issue_ticket(module, console, ttl=ttl, ca_pem=ca_pem, host_subject=host_subject, keys=keys, kept=kept)
