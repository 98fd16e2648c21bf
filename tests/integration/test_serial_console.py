# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The serial console end to end: the documented openssl one-liner through squid to a real guest.

A real QEMU boots tests/guest_image.py's boot sector from a virtio disk; its COM1 is a TLS
chardev on 127.0.0.1 with ``verify-peer=on`` (the options qemu_vm gives it), certificates from
the session ``pki``. A real squid with the connect_proxy helpers stands in front of it. The
client is the command docs/serial-console.md documents (built by ``_serial.py``), run through a
shell with the proxy token in ``VMC_PROXY_TOKEN``: it must show the guest's output and the
guest's echo of what is typed, and be refused without a client certificate, with a certificate
of another CA, with a wrong token or one of another console, and towards a port that is not this VM's
console (403).
console_ticket ``protocol: serial`` runs through the real ``ansible`` command against the same
guest: its QMP ``query-chardev`` finds the port, it mints the token into ``dest``, and the
command it returns, run as it is, shows the guest.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import shutil
import stat
import subprocess
import threading
import time

import pytest

from ansible_collections.vmconsole.secure.plugins.module_utils import _guests
from ansible_collections.vmconsole.secure.plugins.module_utils._serial import (
    DEFAULT_TOKEN_ENV, serial_chardev_port, serial_console_argv, serial_console_command,
)
from ansible_collections.vmconsole.secure.plugins.module_utils._serial_clients import AUTHZ_ENV, AUTHZ_ID
from ansible_collections.vmconsole.secure.plugins.module_utils._tickets import (
    mint_proxy_token, new_proxy_signer,
)
from ansible_collections.vmconsole.secure.tests import guest_image
from ansible_collections.vmconsole.secure.tests.integration import _procs
from ansible_collections.vmconsole.secure.tests.integration.test_console_ticket import JSON_OUTPUT as ANSIBLE_JSON
from ansible_collections.vmconsole.secure.tests.integration.test_console_ticket import LOCAL as ANSIBLE_LOCAL
from ansible_collections.vmconsole.secure.tests.integration.test_console_ticket import adhoc
from ansible_collections.vmconsole.secure.tests.integration.test_console_ticket import run as run_ansible
from ansible_collections.vmconsole.secure.tests.unit.plugins.module_utils.test_serial_clients import systemd_unquote
from ansible_collections.vmconsole.secure.tests.unit.roles import role_settings

OPENSSL = shutil.which("openssl") or "openssl"
SERIAL_PORTS = (62000, 62999)
GUEST_LINE = re.compile(rb"vmconsole serial console ok (\d+)\r\n")


class SerialGuest(_procs.QemuVM):
    """The boot-sector guest with COM1 on a TLS chardev, as qemu_vm starts a guest's serial console.

    ``serial_port`` is picked free in 62000-62999 (the collection's serial range) before each
    start attempt; QEMU failing to bind it is retried with another port like the other ports.
    """

    def __init__(self, name, workdir, *, disk, pki_dir, **kwargs):
        self.disk = disk
        self.serial_port = None
        super().__init__(name, workdir, pki_dir=pki_dir, spice=False, **kwargs)

    def _argv(self, pki_dir, **options):
        self.tls_port = self.plain_port = self.vnc_port = None
        self.serial_port = _procs.free_console_port(*SERIAL_PORTS)
        return [
            _procs.QEMU_BINARY, "-accel", "tcg", "-machine", "pc", "-m", "16", "-nodefaults", "-no-user-config",
            "-display", "none", "-name", self.name, "-qmp", "unix:%s,server=on,wait=off" % self.qmp_path,
            "-drive", "file=%s,format=raw,if=virtio,readonly=on" % self.disk,
            "-object", "tls-creds-x509,id=vmconsole-serial-tls,endpoint=server,verify-peer=on,dir=%s" % pki_dir,
            "-chardev", "socket,id=vmconsole-serial,host=127.0.0.1,port=%d,server=on,wait=off,"
                        "tls-creds=vmconsole-serial-tls" % self.serial_port,
            "-serial", "chardev:vmconsole-serial",
        ]


