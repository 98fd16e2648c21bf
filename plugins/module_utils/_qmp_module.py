# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Ansible glue shared by every module that talks QMP (private).

A module builds its ``argument_spec`` from :data:`QMP_ARGUMENT_SPEC` (documented by the
``vmconsole.secure.qmp`` doc fragment), passes :data:`QMP_MUTUALLY_EXCLUSIVE` and
:data:`QMP_REQUIRED_ONE_OF` to ``AnsibleModule``, and then::

    with open_qmp(module) as qmp:
        try:
            result = qmp.execute("query-status")
        except QMPError as exc:
            fail_qmp(module, exc)
"""

from __future__ import annotations

import os
import re

from ansible_collections.vmconsole.secure.plugins.module_utils._qmp import (
    QMPClient,
    QMPCommandError,
    QMPConnectionRefused,
    QMPError,
    QMPPermissionDenied,
    QMPProtocolError,
    QMPSocketMissing,
    QMPTimeout,
)

QMP_ARGUMENT_SPEC = dict(
    vm=dict(type="str"),
    socket=dict(type="path"),
    socket_dir=dict(type="path", default="/run/vmconsole"),
    timeout=dict(type="float", default=10),
)
QMP_MUTUALLY_EXCLUSIVE = [("vm", "socket")]
QMP_REQUIRED_ONE_OF = [("vm", "socket")]

VM_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")
VM_NAME_MAX = 64


def qmp_socket_path(params):
    """The QMP socket path from ``socket``, or ``<socket_dir>/<vm>.qmp``.

    Raises ``ValueError`` with a reason when the VM name could escape ``socket_dir`` or
    is otherwise not a plain name, or when ``timeout`` is not positive.
    """
    timeout = params.get("timeout")
    if timeout is not None and not timeout > 0:
        raise ValueError("timeout must be a positive number of seconds, got %r" % (timeout,))
    if params.get("socket"):
        return params["socket"]
    vm = params.get("vm")
    if not vm:
        raise ValueError("one of vm or socket is required")
    if len(vm) > VM_NAME_MAX or not VM_NAME_RE.match(vm):
        raise ValueError("vm %r is not a valid VM name: use up to %d of A-Z a-z 0-9 _ . - , starting with a "
                         "letter or digit" % (vm, VM_NAME_MAX))
    return os.path.join(params.get("socket_dir") or "/run/vmconsole", vm + ".qmp")


def open_qmp(module):
    """A connected :class:`QMPClient` for the module's options; fails the module on error.

    Invalid options fail with ``msg`` naming the option; connection errors through
    :func:`fail_qmp`. The caller closes the client (it is a context manager).
    """
    try:
        path = qmp_socket_path(module.params)
    except ValueError as exc:
        module.fail_json(msg=str(exc))
    client = QMPClient(path, timeout=module.params["timeout"])
    try:
        client.connect()
    except QMPError as exc:
        fail_qmp(module, exc)
    return client


def query_optional(qmp, command):
    """``command``'s return value, or None when this QEMU has no such command (e.g. query-vnc without VNC)."""
    try:
        return qmp.execute(command)
    except QMPCommandError as exc:
        if exc.error_class == "CommandNotFound":
            return None
        raise


def _describe(exc):
    """What happened, on which socket, and what to check; one text per QMPError class.

    The client's own messages already name the socket; this adds the module options.
    """
    sock = exc.socket or "(unknown)"
    if isinstance(exc, QMPSocketMissing):
        return "QMP socket %s does not exist: is the VM running, and is vm/socket right?" % sock
    if isinstance(exc, QMPPermissionDenied):
        return "Permission denied on QMP socket %s: QMP sockets are root-only, run the task with become: true" % sock
    if isinstance(exc, (QMPConnectionRefused, QMPProtocolError)):
        return "%s (check vm/socket)" % exc.message
    if isinstance(exc, QMPTimeout):
        return "%s; raise the timeout option if QEMU is busy" % exc.message
    return exc.message  # QMPUnexpectedEOF, QMPCommandError and the base class


def fail_qmp(module, exc, **extra):
    """Turn a :class:`QMPError` into ``module.fail_json``; ``extra`` is added to the result.

    The result carries ``socket`` and ``qmp_error`` (the error's class name), and for a
    command error also ``qmp_error_class`` and ``qmp_error_desc`` as sent by QEMU.
    """
    result = dict(extra)
    result.update(msg=_describe(exc), socket=exc.socket, qmp_error=type(exc).__name__)
    if isinstance(exc, QMPCommandError):
        result.update(qmp_error_class=exc.error_class, qmp_error_desc=exc.desc)
    module.fail_json(**result)
