# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Real processes for the integration tests: a test PKI, QEMU VMs and Xvfb.

Every process is started in a session (and so a process group) of its own and is
stopped by that group's id only: nothing here looks processes up by name. The pytest
fixtures in ``conftest.py`` wrap these helpers so that teardown always runs.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import os
import random
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import types

from ansible_collections.vmconsole.secure.plugins.module_utils._connect_proxy import squid_conf as squid_config
from ansible_collections.vmconsole.secure.plugins.module_utils._qmp import QMPClient, QMPError
from ansible_collections.vmconsole.secure.plugins.module_utils._tickets import (
    SigningKeys, dump_public_keys, dump_signing_keys, public_key_text,
)

QEMU_BINARY = "qemu-system-x86_64"
PKI_CA_CN = "vmconsole test CA"
PKI_SERVER_ATTRS = (("C", "XX"), ("O", "vmconsole test"), ("CN", "vmc-test-node"))
VNC_BASE_PORT = 5900
VNC_DISPLAYS = 1000  # VNC ports 5900-6899
# What QEMU 7.2 logs when a SPICE or VNC port it was given is taken.
PORT_TAKEN_MARKERS = ("Failed to open SPICE sockets", "Address already in use")


# --- small helpers -------------------------------------------------------------------------

def wait_until(predicate, timeout, interval=0.05, what="condition", logs=None):
    """Poll ``predicate()`` until it returns a true value (returned) or ``timeout`` passes.

    ``logs`` names the logs of the daemons waited for, ``{label: path}``: a timeout quotes
    their ends, so a failure shows what the daemon said, not only that it was slow.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            message = "timed out after %.1f s waiting for %s" % (timeout, what)
            for label, path in (logs or {}).items():
                message += "\n--- %s (%s), its end:\n%s" % (label, path, read_log(path, 4000))
            raise TimeoutError(message)
        time.sleep(interval)


def _port_free(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(start=None, end=None):
    """A TCP port on 127.0.0.1 that nobody listens on right now.

    Without a range the kernel picks one. With ``start``/``end`` (inclusive) the first free
    port in that range is returned, e.g. ``free_port(5900, 6899)`` for a VNC display.
    """
    if start is None:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            return sock.getsockname()[1]
    end = start + 1000 if end is None else end
    for port in range(start, end + 1):
        if _port_free(port):
            return port
    raise RuntimeError("no free TCP port in %s-%s" % (start, end))


def free_vnc_port():
    """A free port in 5900-6899 (VNC display 0-999), scanning from a random display so
    that tests running in parallel rarely pick the same one."""
    offset = random.randrange(VNC_DISPLAYS)
    for i in range(VNC_DISPLAYS):
        port = VNC_BASE_PORT + (offset + i) % VNC_DISPLAYS
        if _port_free(port):
            return port
    raise RuntimeError("no free VNC port in %d-%d" % (VNC_BASE_PORT, VNC_BASE_PORT + VNC_DISPLAYS - 1))


def short_tmpdir(prefix):
    """A private folder under /tmp: UNIX socket paths must stay below 108 bytes."""
    return tempfile.mkdtemp(prefix=prefix, dir="/tmp")


def start_process(argv, log_path, **kwargs):
    """Start ``argv`` in a new session with stdout+stderr to ``log_path``."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, **kwargs)


def stop_process(proc, term_timeout=5.0):
    """Stop a process started by :func:`start_process`: SIGTERM, then SIGKILL, to its group only."""
    for sig, wait in ((signal.SIGTERM, term_timeout), (signal.SIGKILL, 10.0)):
        if proc.poll() is not None:
            break
        try:
            os.killpg(proc.pid, sig)  # the group this module created: pgid == pid (new session)
        except ProcessLookupError:
            break
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            continue
    # Reap stray children of the group (none expected) without waiting on them.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    return proc.returncode


def read_until(sock, end, step=4096):
    """Bytes from ``sock`` until ``end`` was read or the peer closed (``step`` 1: nothing after ``end`` is taken)."""
    data = b""
    while end not in data:
        chunk = sock.recv(step)
        if not chunk:
            break
        data += chunk
    return data


