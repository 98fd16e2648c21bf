# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The decisions of the ``qemu_vm`` role: guests, their checks, ports, command lines.

Private to this collection. The role's YAML hands the role variables (``settings``, a dict
keyed by variable name: ``qemu_vm_guests``, ``qemu_vm_memory``, ..., and the role's
paths ``__qemu_vm_dropin_dir``, ``__qemu_vm_qmp_dir``, ``__qemu_vm_unit_template``) and what it saw on the
host to :func:`plan` (through the filter ``vmconsole.secure.qemu_vm_plan``) and only wires
the answer into tasks. Every message names the variable (``qemu_vm_guests[<i>].<key>``) and
the reason.

Who may open a guest's serial console (``qemu_vm_serial_clients``, a guest's ``serial_clients``, and the
console portals' nodes of ``qemu_vm_serial_relays``)
is QEMU's TLS authorization list (``_serial_clients.py``): the command line reads it from the
environment variable ``VMCONSOLE_SERIAL_AUTHZ``, set in its own drop-in
(``serial-clients.conf``), so a change to the list does not change ``guest.conf`` and does not
restart the guest: the role applies it to the running QEMU over QMP instead.
"""

from __future__ import annotations

import json
import re

from ansible_collections.vmconsole.secure.plugins.module_utils._qemu_binary import parse_version, run_as_args
from ansible_collections.vmconsole.secure.plugins.module_utils._serial_clients import (
    AUTHZ_ENV, AUTHZ_ID, authz_object_json, identities_errors, systemd_environment,
)
from ansible_collections.vmconsole.secure.plugins.module_utils._tickets import VM_NAME_PATTERN
from ansible_collections.vmconsole.secure.plugins.module_utils._values import (
    is_int as _is_int, is_list as _is_list, is_whole as _is_whole, text as _text, to_bool as _bool,
)


STATES = ("started", "stopped", "incoming", "absent")
KEYS = ("name", "state", "memory", "cpus", "cpu_model", "disk", "disk_format", "spice", "vnc", "serial",
        "spice_plain_port", "spice_tls_port", "spice_port", "vnc_port", "serial_port", "migration_port",
        "stop_timeout", "extra_args", "serial_clients")
BOOL_KEYS = ("spice", "vnc", "serial", "spice_plain_port")
DISK_FORMATS = ("raw", "qcow2")
VNC_BASE = 5900
SIZE_RE = re.compile(r"^[1-9][0-9]*[MGT]?$")
CPUS_RE = re.compile(r"^[1-9][0-9]*$")
CPU_MODEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.,=+-]*$")
DISK_RE = re.compile(r"^/[A-Za-z0-9_./+-]+$")
USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")

# Each port of a guest, in allocation order: the variable naming its range, and the guest
# key that switches it on ('incoming': only in state incoming).
PORT_KINDS = (
    ("spice_tls_port", "qemu_vm_spice_ports", "spice"),
    ("spice_port", "qemu_vm_spice_ports", "spice_plain_port"),
    ("vnc_port", "qemu_vm_vnc_ports", "vnc"),
    ("serial_port", "qemu_vm_serial_ports", "serial"),
    ("migration_port", "qemu_vm_migration_ports", "incoming"),
)
PORT_KEYS = tuple(kind for kind, _range, _switch in PORT_KINDS)
RANGE_VARS = ("qemu_vm_spice_ports", "qemu_vm_vnc_ports", "qemu_vm_serial_ports", "qemu_vm_migration_ports")

X509_FILES = ("ca-cert.pem", "server-cert.pem", "server-key.pem")
X509_CLIENT_FILES = ("client-cert.pem", "client-key.pem")


# The local port of a line of `ss -Hltn` (State Recv-Q Send-Q Local:Port Peer:Port).
_SS_LINE_RE = re.compile(r"^\S+\s+\d+\s+\d+\s+\S*:(\d+)\s")


def listening_ports(ss_lines):
    """The TCP ports of the lines of ``ss -Hltn``, sorted, each once."""
    ports = set()
    for line in ss_lines:
        match = _SS_LINE_RE.match(line)
        if match:
            ports.add(int(match.group(1)))
    return sorted(ports)


def range_errors(settings):
    """What is wrong with the four port ranges."""
    out = []
    for var in RANGE_VARS:
        r = settings.get(var)
        if not _is_list(r) or len(r) != 2 or not all(_is_int(p) for p in r):
            out.append("%s is %s: it must be a list of two port numbers [first, last]" % (var, json.dumps(r)))
        elif not 1 <= r[0] <= r[1] <= 65535:
            out.append("%s is %s: it must be [first, last] with 1 <= first <= last <= 65535" % (var, json.dumps(r)))
        elif var == "qemu_vm_vnc_ports" and r[0] < VNC_BASE:
            out.append("%s starts below %d: a VNC port is 5900 + display number" % (var, VNC_BASE))
    return out


def _guest_errors(settings, index, g, seen, ports, ranges_ok):
    at = "qemu_vm_guests[%d]" % index
    out = []
    for key in g:
        if key not in KEYS:
            out.append("%s.%s is not a guest setting (known: %s)" % (at, key, ", ".join(KEYS)))
    name = g.get("name")
    if not isinstance(name, str):
        out.append("%s.name is missing or not a string" % at)
    elif not VM_NAME_PATTERN.fullmatch(name):
        out.append("%s.name '%s' is not a guest name: letters, digits, '_', '.', '-', "
                   "starting with a letter or digit, at most 64 characters" % (at, name))
    elif name in seen:
        out.append("%s.name '%s' is also the name of %s" % (at, name, seen[name]))
    else:
        seen[name] = at
    state = g.get("state", "started")
    if state not in STATES:
        out.append("%s.state '%s' is not one of %s" % (at, _text(state), ", ".join(STATES)))
    checks = (
        ("memory", lambda v: not isinstance(v, bool) and SIZE_RE.match(_text(v)),
         "is not a size: a number of MiB, or a number with M, G or T (512M, 2G)"),
        ("cpus", lambda v: not isinstance(v, bool) and CPUS_RE.match(_text(v)), "is not a positive whole number"),
        ("cpu_model", lambda v: isinstance(v, str) and CPU_MODEL_RE.match(v),
         "is not a QEMU CPU model (letters, digits, '_.,=+-')"),
        ("disk", lambda v: isinstance(v, str) and DISK_RE.match(v),
         "is not an absolute path of letters, digits and '_./+-'"),
        ("disk_format", lambda v: v in DISK_FORMATS, "is not one of " + ", ".join(DISK_FORMATS)),
    )
    for key, ok, reason in checks:
        if key in g and not ok(g[key]):
            out.append("%s.%s '%s' %s" % (at, key, _text(g[key]), reason))
    for key in BOOL_KEYS:
        if key in g and not isinstance(g[key], bool):
            out.append("%s.%s '%s' is not true or false" % (at, key, _text(g[key])))
    if "stop_timeout" in g and not _is_whole(g["stop_timeout"]):
        out.append("%s.stop_timeout '%s' is not a number of seconds (0 or more)" % (at, _text(g["stop_timeout"])))
    if "extra_args" in g and (not _is_list(g["extra_args"]) or not all(isinstance(a, str) for a in g["extra_args"])):
        out.append("%s.extra_args must be a list of strings (one QEMU argument each)" % at)
    if "serial_clients" in g:
        out.extend(identities_errors("%s.serial_clients" % at, g["serial_clients"]))
        if g["serial_clients"] and not _bool(settings["qemu_vm_serial_verify_peer"]):
            out.append("%s.serial_clients is set, but qemu_vm_serial_verify_peer is false: QEMU checks the list only "
                       "while it verifies client certificates" % at)

    def switched(key):
        return _bool(g.get(key, settings["qemu_vm_" + key]))

    if state != "absent" and not (switched("spice") or switched("vnc") or switched("serial")):
        out.append("%s has no console: spice, vnc and serial are all false "
                   "(a guest of this role is reached through one of them)" % at)
    for kind, range_var, switch in PORT_KINDS:
        if kind not in g:
            continue
        port = g[kind]
        r = settings[range_var]
        switch_on = state == "incoming" if switch == "incoming" else switched(switch)
        if not _is_int(port):
            out.append("%s.%s '%s' is not a port number" % (at, kind, _text(port)))
        elif ranges_ok and not r[0] <= port <= r[1]:
            out.append("%s.%s %d is outside %s %s" % (at, kind, port, range_var, json.dumps(r)))
        elif not switch_on:
            why = ("the guest is not in state incoming" if switch == "incoming"
                   else "%s.%s is false" % (at, switch))
            out.append("%s.%s is set, but %s: drop the port or switch it on" % (at, kind, why))
        elif state != "absent" and port in ports:
            out.append("%s.%s %d is also %s" % (at, kind, port, ports[port]))
        elif state != "absent":
            ports[port] = "%s.%s" % (at, kind)
    return out


def input_errors(settings):
    """What is wrong with the role's input, before anything is looked at on the host."""
    out = []
    ranges = range_errors(settings)
    guests = settings["qemu_vm_guests"]
    if not _is_list(guests):
        out.append("qemu_vm_guests must be a list of guests (dicts), not %s" % type(guests).__name__)
    else:
        seen, ports = {}, {}
        for index, g in enumerate(guests):
            if not isinstance(g, dict):
                out.append("qemu_vm_guests[%d] is not a dict (name, memory, cpus, ...)" % index)
            else:
                out.extend(_guest_errors(settings, index, g, seen, ports, not ranges))
    clients = settings["qemu_vm_serial_clients"]
    out.extend(identities_errors("qemu_vm_serial_clients", clients))
    if _is_list(clients) and clients and not _bool(settings["qemu_vm_serial_verify_peer"]):
        out.append("qemu_vm_serial_clients is not empty, but qemu_vm_serial_verify_peer is false: QEMU checks the list "
                   "only while it verifies client certificates (set qemu_vm_serial_clients: [] to admit any client)")
    out.extend(identities_errors("qemu_vm_serial_relays", settings["qemu_vm_serial_relays"]))
    user = settings["qemu_vm_user"]
    if not isinstance(user, str) or not USER_RE.match(user) or user == "root":
        out.append("qemu_vm_user '%s' must be an unprivileged system user name (not root)" % _text(user))
    sandbox = settings["qemu_vm_sandbox"]
    if sandbox and "elevateprivileges=allow" not in sandbox:
        out.append("qemu_vm_sandbox must keep elevateprivileges=allow: with deny or children "
                   "the filter kills QEMU when it gives up root (-runas, -run-with user=)")
    return out + ranges