class Client:
    """A client command run in its own session, its output collected by a thread."""

    def __init__(self, argv, env=None, shell=False):
        self.out = bytearray()
        self.lock = threading.Lock()
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=env, shell=shell, start_new_session=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.err = b""

    def _read(self):
        while True:
            chunk = os.read(self.proc.stdout.fileno(), 4096)
            if not chunk:
                return
            with self.lock:
                self.out += chunk

    def output(self):
        with self.lock:
            return bytes(self.out)

    def wait_for(self, pattern, timeout, what):
        """The first match of ``pattern`` (a bytes regex) in the output; fails the test after ``timeout``."""
        try:
            return _procs.wait_until(lambda: re.search(pattern, self.output()), timeout, what=what)
        except TimeoutError:
            self.stop()
            pytest.fail("no %s within %s s; exit status %s\nstdout: %r\nstderr: %s"
                        % (what, timeout, self.proc.returncode, self.output()[-2000:], self.err.decode("utf-8", "replace")))

    def send(self, data):
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def finish(self, timeout):
        """Wait (at most ``timeout``) for the command to end; returns its exit status (None: still running)."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        status = self.proc.poll()
        self.stop()
        return status

    def stop(self):
        _procs.stop_process(self.proc)
        self.reader.join(5)
        if not self.err:
            self.err = self.proc.stderr.read()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                stream.close()
            except OSError:
                pass


@pytest.fixture(scope="module")
def guest_disk(tmp_path_factory):
    """The guest image, written by the same code a Molecule scenario runs as a script."""
    return guest_image.write_image(str(tmp_path_factory.mktemp("guest") / "serial-guest.img"))


@pytest.fixture
def serial_node(pki, guest_disk, squid_factory):
    """A guest with a TLS serial console, squid in front of it, the cluster keys and a client setup."""
    if not _procs.have_qemu():
        pytest.skip("%s is not installed" % _procs.QEMU_BINARY)
    workdir = _procs.short_tmpdir("vmc-ser-")
    vm = None
    try:
        vm = SerialGuest("serial1", workdir, disk=guest_disk, pki_dir=pki.dir)
        signer = new_proxy_signer()
        other_port = _procs.free_console_port(*SERIAL_PORTS)
        vms = {
            vm.name: {"state": "started", "unit": "vmconsole-qemu@%s.service" % vm.name, "qmp": vm.qmp_path,
                      "spice_tls_port": None, "spice_port": None, "vnc_port": None, "serial_port": vm.serial_port,
                      "migration_port": None},
            "serial2": {"state": "started", "spice_tls_port": None, "vnc_port": None, "serial_port": other_port},
        }
        squid = squid_factory([signer], self_name=pki.cn, vms=vms)
        yield dict(vm=vm, squid=squid, keys=signer, pki=pki, workdir=workdir, other_port=other_port)
    finally:
        if vm is not None:
            vm.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def command_args(node, **changes):
    """Arguments of serial_console_argv for this node, user alice, VM serial1 (``changes`` override)."""
    pki, vm = node["pki"], node["vm"]
    args = dict(node=pki.cn, port=vm.serial_port, proxy_host="127.0.0.1", proxy_port=node["squid"].port,
                proxy_username=mint_proxy_token(node["keys"], "alice", vm.name, "serial").username,
                cert_file=pki.client_cert_file, key_file=pki.client_key_file, ca_file=pki.ca_file, openssl=OPENSSL)
    args.update(changes)
    return args


def token_env(token):
    env = dict(os.environ)
    env[DEFAULT_TOKEN_ENV] = token
    return env


def squid_logs(node):
    return _procs.read_log(node["squid"].access_log, 10 ** 6) + _procs.read_log(node["squid"].cache_log, 10 ** 6)


# --- the documented one-liner ------------------------------------------------------------------------

def test_one_liner_shows_the_guest_and_echoes_what_is_typed(serial_node):
    node, vm = serial_node, serial_node["vm"]
    token = mint_proxy_token(node["keys"], "alice@example.org", vm.name, "serial")
    line = serial_console_command(**command_args(node, proxy_username=token.username))
    assert token.token not in line and "env:VMC_PROXY_TOKEN" in line
    client = Client(line, env=token_env(token.token), shell=True)       # exactly the line a person pastes
    try:
        first = int(client.wait_for(GUEST_LINE, 30, what="guest output through proxy and TLS").group(1))
        second = int(client.wait_for(rb"ok %d\r\n" % (first + 1), 5, what="the guest's next line").group(0)[3:-2])
        assert second == first + 1, "the guest is alive and counting"
        # Keystroke by keystroke, as a terminal with `stty -icanon` sends them (docs/serial-console.md:
        # QEMU 7.2 hands the guest at most one UART FIFO of a TLS record until more bytes arrive).
        # 19 keys 0.1 s apart take longer than the guest's second between two lines: its echo is whole only
        # because each byte received starts that second again (tests/guest_image.py). Before, a line was
        # printed into the echo of a word (seen under load, in the browser's terminal too).
        typed = b"typed-%s\n" % secrets.token_hex(6).encode()
        for key in typed:
            client.send(bytes([key]))
            time.sleep(0.1)
        client.wait_for(re.escape(typed), 10, what="the guest's echo of %r, whole" % typed)
    finally:
        client.stop()
    # squid logged who reached which port (user and VM decoded), never the token.
    entry = "%s user=alice@example.org;vm=%s;console=serial CONNECT %s:%d 200" % (
        token.username, vm.name, node["pki"].cn, vm.serial_port)
    _procs.wait_until(lambda: entry in _procs.read_log(node["squid"].access_log), 15, what="squid's access log line",
                      logs=node["squid"].logs)
    assert token.token not in squid_logs(node)


# --- refusals ----------------------------------------------------------------------------------------

def run_refused(argv, token, timeout=15):
    """Run a client that must be refused: (exit status, stdout, stderr) once it has ended by itself."""
    client = Client(argv, env=token_env(token))
    status = client.finish(timeout)
    return status, client.output(), client.err.decode("utf-8", "replace")


def without_options(argv, *names):
    """``argv`` without the options ``names`` and their values."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in names:
            skip = True
        else:
            out.append(arg)
    return out


