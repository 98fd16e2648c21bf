# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""What a QEMU binary can do (private; module qemu_binary_info, filter qemu_vm_plan).

The one place that knows what each QEMU version takes where the versions the collection runs on
differ (Debian 12: QEMU 7.2; Debian 13: QEMU 10.0): :func:`parse_version` reads a version,
:func:`run_as_args` gives the options that drop root, :func:`machine_type` and :func:`migration_errors` say
whether a guest can move between two QEMUs.

What a binary can do is asked of a throwaway QEMU over QMP (:func:`probe_binary`).

The QEMU starts paused (``-S``) with TCG, no network, disk or TCP port, SPICE on a UNIX socket
in a private temporary folder, and its monitor on a socket this process already listens on
(``-chardev socket,fd=N``, as libvirt does): the client connects at once, nothing polls for a
socket file. It answers ``query-version`` and ``query-spice`` through the collection's one QMP
client, then quits.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile

from ansible_collections.vmconsole.secure.plugins.module_utils._qmp import QMPClient, QMPCommandError, QMPError

# -run-with user=USER exists from QEMU 9.1; -runas USER, deprecated then, was removed in 10.0.
RUN_WITH_USER_SINCE = (9, 1)

# "7.2.22", "10.0.13", or the first line of `qemu-system-x86_64 --version`
# ("QEMU emulator version 10.0.13 (Debian 1:10.0.13+ds-0+deb13u1)").
_VERSION_RE = re.compile(r"^(?:QEMU emulator version )?([0-9]+)\.([0-9]+)(?:\.([0-9]+))?(?:[ (~+-]|$)")


def parse_version(text):
    """``(major, minor, micro)`` of a QEMU version or of the output of ``--version``; None when there is none."""
    if not isinstance(text, str):
        return None
    match = _VERSION_RE.match(text.strip())
    if not match:
        return None
    return tuple(int(part or 0) for part in match.groups())


def run_as_args(version, user):
    """The options that make QEMU give up root for ``user`` once it has read its certificates and opened its
    sockets: ``-run-with user=USER`` from QEMU 9.1 (``-runas`` is gone in 10.0), ``-runas USER`` before (7.2 has no
    ``user=``). ``version``: what :func:`parse_version` gives; None (not known yet, a dry run before QEMU is
    installed) gives the current form."""
    if version is None or tuple(version[:2]) >= RUN_WITH_USER_SINCE:
        return ["-run-with", "user=" + user.replace(",", ",,")]
    return ["-runas", user]


# Machine aliases and the versioned machine type each names in QEMU X.Y (pc: pc-i440fx-X.Y).
MACHINE_ALIASES = {"pc": "pc-i440fx-%d.%d", "q35": "pc-q35-%d.%d"}
_MACHINE_VERSION_RE = re.compile(r"^pc-(?:i440fx|q35)-([0-9]+)\.([0-9]+)$")


def machine_type(machine, version):
    """The machine type QEMU ``version`` runs for ``machine`` (an alias such as ``pc`` names the newest
    of that version); None when an alias meets an unknown version."""
    machine = machine[:-len("-machine")] if machine.endswith("-machine") else machine
    if machine in MACHINE_ALIASES:
        return MACHINE_ALIASES[machine] % tuple(version[:2]) if version else None
    return machine


def migration_errors(vm, source, target):
    """Why QEMU cannot migrate ``vm`` from ``source`` to ``target``: QEMU migrates only between equal machine types
    (the stream names it: "Machine type received is ... and local is ..."), and a QEMU older than a machine type
    does not have it. ``source``: ``host``, ``machine`` (``qom-get /machine type`` of the running guest), ``version``
    (QEMU's); ``target``: ``host``, ``machine`` (the qemu_vm_machine it starts the guest with), ``version``."""
    running = machine_type(source["machine"], None)
    src_version, dst_version = parse_version(source.get("version")), parse_version(target.get("version"))
    wanted = machine_type(target["machine"], dst_version)
    if wanted is None or running == wanted:
        return []
    fix = ("set qemu_vm_machine to a machine type every QEMU of the cluster has, the oldest one's (%s), "
           "for the guests of a cluster that mixes QEMU versions (they restart once with it)"
           % (machine_type("pc", min(v for v in (src_version, dst_version) if v)) if src_version or dst_version
              else "pc-i440fx-<oldest>"))
    too_new = _MACHINE_VERSION_RE.match(running)
    if too_new and dst_version and tuple(int(n) for n in too_new.groups()) > tuple(dst_version[:2]):
        fix = ("QEMU %s on %s has no machine type %s (it is newer): %s"
               % (target.get("version"), target["host"], running, fix))
    return ["%s runs machine type %s on %s (QEMU %s), but %s would start it as %s (qemu_vm_machine '%s', QEMU %s): "
            "QEMU migrates only between equal machine types. Nothing was moved; %s"
            % (vm, running, source["host"], source.get("version") or "?", target["host"], wanted, target["machine"],
               target.get("version") or "?", fix)]