def _with_relays(clients, relays):
    """``clients`` followed by the ``relays`` they do not name already."""
    return list(clients) + [relay for relay in relays if relay not in clients]


def guest_list(settings):
    """Every guest with every key filled in (only for input without errors)."""
    out = []
    for index, g in enumerate(settings["qemu_vm_guests"]):
        name = _text(g["name"])
        state = g.get("state", "started")
        spice = _bool(g.get("spice", settings["qemu_vm_spice"]))
        serial = _bool(g.get("serial", settings["qemu_vm_serial"]))
        dropin = settings["__qemu_vm_dropin_dir"].format(name=name)
        out.append({
            "index": index,
            "name": name,
            "state": state,
            "memory": _text(g.get("memory", settings["qemu_vm_memory"])),
            "cpus": int(g.get("cpus", settings["qemu_vm_cpus"])),
            "cpu_model": g.get("cpu_model", settings["qemu_vm_cpu_model"]),
            "disk": g.get("disk", ""),
            "disk_format": g.get("disk_format", settings["qemu_vm_disk_format"]),
            "spice": spice,
            "vnc": _bool(g.get("vnc", settings["qemu_vm_vnc"])),
            "serial": serial,
            # QEMU's list of the client identities admitted to the serial console (verify-peer=on only).
            "serial_authz": serial and _bool(settings["qemu_vm_serial_verify_peer"]),
            # The people, then the console portals' nodes that relay the browser's serial console.
            "serial_clients": _with_relays(g.get("serial_clients", settings["qemu_vm_serial_clients"]),
                                           settings["qemu_vm_serial_relays"]),
            "serial_clients_conf": dropin + "/serial-clients.conf",
            "spice_plain_port": spice and _bool(g.get("spice_plain_port", settings["qemu_vm_spice_plain_port"])),
            "incoming": state == "incoming",
            "dropin": dropin,
            "conf": dropin + "/guest.conf",
            "incoming_mark": dropin + "/incoming.conf",
            "stop_timeout": int(g.get("stop_timeout", settings["qemu_vm_stop_timeout"])),
            "extra_args": list(settings["qemu_vm_extra_args"]) + list(g.get("extra_args", [])),
            "fixed": dict((k, g[k]) for k in PORT_KEYS if g.get(k) is not None),
        })
    return out


