# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""module_utils/_libvirt_tls.py and its filters: the libvirt_tls role's checks (the cases of
molecule/libvirt's bad-input step and the others), systemctl show, and the SASL user plan."""

from __future__ import annotations

import copy
import hashlib
import json
import os

import pytest
import yaml

from ansible.errors import AnsibleFilterError

from ansible_collections.vmconsole.secure.plugins.filter.libvirt_tls_plan import libvirt_tls_plan, libvirt_tls_sasl_plan
from ansible_collections.vmconsole.secure.plugins.module_utils import _libvirt_tls
from ansible_collections.vmconsole.secure.tests.unit.roles import role_settings

ROLE = os.path.join(os.path.dirname(__file__), "..", "..", "..", "..", "roles", "libvirt_tls")
PASSWORD = "Xq7-not-shown-8Lm"


def _qemu_settings():
    with open(os.path.join(ROLE, "vars", "main.yml")) as f:
        owned = yaml.safe_load(f)["__libvirt_tls_qemu_settings"]
    return dict(owned, vnc_tls_x509_verify=0)  # a template in vars/main.yml


SETTINGS = role_settings("libvirt_tls", {"libvirt_tls_allowed_dn_list": ["O=vmconsole.secure,CN=admin"],
                                         "__libvirt_tls_qemu_settings": _qemu_settings()})


def errors(**changes):
    s = copy.deepcopy(SETTINGS)
    s.update(changes)
    found = libvirt_tls_plan(s)["errors"]
    assert PASSWORD not in json.dumps(found)
    return found


def test_good_input():
    assert errors() == []
    assert errors(libvirt_tls_auth="sasl", libvirt_tls_sasl_users=[{"name": "admin@example", "password": PASSWORD}],
                  libvirt_tls_qemu_extra_settings={"max_files": 4096, "security_driver": "none", "flag": True,
                                                   "namespaces": []}) == []


@pytest.mark.parametrize("changes, expect", [
    ({"libvirt_tls_auth": "kerberos"}, "libvirt_tls_auth is 'kerberos': it must be none (the client certificate alone) "
                                       "or sasl (the certificate, then a SASL user)"),
    ({"libvirt_tls_allowed_dn_list": []}, "libvirt_tls_allowed_dn_list is empty while libvirt_tls_enabled is true"),
    ({"libvirt_tls_allowed_dn_list": "O=x,CN=y"}, "libvirt_tls_allowed_dn_list must be a list of distinguished names"),
    ({"libvirt_tls_allowed_dn_list": ['O=vmconsole.secure,CN="admin"']},
     "libvirt_tls_allowed_dn_list contains 'O=vmconsole.secure,CN=\"admin\"', which is not a distinguished name"),
    ({"libvirt_tls_auth": "sasl", "libvirt_tls_sasl_users": [{"name": "a", "password": PASSWORD, "state": "absent"}]},
     "libvirt_tls_auth is sasl but libvirt_tls_sasl_users has no present user"),
    ({"libvirt_tls_vnc_sasl_users": [{"name": "viewer"}]}, "libvirt_tls_vnc_sasl_users user 'viewer' has no password"),
    ({"libvirt_tls_vnc_sasl_users": [{"name": "viewer", "password": PASSWORD, "state": "gone"}]},
     "libvirt_tls_vnc_sasl_users user 'viewer' has state 'gone': it must be present or absent"),
    ({"libvirt_tls_vnc_sasl_users": [{"name": "bad name", "password": PASSWORD}]},
     "libvirt_tls_vnc_sasl_users has an entry without a valid name (1-64 letters, digits, _ . @ -): bad name"),
    ({"libvirt_tls_vnc_sasl_users": ["viewer"]}, "libvirt_tls_vnc_sasl_users has an entry without a valid name"),
    ({"libvirt_tls_vnc_sasl_users": {"viewer": PASSWORD}}, "libvirt_tls_vnc_sasl_users must be a list of {name, "
                                                           "password, state}"),
    ({"libvirt_tls_vnc_sasl_users": [{"name": "v", "password": PASSWORD}, {"name": "v", "password": PASSWORD}]},
     "libvirt_tls_vnc_sasl_users names a user more than once"),
    ({"libvirt_tls_qemu_extra_settings": {"spice_listen": "0.0.0.0"}},
     "libvirt_tls_qemu_extra_settings sets 'spice_listen', which the role owns (console listeners and TLS)"),
    ({"libvirt_tls_qemu_extra_settings": {"Max-Files": 1}}, "libvirt_tls_qemu_extra_settings has 'Max-Files', which is "
                                                            "not a qemu.conf setting name"),
    ({"libvirt_tls_qemu_extra_settings": {"user": {"a": 1}}}, "libvirt_tls_qemu_extra_settings.user must be a string, "
                                                              "number, boolean or list of strings"),
    ({"libvirt_tls_qemu_extra_settings": {"user": 'x"y'}}, "libvirt_tls_qemu_extra_settings.user contains a double "
                                                           "quote or newline"),
    ({"libvirt_tls_qemu_extra_settings": ["a"]}, "libvirt_tls_qemu_extra_settings must be a mapping"),
])
def test_bad_input(changes, expect):
    found = errors(**changes)
    assert len(found) == 1 and expect in found[0], found