def test_refusals(serial_node, tmp_path):
    node, vm = serial_node, serial_node["vm"]
    token = mint_proxy_token(node["keys"], "alice", vm.name, "serial")
    argv = serial_console_argv(**command_args(node))
    foreign = _procs.make_pki(str(tmp_path / "foreign"))      # a CA the node does not trust, and its client

    # No client certificate: the proxy lets the tunnel through, QEMU ends the TLS session (verify-peer=on).
    # (TLS 1.3: the client has verified the node, "verify return:1", before QEMU checks it and hangs up.)
    status, out, err = run_refused(without_options(argv, "-cert", "-key"), token.token)
    assert status not in (0, None) and not GUEST_LINE.search(out), (status, out, err)
    assert "HTTP CONNECT failed" not in err and "unexpected eof" in err, err
    # A certificate of another CA: refused the same way.
    status, out, err = run_refused(serial_console_argv(**command_args(
        node, cert_file=foreign.client_cert_file, key_file=foreign.client_key_file)), token.token)
    assert status not in (0, None) and not GUEST_LINE.search(out), (status, out, err)
    assert "HTTP CONNECT failed" not in err and "unexpected eof" in err, err
    # The client does not trust a node whose certificate its CA did not sign (-verify_return_error).
    status, out, err = run_refused(serial_console_argv(**command_args(node, ca_file=foreign.ca_file)), token.token)
    assert status not in (0, None) and not GUEST_LINE.search(out), (status, out, err)
    assert "certificate verify failed" in err or "unable to get local issuer" in err, err

    # Proxy refusals (403): a wrong or forged token, a token of another console, a port that is not this VM's console.
    forged = token.token[:-4] + ("AAAA" if not token.token.endswith("AAAA") else "BBBB")
    other_vm = mint_proxy_token(node["keys"], "alice", "serial2", "serial")
    spice = mint_proxy_token(node["keys"], "alice", vm.name, "spice")
    cases = [
        ("forged token", argv, forged, 403),
        ("no token", argv, "", 403),
        ("this VM's token under serial2's username",
         serial_console_argv(**command_args(node, proxy_username=other_vm.username)), token.token, 403),
        ("this VM's SPICE token to its serial port", argv, spice.token, 403),
        ("port 22 of the node", serial_console_argv(**command_args(node, port=22)), token.token, 403),
        ("QEMU migration port", serial_console_argv(**command_args(node, port=60000)), token.token, 403),
        ("serial port of another VM", serial_console_argv(**command_args(node, port=node["other_port"])),
         token.token, 403),
        ("serial2's token to this VM's port",
         serial_console_argv(**command_args(node, proxy_username=other_vm.username)), other_vm.token, 403),
    ]
    results = {}
    for what, case_argv, case_token, dummy in cases:
        status, out, err = run_refused(case_argv, case_token)
        assert status not in (0, None) and not GUEST_LINE.search(out), (what, status, out, err)
        found = re.search(r"HTTP CONNECT failed, reason= (\d+)", err)
        results[what] = int(found.group(1)) if found else err
    assert results == {what: expected for what, dummy, dummy2, expected in cases}

    # The refusals came from the checks, not from a broken path: the same command with the right
    # certificate and token works (here with the token in a 0600 file: -proxy_pass file:PATH).
    token_file = tmp_path / "serial1.token"
    token_file.touch(mode=0o600)
    token_file.write_text(token.token + "\n")
    client = Client(serial_console_argv(**command_args(node, token_file=str(token_file))), env=token_env("wrong"))
    try:
        client.wait_for(GUEST_LINE, 30, what="guest output after the refusals")
    finally:
        client.stop()
    logs = squid_logs(node)
    for secret in (token.token, forged, other_vm.token):
        assert secret not in logs
    assert base64.b64encode(("%s:%s" % (token.username, token.token)).encode()).decode() not in logs