def x509_needs(settings, present):
    """The certificate folders the present guests need: variable, folder, files, who needs it."""
    out = []
    for console in ("spice", "vnc", "serial"):
        users = [g for g in present if g[console]]
        if users:
            var = "qemu_vm_%s_x509_dir" % console
            out.append({"var": var, "dir": settings[var], "files": list(X509_FILES),
                        "by": "qemu_vm_guests[%d].%s" % (users[0]["index"], console)})
    if _bool(settings["qemu_vm_migration_tls"]) and present:
        out.append({"var": "qemu_vm_migration_x509_dir", "dir": settings["qemu_vm_migration_x509_dir"],
                    "files": list(X509_FILES + X509_CLIENT_FILES), "by": "qemu_vm_migration_tls"})
    return out


def _unique(items):
    seen = set()
    return [i for i in items if not (i in seen or seen.add(i))]


def allocate(settings, present, absent_names, listed, previous, busy):
    """Ports for the present guests: ``{'ports': {name: {kind: port or None}}, 'errors': [...]}``.

    Every guest keeps the ports it had (``previous``, the fact of the last run) while they stay
    in their range; fixed ports are taken as given; the rest get the lowest free port of their
    range, in list order. Ports of guests the list does not name stay reserved, and a port
    something else listens on (``busy``) is never given out.
    """
    busy = set(busy)
    taken = set()
    for name, vm in previous.items():
        if name not in listed:
            taken.update(vm.get(kind) for kind in PORT_KEYS if _is_int(vm.get(kind)))
    for g in present:
        taken.update(g["fixed"].values())
    ports, errors = {}, []
    # Pass 1: fixed ports, and the ports each guest had before.
    for g in present:
        mine = {}
        before = previous.get(g["name"], {})
        for kind, range_var, switch in PORT_KINDS:
            r = settings[range_var]
            if not g[switch]:
                mine[kind] = None
            elif kind in g["fixed"]:
                port = mine[kind] = g["fixed"][kind]
                at = "qemu_vm_guests[%d].%s %d" % (g["index"], kind, port)
                holders = [other for other, vm in previous.items()
                           if other != g["name"] and other not in absent_names and port in vm.values()]
                if holders:
                    errors.append("%s is the port of guest %s on this host now: move it to another port first"
                                  % (at, ", ".join(holders)))
                elif port in busy and port not in before.values():
                    errors.append("%s is in use on this host by another program" % at)
            elif _is_int(before.get(kind)) and r[0] <= before[kind] <= r[1] and before[kind] not in taken:
                mine[kind] = before[kind]
                taken.add(before[kind])
        ports[g["name"]] = mine
    # Pass 2: the lowest free port for every port still missing.
    for g in present:
        mine = ports[g["name"]]
        for kind, range_var, _switch in PORT_KINDS:
            if kind in mine:
                continue
            r = settings[range_var]
            port = next((p for p in range(r[0], r[1] + 1) if p not in taken and p not in busy), None)
            if port is None:
                errors.append("qemu_vm_guests[%d].%s (guest %s): no free port left in %s %s"
                              % (g["index"], kind, g["name"], range_var, json.dumps(r)))
            else:
                taken.add(port)
            mine[kind] = port
    return {"ports": ports, "errors": errors}


