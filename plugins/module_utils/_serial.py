# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The client command of a guest's serial console (see docs/serial-console.md).

Private to the collection. Stdlib only and no Ansible imports.

The serial port of a guest is a TLS chardev on the node's 127.0.0.1 (qemu_vm), reached through
the node's console proxy (squid, CONNECT only, proxy token as the basic-auth password). The
client is a standard tool: OpenSSL's ``s_client`` (1.1.0 and later have ``-proxy``; 3.0, as in
Debian 12, adds ``-proxy_user``/``-proxy_pass``) makes the CONNECT, then the TLS session with
the user's client certificate, verifies the node's certificate and name, and joins the
terminal to the serial port.

The command never holds the token: ``-proxy_pass env:NAME`` makes openssl read it from the
environment variable NAME (default ``VMC_PROXY_TOKEN``), ``-proxy_pass file:PATH`` from a file,
so it stays out of shell history, ``ps`` and logs. The proxy username is not secret (squid's access log shows it).

:func:`serial_chardev_port` reads the guest's port from QMP ``query-chardev`` (console_ticket
``protocol: serial``); :func:`default_client_files` names the client certificate files where
``playbooks/client_cert.yml`` (pki role, ``client_certificate``) puts them.
"""

from __future__ import annotations

import ipaddress
import re
import shlex

from ansible_collections.vmconsole.secure.plugins.module_utils._tickets import parse_proxy_username

DEFAULT_PROXY_PORT = 3128
DEFAULT_TOKEN_ENV = "VMC_PROXY_TOKEN"
SERIAL_CHARDEV = "vmconsole-serial"         # the chardev id qemu_vm gives a guest's serial console
DEFAULT_CLIENT_DIR = "~/.vmconsole/pki/%s/clients/%s"   # the pki role's pki_client_dir/<name>, by cluster and name

# query-chardev's "filename" of a TCP socket chardev (QEMU 7.2, chardev/char-socket.c):
# "disconnected:tcp:127.0.0.1:62000,server=on" while no client is connected,
# "tcp:127.0.0.1:62000,server=on <-> 127.0.0.1:49996" while one is.
_CHARDEV_TCP = re.compile(r"(?:disconnected:)?(?:tcp|telnet|websocket|tn3270):(\[[0-9A-Fa-f:.]+\]|[^:\s,\[\]]+):"
                          r"([0-9]{1,5})(?:,|\s|\Z)")

_HOST_NAME = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_.-]{0,251}[A-Za-z0-9_])?\Z")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}\Z")


def _host(what, value):
    """``(text for host:port, is_ip)``; ValueError naming ``what`` unless a host name or an IP address."""
    if not isinstance(value, str) or not value:
        raise ValueError("%s must be a host name or an IP address, got %r" % (what, value))
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        if not _HOST_NAME.match(value) or ".." in value:
            raise ValueError("%s must be a host name or an IP address, got %r" % (what, value)) from None
        return value, False
    return ("[%s]" % address if address.version == 6 else str(address)), True


def _port(what, value):
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ValueError("%s must be a TCP port (1-65535), got %r" % (what, value))
    return value


def _file(what, value):
    if not isinstance(value, str) or not value or "\0" in value or "\n" in value or value.startswith("-"):
        raise ValueError("%s must be a file path, got %r" % (what, value))
    return value


def serial_console_argv(*, node, port, proxy_username, cert_file, key_file, ca_file, proxy_host=None,
                        proxy_port=DEFAULT_PROXY_PORT, token_env=DEFAULT_TOKEN_ENV, token_file=None,
                        openssl="openssl"):
    """The client command as an argv list (for ``subprocess``; no shell needed).

    ``node``: the node's name as its proxy and its certificate know it (the CONNECT target
    and the name verified in the node's certificate; an IP address is verified as one).
    ``port``: the guest's ``serial_port`` (qemu_vm's fact). ``proxy_username``: the escaped
    ``user__vm`` form (``_tickets.proxy_username``). ``cert_file``/``key_file``: the user's
    client certificate and key (pki role, ``client_certificate``); ``ca_file``: the cluster's
    trust bundle. ``proxy_host``: where the client reaches the proxy, default ``node``.
    ``token_env``: the environment variable holding the proxy token when the command runs;
    ``token_file``: instead, a file (mode 0600) holding it (``-proxy_pass file:PATH``).

    Raises ValueError naming the argument that is wrong.
    """
    node_text, node_is_ip = _host("node", node)
    proxy_text = _host("proxy_host", node if proxy_host is None else proxy_host)[0]
    _port("port", port)
    _port("proxy_port", proxy_port)
    if parse_proxy_username(proxy_username) is None:
        raise ValueError("proxy_username must be a proxy username in the escaped user__vm form, got %r"
                         % (proxy_username,))
    if token_file is not None:
        token_source = "file:%s" % _file("token_file", token_file)
    elif isinstance(token_env, str) and _ENV_NAME.match(token_env):
        token_source = "env:%s" % token_env
    else:
        raise ValueError("token_env must be an environment variable name ([A-Za-z_][A-Za-z0-9_]*), got %r"
                         % (token_env,))
    return [
        _file("openssl", openssl), "s_client",
        "-quiet",                                        # no session dump: the terminal is the serial port
        "-proxy", "%s:%d" % (proxy_text, proxy_port),    # HTTP CONNECT through the node's console proxy
        "-proxy_user", proxy_username,
        "-proxy_pass", token_source,                     # the token, read from the environment or a file
        "-connect", "%s:%d" % (node_text, port),
        "-cert", _file("cert_file", cert_file),
        "-key", _file("key_file", key_file),
        "-CAfile", _file("ca_file", ca_file),
        "-verify_return_error",                          # stop unless the node's certificate verifies
        "-verify_ip" if node_is_ip else "-verify_hostname", node_text.strip("[]"),
    ]


def _shell_word(arg):
    """``arg`` quoted for a POSIX shell; a leading ``~/`` stays unquoted, so the client's shell expands it."""
    if arg.startswith("~/") and len(arg) > 2:
        return "~/" + shlex.quote(arg[2:])
    return shlex.quote(arg)