# --- console_ticket protocol=serial -------------------------------------------------------------------

def run_returned_command(line):
    """Run a command line as console_ticket returned it (openssl as this test finds it) until the guest shows."""
    env = dict(os.environ)
    env.pop(DEFAULT_TOKEN_ENV, None)
    assert line.startswith("openssl s_client "), line
    client = Client(OPENSSL + line[len("openssl"):], env=env, shell=True)
    try:
        client.wait_for(GUEST_LINE, 30, what="guest output through console_ticket's command")
    finally:
        client.stop()


def test_console_ticket_serial_issues_a_token_whose_command_shows_the_guest(serial_node, tmp_path):
    node, vm, pki = serial_node, serial_node["vm"], serial_node["pki"]
    qmp = vm.qmp()
    try:
        chardevs = qmp.execute("query-chardev")
    finally:
        qmp.close()
    assert serial_chardev_port(chardevs) == vm.serial_port, chardevs    # the real QEMU's filename format

    dest, audit_log = tmp_path / "serial1.token", tmp_path / "tickets.log"
    args = dict(vm=vm.name, socket_dir=os.path.dirname(vm.qmp_path), protocol="serial", console_host=pki.cn,
                proxy="http://127.0.0.1:%d" % node["squid"].port, proxy_user="alice@example.org",
                proxy_token_key_file=node["squid"].signing_file, client_cert_file=pki.client_cert_file,
                client_key_file=pki.client_key_file, client_ca_file=pki.ca_file, dest=str(dest),
                audit_log=str(audit_log))
    result, proc = adhoc(args)
    assert not result.get("failed"), "%s\n%s" % (result.get("msg"), proc.stderr)
    token = dest.read_text().strip()
    assert stat.S_IMODE(os.stat(dest).st_mode) == 0o600
    assert len(token) > 40 and token not in proc.stdout + proc.stderr
    assert (result["serial_port"], result["proxy_username"]) == (vm.serial_port, "alice_40example_2Eorg__serial1")
    assert "-proxy_pass file:%s " % dest in result["command"]
    record = json.loads(audit_log.read_text())
    assert (record["protocol"], record["proxy_username"], record["proxy_token_expires"]) == (
        "serial", result["proxy_username"], result["expires"])
    run_returned_command(result["command"])

    # Check mode reads the port and returns the command, and mints and writes nothing.
    dest.unlink()
    result, proc = adhoc(dict(args, return_secret=True), "--check")
    assert not result.get("failed") and result["serial_port"] == vm.serial_port, result
    assert "proxy_token" not in result and not dest.exists() and len(audit_log.read_text().splitlines()) == 1


def test_console_playbook_serial_prints_the_command(serial_node, tmp_path):
    node, vm, pki = serial_node, serial_node["vm"], serial_node["pki"]
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    argv = ["ansible-playbook", "-i", "localhost,", "-c", "local", "-e", "ansible_python_interpreter=/usr/bin/python3",
            "-vvv", "vmconsole.secure.console", "-e", "vm=%s" % vm.name, "-e", "target=localhost",
            "-e", "ansible_become=false", "-e", "protocol=serial", "-e", "proxy_user=alice",
            "-e", "socket_dir=%s" % os.path.dirname(vm.qmp_path), "-e", "console_host=%s" % pki.cn,
            "-e", "proxy=http://127.0.0.1:%d" % node["squid"].port, "-e", "proxy_token_key_file=%s" % node["squid"].signing_file,
            "-e", "audit_log=%s" % (tmp_path / "tickets.log"), "-e", "client_cert_file=%s" % pki.client_cert_file,
            "-e", "client_key_file=%s" % pki.client_key_file, "-e", "client_ca_file=%s" % pki.ca_file]
    env = dict(os.environ, ANSIBLE_NOCOLOR="1")
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=str(workdir), env=env, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    dest = workdir / ("%s.token" % vm.name)
    token = dest.read_text().strip()
    assert len(token) > 40 and token not in proc.stdout + proc.stderr, "the token is in no output at -vvv"
    assert stat.S_IMODE(os.stat(dest).st_mode) == 0o600
    assert "the proxy token is in %s (mode 0600)" % dest in proc.stdout, proc.stdout
    assert not list(workdir.glob("*.vv"))
    line = re.search(r'"(openssl s_client [^"]*-proxy_pass file:%s [^"]*)"' % re.escape(str(dest)), proc.stdout)
    assert line, proc.stdout
    run_returned_command(line.group(1))