# A PC machine (x86) also proves that the firmware is found; other targets use machine none.
_PC_TARGETS = re.compile(r"qemu-system-(x86_64|i386)$")


def default_machine(binary):
    """The machine to start: ``pc`` for an x86 system emulator, ``none`` for the others."""
    return "pc" if _PC_TARGETS.search(binary) else "none"


def probe_argv(binary, machine, folder, fd):
    """The throwaway QEMU's command line."""
    return [binary, "-machine", machine, "-accel", "tcg", "-S", "-nodefaults", "-display", "none",
            "-spice", "unix=on,addr=%s/spice.sock,disable-ticketing=on" % folder.replace(",", ",,"),
            "-chardev", "socket,id=vmconsole-probe,fd=%d,server=on,wait=off" % fd,
            "-mon", "chardev=vmconsole-probe,mode=control"]


def _stderr_tail(text, lines=3):
    return "; ".join([line for line in text.splitlines() if line.strip()][-lines:])


def probe_binary(binary, machine=None, timeout=60.0):
    """``{binary, machine, ok, error, version, package, spice}``: ok when query-spice answers
    ``enabled: true``. Never raises for what the binary does; ``error`` says what went wrong."""
    machine = machine or default_machine(binary)
    out = {"binary": binary, "machine": machine, "ok": False, "error": None, "version": None, "package": None,
           "spice": None}
    if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
        out["error"] = "%s does not exist or is not executable" % binary
        return out
    folder = tempfile.mkdtemp(prefix="vmconsole-spice-probe-")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    proc = None
    stderr = ""
    try:
        path = os.path.join(folder, "qmp.sock")
        listener.bind(path)
        listener.listen(1)
        fd = listener.fileno()
        with tempfile.TemporaryFile(mode="w+") as errors:
            # run_command cannot pass the listening socket to QEMU (pass_fds).
            proc = subprocess.Popen(probe_argv(binary, machine, folder, fd), pass_fds=(fd,), stdin=subprocess.DEVNULL,  # pylint: disable=ansible-bad-function
                                    stdout=subprocess.DEVNULL, stderr=errors, close_fds=True)
            listener.close()
            quit_sent = False
            try:
                quit_sent = _ask(out, path, proc, timeout)
            finally:
                _end(proc, grace=10.0 if quit_sent else 0.0)
                errors.seek(0)
                stderr = errors.read()
        if not out["ok"] and out["error"] is None:
            out["error"] = (_stderr_tail(stderr)
                            or "query-spice did not answer enabled (exit %s)" % proc.returncode)
        elif out["error"] and _stderr_tail(stderr):
            out["error"] += " (QEMU said: %s)" % _stderr_tail(stderr)
    finally:
        listener.close()
        shutil.rmtree(folder, ignore_errors=True)
    return out


def _ask(out, path, proc, timeout):
    """Ask the QEMU; True once it was told to quit."""
    try:
        with QMPClient(path=path, timeout=timeout) as qmp:
            version = qmp.execute("query-version")
            out["version"] = "%(major)d.%(minor)d.%(micro)d" % version["qemu"]
            out["package"] = (version.get("package") or "").strip()
            try:
                out["spice"] = qmp.execute("query-spice")
            except QMPCommandError as exc:
                out["error"] = "%s: %s" % (exc.error_class, exc.desc)
            out["ok"] = bool(out["spice"]) and out["spice"].get("enabled") is True
            try:
                qmp.execute("quit")
            except QMPError:
                pass  # QEMU may close the monitor before its answer to quit
            return True
    except QMPError as exc:
        # A QEMU that exited (a bad option, no SPICE module) closed the monitor: its stderr
        # says why. One that still runs but does not answer is the error itself.
        try:
            proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            out["error"] = str(exc)
    return False


def _end(proc, grace):
    """Let the throwaway QEMU exit (``grace`` seconds after quit); kill it when it does not."""
    if grace:
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            pass
    if proc.poll() is None:
        proc.kill()
    proc.wait()
