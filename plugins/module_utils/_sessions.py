# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""How console sessions are cut and proxy tokens revoked (private): what the console_session module and the console
portal's agent run.

One implementation for both. ``module`` is an ``AnsibleModule`` or anything with the same ``params`` (the options in
:data:`SESSION_ARGUMENT_SPEC`, with their defaults), ``check_mode``, ``_diff``, ``no_log_values``, ``warn(text)`` and
``fail_json(**result)`` (which must not return). No Ansible import here.
"""

from __future__ import annotations

import errno
import fcntl
import grp
import os
import time

from ansible_collections.vmconsole.secure.plugins.module_utils._console import (
    SPICE_GONE_WAIT,
    OptionError,
    QMPConsole,
    open_audit_log,
    spice_counts,
)
from ansible_collections.vmconsole.secure.plugins.module_utils._files import audit_record, write_file_atomic
from ansible_collections.vmconsole.secure.plugins.module_utils._migrate import default_ticket_file
from ansible_collections.vmconsole.secure.plugins.module_utils._qmp import QMPError
from ansible_collections.vmconsole.secure.plugins.module_utils._qmp_module import QMP_ARGUMENT_SPEC, fail_qmp, qmp_socket_path
from ansible_collections.vmconsole.secure.plugins.module_utils._tickets import (
    REVOCATION_KINDS,
    TOKEN_CLOCK_SKEW,
    add_revocation,
    check_proxy_user,
    dump_revocations,
    parse_revocations,
    proxy_username,
    prune_revocations,
)
from ansible_collections.vmconsole.secure.plugins.module_utils._tunnels import (
    ManagerError,
    console_of,
    cut_tunnels,
    node_proxy,
    open_tunnels,
)

NOTHING = {kind: {} for kind in REVOCATION_KINDS}
REVOCATIONS_MODE = 0o640
REVOCATIONS_GROUP = "proxy"          # squid's helpers run as user proxy (Debian's squid)


class Target:
    """One VM to cut: its name, QMP socket, its console when it runs here, and what the queries found."""

    def __init__(self, name, path):
        self.name, self.path = name, path
        self.console = None
        self.spice = self.vnc = None         # spice_info / vnc_info before the cut
        self.spice_after = self.vnc_after = None
        self.locked = False
        self.ticket_file_removed = False

    @property
    def running(self):
        return self.console is not None

    def inspect(self, module):
        """Find the VM's console and check it can be locked; a VM that does not run here stays not running."""
        self.console = QMPConsole.find(module, self.name, self.path)
        if self.console is not None:
            self.spice, self.vnc = self.console.lockable()

    def lock(self):
        """Cut the SPICE clients, leave every console with a random expired ticket, forget the kept ticket.

        The ticket console_ticket kept for a migration (``<vm>.ticket`` beside the QMP socket) goes too:
        migrate.yml would otherwise set the cut ticket on the target node again.
        """
        self.spice_after, self.vnc_after = self.console.lock(self.spice, self.vnc)
        self.locked = self.spice["enabled"] or self.vnc["enabled"]
        try:
            os.unlink(default_ticket_file(self.path))
            self.ticket_file_removed = True
        except FileNotFoundError:
            pass

    def report(self):
        spice_before = spice_counts(self.spice) if self.spice else (0, 0)
        vnc_before = len(self.vnc["clients"]) if self.vnc else 0
        spice_after = spice_counts(self.spice_after) if self.spice_after is not None else spice_before
        vnc_after = len(self.vnc_after["clients"]) if self.vnc_after is not None else vnc_before
        return dict(
            running=self.running,
            locked=self.locked,
            ticket_file_removed=self.ticket_file_removed,
            spice=dict(enabled=bool(self.spice and self.spice["enabled"]), channels_before=spice_before[0],
                       channels_after=spice_after[0], clients_before=spice_before[1], clients_after=spice_after[1]),
            vnc=dict(enabled=bool(self.vnc and self.vnc["enabled"]), clients_before=vnc_before,
                     clients_after=vnc_after),
        )


def check_options(params, now):
    """Validate everything that needs no QEMU; returns (targets, [(kind, name)], revoke_time).

    ``vm`` alone: that VM, for everybody (its consoles are locked). ``user`` alone: that person, on
    every VM (and the VMs in ``vms`` are locked). Both: that person's access to that VM only.
    """
    targets, revoke = [], []
    qmp_params = dict(socket_dir=params["socket_dir"], timeout=params["timeout"])
    if params["user"] is not None:
        try:
            check_proxy_user(params["user"])
        except ValueError as exc:
            raise OptionError(str(exc).replace("proxy_user", "user")) from None
    if params["vm"] is not None:
        try:
            path = qmp_socket_path(dict(qmp_params, vm=params["vm"]))    # checks the name, which goes into the file
        except ValueError as exc:
            raise OptionError(str(exc)) from None
        if params["user"] is not None:
            revoke.append(("pairs", proxy_username(params["user"], params["vm"])))
        else:
            targets.append(Target(params["vm"], params["socket"] or path))
            revoke.append(("vms", params["vm"]))
    else:
        revoke.append(("users", params["user"]))
        for name in params["vms"] or []:
            try:
                path = qmp_socket_path(dict(qmp_params, vm=name))
            except ValueError as exc:
                raise OptionError("vms: %s" % exc) from None
            if name not in [t.name for t in targets]:
                targets.append(Target(name, path))
    revoke_time = params["revoke_time"]
    if revoke_time is None:
        revoke_time = int(now)
    elif revoke_time <= 0:
        raise OptionError("revoke_time must be epoch seconds, got %d" % revoke_time)
    elif revoke_time > now + TOKEN_CLOCK_SKEW:
        raise OptionError("revoke_time %d lies %d s in the future: it revokes tokens issued up to a point in time, "
                          "which cannot be later than now" % (revoke_time, revoke_time - int(now)))
    return targets, revoke, revoke_time


