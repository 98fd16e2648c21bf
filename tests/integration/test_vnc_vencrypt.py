# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The VNC probe against a real QEMU with VeNCrypt: x509 TLS, then SASL (SCRAM-SHA-256) or VNC auth.

QEMU reads its SASL configuration ``qemu.conf`` from ``SASL_CONF_PATH`` (cyrus-sasl honours it
for processes that are not setuid); each test gets its own sasldb made with ``saslpasswd2``
(Debian package sasl2-bin; the SCRAM plugin is in libsasl2-modules).
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from ansible_collections.vmconsole.secure.plugins.module_utils._vnc import (
    VENCRYPT_X509SASL,
    VENCRYPT_X509VNC,
    vnc_auth_probe,
)
from ansible_collections.vmconsole.secure.tests.integration import _procs
from ansible_collections.vmconsole.secure.tests.integration.test_console_probe import module_result, run_module
from ansible_collections.vmconsole.secure.tests.unit import fakespice

SASL_USER = "alice"
SASL_PASSWORD = "Sc7-rAm!pw9,x=y"        # ',' and '=' exercise SCRAM's escaping of nothing but the user name
VNC_PASSWORD = "Vk3nP8qz"


@pytest.fixture
def sasl_dir(monkeypatch):
    """A SASL config dir (qemu.conf + sasldb with SASL_USER) that QEMU finds through SASL_CONF_PATH."""
    if shutil.which("saslpasswd2") is None:
        pytest.skip("saslpasswd2 is not installed (Debian package sasl2-bin)")
    folder = _procs.short_tmpdir("vmc-sasl-")
    db = os.path.join(folder, "passwd.db")
    subprocess.run(["saslpasswd2", "-p", "-a", "qemu", "-f", db, SASL_USER], input=SASL_PASSWORD.encode(),
                   check=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    with open(os.path.join(folder, "qemu.conf"), "w", encoding="ascii") as f:
        f.write("mech_list: scram-sha-256\nsasldb_path: %s\n" % db)
    monkeypatch.setenv("SASL_CONF_PATH", folder)           # inherited by the QEMU the test starts
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def vencrypt_vm(qemu_factory, pki):
    """``vencrypt_vm(sasl=False, verify_peer=False)`` -> (QemuVM, VNC port) with VeNCrypt over x509 creds.

    sasl=True gives X509SASL; otherwise ``password=on`` gives X509VNC (no password set yet).
    """
    def start(sasl=False, verify_peer=False):
        port = _procs.free_vnc_port()
        creds = "tls-creds-x509,id=vnctls,dir=%s,endpoint=server,verify-peer=%s" % (pki.dir, "on" if verify_peer else "off")
        vnc = "127.0.0.1:%d,tls-creds=vnctls,%s" % (port - 5900, "sasl=on" if sasl else "password=on")
        vm = qemu_factory(spice=False, extra_args=("-object", creds, "-vnc", vnc))
        return vm, port

    return start


def probe(port, password, pki, **kwargs):
    kwargs.setdefault("ca_file", pki.ca_file)
    result = vnc_auth_probe("127.0.0.1", port, password, timeout=10, **kwargs)
    assert password not in result["detail"]
    return result


def vnc_clients(vm):
    with vm.qmp() as qmp:
        return qmp.execute("query-vnc")["clients"]


# --- X509SASL ------------------------------------------------------------------------------------

def test_sasl_right_password_is_accepted_and_leaves_no_client(sasl_dir, vencrypt_vm, pki):
    vm, port = vencrypt_vm(sasl=True)
    result = probe(port, SASL_PASSWORD, pki, sasl_user=SASL_USER, host_subject=pki.subject)
    assert result["status"] == "accepted", result
    assert (result["security_types"], result["vencrypt_subtype"], result["sasl_mechanism"]) == \
        ([19], VENCRYPT_X509SASL, "SCRAM-SHA-256")
    assert result["subject"] == pki.subject and "server signature verified" in result["detail"]
    assert vnc_clients(vm) == []            # the probe hung up before ClientInit


def test_sasl_wrong_password_is_refused(sasl_dir, vencrypt_vm, pki):
    dummy, port = vencrypt_vm(sasl=True)
    result = probe(port, SASL_PASSWORD + "x", pki, sasl_user=SASL_USER)
    assert result["status"] == "refused", result
    assert "after the SASL proof" in result["detail"]


def test_sasl_unknown_user_is_refused(sasl_dir, vencrypt_vm, pki):
    dummy, port = vencrypt_vm(sasl=True)
    result = probe(port, SASL_PASSWORD, pki, sasl_user="mallory")
    assert result["status"] == "refused", result
    assert "after the SASL start" in result["detail"]


def test_sasl_server_without_a_user_name_is_unreachable(sasl_dir, vencrypt_vm, pki):
    dummy, port = vencrypt_vm(sasl=True)
    result = probe(port, SASL_PASSWORD, pki)
    assert result["status"] == "unreachable" and "vnc_sasl_user" in result["detail"]


def test_wrong_ca_is_a_tls_mismatch(sasl_dir, vencrypt_vm, pki):
    dummy, port = vencrypt_vm(sasl=True)
    other_ca = fakespice.pem(fakespice.make_ca("another CA")[1])
    result = probe(port, SASL_PASSWORD, pki, sasl_user=SASL_USER, ca_file=None, ca_pem=other_ca)
    assert result["status"] == "tls_mismatch", result
    assert result["sasl_mechanism"] is None            # no credential went out


def test_wrong_host_subject_is_a_tls_mismatch(sasl_dir, vencrypt_vm, pki):
    dummy, port = vencrypt_vm(sasl=True)
    result = probe(port, SASL_PASSWORD, pki, sasl_user=SASL_USER, host_subject="C=XX,O=vmconsole test,CN=elsewhere")
    assert result["status"] == "tls_mismatch" and "CN=elsewhere" in result["detail"]


def test_verify_peer_needs_the_client_certificate(sasl_dir, vencrypt_vm, pki):
    dummy, port = vencrypt_vm(sasl=True, verify_peer=True)
    result = probe(port, SASL_PASSWORD, pki, sasl_user=SASL_USER)
    assert result["status"] == "unreachable" and "verify-peer=on" in result["detail"], result
    result = probe(port, SASL_PASSWORD, pki, sasl_user=SASL_USER, client_cert=pki.client_cert_file,
                   client_key=pki.client_key_file)
    assert result["status"] == "accepted", result


# --- X509VNC -------------------------------------------------------------------------------------

def test_x509vnc_password(vencrypt_vm, pki):
    vm, port = vencrypt_vm()
    result = probe(port, VNC_PASSWORD, pki)
    assert (result["status"], result["vencrypt_subtype"]) == ("refused", VENCRYPT_X509VNC), result   # none set yet
    with vm.qmp() as qmp:
        qmp.execute("set_password", dict(protocol="vnc", password=VNC_PASSWORD))
    result = probe(port, VNC_PASSWORD, pki, host_subject=pki.subject)
    assert result["status"] == "accepted" and "VNC authentication" in result["detail"], result
    result = probe(port, VNC_PASSWORD[::-1], pki)
    assert result["status"] == "refused" and result["detail"].endswith("Authentication failed")
    result = probe(port, VNC_PASSWORD, pki, sasl_user=SASL_USER)
    assert result["status"] == "unreachable" and "does not use SASL" in result["detail"]
    assert vnc_clients(vm) == []


# --- the module, through Ansible -------------------------------------------------------------------

def test_module_keeps_the_sasl_password_out_of_the_output(sasl_dir, vencrypt_vm, pki):
    dummy, port = vencrypt_vm(sasl=True)
    args = dict(protocol="vnc", port=port, ticket=SASL_PASSWORD, vnc_sasl_user=SASL_USER, ca_file=pki.ca_file,
                host_subject=pki.subject, expect="accepted")
    rc, output = run_module(args, "-vvv")
    assert rc == 0, output
    assert SASL_PASSWORD not in output
    result = module_result(output)
    assert (result["status"], result["vencrypt_subtype"], result["subject"]) == ("accepted", VENCRYPT_X509SASL, pki.subject)

    rc, output = run_module(dict(args, ticket=SASL_PASSWORD + "x"), "--check")
    assert rc != 0 and SASL_PASSWORD not in output
    assert module_result(output)["status"] == "refused"