# --- who may open the serial console: QEMU's TLS authorization list (#17 finding 7) ---------------

ROLE_SETTINGS = role_settings("qemu_vm", {
    "qemu_vm_binary": _procs.QEMU_BINARY, "qemu_vm_spice_ports": [61000, 61999], "qemu_vm_vnc_ports": [5900, 5999],
    "qemu_vm_serial_ports": list(SERIAL_PORTS), "qemu_vm_migration_ports": [60000, 60050]})


def systemd_environment_value(line):
    """The value systemd's ``Environment=`` gives the one variable of ``line`` (quoted word, C escapes, %%)."""
    name, value = systemd_unquote(line).split("=", 1)
    assert name == AUTHZ_ENV
    return value


class AuthzSerialGuest(SerialGuest):
    """The boot-sector guest with the serial console options exactly as qemu_vm writes them:
    ``_guests.argv``'s ``-object tls-creds-x509 ... -object ${VMCONSOLE_SERIAL_AUTHZ} -chardev ...,tls-authz=...``,
    the variable's value being what systemd makes of the guest's ``serial-clients.conf`` line."""

    def __init__(self, name, workdir, *, clients, **kwargs):
        self.clients = list(clients)
        self.serial_env = None
        super().__init__(name, workdir, **kwargs)

    def _argv(self, pki_dir, **options):
        base = super()._argv(pki_dir, **options)
        settings = dict(ROLE_SETTINGS, qemu_vm_serial_x509_dir=pki_dir,
                        qemu_vm_guests=[{"name": self.name, "spice": False, "serial_clients": self.clients}])
        assert _guests.input_errors(settings) == []
        (guest,) = _guests.guest_list(settings)
        role = _guests.argv(settings, guest, {"serial_port": self.serial_port})
        self.serial_env = _guests.serial_environment(guest)

        def serial_part(argv):
            first = argv.index("tls-creds-x509,id=vmconsole-serial-tls,endpoint=server,verify-peer=on,dir=%s" % pki_dir)
            return first - 1, argv.index("chardev:vmconsole-serial") + 1

        start, end = serial_part(role)
        part = [systemd_environment_value(self.serial_env) if arg == "${%s}" % AUTHZ_ENV else arg
                for arg in role[start:end]]
        assert "tls-authz=%s" % AUTHZ_ID in part[-3] and part[-5].startswith('{"qom-type":"authz-list"'), part
        base_start, base_end = serial_part(base)
        return base[:base_start] + part + base[base_end:]


def write_client(folder, pki, name, attrs):
    """A client certificate of the test CA for ``attrs`` (RDN order) and its 0600 key: (cert file, key file)."""
    cert_pem, key_pem = pki.issue(attrs, client=True)
    cert_file, key_file = os.path.join(folder, "%s-cert.pem" % name), os.path.join(folder, "%s-key.pem" % name)
    with open(cert_file, "w") as handle:
        handle.write(cert_pem)
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key_pem)
    return cert_file, key_file


ALICE = (("O", "vmconsole test"), ("CN", "alice"))
BOB = (("O", "vmconsole test"), ("CN", "bob"))


def identity(attrs):
    """The subject as QEMU compares it (GnuTLS, certificate order) for these plain attributes."""
    return ",".join("%s=%s" % pair for pair in attrs)