# --- the revocations file -----------------------------------------------------------------------

class FolderLock:
    """An exclusive flock on the revocations file's folder: concurrent runs on one node do not lose entries."""

    def __init__(self, folder):
        if not os.path.isdir(folder):
            os.makedirs(folder, mode=0o755)
        self.fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def release(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def read_revocations(path):
    """(revocations, the file's text or None when missing); OptionError names revocations_file."""
    try:
        with open(path, "r", encoding="utf-8") as f:
            text = f.read(16 << 20)
    except FileNotFoundError:
        return parse_revocations(""), None
    except (OSError, UnicodeDecodeError) as exc:
        raise OptionError("revocations_file %s cannot be read: %s" % (path, getattr(exc, "strerror", None) or exc)) from None
    try:
        return parse_revocations(text), text
    except ValueError as exc:
        raise OptionError("revocations_file %s: %s; fix or remove it (squid's helper refuses every token while it "
                          "is unusable)" % (path, exc)) from None


def plan_revocations(path, revoke, revoke_time, now):
    """What the file holds, and what it must hold: (before text, after text, revoked, pruned)."""
    revocations, before = read_revocations(path)
    revoked = {kind: {} for kind in REVOCATION_KINDS}
    for kind, name in revoke:
        if add_revocation(revocations, kind, name, revoke_time, now=now):
            revoked[kind][name] = revoke_time
    pruned = prune_revocations(revocations, now=now)
    return before, dump_revocations(revocations), revoked, pruned


def revocations_group():
    try:
        return grp.getgrnam(REVOCATIONS_GROUP).gr_gid
    except KeyError:
        return 0


# --- the tunnels through the node's proxy ------------------------------------------------------

def revoked_names(params):
    """(users, vms, pairs) whose tunnels are cut: the person, the VM (and ``vms``), or the person on the VM."""
    user, vm = params["user"], params["vm"]
    if user is not None and vm is not None:
        return [], [], [(user, vm)]
    if vm is not None:
        return [], [vm], []
    return [user], list(params["vms"] or []), []


def tunnels_report(module, proxy, check_mode, new_revocations):
    """Cut (in check mode: list) the open tunnels of what was revoked; the ``tunnels`` result.

    After a new revocation the proxy is watched for its answer cache time (connect_proxy_credentials_ttl),
    in which squid may still open a tunnel with a token it checked before.
    """
    report = dict(checked=proxy is not None, cut=[], by_console=dict(spice=0, vnc=0, serial=0, other=0))
    if proxy is None:
        return report
    users, vms, pairs = revoked_names(module.params)
    if check_mode:
        tunnels = open_tunnels(proxy, users, vms, pairs)
    else:
        tunnels = cut_tunnels(proxy, users, vms, pairs, watch=proxy.credentials_ttl if new_revocations else 0.0)
    for tunnel in tunnels:
        console = console_of(tunnel.port, proxy.console_ports)
        report["by_console"][console] += 1
        report["cut"].append(dict(user=tunnel.user, vm=tunnel.vm, destination="%s:%d" % (tunnel.destination, tunnel.port),
                                  console=console, client="%s:%d" % tunnel.client))
    return report


# --- audit --------------------------------------------------------------------------------------

def session_record(params, result, extra=None):
    """One cut for the audit log: what was cut and revoked, by whom (and ``extra``). Never a ticket or a token."""
    return audit_record(
        "console_session",
        state="absent",
        vm=params["vm"],
        user=params["user"],
        revoke_time=result["revoke_time"],
        revoked=result["revoked"],
        cut={name: dict(spice_channels=s["spice"]["channels_before"], spice_clients=s["spice"]["clients_before"],
                        vnc_clients_left=s["vnc"]["clients_after"])
             for name, s in result["sessions"].items() if s["running"]},
        tunnels_cut=result["tunnels"]["cut"],
        **(extra or {})
    )


# --- main ---------------------------------------------------------------------------------------


# The options of console_session (the module's argument_spec).
SESSION_ARGUMENT_SPEC = dict(
    QMP_ARGUMENT_SPEC,      # vm, socket, socket_dir, timeout; vm and socket documented here
    state=dict(type="str", choices=["absent"], required=True),
    user=dict(type="str"),
    vms=dict(type="list", elements="str"),
    revoke_time=dict(type="int"),
    revocations_file=dict(type="path", default="/etc/vmconsole/proxy-revoked.json"),
    proxy_fact_file=dict(type="path", default="/etc/ansible/facts.d/vmconsole_proxy.fact"),
    audit_log=dict(type="path", default="/var/log/vmconsole/tickets.log"),
)
SESSION_MUTUALLY_EXCLUSIVE = [("vm", "vms")]
SESSION_REQUIRED_ONE_OF = [("vm", "user")]
SESSION_REQUIRED_BY = dict(socket="vm")


def cut_sessions(module):
    """Cut and revoke what ``module.params`` name; the module's result (``module.fail_json`` on any error)."""
    params = module.params
    now = time.time()
    path = params["revocations_file"]
    targets = []
    folder_lock = None
    try:
        try:
            targets, revoke, revoke_time = check_options(params, now)
            try:
                proxy = node_proxy(params["proxy_fact_file"])
            except ValueError as exc:
                raise OptionError("proxy_fact_file: %s" % exc) from None
            if proxy is not None:
                module.no_log_values.add(proxy.password)     # squid's cache manager password never leaves
            audit = open_audit_log(params["audit_log"], module.check_mode)
            for target in targets:
                target.inspect(module)
            # Under the folder lock from reading to writing, so that two runs on a node both land. Check
            # mode only reads, and a reader always sees a whole file (it is replaced by a rename).
            if not module.check_mode:
                folder_lock = FolderLock(os.path.dirname(os.path.abspath(path)))
            before, after, revoked, pruned = plan_revocations(path, revoke, revoke_time, now)
        except OptionError as exc:
            module.fail_json(msg=str(exc))
        except QMPError as exc:
            fail_qmp(module, exc)
        except OSError as exc:
            module.fail_json(msg="revocations_file %s: its folder cannot be used: %s" % (path, exc.strerror or exc))

        file_changes = any(revoked.values())
        if not module.check_mode:
            if file_changes:
                try:
                    write_file_atomic(path, after, mode=REVOCATIONS_MODE, owner=(0, revocations_group()))
                except OSError as exc:
                    reason = exc.strerror or str(exc)
                    if exc.errno in (errno.EPERM, errno.EACCES):
                        reason += " (the file belongs to root: run the task with become: true)"
                    module.fail_json(msg="revocations_file %s cannot be written: %s; nothing was changed"
                                     % (path, reason))
            folder_lock.release()                   # QEMU is not waited for under the lock
            for target in targets:
                if target.running:
                    try:
                        target.lock()
                    except QMPError as exc:
                        fail_qmp(module, exc, vm=target.name, revoke_time=revoke_time,
                                 revoked=revoked if file_changes else NOTHING,
                                 sessions={t.name: t.report() for t in targets})
        try:
            tunnels = tunnels_report(module, proxy, check_mode=module.check_mode, new_revocations=file_changes)
            for target in targets:
                if target.running and target.vnc["enabled"] and not module.check_mode:
                    target.vnc_after = target.console.lockable()[1]     # the VNC clients whose tunnels were cut
        except (ManagerError, RuntimeError, OSError, QMPError) as exc:
            module.fail_json(msg="the open tunnels could not be cut: %s (the revocations are %s)"
                             % (getattr(exc, "strerror", None) or exc, "written" if file_changes else "unchanged"),
                             revoke_time=revoke_time, revoked=revoked if file_changes else NOTHING,
                             sessions={t.name: t.report() for t in targets})
    finally:
        if folder_lock is not None:
            folder_lock.release()
        for target in targets:
            if target.console is not None:
                target.console.close()

    sessions = {t.name: t.report() for t in targets}
    cut = any(s["spice"]["channels_before"] for s in sessions.values()) or bool(tunnels["cut"])
    result = dict(
        changed=file_changes or cut,
        sessions=sessions,
        tunnels=tunnels,
        revoked=revoked,
        pruned=pruned if file_changes else NOTHING,
        revoke_time=revoke_time,
        revocations_file=path,
    )
    if module._diff and file_changes:
        result["diff"] = dict(before=before or "", after=after,
                              before_header="%s%s" % (path, "" if before is not None else " (absent)"),
                              after_header=path)
    for name, s in sessions.items():
        left = s["vnc"]["clients_after"]
        if left and not module.check_mode:
            module.warn("vm %s: %d VNC client(s) stay connected: they did not come through this node's proxy (QEMU "
                        "cannot disconnect a VNC client over QMP); its password is replaced and expired, so no new "
                        "VNC link succeeds" % (name, left))
        if s["spice"]["channels_after"] and not module.check_mode:
            module.warn("vm %s: %d SPICE channel(s) still connected %.0f s after the disconnect"
                        % (name, s["spice"]["channels_after"], SPICE_GONE_WAIT))
    if result["changed"] and not module.check_mode:
        try:
            audit.write(session_record(params, result, getattr(module, "audit_fields", None)))
        except OSError as exc:
            module.warn("audit_log %s cannot be written: %s; the sessions are cut and the tokens revoked all the same"
                        % (params["audit_log"], exc.strerror or exc))
    return result