def host_errors(settings, present, needs, existing):
    """Certificates, disks and the QEMU binary missing on the host (``existing``: what ``ls`` found)."""
    existing = set(existing)
    out = []
    for need in needs:
        lacks = [f for f in need["files"] if "%s/%s" % (need["dir"], f) not in existing]
        if lacks:
            out.append("%s %s lacks %s (needed by %s): run vmconsole.secure.pki on this host first"
                       % (need["var"], need["dir"], ", ".join(lacks), need["by"]))
    for g in present:
        if g["disk"] and g["disk"] not in existing:
            out.append("qemu_vm_guests[%d].disk %s does not exist on this host" % (g["index"], g["disk"]))
    if present and settings["qemu_vm_binary"] not in existing:
        out.append("qemu_vm_binary %s does not exist: run vmconsole.secure.qemu_spice on this host first"
                   % settings["qemu_vm_binary"])
    return out


def elsewhere_errors(present, active, others):
    """Guests this host would start that another host of the play runs now (they migrated there).

    ``others``: each other host's published guests (``{host: {name: {'state': ...}}}``).
    """
    out = []
    for g in present:
        if g["state"] not in ("started", "incoming") or g["name"] in active:
            continue
        for host, vms in others.items():
            if (vms or {}).get(g["name"], {}).get("state") == "started":
                out.append("qemu_vm_guests[%d] %s runs on %s (migrated there), starting it here would run it twice: "
                           "move its entry to the qemu_vm_guests of %s, or migrate it back with playbooks/migrate.yml"
                           % (g["index"], g["name"], host, host))
    return out