@pytest.fixture
def authz_guest(pki, guest_disk):
    """A guest whose serial console admits alice only; client files for alice, bob and the node's own certificate."""
    if not _procs.have_qemu():
        pytest.skip("%s is not installed" % _procs.QEMU_BINARY)
    workdir = _procs.short_tmpdir("vmc-authz-")
    vm = None
    try:
        clients = {"alice": write_client(workdir, pki, "alice", ALICE), "bob": write_client(workdir, pki, "bob", BOB),
                   # The node's own certificate as a client (the pki role's host certificates are clientAuth too).
                   "host": (pki.client_cert_file, pki.client_key_file)}
        vm = AuthzSerialGuest("authz1", workdir, disk=guest_disk, pki_dir=pki.dir, clients=[identity(ALICE)])
        yield dict(vm=vm, pki=pki, clients=clients, workdir=workdir)
    finally:
        if vm is not None:
            vm.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def direct_client(node, who):
    """openssl straight to the guest's serial port (the proxy in front is tested above) as ``who``."""
    cert_file, key_file = node["clients"][who]
    return Client([OPENSSL, "s_client", "-quiet", "-connect", "127.0.0.1:%d" % node["vm"].serial_port,
                   "-cert", cert_file, "-key", key_file, "-CAfile", node["pki"].ca_file, "-verify_return_error"])


def admitted(node, who):
    client = direct_client(node, who)
    try:
        client.wait_for(GUEST_LINE, 30, what="%s's serial console" % who)
    finally:
        client.stop()


def refused(node, who):
    """QEMU ends the TLS session of ``who`` (its subject is not on the list) before any guest byte."""
    client = direct_client(node, who)
    status = client.finish(15)
    out, err = client.output(), client.err.decode("utf-8", "replace")
    assert status not in (0, None) and not GUEST_LINE.search(out), (who, status, out, err)
    # The client verified QEMU and sent its certificate (TLS 1.3): QEMU hung up after checking it.
    assert "verify return:1" in err and "unexpected eof" in err, (who, err)


def set_clients(node, clients, *flags):
    """``ansible localhost -m vmconsole.secure.serial_console_clients``: the role's live change."""
    vm = node["vm"]
    args = dict(socket=vm.qmp_path, clients=clients)
    proc = run_ansible(["ansible", "localhost", *ANSIBLE_LOCAL, *flags, "-m", "vmconsole.secure.serial_console_clients",
                        "-a", json.dumps(args)], env=ANSIBLE_JSON)
    try:
        output = json.loads(proc.stdout)
    except ValueError:
        raise AssertionError("ansible printed no JSON (rc %d):\n%s\n%s" % (proc.returncode, proc.stdout, proc.stderr)) from None
    return output["plays"][0]["tasks"][0]["hosts"]["localhost"]


def test_only_listed_client_identities_get_the_serial_console(authz_guest):
    node = authz_guest
    admitted(node, "alice")
    # Same CA, valid client certificates, not listed: another user's and the node's own.
    refused(node, "bob")
    refused(node, "host")
    admitted(node, "alice")     # the refusals broke nothing


def test_a_list_change_reaches_the_running_guest_without_a_restart(authz_guest):
    node, vm = authz_guest, authz_guest["vm"]
    pid = vm.pid
    alice, bob = identity(ALICE), identity(BOB)

    # A dry run reads the list and changes nothing.
    result = set_clients(node, [bob], "--check", "--diff")
    assert not result.get("failed") and result["changed"] is True, result
    assert result["diff"] == {"before": alice + "\n", "after": bob + "\n"}
    refused(node, "bob")

    # alice's open session outlives the change; once it ends, the new list decides.
    session = direct_client(node, "alice")
    try:
        first = int(session.wait_for(GUEST_LINE, 30, what="alice's session").group(1))
        result = set_clients(node, [bob])
        assert not result.get("failed") and result["changed"] is True, result
        assert (result["clients"], result["previous_clients"]) == ([bob], [alice])
        session.wait_for(rb"ok %d\r\n" % (first + 2), 10, what="alice's session after the change")
    finally:
        session.stop()
    admitted(node, "bob")
    refused(node, "alice")
    assert vm.pid == pid and vm.proc.poll() is None, "the guest did not restart"

    # The same list again: no change (the role runs this on every run).
    again = set_clients(node, [bob])
    assert not again.get("failed") and again["changed"] is False, again


def test_a_guest_without_a_list_is_reported_not_silently_passed(serial_node):
    # serial_node's QEMU has no tls-authz (a guest started before the role managed the list).
    result = set_clients(serial_node, [identity(ALICE)])
    assert result.get("failed") and "has no serial client list (object vmconsole-serial-authz)" in result["msg"], result