def open_tunnel(proxy_port, target, username, password, timeout=10):
    """A CONNECT tunnel to ``target`` (``host:port``) through the proxy on 127.0.0.1; the socket, past squid's 200."""
    sock = socket.create_connection(("127.0.0.1", proxy_port), timeout=timeout)
    basic = base64.b64encode(("%s:%s" % (username, password)).encode()).decode()
    sock.sendall(("CONNECT %s HTTP/1.1\r\nHost: %s\r\nProxy-Authorization: Basic %s\r\n\r\n"
                  % (target, target, basic)).encode())
    answer = read_until(sock, b"\r\n\r\n", step=1)     # the tunnel's first bytes stay in the socket
    if not answer.startswith(b"HTTP/1.1 200 "):
        sock.close()
        raise AssertionError("squid refused the tunnel to %s: %r" % (target, answer[:80]))
    return sock


def tunnel_closed(sock, wait):
    """Whether the tunnel ``sock`` was closed or reset by the other end within ``wait`` seconds."""
    sock.settimeout(wait)
    try:
        return sock.recv(1) == b""
    except socket.timeout:
        return False
    except OSError:
        return True
    finally:
        sock.close()


def read_log(path, limit=8000):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        return "(no log: %s)" % exc
    return data[-limit:].decode("utf-8", "replace")


# --- PKI -------------------------------------------------------------------------------------

def _subject_string(pem, attrs):
    """The subject as spice-gtk compares it, from _subject.py when it exists."""
    try:
        from ansible_collections.vmconsole.secure.plugins.module_utils._subject import subject_from_pem
    except ImportError:
        return ",".join("%s=%s" % (k, v.replace("\\", "\\\\").replace(",", "\\,")) for k, v in attrs)
    return subject_from_pem(pem)


def _write(path, data, mode):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, mode)


