# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""module_utils/_firewall.py and the filter console_firewall_plan: the console_firewall role's
checks, ranges, sources, and the comparison of the live rules with what the files make.

The settings start from the role's own defaults/main.yml and vars/main.yml. The state script
runs here for real (bash, with stand-ins for iptables and nft on PATH) so that what it prints
is what the parser reads.
"""

from __future__ import annotations

import copy
import os
import subprocess

import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.vmconsole.secure.plugins.filter.console_firewall_plan import console_firewall_plan
from ansible_collections.vmconsole.secure.plugins.module_utils import _firewall
from ansible_collections.vmconsole.secure.tests.unit.roles import role_settings

TEMPLATED = {  # the defaults that are templates, as they come out without inventory
    "console_firewall_spice_ports": [61000, 61999],
    "console_firewall_vnc_ports": [5900, 5999],
    "console_firewall_serial_ports": [62000, 62999],
    "console_firewall_proxy_port": 3128,
    "console_firewall_portal_port": 8443,
    "console_firewall_client_networks": ["192.0.2.0/24", "2001:db8::/64"],
    "console_firewall_migration_ports": [60000, 60050],
    "console_firewall_cluster_addresses": ["10.0.0.1", "10.0.0.2", "fd00::2"],
}


SETTINGS = role_settings("console_firewall", TEMPLATED)
PROBE = ["32768\t60999", "ipv6", "tools"]


def settings(**changes):
    out = copy.deepcopy(SETTINGS)
    out.update(changes)
    return out


def host(probe=None, connection="ssh", ssh_connection="192.0.2.9 50000 10.0.0.1 22", port=22, check_mode=False):
    return {"probe": list(PROBE if probe is None else probe), "connection": connection, "ssh_connection": ssh_connection, "port": port,
            "check_mode": check_mode}


def errors(h=None, **changes):
    return _firewall.plan(settings(**changes), h or host())["errors"]


def one_error(h=None, **changes):
    found = errors(h, **changes)
    assert len(found) == 1, found
    return found[0]


def test_the_settings_are_the_variables_the_plan_reads():
    import re
    source = open(_firewall.__file__).read()
    read = set(re.findall(r's\["([a-z_]+)"\]', source))
    assert read <= set(SETTINGS), read - set(SETTINGS)


def test_the_role_defaults_have_no_error():
    assert errors() == []


# --- Input checks --------------------------------------------------------------------------

@pytest.mark.parametrize("changes, expect", [
    ({"console_firewall_backend": "ufw"}, 'console_firewall_backend is "ufw": the role knows iptables (nf_tables or '
                                          'legacy, as the host has it) and nftables'),
    ({"console_firewall_nftables_priority": "high"}, 'console_firewall_nftables_priority is "high": a hook priority is '
                                                     'a whole number (filter is 0)'),
    ({"console_firewall_spice_ports": [61000]}, "console_firewall_spice_ports is [61000]: a port range is a list "
                                                "[low, high] of two port numbers"),
    ({"console_firewall_spice_ports": "61000-61999"}, 'console_firewall_spice_ports is "61000-61999": a port range'),
    ({"console_firewall_vnc_ports": [5999, 5900]}, "console_firewall_vnc_ports is [5999, 5900]: ports go from 1 to "
                                                   "65535 and low must not be above high"),
    ({"console_firewall_proxy_port": "squid"}, 'console_firewall_proxy_port is ["squid", "squid"]: a port is a number '
                                               'from 1 to 65535'),
    ({"console_firewall_proxy_port": 70000}, "console_firewall_proxy_port is [70000, 70000]: ports go from 1 to 65535"),
    ({"console_firewall_qmp_ports": [4444, [5000]]}, "console_firewall_qmp_ports[1] is [5000]: a port range is a list"),
    ({"console_firewall_proxy_port": 61500}, "console_firewall_proxy_port 61500 lies inside console_firewall_spice_ports"
                                             " 61000-61999 (SPICE): the proxy port must answer clients, SPICE ports "
                                             "only the host itself"),
    ({"console_firewall_proxy_port": 60010}, "console_firewall_proxy_port 60010 lies inside "
                                             "console_firewall_migration_ports 60000-60050 (migration): the proxy port "
                                             "must answer clients, migration ports only cluster nodes"),
    ({"console_firewall_portal_port": 61500}, "console_firewall_portal_port 61500 lies inside console_firewall_spice_ports"
                                              " 61000-61999 (SPICE): the portal port must answer clients, SPICE ports "
                                              "only the host itself"),
    ({"console_firewall_portal_port": 3128}, "console_firewall_proxy_port 3128 (proxy) overlaps "
                                             "console_firewall_portal_port 3128 (portal): each port belongs to one kind "
                                             "of listener, with its own rule"),
    ({"console_firewall_qmp_ports": ["5950"]}, "console_firewall_vnc_ports 5900-5999 (VNC) overlaps "
                                               "console_firewall_qmp_ports[0] 5950 (QMP): each port belongs to one kind "
                                               "of listener, with its own rule"),
    ({"console_firewall_client_networks": ["192.0.2.0"]}, 'console_firewall_client_networks (vmconsole_client_networks)'
                                                          ' contains "192.0.2.0", which is not a network in CIDR form'),
    ({"console_firewall_client_networks": "192.0.2.0/24"}, "console_firewall_client_networks "
                                                           "(vmconsole_client_networks) must be a list of networks"),
    ({"console_firewall_cluster_addresses": ["hv2"]}, 'console_firewall_cluster_addresses contains "hv2", which is '
                                                      'neither an IP address nor a network in CIDR form'),
    ({"console_firewall_cluster_addresses": "10.0.0.1"}, "console_firewall_cluster_addresses must be a list of "
                                                         "addresses, not"),
    ({"console_firewall_cluster_addresses": []}, "console_firewall_cluster_addresses is empty while "
                                                 "console_firewall_migration is true"),
    ({"console_firewall_management_ports": [61022]}, "console_firewall_management_ports has 61022, which would be cut: "
                                                     "the port lies inside console_firewall_spice_ports 61000-61999 "
                                                     "(SPICE)"),
])
def test_bad_input(changes, expect):
    assert expect in one_error(**changes)


def test_the_ipv6_forms_the_regexes_disagreed_on_are_networks_and_addresses():
    assert errors(console_firewall_client_networks=["::ffff:10.0.0.0/104", "64:ff9b::/96"],
                  console_firewall_cluster_addresses=["::ffff:10.0.0.1", "64:ff9b::192.0.2.1"]) == []
    assert "fe80::1%eth0" in one_error(console_firewall_cluster_addresses=["fe80::1%eth0"])


def test_no_migration_needs_no_cluster_addresses_and_frees_its_range():
    assert errors(console_firewall_migration=False, console_firewall_cluster_addresses=[],
                  console_firewall_proxy_port=60010) == []


def test_console_ports_inside_the_ephemeral_range():
    found = one_error(host(probe=["61500 61600", "ipv6", "tools"]))
    assert found == ("console_firewall_spice_ports 61000-61999 overlaps the ephemeral port range 61500-61600 of this "
                     "host (net.ipv4.ip_local_port_range): console ports take no traffic from outside, not even replies "
                     "to this host's own outgoing connections. Move the range, or the ephemeral range")
    # Migration ports may lie there: their rules let replies pass.
    assert errors(host(probe=["60000 60999", "ipv6", "tools"])) == []


def test_the_management_connection_would_be_cut():
    found = one_error(host(ssh_connection="192.0.2.9 50000 10.0.0.1 62022"))
    assert found == ("the management connection (ssh, port 62022) would be cut: the port lies inside "
                     "console_firewall_serial_ports 62000-62999 (serial)")
    found = one_error(host(ssh_connection="", port=5901))
    assert found.startswith("the management connection (ssh, port 5901) would be cut")


@pytest.mark.parametrize("h, port", [
    (host(), 22),
    (host(ssh_connection="", port=2222), 2222),
    (host(ssh_connection="", connection="ansible.builtin.paramiko_ssh", port=None), 22),
    (host(ssh_connection="", connection="vmconsole.lab.lab_podman"), 0),
    (host(ssh_connection="", connection="local"), 0),
])
def test_management_port(h, port):
    assert _firewall.management_port(h) == port


def test_ranges_and_sources_for_the_templates():
    p = _firewall.plan(settings(console_firewall_qmp_ports=[4444, [4500, 4510]]), host())
    assert [(r["label"], r["kind"], r["text"], r["iptables"]) for r in p["ranges"]] == [
        ("SPICE", "console", "61000-61999", "61000:61999"), ("VNC", "console", "5900-5999", "5900:5999"),
        ("serial", "console", "62000-62999", "62000:62999"), ("QMP", "console", "4444", "4444"),
        ("QMP", "console", "4500-4510", "4500:4510"), ("proxy", "proxy", "3128", "3128"),
        ("portal", "proxy", "8443", "8443"), ("migration", "migration", "60000-60050", "60000:60050")]
    assert p["sources"] == {"ipv4": {"clients": ["192.0.2.0/24"], "cluster": ["10.0.0.1", "10.0.0.2"]},
                            "ipv6": {"clients": ["2001:db8::/64"], "cluster": ["fd00::2"]}}


def test_families_files_and_tools():
    p = _firewall.plan(settings(), host(probe=["32768 60999", "no-ipv6", "no-tools"], check_mode=True))
    assert [f["name"] for f in p["families"]] == ["ipv4"] and len(p["all_families"]) == 2
    assert p["files"] == ["rules.v4"] and p["other_files"] == ["rules.v6", "rules.nft"]
    assert p["tools_present"] is False and p["dry_new"] is True
    p = _firewall.plan(settings(console_firewall_backend="nftables"), host())
    assert p["files"] == ["rules.nft"] and p["tools_present"] is True and p["dry_new"] is False


def test_without_the_host_the_plan_is_empty():
    assert _firewall.plan(settings()) == {"errors": [], "files": []}


# --- The state script and its output -------------------------------------------------------

FAKE_TOOLS = {
    # iptables-nft lists the role's chain with a jump at rule 2 (an old run) and a foreign rule.
    "iptables": 'echo "iptables v1.8.9 (nf_tables)"',
    "iptables-nft": r'''case "$*" in
  "-w -S") printf '%s\n' '-P INPUT ACCEPT' '-N VMCONSOLE' '-A INPUT -p tcp --dport 22 -j ACCEPT' \
           '-A INPUT -j VMCONSOLE' '-A VMCONSOLE -p tcp -m tcp --dport 61000:61999 -j DROP' ;;
  "-w -S INPUT") printf '%s\n' '-A INPUT -j VMCONSOLE' ;;
  *) exit 1 ;;
esac''',
    "ip6tables-nft": r'''printf '%s\n' '-P INPUT ACCEPT' ''',
    "ip6tables": r'''printf '%s\n' '-P INPUT ACCEPT' ''',
    "iptables-legacy": r'''printf '%s\n' '-P INPUT ACCEPT' '-N VMCONSOLE' '-A INPUT -j VMCONSOLE' \
      '-A VMCONSOLE -p tcp -j DROP' ''',
    "nft": r'''case "$*" in
  "list table inet vmconsole") printf '%s\n' 'table inet vmconsole {' '	chain input {' '	}' '}' ;;
  "-f -") cat >/dev/null ;;
  *) exit 1 ;;
esac''',
    "unshare": r'''shift 2; exec "$@"''',
}


@pytest.fixture
def fake_path(tmp_path):
    for name, body in FAKE_TOOLS.items():
        path = tmp_path / name
        path.write_text("#!/bin/bash\n" + body + "\n")
        path.chmod(0o755)
    # iptables-restore in the namespace: prints nothing; the "expected" listing comes from iptables -S.
    for name in ("iptables-restore", "ip6tables-restore"):
        (tmp_path / name).write_text("#!/bin/sh\ncat >/dev/null\n")
        (tmp_path / name).chmod(0o755)
    return str(tmp_path)


def run_state(script, path, env=None):
    environ = {"PATH": path + ":/usr/bin:/bin", "VMCONSOLE_RULES_0": "rules", "VMCONSOLE_RULES_1": "rules6"}
    environ.update(env or {})
    done = subprocess.run(["bash", "-c", script], env=environ, capture_output=True, text=True, check=True)
    return done.stdout.splitlines()


def test_the_state_script_lists_every_place_and_what_the_files_make(fake_path):
    s = settings()
    p = _firewall.plan(s, host())
    lines = run_state(p["state_script"], fake_path)
    found = _firewall.sections(lines)
    # The legacy tables are only listed when the kernel has them (/proc/net/ip_tables_names).
    legacy = os.path.exists("/proc/net/ip_tables_names") and "filter" in open("/proc/net/ip_tables_names").read()
    assert set(found) == {"version", "iptables-nft", "ip6tables-nft", "nft", "expected ipv4", "expected ipv6"} | (
        {"iptables-legacy"} if legacy else set())
    assert found["version"] == ["iptables v1.8.9 (nf_tables)"]
    assert _firewall.flavour(found) == "nf_tables"
    assert found["nft"] == ["table inet vmconsole {", "chain input {", "}", "}"]


def state_of(live4, expected4, version="iptables v1.8.9 (nf_tables)", extra=None):
    lines = ["== version", version, "== iptables-nft"] + live4
    lines += ["== ip6tables-nft", "-P INPUT ACCEPT", "== expected ipv4"] + expected4
    lines += ["== expected ipv6"]
    for name, body in (extra or {}).items():
        lines += ["== " + name] + body
    return lines


CHAIN = ["-N VMCONSOLE", "-A VMCONSOLE -p tcp -m tcp --dport 61000:61999 -j DROP"]


def plan_with(state, **changes):
    return console_firewall_plan(settings(**changes), host(probe=["32768 60999", "no-ipv6", "tools"]), state)


def test_live_rules_that_match_the_files_are_no_change():
    p = plan_with(state_of(["-P INPUT ACCEPT", "-A INPUT -j VMCONSOLE", "-A INPUT -p tcp --dport 22 -j ACCEPT"] + CHAIN,
                           ["-P INPUT ACCEPT"] + CHAIN + ["-A INPUT -j VMCONSOLE"]))
    assert p["changes"] == [] and p["stale"] == {} and p["changes_shown"] == {}


def test_a_jump_that_is_not_first_or_twice_is_a_change():
    p = plan_with(state_of(["-A INPUT -p tcp --dport 22 -j ACCEPT", "-A INPUT -j VMCONSOLE", "-A INPUT -j VMCONSOLE"]
                           + CHAIN, CHAIN))
    (change,) = p["changes"]
    assert change["name"] == "ipv4 (iptables-nft)"
    assert change["before"][0] == "INPUT: jump to VMCONSOLE at rule 2, 3"
    assert p["changes_shown"] == {"ipv4 (iptables-nft)": ["- INPUT: jump to VMCONSOLE at rule 2, 3",
                                                          "+ INPUT: jump to VMCONSOLE at rule 1"]}


def test_a_missing_chain_and_a_changed_rule_are_shown_as_lines():
    p = plan_with(state_of(["-P INPUT ACCEPT"], CHAIN))
    assert p["changes_shown"]["ipv4 (iptables-nft)"] == [
        "- INPUT: no jump to VMCONSOLE", "+ INPUT: jump to VMCONSOLE at rule 1", "+ -N VMCONSOLE",
        "+ -A VMCONSOLE -p tcp -m tcp --dport 61000:61999 -j DROP"]
    reordered = ["-N VMCONSOLE", "-A VMCONSOLE -j A", "-A VMCONSOLE -j B"]
    p = plan_with(state_of(["-A INPUT -j VMCONSOLE"] + reordered, [reordered[0], reordered[2], reordered[1]]))
    assert p["changes_shown"]["ipv4 (iptables-nft)"][0] == "(the same rules, in a new order)"


def test_other_chains_with_a_similar_name_are_not_the_roles():
    p = plan_with(state_of(["-A INPUT -j VMCONSOLE", "-N VMCONSOLE2", "-A VMCONSOLE2 -j DROP"] + CHAIN, CHAIN))
    assert p["changes"] == []


def test_a_legacy_host_compares_the_legacy_tables():
    p = plan_with(state_of([], CHAIN, version="iptables v1.8.9 (legacy)",
                           extra={"iptables-legacy": ["-A INPUT -j VMCONSOLE"] + CHAIN}))
    assert p["changes"] == []
    # ... and the role's chain in iptables-nft is stale there.
    p = plan_with(state_of(["-A INPUT -j VMCONSOLE", "-A INPUT -p tcp -j ACCEPT"] + CHAIN, CHAIN,
                           version="iptables v1.8.9 (legacy)", extra={"iptables-legacy": ["-A INPUT -j VMCONSOLE"] + CHAIN}))
    assert p["stale"] == {"iptables-nft": ["- -A INPUT -j VMCONSOLE", "- -N VMCONSOLE",
                                           "- -A VMCONSOLE -p tcp -m tcp --dport 61000:61999 -j DROP"]}
    assert "iptables-nft -w -S INPUT" in p["stale_removal"]["iptables-nft"]
    assert "echo '-X VMCONSOLE'" in p["stale_removal"]["iptables-nft"]


def test_the_nftables_backend_compares_the_table_and_removes_iptables_chains():
    table = ["table inet vmconsole {", "chain input {", "}", "}"]
    state = state_of(["-A INPUT -j VMCONSOLE"] + CHAIN, [], extra={"nft": table, "expected nft": table})
    p = plan_with(state, console_firewall_backend="nftables")
    assert p["changes"] == []
    assert list(p["stale"]) == ["iptables-nft"]
    p = plan_with(state_of([], [], extra={"expected nft": table}), console_firewall_backend="nftables")
    assert p["changes"] == [{"name": "table inet vmconsole", "before": [], "after": table}]
    # Back to iptables: the table goes.
    p = plan_with(state_of(["-A INPUT -j VMCONSOLE"] + CHAIN, CHAIN, extra={"nft": table}))
    assert p["stale"] == {"nft": ["- " + line for line in table]}
    assert p["stale_removal"]["nft"] == "set -euo pipefail\nnft delete table inet vmconsole\n"


def test_a_dry_run_on_a_host_without_the_tools_shows_the_files():
    p = console_firewall_plan(settings(), host(probe=["32768 60999", "no-ipv6", "no-tools"], check_mode=True), [])
    assert p["changes"] == [{"name": "ipv4 (iptables-nft)", "before": ["INPUT: no jump to VMCONSOLE"],
                             "after": ["INPUT: jump to VMCONSOLE at rule 1", "(the rules of rules.v4)"]}]


def test_stale_removal_refuses_an_unknown_place():
    with pytest.raises(ValueError, match="not a place"):
        _firewall.stale_removal(settings(), "rm -rf /")


def test_the_filter_refuses_what_is_not_a_dict_or_lines():
    with pytest.raises(AnsibleFilterError, match="must be a dict of the role's variables"):
        console_firewall_plan("x")
    with pytest.raises(AnsibleFilterError, match="host must be a dict"):
        console_firewall_plan(settings(), "x")
    with pytest.raises(AnsibleFilterError, match="state must be the lines"):
        console_firewall_plan(settings(), host(), "x")