def serial_console_command(*, node, port, proxy_username, cert_file, key_file, ca_file, **options):
    """The same command as one shell-quoted line (arguments as for :func:`serial_console_argv`).

    A file path that starts with ``~/`` keeps it unquoted: the shell of whoever runs the line
    expands it to their home folder (in the argv list it is not expanded).
    """
    return " ".join(_shell_word(arg) for arg in serial_console_argv(
        node=node, port=port, proxy_username=proxy_username, cert_file=cert_file, key_file=key_file, ca_file=ca_file,
        **options))


def default_client_files(name, cluster="default"):
    """``(cert_file, key_file, ca_file)`` of client ``name`` as ``playbooks/client_cert.yml`` writes them.

    The pki role's layout: ``~/.vmconsole/pki/<cluster>/clients/<name>/{clientcert,clientkey,cacert}.pem``
    (``pki_client_dir``, ``pki_client_name``), on the person's machine.
    """
    folder = DEFAULT_CLIENT_DIR % (cluster, name)
    return tuple("%s/%s.pem" % (folder, base) for base in ("clientcert", "clientkey", "cacert"))


def serial_chardev_port(chardevs, label=SERIAL_CHARDEV):
    """The TCP port of chardev ``label`` in a QMP ``query-chardev`` answer.

    LookupError when there is no such chardev; ValueError when it is not a TCP socket (its
    filename is in the message).
    """
    for chardev in chardevs or ():
        if isinstance(chardev, dict) and chardev.get("label") == label:
            filename = chardev.get("filename")
            found = _CHARDEV_TCP.match(filename) if isinstance(filename, str) else None
            if found is None or not 1 <= int(found.group(2)) <= 65535:
                raise ValueError("chardev %s is not a TCP socket (%r)" % (label, filename))
            return int(found.group(2))
    raise LookupError("no chardev %s" % label)