def make_pki(directory):
    """A test CA with a server and a client certificate, laid out for QEMU.

    ``directory`` holds ``ca-cert.pem``, ``server-cert.pem``, ``server-key.pem``,
    ``client-cert.pem`` and ``client-key.pem``: usable as SPICE ``x509-dir`` and as the
    ``dir`` of a ``tls-creds-x509`` object on either end (migration). The CA key is kept
    apart, in ``<directory>/ca/ca-key.pem``. Private keys are mode 0600.

    Returns a namespace: ``dir``, ``ca_file``, ``ca_pem``, ``ca_key_file``,
    ``server_cert_file``, ``server_cert_pem``, ``server_key_file``, ``client_cert_file``,
    ``client_key_file``, ``subject`` (server, as spice-gtk compares it), ``cn``, and the
    cryptography objects ``ca_key``/``ca_cert`` plus ``issue(attrs, client=False, node=False)`` -> (cert PEM,
    key PEM) for tests that need more certificates from the same CA.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    oids = {"C": NameOID.COUNTRY_NAME, "O": NameOID.ORGANIZATION_NAME, "OU": NameOID.ORGANIZATIONAL_UNIT_NAME,
            "CN": NameOID.COMMON_NAME}
    now = datetime.datetime.now(datetime.timezone.utc)
    not_before, not_after = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=30)

    def new_key():
        # RSA 2048 like a typical site CA: spice-server, spice-gtk and GnuTLS all accept it.
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def key_usage(cert_sign):
        return x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=not cert_sign,
                             data_encipherment=False, key_agreement=False, key_cert_sign=cert_sign,
                             crl_sign=cert_sign, encipher_only=False, decipher_only=False)

    def builder(subject, issuer, public_key):
        return (x509.CertificateBuilder()
                .subject_name(subject).issuer_name(issuer).public_key(public_key)
                .serial_number(x509.random_serial_number())
                .not_valid_before(not_before).not_valid_after(not_after))

    ca_key = new_key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, PKI_CA_CN)])
    ca_cert = (
        builder(ca_name, ca_name, ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    def issue(attrs, client=False, node=False):
        """A certificate for ``attrs`` (pairs like ("CN", "x"), in RDN order) signed by the CA; ``node``: both
        serverAuth and clientAuth, as the pki role's host certificates."""
        key = new_key()
        cn = dict(attrs)["CN"]
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        cert = (
            builder(x509.Name([x509.NameAttribute(oids[k], v) for k, v in attrs]), ca_name, key.public_key())
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(key_usage(cert_sign=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                                                 if node else [usage]), critical=False)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(cn), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                    serialization.NoEncryption()).decode("ascii")
        return cert.public_bytes(serialization.Encoding.PEM).decode("ascii"), key_pem

    server_cert_pem, server_key_pem = issue(PKI_SERVER_ATTRS)
    client_cert_pem, client_key_pem = issue(PKI_SERVER_ATTRS, client=True)
    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM).decode("ascii")
    ca_key_pem = ca_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()).decode("ascii")

    ca_dir = os.path.join(directory, "ca")
    os.makedirs(ca_dir, mode=0o700, exist_ok=True)
    files = {
        "ca-cert.pem": (ca_pem, 0o644), "server-cert.pem": (server_cert_pem, 0o644),
        "server-key.pem": (server_key_pem, 0o600), "client-cert.pem": (client_cert_pem, 0o644),
        "client-key.pem": (client_key_pem, 0o600), "ca/ca-key.pem": (ca_key_pem, 0o600),
    }
    for name, (data, mode) in files.items():
        _write(os.path.join(directory, name), data.encode("ascii"), mode)

    def path(name):
        return os.path.join(directory, name)

    return types.SimpleNamespace(
        dir=directory,
        ca_file=path("ca-cert.pem"), ca_pem=ca_pem, ca_key_file=path("ca/ca-key.pem"),
        server_cert_file=path("server-cert.pem"), server_cert_pem=server_cert_pem,
        server_key_file=path("server-key.pem"),
        client_cert_file=path("client-cert.pem"), client_key_file=path("client-key.pem"),
        subject=_subject_string(server_cert_pem, PKI_SERVER_ATTRS), cn=dict(PKI_SERVER_ATTRS)["CN"],
        ca_key=ca_key, ca_cert=ca_cert, issue=issue,
    )


def cpu_seconds(pid):
    """User + system CPU seconds of a process (all its threads); None: this process."""
    if pid is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    with open("/proc/%d/stat" % pid, encoding="ascii") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- QEMU ------------------------------------------------------------------------------------