def fact(settings, present, listed, previous, ports):
    """The local fact ``vmconsole_vms``: the listed present guests, and the unlisted ones as they were."""
    vms = dict((name, vm) for name, vm in previous.items() if name not in listed)
    for g in present:
        vm = {"state": g["state"], "unit": "vmconsole-qemu@%s.service" % g["name"],
              "qmp": "%s/%s.qmp" % (settings["__qemu_vm_qmp_dir"], g["name"])}
        vm.update(ports[g["name"]])
        vms[g["name"]] = vm
    return {"vms": vms}


class Unquoted(str):
    """An argument :func:`exec_start` writes as it is: a ``${NAME}`` systemd expands to one argument."""


def _qemu_opt(value):
    """A value inside a QEMU option list (a comma is written twice)."""
    return value.replace(",", ",,")


def argv(settings, guest, ports, qemu_version=None):
    """The QEMU command line of a guest, for the QEMU ``qemu_version`` (a tuple of :func:`parse_version`; None:
    not known yet, the current form)."""
    p = ports
    a = [settings["qemu_vm_binary"], "-name", "guest=%s,debug-threads=on" % guest["name"],
         "-nodefaults", "-no-user-config", "-machine", settings["qemu_vm_machine"]]
    for accel in settings["qemu_vm_accelerators"]:
        a += ["-accel", accel]
    a += ["-cpu", guest["cpu_model"], "-smp", str(guest["cpus"]), "-m", guest["memory"]]
    for folder in settings["qemu_vm_firmware_dirs"]:
        a += ["-L", folder]
    a += ["-qmp", "unix:%s/%s.qmp,server=on,wait=off" % (settings["__qemu_vm_qmp_dir"], guest["name"]), "-display", "none", "-vga", "qxl"]
    if guest["spice"]:
        spice = ["addr=127.0.0.1", "tls-port=%d" % p["spice_tls_port"]]
        if _is_int(p.get("spice_port")):
            spice.append("port=%d" % p["spice_port"])
        spice += ["x509-dir=" + _qemu_opt(settings["qemu_vm_spice_x509_dir"]), "tls-channel=default",
                  "seamless-migration=on"]
        a += ["-spice", ",".join(spice)]
    if guest["vnc"]:
        a += ["-object", "tls-creds-x509,id=vmconsole-vnc-tls,endpoint=server,verify-peer=off,dir="
              + _qemu_opt(settings["qemu_vm_vnc_x509_dir"]),
              "-vnc", "127.0.0.1:%d,tls-creds=vmconsole-vnc-tls,password=on" % (p["vnc_port"] - VNC_BASE)]
    if guest["serial"]:
        verify = "on" if _bool(settings["qemu_vm_serial_verify_peer"]) else "off"
        a += ["-object", "tls-creds-x509,id=vmconsole-serial-tls,endpoint=server,verify-peer=%s,dir=%s"
              % (verify, _qemu_opt(settings["qemu_vm_serial_x509_dir"]))]
        chardev = ("socket,id=vmconsole-serial,host=127.0.0.1,port=%d,server=on,wait=off,"
                   "tls-creds=vmconsole-serial-tls" % p["serial_port"])
        if guest["serial_authz"]:
            # The list itself comes from serial-clients.conf (see serial_environment).
            a += ["-object", Unquoted("${%s}" % AUTHZ_ENV)]
            chardev += ",tls-authz=" + AUTHZ_ID
        a += ["-chardev", chardev, "-serial", "chardev:vmconsole-serial"]
    if _bool(settings["qemu_vm_migration_tls"]):
        folder = _qemu_opt(settings["qemu_vm_migration_x509_dir"])
        a += ["-object", "tls-creds-x509,id=vmconsole-migration-server,endpoint=server,verify-peer=on,dir=" + folder,
              "-object", "tls-creds-x509,id=vmconsole-migration-client,endpoint=client,dir=" + folder]
    if guest["disk"]:
        a += ["-drive", "file=%s,format=%s,if=virtio" % (_qemu_opt(guest["disk"]), guest["disk_format"])]
    if settings["qemu_vm_sandbox"]:
        a += ["-sandbox", settings["qemu_vm_sandbox"]]
    a += run_as_args(qemu_version, settings["qemu_vm_user"])
    return a + list(guest["extra_args"])


