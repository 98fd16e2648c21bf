# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""module_utils/_guests.py: the qemu_vm role's checks, ports, command lines and restarts,
and the filters qemu_vm_plan and preflight_report that hand them to the role.

The settings start from the role's own defaults/main.yml and vars/main.yml, so a default that
changes there changes here.
"""

from __future__ import annotations

import copy
import re

import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.vmconsole.secure.plugins.filter.preflight_report import preflight_report
from ansible_collections.vmconsole.secure.plugins.filter.qemu_vm_plan import qemu_vm_plan
from ansible_collections.vmconsole.secure.plugins.module_utils import _guests
from ansible_collections.vmconsole.secure.tests.unit.roles import role_settings

# The defaults that are templates in defaults/main.yml, as they come out without inventory.
TEMPLATED = {
    "qemu_vm_binary": "/usr/bin/qemu-system-x86_64",
    "qemu_vm_spice_ports": [61000, 61999],
    "qemu_vm_vnc_ports": [5900, 5999],
    "qemu_vm_serial_ports": [62000, 62999],
    "qemu_vm_migration_ports": [60000, 60050],
}


SETTINGS = role_settings("qemu_vm", TEMPLATED)


def settings(guests=(), **changes):
    out = copy.deepcopy(SETTINGS)
    out["qemu_vm_guests"] = list(guests) if isinstance(guests, tuple) else guests
    out.update(changes)
    return out


def errors(guests=(), **changes):
    return _guests.input_errors(settings(guests, **changes))


def one_error(guests=(), **changes):
    found = errors(guests, **changes)
    assert len(found) == 1, found
    return found[0]


# What `qemu-system-x86_64 --version` says on Debian 12 and on Debian 13.
QEMU_7_2 = "QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18)\nCopyright (c) 2003-2022 Fabrice Bellard"
QEMU_10_0 = "QEMU emulator version 10.0.13 (Debian 1:10.0.13+ds-0+deb13u1)\nCopyright (c) 2003-2025 Fabrice Bellard"


def host(previous=None, ss=(), ls=None, active=(), run_status=None, others=None, qemu_version=QEMU_7_2):
    everything = [SETTINGS["qemu_vm_binary"]] + ["%s/%s" % (d, f) for d in (
        SETTINGS["qemu_vm_spice_x509_dir"], SETTINGS["qemu_vm_vnc_x509_dir"], SETTINGS["qemu_vm_serial_x509_dir"],
        SETTINGS["qemu_vm_migration_x509_dir"]) for f in _guests.X509_FILES + _guests.X509_CLIENT_FILES]
    return {"previous": previous or {}, "ss": list(ss), "ls": everything if ls is None else list(ls),
            "active": list(active), "run_status": run_status or {}, "others": others or {},
            "qemu_version": qemu_version}


def ss_line(port, addr="127.0.0.1"):
    return "LISTEN 0      4096       %s:%d      0.0.0.0:*" % (addr, port)


# --- The settings these tests use are the role's -------------------------------------------

def test_the_settings_are_every_variable_the_plan_reads():
    source = open(_guests.__file__).read()
    read = set(re.findall(r'settings\["([a-z_]+)"\]', source)) | set(re.findall(r'"(qemu_vm_[a-z_]+_ports)"', source))
    read |= set("qemu_vm_" + k for k in ("spice", "vnc", "serial", "spice_plain_port"))  # settings["qemu_vm_" + key]
    assert read <= set(SETTINGS), read - set(SETTINGS)


# --- Input checks: each message names the variable and the reason ---------------------------

def test_good_input_has_no_error():
    assert errors([{"name": "vm1"}, {"name": "web.1-a_b", "memory": "2G", "cpus": 2, "vnc": True,
                                     "disk": "/var/lib/vm/web.qcow2", "disk_format": "raw", "stop_timeout": 0,
                                     "extra_args": ["-device", "virtio-rng-pci"], "spice_tls_port": 61500}]) == []


@pytest.mark.parametrize("guests, expect", [
    # The cases of molecule/qemu/verify.yml, and the others the preflight knows.
    ([{"name": "a1", "memory": "64M"}, {"name": "b1"}, {"name": "a1"}],
     "qemu_vm_guests[2].name 'a1' is also the name of qemu_vm_guests[0]"),
    ([{"name": "web/1"}], "qemu_vm_guests[0].name 'web/1' is not a guest name: letters, digits, '_', '.', '-', "
                          "starting with a letter or digit, at most 64 characters"),
    ([{"name": "-a"}], "qemu_vm_guests[0].name '-a' is not a guest name"),
    ([{"name": "a" * 65}], "is not a guest name"),
    ([{"memory": "1G"}], "qemu_vm_guests[0].name is missing or not a string"),
    ([{"name": 7}], "qemu_vm_guests[0].name is missing or not a string"),
    ([{"name": "a1", "spice_tls_port": 61900}, {"name": "b1", "vnc": True, "vnc_port": 5990},
      {"name": "c1", "spice_tls_port": 61900}],
     "qemu_vm_guests[2].spice_tls_port 61900 is also qemu_vm_guests[0].spice_tls_port"),
    ([{"name": "a1", "serial_port": 61000}], "qemu_vm_guests[0].serial_port 61000 is outside qemu_vm_serial_ports [62000, 62999]"),
    ([{"name": "a1", "memory": "lots"}], "qemu_vm_guests[0].memory 'lots' is not a size: a number of MiB, or a number "
                                         "with M, G or T (512M, 2G)"),
    ([{"name": "a1", "memory": True}], "qemu_vm_guests[0].memory 'True' is not a size"),
    ([{"name": "a1", "memory": "0"}], "qemu_vm_guests[0].memory '0' is not a size"),
    ([{"name": "a1", "state": "running"}], "qemu_vm_guests[0].state 'running' is not one of started, stopped, incoming, absent"),
    ([{"name": "a1", "memroy": "1G"}], "qemu_vm_guests[0].memroy is not a guest setting (known: name, state, memory"),
    ([{"name": "a1", "cpus": 0}], "qemu_vm_guests[0].cpus '0' is not a positive whole number"),
    ([{"name": "a1", "cpus": False}], "qemu_vm_guests[0].cpus 'False' is not a positive whole number"),
    ([{"name": "a1", "cpu_model": "host;reboot"}], "qemu_vm_guests[0].cpu_model 'host;reboot' is not a QEMU CPU model"),
    ([{"name": "a1", "disk": "vm.qcow2"}], "qemu_vm_guests[0].disk 'vm.qcow2' is not an absolute path"),
    ([{"name": "a1", "disk": "/var/a,b"}], "qemu_vm_guests[0].disk '/var/a,b' is not an absolute path"),
    ([{"name": "a1", "disk_format": "vmdk"}], "qemu_vm_guests[0].disk_format 'vmdk' is not one of raw, qcow2"),
    ([{"name": "a1", "vnc": "yes"}], "qemu_vm_guests[0].vnc 'yes' is not true or false"),
    ([{"name": "a1", "stop_timeout": -1}], "qemu_vm_guests[0].stop_timeout '-1' is not a number of seconds (0 or more)"),
    ([{"name": "a1", "extra_args": "-device x"}], "qemu_vm_guests[0].extra_args must be a list of strings"),
    ([{"name": "a1", "extra_args": ["-smp", 2]}], "qemu_vm_guests[0].extra_args must be a list of strings"),
    ([{"name": "a1", "spice": False, "serial": False}], "qemu_vm_guests[0] has no console: spice, vnc and serial are all false"),
    ([{"name": "a1", "vnc_port": "5901", "vnc": True}], "qemu_vm_guests[0].vnc_port '5901' is not a port number"),
    ([{"name": "a1", "vnc_port": 5901}], "qemu_vm_guests[0].vnc_port is set, but qemu_vm_guests[0].vnc is false: "
                                         "drop the port or switch it on"),
    ([{"name": "a1", "migration_port": 60001}], "qemu_vm_guests[0].migration_port is set, but the guest is not in "
                                                "state incoming"),
    (["a1"], "qemu_vm_guests[0] is not a dict (name, memory, cpus, ...)"),
])
def test_bad_guest_input(guests, expect):
    assert expect in one_error(guests)


def test_a_guest_list_that_is_not_a_list():
    assert one_error({"name": "a1"}) == "qemu_vm_guests must be a list of guests (dicts), not dict"
    assert one_error("a1") == "qemu_vm_guests must be a list of guests (dicts), not str"


def test_ports_of_absent_guests_are_free_and_an_absent_guest_needs_no_console():
    assert errors([{"name": "a1", "spice_tls_port": 61900}, {"name": "b1", "state": "absent", "spice_tls_port": 61900},
                   {"name": "c1", "state": "absent", "spice": False, "serial": False}]) == []


def test_a_guest_with_only_vnc_has_a_console():
    assert errors([{"name": "a1", "spice": False, "serial": False, "vnc": True}]) == []


def test_the_switch_defaults_come_from_the_role():
    assert "vnc is false" in one_error([{"name": "a1", "vnc_port": 5901}])
    assert errors([{"name": "a1", "vnc_port": 5901}], qemu_vm_vnc=True) == []
    assert errors([{"name": "a1", "spice_port": 61001}], qemu_vm_spice_plain_port="false") != []


@pytest.mark.parametrize("changes, expect", [
    ({"qemu_vm_user": "root"}, "qemu_vm_user 'root' must be an unprivileged system user name (not root)"),
    ({"qemu_vm_user": "Bad User"}, "qemu_vm_user 'Bad User' must be an unprivileged system user name"),
    ({"qemu_vm_sandbox": "on,elevateprivileges=deny"}, "qemu_vm_sandbox must keep elevateprivileges=allow"),
    ({"qemu_vm_serial_ports": [62000]}, "qemu_vm_serial_ports is [62000]: it must be a list of two port numbers [first, last]"),
    ({"qemu_vm_serial_ports": "62000-62999"}, 'qemu_vm_serial_ports is "62000-62999": it must be a list of two port numbers'),
    ({"qemu_vm_spice_ports": [62000, 61000]}, "qemu_vm_spice_ports is [62000, 61000]: it must be [first, last] with "
                                              "1 <= first <= last <= 65535"),
    ({"qemu_vm_migration_ports": [60000, 70000]}, "qemu_vm_migration_ports is [60000, 70000]: it must be [first, last]"),
    ({"qemu_vm_vnc_ports": [5800, 5999]}, "qemu_vm_vnc_ports starts below 5900: a VNC port is 5900 + display number"),
])
def test_bad_role_variables(changes, expect):
    assert expect in one_error([{"name": "a1"}], **changes)


def test_an_empty_sandbox_is_allowed():
    assert errors([{"name": "a1"}], qemu_vm_sandbox="") == []


def test_a_port_is_not_checked_against_a_broken_range():
    # Only the range's own message: comparing with a broken range says nothing useful.
    found = errors([{"name": "a1", "serial_port": 62001}], qemu_vm_serial_ports=[1])
    assert found == ["qemu_vm_serial_ports is [1]: it must be a list of two port numbers [first, last]"]


def test_every_error_is_reported_not_only_the_first():
    found = errors([{"name": "a1", "memory": "x", "cpus": "y"}, {"name": "a1"}], qemu_vm_user="root")
    assert len(found) == 4, found


# --- Each guest with every key -------------------------------------------------------------

def test_guest_list_fills_in_the_defaults():
    (g,) = _guests.guest_list(settings([{"name": "vm1"}]))
    assert g == {
        "index": 0, "name": "vm1", "state": "started", "memory": "512M", "cpus": 1, "cpu_model": "qemu64",
        "disk": "", "disk_format": "qcow2", "spice": True, "vnc": False, "serial": True, "spice_plain_port": True,
        "serial_authz": True, "serial_clients": [],
        "serial_clients_conf": "/etc/systemd/system/vmconsole-qemu@vm1.service.d/serial-clients.conf",
        "incoming": False, "dropin": "/etc/systemd/system/vmconsole-qemu@vm1.service.d",
        "conf": "/etc/systemd/system/vmconsole-qemu@vm1.service.d/guest.conf",
        "incoming_mark": "/etc/systemd/system/vmconsole-qemu@vm1.service.d/incoming.conf",
        "stop_timeout": 60, "extra_args": [], "fixed": {},
    }


def test_guest_list_takes_the_guests_keys():
    (g,) = _guests.guest_list(settings(
        [{"name": "vm1", "memory": 96, "cpus": "2", "spice": False, "state": "incoming", "stop_timeout": "5",
          "extra_args": ["-b"], "vnc_port": None, "serial_port": 62005}], qemu_vm_extra_args=["-a"]))
    assert (g["memory"], g["cpus"], g["spice"], g["spice_plain_port"], g["incoming"], g["stop_timeout"]) == (
        "96", 2, False, False, True, 5)
    assert g["extra_args"] == ["-a", "-b"]
    assert g["fixed"] == {"serial_port": 62005}  # a port given as null is not fixed


# --- Ports ---------------------------------------------------------------------------------

def ports_of(guests, previous=None, busy=(), **changes):
    s = settings(guests, **changes)
    assert _guests.input_errors(s) == []
    p = _guests.plan(s, host(previous=previous, ss=[ss_line(b) for b in busy]))
    return p["ports"], p["errors"]


def test_new_guests_get_the_lowest_free_ports_in_list_order():
    ports, errs = ports_of([{"name": "a"}, {"name": "b", "vnc": True, "serial": False}, {"name": "c", "state": "incoming"}])
    assert errs == []
    assert ports == {
        "a": {"spice_tls_port": 61000, "spice_port": 61001, "vnc_port": None, "serial_port": 62000, "migration_port": None},
        "b": {"spice_tls_port": 61002, "spice_port": 61003, "vnc_port": 5900, "serial_port": None, "migration_port": None},
        "c": {"spice_tls_port": 61004, "spice_port": 61005, "vnc_port": None, "serial_port": 62001, "migration_port": 60000},
    }


def test_a_guest_keeps_its_ports_and_fixed_ports_are_taken_as_given():
    previous = {"b": {"spice_tls_port": 61000, "spice_port": 61001, "serial_port": 62000, "state": "started"}}
    ports, errs = ports_of([{"name": "a", "spice_tls_port": 61005}, {"name": "b"}], previous)
    assert errs == []
    assert ports["b"]["spice_tls_port"] == 61000 and ports["b"]["serial_port"] == 62000
    assert ports["a"]["spice_tls_port"] == 61005
    assert ports["a"]["spice_port"] == 61002 and ports["a"]["serial_port"] == 62001


def test_a_port_outside_a_narrowed_range_is_given_anew():
    previous = {"a": {"spice_tls_port": 61990, "spice_port": 61000, "serial_port": 62000}}
    ports, errs = ports_of([{"name": "a"}], previous, qemu_vm_spice_ports=[61000, 61100])
    assert errs == [] and ports["a"]["spice_tls_port"] == 61001 and ports["a"]["spice_port"] == 61000


def test_ports_of_unlisted_guests_stay_reserved_and_listening_ports_are_not_given_out():
    previous = {"other": {"spice_tls_port": 61000, "spice_port": None, "serial_port": 62001, "state": "stopped"}}
    ports, errs = ports_of([{"name": "a"}], previous, busy=[61001, 62000])
    assert errs == []
    assert ports["a"] == {"spice_tls_port": 61002, "spice_port": 61003, "vnc_port": None, "serial_port": 62002,
                          "migration_port": None}


def test_a_guest_keeps_a_port_it_listens_on_itself():
    previous = {"a": {"spice_tls_port": 61000, "spice_port": 61001, "serial_port": 62000}}
    ports, errs = ports_of([{"name": "a", "serial_port": 62000}], previous, busy=[61000, 61001, 62000])
    assert errs == [] and ports["a"]["spice_tls_port"] == 61000 and ports["a"]["serial_port"] == 62000


def test_a_fixed_port_another_guest_holds_now():
    previous = {"vm1": {"spice_tls_port": 61003, "state": "started"}}
    _ports, errs = ports_of([{"name": "a1", "spice_tls_port": 61003}], previous)
    assert errs == ["qemu_vm_guests[0].spice_tls_port 61003 is the port of guest vm1 on this host now: "
                    "move it to another port first"]
    # ... unless that guest goes away in the same run.
    _ports, errs = ports_of([{"name": "vm1", "state": "absent"}, {"name": "a1", "spice_tls_port": 61003}], previous)
    assert errs == []


def test_a_fixed_port_another_program_listens_on():
    _ports, errs = ports_of([{"name": "a1", "serial_port": 62500}], busy=[62500])
    assert errs == ["qemu_vm_guests[0].serial_port 62500 is in use on this host by another program"]


def test_no_free_port_left():
    _ports, errs = ports_of([{"name": "a"}, {"name": "b"}], qemu_vm_serial_ports=[62000, 62000])
    assert errs == ["qemu_vm_guests[1].serial_port (guest b): no free port left in qemu_vm_serial_ports [62000, 62000]"]


def test_listening_ports_reads_ss():
    lines = [ss_line(61000), ss_line(22, "0.0.0.0"), "LISTEN 0 128 [::]:8443 [::]:*", ss_line(61000, "[::1]"),
             "garbage", ""]
    assert _guests.listening_ports(lines) == [22, 8443, 61000]


# --- What the host lacks, and guests that run elsewhere -------------------------------------

def test_missing_certificates_disks_and_binary():
    s = settings([{"name": "a1"}, {"name": "b1", "vnc": True, "disk": "/var/lib/b1.qcow2"}],
                 qemu_vm_vnc_x509_dir="/etc/pki/no-such-folder")
    everything = host()["ls"]
    p = _guests.plan(s, host(ls=[f for f in everything if f != s["qemu_vm_binary"]]))
    assert p["missing"] == [
        "qemu_vm_vnc_x509_dir /etc/pki/no-such-folder lacks ca-cert.pem, server-cert.pem, server-key.pem "
        "(needed by qemu_vm_guests[1].vnc): run vmconsole.secure.pki on this host first",
        "qemu_vm_guests[1].disk /var/lib/b1.qcow2 does not exist on this host",
        "qemu_vm_binary /usr/bin/qemu-system-x86_64 does not exist: run vmconsole.secure.qemu_spice on this host first",
    ]
    assert _guests.plan(s, host(ls=everything + ["/var/lib/b1.qcow2"]
                                + ["/etc/pki/no-such-folder/" + f for f in _guests.X509_FILES]))["missing"] == []


def test_migration_needs_client_certificates_too():
    needs = _guests.plan(settings([{"name": "a1", "spice": False, "serial": False, "vnc": True}]))["x509_needs"]
    assert [(n["var"], n["by"]) for n in needs] == [("qemu_vm_vnc_x509_dir", "qemu_vm_guests[0].vnc"),
                                                    ("qemu_vm_migration_x509_dir", "qemu_vm_migration_tls")]
    assert needs[1]["files"] == list(_guests.X509_FILES + _guests.X509_CLIENT_FILES)
    assert _guests.plan(settings([{"name": "a1"}], qemu_vm_migration_tls=False))["x509_needs"][-1]["var"] != (
        "qemu_vm_migration_x509_dir")
    assert _guests.plan(settings([{"name": "a1", "state": "absent"}]))["x509_needs"] == []


def test_a_guest_that_runs_on_another_node_is_not_started_here():
    s = settings([{"name": "vm1"}, {"name": "vm2"}, {"name": "vm3", "state": "stopped"}])
    others = {"hv2": {"vm1": {"state": "started"}, "vm3": {"state": "started"}}, "hv3": {"vm2": {"state": "stopped"}}}
    p = _guests.plan(s, host(others=others))
    assert p["errors"] == ["qemu_vm_guests[0] vm1 runs on hv2 (migrated there), starting it here would run it twice: "
                           "move its entry to the qemu_vm_guests of hv2, or migrate it back with playbooks/migrate.yml"]
    # A guest that runs here already is not the one that moved.
    assert _guests.plan(s, host(others=others, active=["vm1"]))["errors"] == []


# --- The fact ------------------------------------------------------------------------------

def test_the_fact_keeps_unlisted_guests_and_drops_absent_ones():
    # The port of the guest that goes away is free again; the unlisted guest keeps its own.
    previous = {"old": {"spice_tls_port": 61000, "state": "stopped"}, "gone": {"spice_tls_port": 61001}}
    p = _guests.plan(settings([{"name": "gone", "state": "absent"}, {"name": "a", "state": "incoming"}]),
                     host(previous=previous))
    assert p["fact"] == {"vms": {
        "old": previous["old"],
        "a": {"state": "incoming", "unit": "vmconsole-qemu@a.service", "qmp": "/run/vmconsole/a.qmp",
              "spice_tls_port": 61001, "spice_port": 61002, "vnc_port": None, "serial_port": 62000,
              "migration_port": 60000},
    }}


# --- The command line ----------------------------------------------------------------------

def test_the_command_line_of_a_guest_with_every_console():
    s = settings([{"name": "vm1", "vnc": True, "disk": "/var/lib/vm1.qcow2", "extra_args": ["-device", "virtio-rng-pci"]}],
                 qemu_vm_firmware_dirs=["/usr/share/seabios"], qemu_vm_spice_x509_dir="/etc/pki/a,b")
    g = _guests.guest_list(s)[0]
    ports = {"spice_tls_port": 61000, "spice_port": 61001, "vnc_port": 5907, "serial_port": 62000, "migration_port": None}
    argv = _guests.argv(s, g, ports)
    assert argv[:2] == ["/usr/bin/qemu-system-x86_64", "-name"]
    joined = " ".join(argv)
    assert "-accel kvm -accel tcg -cpu qemu64 -smp 1 -m 512M -L /usr/share/seabios" in joined
    assert ("-spice addr=127.0.0.1,tls-port=61000,port=61001,x509-dir=/etc/pki/a,,b,tls-channel=default,"
            "seamless-migration=on") in joined
    assert "-vnc 127.0.0.1:7,tls-creds=vmconsole-vnc-tls,password=on" in joined
    assert "host=127.0.0.1,port=62000,server=on,wait=off,tls-creds=vmconsole-serial-tls,tls-authz=vmconsole-serial-authz" in joined
    assert "endpoint=server,verify-peer=on,dir=/etc/pki/qemu -object ${VMCONSOLE_SERIAL_AUTHZ} -chardev" in joined
    assert "-drive file=/var/lib/vm1.qcow2,format=qcow2,if=virtio" in joined
    assert "vmconsole-migration-server" in joined and "vmconsole-migration-client" in joined
    assert argv[-6:] == ["-sandbox", SETTINGS["qemu_vm_sandbox"], "-run-with", "user=vmconsole-qemu", "-device",
                         "virtio-rng-pci"]
    # Every console listens on 127.0.0.1 only.
    assert re.findall(r"(?:addr|host)=([^,]+)", joined) == ["127.0.0.1", "127.0.0.1"]
    assert argv[argv.index("-vnc") + 1].startswith("127.0.0.1:")
    assert "0.0.0.0" not in joined


@pytest.mark.parametrize("version, drop", [
    # Debian 12: -runas only (7.2 has no -run-with user=).
    (QEMU_7_2, ["-runas", "vmconsole-qemu"]),
    ("QEMU emulator version 9.0.2", ["-runas", "vmconsole-qemu"]),
    # From 9.1 -run-with user= exists; QEMU 10.0 (Debian 13) removed -runas ("-runas: invalid option").
    ("QEMU emulator version 9.1.0", ["-run-with", "user=vmconsole-qemu"]),
    (QEMU_10_0, ["-run-with", "user=vmconsole-qemu"]),
])
def test_the_guest_gives_up_root_the_way_its_qemu_takes(version, drop):
    s = settings([{"name": "vm1"}])
    p = _guests.plan(s, host(qemu_version=version))
    assert p["errors"] == []
    assert p["qemu_version"] == version.split()[3]
    line = p["exec_start"]["vm1"]
    assert '"%s" "%s"' % tuple(drop) in line
    other = "-runas" if drop[0] == "-run-with" else "-run-with"
    assert '"%s"' % other not in line


def test_a_binary_that_names_no_version_is_an_error():
    p = _guests.plan(settings([{"name": "vm1"}]), host(qemu_version="not qemu"))
    assert p["errors"] == ["/usr/bin/qemu-system-x86_64 --version did not name a QEMU version (it said 'not qemu'): "
                           "is qemu_vm_binary a QEMU system emulator?"]


def test_a_missing_binary_is_missing_not_versionless():
    p = _guests.plan(settings([{"name": "vm1"}]), host(ls=[], qemu_version=""))
    assert p["errors"] == []
    assert any("qemu-system-x86_64" in m for m in p["missing"])
    assert '"-run-with" "user=vmconsole-qemu"' in p["exec_start"]["vm1"]


def test_the_command_line_without_optional_parts():
    s = settings([{"name": "vm1", "spice_plain_port": False, "serial": False}], qemu_vm_sandbox="",
                 qemu_vm_migration_tls=False, qemu_vm_serial_verify_peer=False)
    g = _guests.guest_list(s)[0]
    argv = _guests.argv(s, g, {"spice_tls_port": 61000, "spice_port": None})
    joined = " ".join(argv)
    assert "port=" not in joined.replace("tls-port=", "")
    for absent in ("-vnc", "-chardev", "-sandbox", "-drive", "vmconsole-migration", "-L"):
        assert absent not in argv and absent not in joined


def test_without_verify_peer_the_serial_console_has_no_list():
    s = settings([{"name": "vm1"}], qemu_vm_serial_verify_peer=False)
    (g,) = _guests.guest_list(s)
    joined = " ".join(_guests.argv(s, g, {"spice_tls_port": 61000, "spice_port": None, "serial_port": 62000}))
    assert "verify-peer=off" in joined and "authz" not in joined.lower()
    p = _guests.plan(s, host())
    assert p["serial_env"] == {} and p["serial_closed"] == []


def test_exec_start_quotes_for_systemd():
    assert _guests.exec_start(["/usr/bin/qemu", "-name", "a b", "-nodefaults", "-device", 'x%y$z"q\\']) == (
        '"/usr/bin/qemu" \\\n    "-name" "a b" \\\n    "-nodefaults" \\\n    "-device" "x%%y$$z\\"q\\\\"')


def test_exec_start_leaves_the_serial_list_to_systemd():
    # ${NAME} as a word of its own: systemd gives QEMU the variable's value as one argument.
    s = settings([{"name": "vm1"}])
    start = _guests.plan(s, host())["exec_start"]["vm1"]
    assert '"-object" ${VMCONSOLE_SERIAL_AUTHZ} \\\n    "-chardev" "socket,id=vmconsole-serial,' in start
    assert ',tls-authz=vmconsole-serial-authz" \\\n    "-serial"' in start


def test_the_plan_gives_each_present_guest_its_exec_start():
    p = _guests.plan(settings([{"name": "a"}, {"name": "b", "state": "absent"}]), host())
    assert set(p["exec_start"]) == {"a"}
    assert '"-spice" "addr=127.0.0.1,tls-port=61000,port=61001,' in p["exec_start"]["a"]


# --- Restarts ------------------------------------------------------------------------------

def restarts(changed, active=("a", "b", "c", "d"), run_status=None):
    s = settings([{"name": "a"}, {"name": "b", "state": "incoming"}, {"name": "c"}, {"name": "d", "state": "stopped"},
                  {"name": "e"}])
    return _guests.plan(s, host(active=active, run_status=run_status), changed=changed)


def test_restart_only_running_guests_whose_files_changed():
    p = restarts({"conf": ["a", "d", "e"], "entered": ["b"], "left": []})
    # d is stopped, e does not run (systemd starts it): neither restarts.
    assert p["restart"] == ["a", "b"]
    assert p["cert_restart"] == ["c"]


def test_a_guest_leaving_incoming_restarts_only_while_it_still_waits():
    assert restarts({"left": ["a", "c"]}, run_status={"a": "inmigrate", "c": "running"})["restart"] == ["a"]


def test_nothing_restarts_without_a_change_or_before_the_preflight():
    assert restarts({})["restart"] == []
    p = _guests.plan(settings([{"name": "a"}]))
    assert p["restart"] == [] and p["cert_restart"] == [] and "ports" not in p


# --- The filters ---------------------------------------------------------------------------

def test_the_plan_stops_at_input_errors():
    assert qemu_vm_plan(settings([{"name": "a/b"}]), host()) == {
        "errors": [one_error([{"name": "a/b"}])]}


def test_the_plan_filter_refuses_what_is_not_a_dict():
    with pytest.raises(AnsibleFilterError, match="must be a dict of the role's variables, not list"):
        qemu_vm_plan([])
    with pytest.raises(AnsibleFilterError, match="host must be a dict"):
        qemu_vm_plan(settings(), ["x"])


def test_the_plan_lists_the_files_and_units_the_preflight_looks_at():
    p = qemu_vm_plan(settings([{"name": "a", "disk": "/d/a.raw"}, {"name": "b", "state": "absent"}]))
    assert p["units"] == ["vmconsole-qemu@a.service", "vmconsole-qemu@b.service"]
    assert "/d/a.raw" in p["files"] and "/etc/pki/qemu/client-key.pem" in p["files"]
    assert p["files"].count("/etc/pki/qemu/ca-cert.pem") == 1
    assert "/etc/systemd/system/vmconsole-qemu@b.service.d/guest.conf" in p["files"]


def test_the_plan_says_whether_the_install_phase_ran_by_its_unit_template():
    """The entry point guests runs install.yml only where the unit template (written last) is missing."""
    guests = [{"name": "a"}]
    assert qemu_vm_plan(settings(guests), host())["installed"] is False
    with_template = host(ls=host()["ls"] + [SETTINGS["__qemu_vm_unit_template"]])
    assert qemu_vm_plan(settings(guests), with_template)["installed"] is True
    assert "installed" not in qemu_vm_plan(settings(guests))  # input only: nothing seen yet


class _HostVars(dict):
    """hostvars: a mapping of host to its variables."""


def test_preflight_report_names_each_host():
    hostvars = _HostVars(hv1={"__x": ["bad a", "bad b"]}, hv2={}, hv3={"__x": []}, hv4={"__x": "one"})
    assert preflight_report(["hv1", "hv2", "hv3", "hv4"], hostvars, "__x") == ["hv1: bad a", "hv1: bad b", "hv4: one"]
    assert preflight_report(["hv2"], hostvars, "__x") == []
    with pytest.raises(AnsibleFilterError, match="variable must name"):
        preflight_report(["hv1"], hostvars, "")


# --- Who may open the serial console ---------------------------------------------------------

ALICE, BOB = "O=vmconsole.secure,CN=alice", "O=vmconsole.secure,CN=bob"


def test_malformed_serial_clients_stop_the_role_naming_the_variable():
    assert one_error([{"name": "a1"}], qemu_vm_serial_clients=["CN=alice, O=x"]).startswith(
        'qemu_vm_serial_clients[0] "CN=alice, O=x" is not a client certificate subject as QEMU compares it: '
        "' O=x' has a space around the attribute name")
    assert one_error([{"name": "a1", "serial_clients": [ALICE, "alice"]}]).startswith(
        "qemu_vm_guests[0].serial_clients[1] \"alice\" is not a client certificate subject as QEMU compares it: "
        "'alice' is not TYPE=value")
    assert one_error([{"name": "a1"}], qemu_vm_serial_clients=ALICE) == (
        "qemu_vm_serial_clients must be a list of client certificate subjects (e.g. 'O=vmconsole.secure,CN=alice'), "
        "not str")
    assert errors([{"name": "a1", "serial_clients": []}], qemu_vm_serial_clients=[ALICE]) == []


def test_a_list_without_verify_peer_is_refused():
    assert one_error([{"name": "a1"}], qemu_vm_serial_clients=[ALICE], qemu_vm_serial_verify_peer=False) == (
        "qemu_vm_serial_clients is not empty, but qemu_vm_serial_verify_peer is false: QEMU checks the list only "
        "while it verifies client certificates (set qemu_vm_serial_clients: [] to admit any client)")
    assert one_error([{"name": "a1", "serial_clients": [ALICE]}], qemu_vm_serial_verify_peer=False).startswith(
        "qemu_vm_guests[0].serial_clients is set, but qemu_vm_serial_verify_peer is false")


def test_each_guest_gets_its_list_in_its_own_drop_in_line():
    s = settings([{"name": "a"}, {"name": "b", "serial_clients": [BOB]}, {"name": "c", "serial": False},
                  {"name": "d", "serial_clients": []}], qemu_vm_serial_clients=[ALICE])
    p = _guests.plan(s, host())
    assert set(p["serial_env"]) == {"a", "b", "d"}
    assert p["serial_env"]["a"] == (
        '"VMCONSOLE_SERIAL_AUTHZ={\\"qom-type\\":\\"authz-list\\",\\"id\\":\\"vmconsole-serial-authz\\",'
        '\\"policy\\":\\"deny\\",\\"rules\\":[{\\"match\\":\\"O=vmconsole.secure,CN=alice\\",'
        '\\"policy\\":\\"allow\\",\\"format\\":\\"exact\\"}]}"')
    assert "CN=bob" in p["serial_env"]["b"] and "CN=alice" not in p["serial_env"]["b"]
    assert p["serial_closed"] == ["d"]
    # The list is not part of the command line: changing it leaves guest.conf as it is.
    other = _guests.plan(settings(s["qemu_vm_guests"], qemu_vm_serial_clients=[BOB]), host())
    assert other["exec_start"] == p["exec_start"] and other["serial_env"]["a"] != p["serial_env"]["a"]


def test_by_default_no_serial_console_admits_anyone():
    p = _guests.plan(settings([{"name": "a"}, {"name": "b", "state": "stopped"}, {"name": "c", "state": "absent"}]))
    assert SETTINGS["qemu_vm_serial_clients"] == []
    assert p["serial_closed"] == ["a", "b"]
    assert [g["serial_clients"] for g in p["present"]] == [[], []]


HV1, HV2 = "O=vmconsole.secure,CN=hv1", "O=vmconsole.secure,CN=hv2"


def test_the_portal_nodes_join_every_guests_list_after_its_people():
    s = settings([{"name": "a"}, {"name": "b", "serial_clients": [BOB, HV1]}, {"name": "d", "serial_clients": []}],
                 qemu_vm_serial_clients=[ALICE], qemu_vm_serial_relays=[HV1, HV2])
    p = _guests.plan(s, host())
    assert [g["serial_clients"] for g in p["present"]] == [[ALICE, HV1, HV2], [BOB, HV1, HV2], [HV1, HV2]]
    assert p["serial_closed"] == []           # reachable through a portal (whose ACL decides who)
    assert '\\"match\\":\\"O=vmconsole.secure,CN=hv2\\"' in p["serial_env"]["d"]
    assert SETTINGS["qemu_vm_serial_relays"] == []


def test_malformed_relays_stop_the_role_naming_the_variable():
    assert one_error([{"name": "a1"}], qemu_vm_serial_relays=["CN=hv1, O=x"]).startswith(
        'qemu_vm_serial_relays[0] "CN=hv1, O=x" is not a client certificate subject as QEMU compares it')
    assert one_error([{"name": "a1"}], qemu_vm_serial_relays=HV1).startswith(
        "qemu_vm_serial_relays must be a list of client certificate subjects")
    # Without verify-peer QEMU admits any certificate of the CA: the relays need no list then.
    assert errors([{"name": "a1"}], qemu_vm_serial_relays=[HV1], qemu_vm_serial_verify_peer=False) == []


def test_running_guests_that_do_not_restart_get_the_list_live():
    s = settings([{"name": "a"}, {"name": "b", "state": "incoming"}, {"name": "c"}, {"name": "d", "state": "stopped"},
                  {"name": "e"}, {"name": "f", "serial": False}], qemu_vm_serial_clients=[ALICE])
    p = _guests.plan(s, host(active=["a", "b", "c", "d", "f"]), changed={"conf": ["c"]})
    # c restarts (and starts with the new list); d is stopped; e does not run; f has no serial console.
    assert p["restart"] == ["c"]
    assert [g["name"] for g in p["serial_live"]] == ["a", "b"]
    assert p["serial_live"][0]["serial_clients"] == [ALICE]
    assert _guests.plan(s, host(active=["a"]))["serial_live"] == []     # decided with the changes only