class QemuVM:
    """A QEMU process with a QMP socket and (optionally) SPICE and VNC on 127.0.0.1.

    Attributes: ``name``, ``qmp_path``, ``tls_port``, ``plain_port``, ``vnc_port``, ``pid``,
    ``log_path``, ``argv``, ``proc``. Ports are picked free just before the start; if another
    process takes one in between, QEMU fails to bind and the start is retried with new ports.
    """

    start_attempts = 3

    def __init__(self, name, workdir, pki_dir=None, spice=True, tls=True, plain_port=False, vnc=False,
                 vnc_password=True, extra_args=(), start_timeout=20.0, accel=("tcg",)):
        if spice and not tls and not plain_port:
            raise ValueError("spice=True needs tls=True or plain_port=True")
        if spice and tls and pki_dir is None:
            raise ValueError("tls=True needs a pki_dir")
        self.name = name
        self.workdir = workdir
        self.qmp_path = os.path.join(workdir, name + ".qmp")
        self.log_path = os.path.join(workdir, name + ".log")
        self.proc = None
        self._options = dict(pki_dir=pki_dir, spice=spice, tls=tls, plain_port=plain_port, vnc=vnc,
                             vnc_password=vnc_password, extra_args=tuple(extra_args), accel=tuple(accel))
        for attempt in range(1, self.start_attempts + 1):
            self.argv = self._argv(**self._options)
            try:
                self._start(start_timeout)
                return
            except _PortTaken:
                if attempt == self.start_attempts:
                    raise RuntimeError("QEMU VM %s: ports taken %d times in a row\n%s"
                                       % (name, attempt, self.log())) from None

    def _argv(self, pki_dir, spice, tls, plain_port, vnc, vnc_password, extra_args, accel):
        self.tls_port = self.plain_port = self.vnc_port = None
        # accel: TCG by default, not KVM. These guests run no OS, and on a machine that is itself
        # a VM (these machines, CI) a KVM guest's firmware start costs about 3.7 s of CPU, mostly
        # the host kernel's nested exits, against 0.2 s with TCG (benchmarks/guest_start.py). The
        # integration tests start about 115 of them. What QEMU's accelerator does is not what
        # they prove.
        argv = [QEMU_BINARY]
        for name in accel:
            argv += ["-accel", name]
        argv += ["-machine", "pc", "-m", "64", "-nodefaults", "-vga", "qxl", "-display", "none",
                 "-serial", "none", "-no-user-config",
                 "-name", self.name, "-qmp", "unix:%s,server=on,wait=off" % self.qmp_path]
        if spice:
            # No password and no disable-ticketing: ticketing is on and nobody gets in
            # until a ticket is set over QMP.
            opts = ["addr=127.0.0.1"]
            if tls:
                self.tls_port = free_port()
                opts += ["tls-port=%d" % self.tls_port, "x509-dir=%s" % pki_dir, "tls-channel=default"]
            if plain_port:
                self.plain_port = free_port()
                opts.append("port=%d" % self.plain_port)
            opts.append("seamless-migration=on")
            argv += ["-spice", ",".join(opts)]
        if vnc:
            self.vnc_port = free_vnc_port()
            display = "127.0.0.1:%d" % (self.vnc_port - VNC_BASE_PORT)
            argv += ["-vnc", display + (",password=on" if vnc_password else "")]
        return argv + list(extra_args)

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def log(self):
        return read_log(self.log_path)

    def _start(self, timeout):
        with open(self.log_path, "ab") as log:
            log.write(("+ %s\n" % " ".join(self.argv)).encode())
        self.proc = start_process(self.argv, self.log_path)
        try:
            wait_until(self._qmp_answers, timeout, what="the QMP socket of VM %s" % self.name)
        except Exception as exc:
            self.stop()
            log = self.log()
            this_attempt = log.rsplit("\n+ ", 1)[-1]
            if any(marker in this_attempt for marker in PORT_TAKEN_MARKERS):
                raise _PortTaken() from None
            raise RuntimeError("QEMU VM %s did not come up (%s)\ncommand: %s\nlog:\n%s"
                               % (self.name, exc, " ".join(self.argv), log)) from None

    def _qmp_answers(self):
        if self.proc.poll() is not None:
            raise RuntimeError("QEMU exited with status %s" % self.proc.returncode)
        if not os.path.exists(self.qmp_path):
            return False
        try:
            with QMPClient(self.qmp_path, timeout=2.0) as qmp:
                qmp.execute("query-status")
        except QMPError:
            return False
        return True

    def qmp(self, timeout=10.0):
        """A connected QMPClient; the caller closes it (``with vm.qmp() as qmp:``).

        QEMU serves one QMP client at a time: close it before a module or another
        client talks to the same VM, or they time out waiting for the greeting.
        """
        client = QMPClient(self.qmp_path, timeout=timeout)
        client.connect()
        return client

    def stop(self, timeout=10.0):
        """QMP ``quit``, then SIGTERM/SIGKILL to the process group; safe to call twice."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            with QMPClient(self.qmp_path, timeout=2.0) as qmp:
                qmp.execute("quit")
            self.proc.wait(timeout)
        except (QMPError, OSError, subprocess.TimeoutExpired):
            pass
        stop_process(self.proc)


class _PortTaken(Exception):
    """QEMU could not bind a port picked for it (another process took it meanwhile)."""


# --- Xvfb ------------------------------------------------------------------------------------

class Xvfb:
    """An X server for remote-viewer: ``display`` is e.g. ``":57"``."""

    def __init__(self, workdir, first=50, last=199, start_timeout=15.0):
        self.proc = None
        self.display = None
        self.log_path = os.path.join(workdir, "xvfb.log")
        for number in range(first, last + 1):
            if os.path.exists("/tmp/.X%d-lock" % number) or os.path.exists("/tmp/.X11-unix/X%d" % number):
                continue
            proc = start_process(["Xvfb", ":%d" % number, "-nolisten", "tcp", "-screen", "0", "1024x768x24"],
                                 self.log_path)
            sock = "/tmp/.X11-unix/X%d" % number
            try:
                wait_until(lambda: os.path.exists(sock) or proc.poll() is not None, start_timeout,
                           what="Xvfb socket %s" % sock)
            except TimeoutError:
                stop_process(proc)
                raise RuntimeError("Xvfb :%d did not start:\n%s" % (number, read_log(self.log_path)))
            if proc.poll() is None:
                self.proc, self.display = proc, ":%d" % number
                return
            # Lost a race for that display number to another X server: try the next one.
        raise RuntimeError("no free X display in :%d-:%d\n%s" % (first, last, read_log(self.log_path)))

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def stop(self):
        if self.proc is not None:
            stop_process(self.proc)


def have_qemu():
    return shutil.which(QEMU_BINARY) is not None


# --- squid with the connect_proxy helpers ----------------------------------------------------

SQUID_BINARY = "/usr/sbin/squid"
SQUID_USER = "proxy"
COLLECTION_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PROXY_HELPER = os.path.join(COLLECTION_ROOT, "roles", "connect_proxy", "files", "vmconsole_proxy_helper.py")
TICKETS_CODE = os.path.join(COLLECTION_ROOT, "plugins", "module_utils", "_tickets.py")
ADDRESSES_CODE = os.path.join(COLLECTION_ROOT, "plugins", "module_utils", "_addresses.py")
CONSOLE_PORT_RANGES = ((61000, 61999), (5900, 5999), (62000, 62999))


def have_squid():
    return os.access(SQUID_BINARY, os.X_OK)


CREDENTIALS_TTL = 5                # connect_proxy_credentials_ttl's default
CLIENT_NETWORKS = ("127.0.0.0/8",)  # clients from any loopback address (a second client: 127.0.0.3)


def squid_conf(*, workdir, port, helper, keys_file, facts_file, self_name, nodes=(), revocations_file=None,
               port_ranges=CONSOLE_PORT_RANGES, python="/usr/bin/python3", manager_file=None, bindings_dir=None):
    """The role's squid.conf (``_connect_proxy.squid_conf``) with this test's paths, on 127.0.0.1 only.

    ``nodes`` are other cluster nodes: parents at 127.0.0.2 on the discard port, where nothing
    listens (the tests send nothing there). Clients may come from any loopback address.
    """
    return squid_config(dict(
        name=self_name,
        listen_address="127.0.0.1",
        port=port,
        user=SQUID_USER,
        shutdown_lifetime=1,
        hosts_file=os.path.join(workdir, "hosts"),
        idle_timeout=28800,
        access_log=os.path.join(workdir, "logs", "access.log"),
        other_access_log=os.path.join(workdir, "logs", "other-access.log"),
        cache_log=os.path.join(workdir, "logs", "cache.log"),
        pid_filename=os.path.join(workdir, "squid.pid"),
        coredump_dir=os.path.join(workdir, "logs"),
        tokens=True,
        python=python,
        helper=helper,
        keys_file=keys_file,
        revocations_file=revocations_file or os.path.join(workdir, "proxy-revoked.json"),
        credentials_ttl=CREDENTIALS_TTL,
        bindings_dir=bindings_dir,
        vms_fact=facts_file,
        ranges=["%d-%d" % r for r in port_ranges],
        others=[dict(name=node, port=9) for node in nodes],
        addresses={node: "127.0.0.2" for node in nodes},
        client_networks=list(CLIENT_NETWORKS),
        helper_children=4,
        manager_file=manager_file,
    ))


class Squid:
    """squid -N with the collection's helpers installed as the role installs them, in ``workdir``.

    Runs as root and drops to ``proxy`` (cache_effective_user), like Debian's squid. ``signers``: the
    nodes' token signing keys (``_tickets.ProxySigner``); the first is this node's. Attributes:
    ``port``, ``keys_file`` (the public keys of all signers, what the helper reads), ``signing_file`` (this
    node's signing keys, 0600: console_ticket's proxy_token_key_file), ``facts_file``, ``revocations_file``, ``bindings_dir`` (tokens bound to the
    client they are first used from, as connect_proxy_token_binding does), ``helper_dir``, ``conf``,
    ``access_log``, ``cache_log``, ``proc``. ``write_facts(vms)`` replaces the VM map.
    """

    def __init__(self, workdir, signers, *, self_name, nodes=(), vms=None, start_timeout=20.0):
        self.workdir = workdir
        os.chmod(workdir, 0o755)                              # squid's helpers run as proxy
        self.helper_dir = os.path.join(workdir, "helpers")
        os.makedirs(self.helper_dir, mode=0o755)
        for source in (PROXY_HELPER, TICKETS_CODE, ADDRESSES_CODE):   # what the role installs, root-owned 0644/0755
            shutil.copy(source, self.helper_dir)
        self.helper = os.path.join(self.helper_dir, os.path.basename(PROXY_HELPER))
        os.chmod(self.helper, 0o755)
        logs = os.path.join(workdir, "logs")
        os.makedirs(logs)
        proxy_ids = _proxy_ids()
        os.chown(logs, *proxy_ids)
        self.keys_file = os.path.join(workdir, "proxy-keys.json")
        _write(self.keys_file, dump_public_keys({s.key_id: {"node": self_name if i == 0 else "node%d" % i,
                                                            "public": public_key_text(s)}
                                                for i, s in enumerate(signers)}).encode("utf-8"), 0o644)
        self.signing_file = os.path.join(workdir, "proxy-signing.json")
        _write(self.signing_file, dump_signing_keys(SigningKeys(signers[0].key_id, None, [], 0,
                                                                {signers[0].key_id: signers[0]})).encode("utf-8"), 0o600)
        self.facts_file = os.path.join(workdir, "vmconsole_vms.fact")
        self.write_facts(vms or {})
        self.revocations_file = os.path.join(workdir, "proxy-revoked.json")
        # On a tmpfs, as the role keeps them (/run/vmconsole-proxy); removed by stop().
        self.bindings_dir = tempfile.mkdtemp(prefix="vmc-bindings-", dir="/dev/shm")
        os.chown(self.bindings_dir, *proxy_ids)
        with open(os.path.join(workdir, "hosts"), "w") as f:
            f.write("127.0.0.1 %s\n" % self_name)
        # What connect_proxy installs beside squid.conf: the cache manager's password (root's) and the
        # node's proxy fact that console_session reads.
        self.manager_file = os.path.join(workdir, "squid-manager.conf")
        _write(self.manager_file, ("cachemgr_passwd %s active_requests\n" % secrets.token_urlsafe(24)).encode(), 0o600)
        self.proxy_fact = os.path.join(workdir, "vmconsole_proxy.fact")
        self.access_log = os.path.join(logs, "access.log")
        self.cache_log = os.path.join(logs, "cache.log")
        self.conf = os.path.join(workdir, "squid.conf")
        self.proc = None
        for attempt in range(3):
            self.port = free_port()
            with open(self.conf, "w") as f:
                f.write(squid_conf(workdir=workdir, port=self.port, helper=self.helper, keys_file=self.keys_file,
                                   facts_file=self.facts_file, self_name=self_name, nodes=nodes,
                                   revocations_file=self.revocations_file, manager_file=self.manager_file,
                                   bindings_dir=self.bindings_dir))
            _write(self.proxy_fact, json.dumps(dict(
                url="http://127.0.0.1:%d" % self.port, tokens=True, keys_file=self.keys_file,
                signing_key_file=self.signing_file,
                name=self_name, listen_address="127.0.0.1", port=self.port, manager_file=self.manager_file,
                credentials_ttl=CREDENTIALS_TTL, console_ports={kind: list(r) for kind, r in zip(
                    ("spice", "vnc", "serial"), CONSOLE_PORT_RANGES)})).encode(), 0o644)
            check = subprocess.run([SQUID_BINARY, "-k", "parse", "-f", self.conf], capture_output=True, text=True,
                                   check=False)
            if check.returncode != 0:
                raise RuntimeError("squid -k parse refused %s:\n%s" % (self.conf, check.stderr[-4000:]))
            self.proc = start_process([SQUID_BINARY, "-N", "-f", self.conf], os.path.join(workdir, "squid.out"))
            try:
                wait_until(self._listening, start_timeout, what="squid on 127.0.0.1:%d" % self.port)
                return
            except (TimeoutError, RuntimeError):
                self.stop()
                if "Address already in use" not in read_log(self.cache_log):
                    raise RuntimeError("squid did not start:\n%s" % read_log(self.cache_log)) from None
        raise RuntimeError("squid: port taken 3 times in a row")

    def _listening(self):
        if self.proc.poll() is not None:
            raise RuntimeError("squid exited with status %s" % self.proc.returncode)
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        except OSError:
            return False
        return True

    def write_facts(self, vms):
        """The node's VM map as qemu_vm publishes it ({"vms": {name: {...}}}), replaced atomically."""
        tmp = self.facts_file + ".tmp"
        _write(tmp, json.dumps({"vms": vms}).encode("utf-8"), 0o644)
        os.replace(tmp, self.facts_file)

    def write_revocations(self, data):
        tmp = self.revocations_file + ".tmp"
        _write(tmp, json.dumps(data).encode("utf-8"), 0o640)
        os.chown(tmp, 0, _proxy_ids()[1])
        os.replace(tmp, self.revocations_file)

    def helper_pids(self):
        """PIDs of squid's helper processes (the collection's one helper): children of this squid only."""
        pids = []
        for pid in _children(self.proc.pid):
            try:
                with open("/proc/%d/cmdline" % pid, "rb") as f:
                    argv = f.read().split(b"\0")
            except OSError:
                continue
            if self.helper.encode() in argv:
                pids.append(pid)
        return pids

    def log(self):
        return read_log(self.cache_log)

    @property
    def logs(self):
        """Its logs, for ``wait_until(..., logs=squid.logs)``."""
        return {"squid cache.log": self.cache_log, "squid access.log": self.access_log}

    def stop(self):
        if self.proc is not None:
            stop_process(self.proc, term_timeout=10.0)
        shutil.rmtree(self.bindings_dir, ignore_errors=True)


