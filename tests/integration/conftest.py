# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Fixtures that run real processes (QEMU, Xvfb) and always stop them by PID.

Fixtures: ``free_port``, ``pki`` (session), ``qemu_factory``, ``qemu_vm``, ``xvfb``, ``squid_factory``.
Every test under tests/integration is marked ``integration``; tests that need QEMU are
skipped when qemu-system-x86_64 is not installed.
"""

from __future__ import annotations

import os
import shutil

import pytest

from ansible_collections.vmconsole.secure.tests.integration import _procs


def pytest_configure(config):
    config.addinivalue_line("markers", "integration: runs real processes (QEMU, Xvfb, squid, ...)")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "/tests/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def free_port():
    """The function ``free_port(start=None, end=None)`` -> a free TCP port on 127.0.0.1."""
    return _procs.free_port


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    """A test CA with server and client certificates (see ``_procs.make_pki``).

    ``pki.dir`` is usable as SPICE ``x509-dir`` and as a ``tls-creds-x509`` dir;
    ``pki.subject`` is the server certificate's subject as spice-gtk compares it.
    """
    return _procs.make_pki(str(tmp_path_factory.mktemp("pki")))


@pytest.fixture
def qemu_factory(pki):
    """``qemu_factory(name=None, spice=True, tls=True, plain_port=False, vnc=False,
    vnc_password=True, extra_args=())`` -> a running :class:`_procs.QemuVM`.

    Every VM started through it is stopped (QMP quit, then signals by PID) after the test.
    Tests that use it are skipped when qemu-system-x86_64 is not installed.
    """
    if not _procs.have_qemu():
        pytest.skip("%s is not installed" % _procs.QEMU_BINARY)
    workdir = _procs.short_tmpdir("vmc-")
    vms = []

    def start(name=None, spice=True, tls=True, plain_port=False, vnc=False, vnc_password=True, extra_args=()):
        name = name or "vm%d" % (len(vms) + 1)
        vm = _procs.QemuVM(name, workdir, pki_dir=pki.dir, spice=spice, tls=tls, plain_port=plain_port,
                           vnc=vnc, vnc_password=vnc_password, extra_args=extra_args)
        vms.append(vm)
        return vm

    try:
        yield start
    finally:
        for vm in reversed(vms):
            vm.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def qemu_vm(qemu_factory):
    """One VM with the default console setup: SPICE TLS only, ticketing on, no password."""
    return qemu_factory()


@pytest.fixture
def xvfb():
    """Display string (e.g. ``":57"``) of an Xvfb started for this test."""
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed")
    workdir = _procs.short_tmpdir("vmc-x-")
    server = _procs.Xvfb(workdir)
    try:
        yield server.display
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def squid_factory():
    """``squid_factory(signers, self_name=..., nodes=(), vms=None)`` -> a running :class:`_procs.Squid`.

    squid with the connect_proxy helpers on a free 127.0.0.1 port, CONNECT-only to console
    ports of the cluster's nodes, run as root dropping to ``proxy``. Stopped by PID after the
    test. Skipped when squid is not installed or the test does not run as root.
    """
    if not _procs.have_squid():
        pytest.skip("%s is not installed" % _procs.SQUID_BINARY)
    if os.geteuid() != 0:
        pytest.skip("squid runs as root and drops to user proxy")
    servers, folders = [], []

    def start(signers, self_name, nodes=(), vms=None):
        folder = _procs.short_tmpdir("vmc-squid-")
        folders.append(folder)
        server = _procs.Squid(folder, signers, self_name=self_name, nodes=nodes, vms=vms)
        servers.append(server)
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.stop()
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)
