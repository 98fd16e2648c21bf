# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The console_portal role's decisions: its preflight errors and the two configuration files."""

from __future__ import annotations

import pytest

from ansible_collections.vmconsole.secure.plugins.filter.console_portal_plan import console_portal_plan
from ansible_collections.vmconsole.secure.plugins.module_utils import _console_portal
from ansible_collections.vmconsole.secure.tests.unit.roles import role_settings

YESCRYPT = "$y$j9T$F5Jx5fExrKuJdcJ0k2DTX.$tg0Rh3hiKy6JJN2pvUPpxLBjH3Oo6Gki2CMiSlfXRbB"
TEMPLATED = dict(console_portal_port=8443, vmconsole_proxy_port=3128, vmconsole_spice_ports=[61000, 61999],
                 vmconsole_vnc_ports=[5900, 5999], vmconsole_serial_ports=[62000, 62999],
                 vmconsole_migration_ports=[60000, 60050], user="vmconsole-portal",
                 agent_socket="/run/vmconsole-portal/agent.sock", cert_file="/c", key_file="/k", ca_file="/ca",
                 audit_log="/var/log/vmconsole-portal/portal.log", tickets_log="/var/log/vmconsole/tickets.log",
                 static_zip="/usr/lib/vmconsole/portal/static.zip")


def settings(**changes):
    s = role_settings("console_portal", TEMPLATED)
    s.update(console_portal_users={"alice": {"password_hash": YESCRYPT, "groups": ["dev"]}},
             console_portal_acl=[{"groups": ["dev"], "vms": ["web*"], "role": "console"}],
             nodes={"hv1": "https://hv1:8443", "hv2": "https://hv2:8443"})
    s.update(changes)
    return s


def host(**changes):
    h = dict(name="hv1", proxy_url="http://hv1:3128", cert_files={"/etc/pki/libvirt/servercert.pem": True},
             listeners=[], portal_pid="0", cluster_vms={"web1": "hv1", "web2": "hv2"}, public=True)
    h.update(changes)
    return h


def test_the_configuration_files_of_a_node():
    out = _console_portal.plan(settings(), host())
    assert out["errors"] == []
    assert out["portal"] == dict(
        node="hv1", public=True, hosts=[], port=8443, nodes={"hv1": "https://hv1:8443", "hv2": "https://hv2:8443"},
        proxy="http://hv1:3128", agent_socket="/run/vmconsole-portal/agent.sock",
        users={"alice": {"password_hash": YESCRYPT, "groups": ["dev"]}},
        acl=[{"groups": ["dev"], "vms": ["web*"], "role": "console"}], vm_nodes={"web1": "hv1", "web2": "hv2"},
        cert_file="/c", key_file="/k", ca_file="/ca", audit_log="/var/log/vmconsole-portal/portal.log",
        static_zip="/usr/lib/vmconsole/portal/static.zip", relays=dict(per_user=4, per_vm=8), session_idle=900,
        session_absolute=28800, login=dict(max_failures=5, window=300, lockout=900))
    assert out["agent"] == dict(node="hv1", allowed_users=["vmconsole-portal"], cluster_vms=["web1", "web2"],
                                audit_log="/var/log/vmconsole/tickets.log", ticket_ttl=60, token_ttl=28800)