def _proxy_ids():
    import pwd
    entry = pwd.getpwnam(SQUID_USER)
    return entry.pw_uid, entry.pw_gid


def _children(pid):
    """Direct children of ``pid``, from /proc (no process lookup by name)."""
    children = []
    try:
        for task in os.listdir("/proc/%d/task" % pid):
            with open("/proc/%d/task/%s/children" % (pid, task)) as f:
                children.extend(int(p) for p in f.read().split())
    except OSError:
        pass
    return children


def free_console_port(low=61000, high=61999):
    """A free port in a console range, scanning from a random offset (parallel tests rarely collide)."""
    size = high - low + 1
    offset = random.randrange(size)
    for i in range(size):
        port = low + (offset + i) % size
        if _port_free(port):
            return port
    raise RuntimeError("no free TCP port in %d-%d" % (low, high))


class ConsoleRangeVM(QemuVM):
    """A :class:`QemuVM` whose SPICE TLS port lies in the collection's range (61000-61999), as
    qemu_vm allocates them, for tests through the proxy (which allows console ranges only)."""

    def _argv(self, **options):
        argv = super()._argv(**options)
        if self.tls_port is not None:
            port = free_console_port()
            argv = [a.replace("tls-port=%d," % self.tls_port, "tls-port=%d," % port) if a.startswith("addr=") else a
                    for a in argv]
            self.tls_port = port
        return argv