def systemd_quote(arg):
    """One argument of a systemd command line, in double quotes (``%`` and ``$`` written twice)."""
    text = _text(arg)
    for old, new in (("\\", "\\\\"), ('"', '\\"'), ("%", "%%"), ("$", "$$")):
        text = text.replace(old, new)
    return '"%s"' % text


def exec_start(args):
    """A command line for ``ExecStart=``: one option and its values per line."""
    lines = []
    for index, arg in enumerate(args):
        word = arg if isinstance(arg, Unquoted) else systemd_quote(arg)
        if index == 0 or _text(arg).startswith("-"):
            lines.append(word)
        else:
            lines[-1] += " " + word
    return " \\\n    ".join(lines)


def serial_environment(guest):
    """The ``Environment=`` value of a guest's ``serial-clients.conf``: the ``-object`` of its list."""
    return systemd_environment(AUTHZ_ENV, authz_object_json(guest["serial_clients"]))


def restarts(present, active, changed, run_status):
    """The running guests to restart: their guest.conf changed, they entered state incoming, or
    they left it while still waiting for a migration (status ``inmigrate``)."""
    out = []
    for g in present:
        if g["state"] not in ("started", "incoming") or g["name"] not in active:
            continue
        name = g["name"]
        if (name in changed.get("conf", ()) or name in changed.get("entered", ())
                or (name in changed.get("left", ()) and run_status.get(name, "") == "inmigrate")):
            out.append(name)
    return out