@pytest.mark.parametrize("changes, hchanges, text", [
    (dict(console_portal_port=3128), {}, "console_portal_port 3128 is the console proxy's port"),
    (dict(console_portal_port=61500), {}, "console_portal_port 61500 lies inside vmconsole_spice_ports 61000-61999"),
    (dict(console_portal_port=60010), {}, "lies inside vmconsole_migration_ports 60000-60050 (migration ports)"),
    (dict(console_portal_port="https"), {}, "console_portal_port must be a port number (1-65535), got 'https'"),
    (dict(console_portal_port=70000), {}, "console_portal_port must be a port number"),
    ({}, dict(listeners=['LISTEN 0 4096 *:8443 *:* users:(("apache2",pid=812,fd=4))'], portal_pid="0"),
     "console_portal_port 8443 is taken on hv1 by another process (pid 812)"),
    (dict(console_portal_users={"alice": {"password_hash": "hunter2"}}), {}, "console_portal_users.alice.password_hash"),
    (dict(console_portal_users={"alice": {"password_hash": "$6$salt$abc"}}), {}, "console_portal_users.alice.password_hash"),
    (dict(console_portal_acl=[{"users": ["a"], "vms": ["x"], "role": "admin"}]), {}, "console_portal_acl[0].role"),
    (dict(console_portal_acl=[{"vms": ["x"], "role": "console"}]), {}, "console_portal_acl[0]"),
    (dict(console_portal_hosts="portal.example"), {}, "console_portal_hosts must be a list of host names"),
    (dict(console_portal_session_idle=30), {}, "console_portal_session_idle must be a whole number of at least 60"),
    (dict(console_portal_session_idle=7200, console_portal_session_absolute=3600), {},
     "console_portal_session_idle (7200) must not be above console_portal_session_absolute (3600)"),
    (dict(console_portal_login_max_failures=0), {}, "console_portal_login_max_failures must be a whole number of at least 1"),
    ({}, dict(cluster_vms={"bad/name": "hv1"}), "qemu_vm_guests: bad/name are not VM names"),
])
def test_bad_input_is_named(changes, hchanges, text):
    out = _console_portal.plan(settings(**changes), host(**hchanges))
    assert out["portal"] is None and out["agent"] is None
    assert any(text in error for error in out["errors"]), out["errors"]


def test_a_clear_password_never_reaches_the_message():
    out = _console_portal.plan(settings(console_portal_users={"alice": {"password_hash": "my secret words"}}), host())
    assert out["errors"] and not any("my secret words" in error for error in out["errors"])


def test_the_portal_itself_may_hold_its_port():
    line = 'LISTEN 0 128 0.0.0.0:8443 0.0.0.0:* users:(("python3",pid=4242,fd=7))'
    assert _console_portal.plan(settings(), host(listeners=[line], portal_pid="4242"))["errors"] == []


def test_the_filter_reads_every_nodes_guests():
    hostvars = {"hv1": {"qemu_vm_guests": [{"name": "web1"}, {"name": "db1"}]},
                "hv2": {"qemu_vm_guests": [{"name": "web2"}, {"nothing": 1}]}, "hv3": {}}
    s = settings()
    del s["nodes"]
    out = console_portal_plan(s, dict(host(), nodes=["hv1", "hv2", "hv3"], hostvars=hostvars,
                                      required_files=["/a", "/b"], files={"/a": {"mode": "0644"}}))
    assert out["errors"] == [] and out["missing"] == [
        "hv1: the node's certificate, key or trust bundle is missing (/b): run the pki role first"]
    out = console_portal_plan(s, dict(host(), nodes=["hv1", "hv2", "hv3"], hostvars=hostvars,
                                      required_files=["/a"], files={"/a": {"mode": "0644"}}))
    assert out["portal"]["vm_nodes"] == {"db1": "hv1", "web1": "hv1", "web2": "hv2"}
    assert out["portal"]["nodes"] == {"hv1": "https://hv1:8443", "hv2": "https://hv2:8443", "hv3": "https://hv3:8443"}


def test_node_urls_bracket_ipv6():
    assert _console_portal.node_urls(["fd00::1"], 8443) == {"fd00::1": "https://[fd00::1]:8443"}


def test_a_missing_certificate_is_named_apart_from_the_errors():
    # The pki role of the same play makes it: the role's dry run warns, a real run stops (preflight.yml).
    out = _console_portal.plan(settings(), host(cert_files={"/etc/pki/libvirt/servercert.pem": False}))
    assert out["errors"] == []
    assert out["missing"] == ["hv1: the node's certificate, key or trust bundle is missing "
                              "(/etc/pki/libvirt/servercert.pem): run the pki role first"]
    assert out["portal"]["cert_file"] and out["agent"]["node"] == "hv1"
    assert _console_portal.plan(settings(), host())["missing"] == []