def test_a_disabled_listener_needs_no_dn_and_no_sasl_user():
    assert errors(libvirt_tls_enabled="false", libvirt_tls_allowed_dn_list=[], libvirt_tls_auth="sasl") == []


def test_missing_pki_files():
    s = copy.deepcopy(SETTINGS)
    assert libvirt_tls_plan(s, ["/etc/pki/libvirt/servercert.pem"])["errors"] == [
        "/etc/pki/libvirt/servercert.pem missing: run vmconsole.secure.pki first (it installs the CA, certificate and "
        "key libvirtd uses)"]
    assert libvirt_tls_plan(s, ["/etc/pki/libvirt/servercert.pem"], True)["errors"] == []


def test_systemctl_show():
    out = ("Id=libvirtd-tls.socket\nActiveState=active\nUnitFileState=enabled\n\n"
           "Id=libvirtd-tcp.socket\nActiveState=inactive\nUnitFileState=masked\nDescription=a=b\n\nnoise\n")
    units = libvirt_tls_plan(SETTINGS, units_show=out)["units"]
    assert units["libvirtd-tls.socket"]["ActiveState"] == "active"
    assert units["libvirtd-tcp.socket"] == {"Id": "libvirtd-tcp.socket", "ActiveState": "inactive",
                                            "UnitFileState": "masked", "Description": "a=b"}
    assert libvirt_tls_plan(SETTINGS)["units"] == {}


# --- SASL users --------------------------------------------------------------------------------

def record(salt, password):
    return "%s$%s" % (salt, hashlib.sha512((salt + password).encode()).hexdigest())


def probe(db=True, users=(), known=None):
    return "%s\n%s\n%s" % ("db" if db else "none", " ".join(users), json.dumps(known or {}))


def test_a_new_realm_sets_every_present_user():
    plan = libvirt_tls_sasl_plan([{"name": "a", "password": PASSWORD}, {"name": "b", "password": "x", "state": "absent"}],
                                 probe(db=False))
    assert plan["db"] is False and plan["set"] == ["a"] and plan["remove"] == []
    salt, digest = plan["hashes"]["a"].split("$")
    assert len(salt) == 16 and salt.isalnum() and plan["hashes"]["a"] == record(salt, PASSWORD)


def test_a_second_run_sets_nothing():
    known = {"a": record("S" * 16, PASSWORD)}
    plan = libvirt_tls_sasl_plan([{"name": "a", "password": PASSWORD}], probe(users=["a"], known=known))
    assert plan == {"db": True, "set": [], "remove": [], "hashes": known}


def test_a_changed_password_or_a_user_missing_from_the_db_is_set_again():
    known = {"a": record("S" * 16, PASSWORD)}
    plan = libvirt_tls_sasl_plan([{"name": "a", "password": "new"}], probe(users=["a"], known=known))
    assert plan["set"] == ["a"] and plan["hashes"]["a"] == record("S" * 16, "new")  # the salt stays
    plan = libvirt_tls_sasl_plan([{"name": "a", "password": PASSWORD}], probe(users=[], known=known))
    assert plan["set"] == ["a"]


def test_absent_users_go_and_records_of_unlisted_users_stay():
    known = {"old": record("T" * 16, "p"), "gone": record("U" * 16, "q"), "stale": record("V" * 16, "r")}
    plan = libvirt_tls_sasl_plan([{"name": "gone", "password": "", "state": "absent"}],
                                 probe(users=["old", "gone", "other"], known=known))
    assert plan["remove"] == ["gone"] and plan["set"] == []
    assert plan["hashes"] == {"old": known["old"]}  # "stale" is no longer in the sasldb


def test_a_damaged_record_file_sets_the_users_again():
    plan = libvirt_tls_sasl_plan([{"name": "a", "password": PASSWORD}], "db\na\n{not json")
    assert plan["set"] == ["a"]


def test_the_sasl_filter_refuses_unchecked_users():
    with pytest.raises(AnsibleFilterError, match="checked users"):
        libvirt_tls_sasl_plan(["a"], "")
    assert _libvirt_tls.new_salt() != _libvirt_tls.new_salt()