def _binary_version(settings, host, existing):
    """The version of ``qemu_vm_binary`` (from its ``--version``, ``host['qemu_version']``) and what is wrong: a
    binary that exists must say its version (the command line depends on it); a missing one is reported with
    the other missing files."""
    binary = settings["qemu_vm_binary"]
    said = _text(host.get("qemu_version") or "").strip().split("\n")[0]
    version = parse_version(said)
    if version is None and binary in existing:
        said = said[:120]
        return None, ["%s --version did not name a QEMU version (it said '%s'): is qemu_vm_binary a QEMU system "
                      "emulator?" % (binary, said)]
    return version, []


def plan(settings, host=None, changed=None):
    """Everything the role decides, as one dict (see the filter ``qemu_vm_plan``).

    Without ``host`` only what follows from the input (``errors`` are the input's); with
    ``host`` (what the preflight saw: ``previous``, ``ss``, ``ls``, ``active``, ``run_status``,
    ``others``, ``qemu_version``: the output of ``qemu_vm_binary --version``) also the ports, the fact, each guest's command line and the host's errors;
    with ``changed`` (the guests whose files changed) also the restarts.
    """
    errors = input_errors(settings)
    if errors:
        return {"errors": errors}
    guests = guest_list(settings)
    present = [g for g in guests if g["state"] != "absent"]
    absent = [g for g in guests if g["state"] == "absent"]
    listed = [g["name"] for g in guests]
    needs = x509_needs(settings, present)
    out = {
        "errors": [],
        "guests": guests,
        "present": present,
        "absent": absent,
        "x509_needs": needs,
        "units": ["vmconsole-qemu@%s.service" % name for name in listed],
        "restart": [],
        "cert_restart": [],
        "serial_live": [],
        "serial_env": dict((g["name"], serial_environment(g)) for g in present if g["serial_authz"]),
        # Guests whose serial console admits nobody yet (the role warns).
        "serial_closed": [g["name"] for g in present if g["serial_authz"] and not g["serial_clients"]],
        "files": _unique(["%s/%s" % (n["dir"], f) for n in needs for f in n["files"]]
                         + [g["disk"] for g in present if g["disk"]]
                         + [settings["qemu_vm_binary"], settings["__qemu_vm_unit_template"]]
                         + [g["conf"] for g in guests] + [g["incoming_mark"] for g in guests]),
    }
    if host is None:
        return out
    previous = host.get("previous") or {}
    active = list(host.get("active") or [])
    existing = list(host.get("ls") or [])
    allocation = allocate(settings, present, [g["name"] for g in absent], listed, previous,
                          listening_ports(host.get("ss") or []))
    ports = allocation["ports"]
    missing = host_errors(settings, present, needs, existing)
    version, version_errors = _binary_version(settings, host, existing)
    out.update({
        # The install phase (install.yml) writes the unit template last, after the user, the
        # helper and its QMP client: where it exists, the role's entry point guests skips that phase.
        "installed": settings["__qemu_vm_unit_template"] in existing,
        "ports": ports,
        "errors": allocation["errors"] + elsewhere_errors(present, active, host.get("others") or {}) + version_errors,
        "qemu_version": ".".join(str(part) for part in version) if version else None,
        "missing": missing,
        "fact": fact(settings, present, listed, previous, ports) if not allocation["errors"] else {},
        "exec_start": dict((g["name"], exec_start(argv(settings, g, ports[g["name"]], version)))
                           for g in present if not allocation["errors"]),
    })
    if changed is not None:
        restart = restarts(present, active, changed, host.get("run_status") or {})
        out["restart"] = restart
        # A running guest that does not restart gets its serial client list over QMP.
        out["serial_live"] = [g for g in present if g["serial_authz"] and g["state"] in ("started", "incoming")
                              and g["name"] in active and g["name"] not in restart]
        out["cert_restart"] = [g["name"] for g in present if g["state"] in ("started", "incoming")
                               and g["name"] in active and g["name"] not in restart]
    return out
