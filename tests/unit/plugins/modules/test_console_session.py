# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""console_session against scripted QMP servers: what it sends, what it writes, and when not."""

from __future__ import annotations

import grp
import json
import os
import socket
import stat
import time

import pytest

from ansible_collections.vmconsole.secure.plugins.modules import console_session
from ansible_collections.vmconsole.secure.plugins.module_utils._tickets import (
    TICKET_ALPHABET, TOKEN_TTL_MAX, add_revocation, dump_revocations, load_revocations, mint_proxy_token,
    parse_revocations, proxy_keys_of, proxy_signer, prune_revocations, verify_proxy_token,
)
from ansible_collections.vmconsole.secure.tests.unit.fakeqmp import Error, qemu

CLIENT = {"port": "47654", "family": "ipv4", "channel-type": 1, "connection-id": 1804289383, "host": "127.0.0.1",
          "channel-id": 0, "tls": True}
SPICE = {"migrated": False, "enabled": True, "auth": "spice", "compiled-version": "0.15.1", "tls-port": 61000,
         "host": "127.0.0.1", "mouse-mode": "server", "channels": []}
NO_VNC = {"enabled": False, "clients": []}
VNC = {"enabled": True, "auth": "vnc", "family": "ipv4", "service": "5901", "host": "127.0.0.1", "clients": []}
VNC_CLIENT = {"family": "ipv4", "service": "50422", "host": "127.0.0.1", "websocket": False}
SENDING = {"set_password", "expire_password"}
NOW = int(time.time())


def channels(count, connection_id=CLIENT["connection-id"]):
    return [dict(CLIENT, **{"channel-type": t, "connection-id": connection_id}) for t in range(1, count + 1)]


def console(spice_channels=(), vnc=None, spice=None, **extra):
    """A QEMU whose SPICE clients go away on set_password(connected=disconnect), as spice-server's do."""
    vnc = NO_VNC if vnc is None else vnc
    spice = SPICE if spice is None else spice
    state = dict(channels=list(spice_channels))

    def query_spice(peer, request):
        peer.reply(request, dict(spice, channels=state["channels"]))

    def set_password(peer, request):
        if request["arguments"].get("connected") == "disconnect":
            state["channels"] = []
        peer.reply(request, {})

    table = {"query-spice": query_spice, "query-vnc": vnc, "set_password": set_password, "expire_password": {}}
    table.update(extra)
    return qemu(table)


@pytest.fixture
def files(tmp_path):
    class Files:
        revocations = tmp_path / "etc" / "proxy-revoked.json"
        audit = tmp_path / "log" / "tickets.log"
    return Files


@pytest.fixture
def session(fake_qmp, run_module, short_tmp, files):
    """``session(qemus={name: script}, check_mode=False, diff=False, **args)`` -> (result, {name: server})."""
    def run(qemus=None, check_mode=False, diff=False, **args):
        servers = {name: fake_qmp(script, name="%s.qmp" % name) for name, script in (qemus or {}).items()}
        params = dict(state="absent", socket_dir=short_tmp, revocations_file=str(files.revocations),
                      audit_log=str(files.audit))
        params.update(args)
        if diff:
            params["_ansible_diff"] = True
        result = run_module(console_session.main, {k: v for k, v in params.items() if v is not None},
                            check_mode=check_mode)
        for server in servers.values():
            server.stop()                           # frees the socket path for the next run
        return result, servers
    return run


def sent(server, command):
    return [r.get("arguments") for r in server.requests if r.get("execute") == command]


def revocations(files):
    return json.loads(files.revocations.read_text())


# --- by VM ------------------------------------------------------------------------------------------

def test_vm_disconnects_spice_locks_the_ticket_and_revokes_the_vm(session, files):
    result, servers = session({"web1": console(channels(4))}, vm="web1")
    server = servers["web1"]
    assert server.commands == ["qmp_capabilities", "query-spice", "query-vnc", "set_password", "expire_password",
                               "query-spice", "query-vnc"]
    (arguments,) = sent(server, "set_password")
    assert (arguments["protocol"], arguments["connected"]) == ("spice", "disconnect")
    assert len(arguments["password"]) == 40 and not arguments["password"].strip(TICKET_ALPHABET)
    assert sent(server, "expire_password") == [dict(protocol="spice", time="now")]
    assert result["changed"] is True
    assert result["sessions"] == {"web1": dict(
        running=True, locked=True, ticket_file_removed=False,
        spice=dict(enabled=True, channels_before=4, channels_after=0, clients_before=1, clients_after=0),
        vnc=dict(enabled=False, clients_before=0, clients_after=0))}
    assert abs(result["revoke_time"] - time.time()) < 5
    assert result["revoked"] == {"users": {}, "vms": {"web1": result["revoke_time"]}, "pairs": {}}
    assert revocations(files) == {"users": {}, "vms": {"web1": result["revoke_time"]}, "pairs": {}}
    assert arguments["password"] not in json.dumps(result) + files.audit.read_text()


def test_revocations_file_mode_and_group(session, files):
    session({}, vm="web1")
    st = os.stat(str(files.revocations))
    assert stat.S_IMODE(st.st_mode) == 0o640 and st.st_uid == 0
    try:
        expected = grp.getgrnam("proxy").gr_gid
    except KeyError:
        expected = 0
    assert st.st_gid == expected
    assert [p.name for p in files.revocations.parent.iterdir()] == ["proxy-revoked.json"], "no temporary file left"


def test_the_revocation_refuses_tokens_issued_up_to_revoke_time(session, files):
    signer = proxy_signer(b"\x01" * 32)
    keys = proxy_keys_of("hv1", signer)
    before = mint_proxy_token(signer, "alice", "web1", "spice", now=NOW - 10)
    other_vm = mint_proxy_token(signer, "alice", "web2", "spice", now=NOW - 10)
    session({}, vm="web1", revoke_time=NOW - 5)
    table = load_revocations(str(files.revocations))
    check = verify_proxy_token(keys, before.username, before.token, revocations=table)
    assert check.status == "revoked"
    assert verify_proxy_token(keys, other_vm.username, other_vm.token, revocations=table).ok
    after = mint_proxy_token(signer, "alice", "web1", "spice", now=NOW - 4)
    assert verify_proxy_token(keys, after.username, after.token, revocations=table).ok, "issued after the cut"


def test_vnc_gets_a_random_expired_password_and_its_clients_are_reported(session, monkeypatch):
    warnings = []
    monkeypatch.setattr(console_session.AnsibleModule, "warn", lambda self, text: warnings.append(text))
    vnc = dict(VNC, clients=[VNC_CLIENT])
    result, servers = session({"web1": console(channels(2), vnc=vnc)}, vm="web1")
    assert [a["protocol"] for a in sent(servers["web1"], "set_password")] == ["spice", "vnc"]
    (vnc_set,) = [a for a in sent(servers["web1"], "set_password") if a["protocol"] == "vnc"]
    assert "connected" not in vnc_set, "QEMU refuses connected= other than keep for VNC"
    assert len(vnc_set["password"]) == 8
    assert sent(servers["web1"], "expire_password") == [dict(protocol="spice", time="now"),
                                                        dict(protocol="vnc", time="now")]
    assert result["sessions"]["web1"]["vnc"] == dict(enabled=True, clients_before=1, clients_after=1)
    assert any("vm web1: 1 VNC client(s) stay connected" in text for text in warnings)


def test_vnc_only_vm(session):
    result, servers = session({"web1": console(spice={"enabled": False}, vnc=VNC)}, vm="web1")
    assert [a["protocol"] for a in sent(servers["web1"], "set_password")] == ["vnc"]
    assert result["sessions"]["web1"]["locked"] is True
    assert result["sessions"]["web1"]["spice"]["enabled"] is False


def test_qemu_without_spice_or_vnc_commands(session):
    script = qemu({"query-spice": Error("CommandNotFound", "The command query-spice has not been found")})
    result, servers = session({"web1": script}, vm="web1")
    assert not SENDING & set(servers["web1"].commands)
    assert result["sessions"]["web1"]["locked"] is False and result["changed"] is True  # the revocation


def test_second_run_with_the_same_revoke_time_changes_nothing(session, files):
    first, dummy = session({"web1": console(channels(3))}, vm="web1")
    inode = os.stat(str(files.revocations)).st_ino
    again, servers = session({"web1": console()}, vm="web1", revoke_time=first["revoke_time"])
    assert again["changed"] is False and again["revoked"] == {"users": {}, "vms": {}, "pairs": {}}
    assert os.stat(str(files.revocations)).st_ino == inode, "the file is not rewritten"
    assert "set_password" in servers["web1"].commands, "the ticket is always replaced, it cannot be read back"
    assert len(files.audit.read_text().splitlines()) == 1, "no change, no audit line"


def test_a_later_revoke_time_moves_the_entry_and_an_earlier_one_does_not(session, files):
    session({}, vm="web1", revoke_time=NOW - 100)
    later, dummy = session({}, vm="web1", revoke_time=NOW - 50)
    assert later["changed"] is True and revocations(files)["vms"] == {"web1": NOW - 50}
    earlier, dummy = session({}, vm="web1", revoke_time=NOW - 80)
    assert earlier["changed"] is False and revocations(files)["vms"] == {"web1": NOW - 50}


def test_connected_client_is_a_change_even_when_already_revoked(session):
    first, dummy = session({}, vm="web1")
    again, dummy = session({"web1": console(channels(1))}, vm="web1", revoke_time=first["revoke_time"])
    assert again["changed"] is True and again["revoked"] == {"users": {}, "vms": {}, "pairs": {}}


def test_vm_not_running_on_this_node_is_still_revoked(session, files):
    result, dummy = session({}, vm="web1")
    assert result["changed"] is True
    assert result["sessions"]["web1"] == dict(
        running=False, locked=False, ticket_file_removed=False,
        spice=dict(enabled=False, channels_before=0, channels_after=0, clients_before=0, clients_after=0),
        vnc=dict(enabled=False, clients_before=0, clients_after=0))
    assert "web1" in revocations(files)["vms"]


def test_stale_socket_nobody_listening_counts_as_not_running(session, short_tmp):
    stale = os.path.join(short_tmp, "web1.qmp")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(stale)                            # bound, never listening: ECONNREFUSED
        result, dummy = session({}, vm="web1")
    assert result["sessions"]["web1"]["running"] is False and not result.get("failed")


def test_explicit_socket(session, short_tmp):
    result, servers = session({"other-name": console(channels(1))}, vm="web1",
                              socket=os.path.join(short_tmp, "other-name.qmp"))
    assert result["sessions"]["web1"]["spice"]["channels_after"] == 0
    assert result["revoked"]["vms"] == {"web1": result["revoke_time"]}


# --- by person --------------------------------------------------------------------------------------

def test_user_revokes_the_persons_tokens_and_talks_to_no_vm(session, files, short_tmp):
    result, dummy = session({}, user="alice@example.org")
    assert result["changed"] is True and result["sessions"] == {}
    assert revocations(files) == {"users": {"alice@example.org": result["revoke_time"]}, "vms": {}, "pairs": {}}
    assert os.listdir(short_tmp) == []


def test_user_with_vms_cuts_those_vms_without_revoking_them(session, files):
    result, servers = session({"web1": console(channels(2)), "web2": console()}, user="alice", vms=["web1", "web2", "web3"])
    assert revocations(files) == {"users": {"alice": result["revoke_time"]}, "vms": {}, "pairs": {}}
    assert set(result["sessions"]) == {"web1", "web2", "web3"}
    assert result["sessions"]["web1"]["spice"]["channels_before"] == 2
    assert result["sessions"]["web3"]["running"] is False
    for name in ("web1", "web2"):
        assert sent(servers[name], "set_password")[0]["connected"] == "disconnect"


def test_user_already_revoked_and_nobody_connected_is_no_change(session):
    first, dummy = session({}, user="alice", revoke_time=NOW - 10)
    again, dummy = session({"web1": console()}, user="alice", vms=["web1"], revoke_time=NOW - 10)
    assert first["changed"] is True and again["changed"] is False


# --- check and diff mode ----------------------------------------------------------------------------

def test_check_mode_only_queries_and_writes_nothing(session, files):
    result, servers = session({"web1": console(channels(4), vnc=VNC)}, check_mode=True, diff=True, vm="web1")
    assert servers["web1"].commands == ["qmp_capabilities", "query-spice", "query-vnc"]
    assert result["changed"] is True
    assert result["sessions"]["web1"]["spice"]["channels_after"] == 4 and result["sessions"]["web1"]["locked"] is False
    assert result["revoked"] == {"users": {}, "vms": {"web1": result["revoke_time"]}, "pairs": {}}
    assert result["diff"]["before"] == "" and json.loads(result["diff"]["after"])["vms"] == {"web1": result["revoke_time"]}
    assert not files.revocations.parent.exists() and not files.audit.parent.exists()


def test_check_mode_predicts_no_change(session, files):
    first, dummy = session({}, vm="web1")
    text = files.revocations.read_text()
    result, servers = session({"web1": console()}, check_mode=True, vm="web1", revoke_time=first["revoke_time"])
    assert result["changed"] is False and "diff" not in result
    assert files.revocations.read_text() == text


def test_diff_mode_shows_the_file_change(session, files):
    session({}, user="bob", revoke_time=NOW - 60)
    result, dummy = session({}, diff=True, vm="web1", revoke_time=NOW - 30)
    diff = result["diff"]
    assert json.loads(diff["before"]) == {"users": {"bob": NOW - 60}, "vms": {}, "pairs": {}}
    assert json.loads(diff["after"]) == {"users": {"bob": NOW - 60}, "vms": {"web1": NOW - 30}, "pairs": {}}
    assert diff["after"] == files.revocations.read_text()
    assert diff["after_header"] == str(files.revocations)


# --- expiry of entries ------------------------------------------------------------------------------

def test_entries_whose_tokens_have_all_expired_are_dropped_on_the_next_write(session, files):
    files.revocations.parent.mkdir()
    old, recent = NOW - TOKEN_TTL_MAX - 5, NOW - TOKEN_TTL_MAX + 3600
    files.revocations.write_text(json.dumps({"users": {"old": old, "recent": recent}, "vms": {"gone": old}}))
    result, dummy = session({}, vm="web1")
    assert result["pruned"] == {"users": {"old": old}, "vms": {"gone": old}, "pairs": {}}
    assert revocations(files) == {"users": {"recent": recent}, "vms": {"web1": result["revoke_time"]}, "pairs": {}}


def test_pruning_alone_is_no_change(session, files):
    files.revocations.parent.mkdir()
    files.revocations.write_text(json.dumps({"users": {"old": NOW - TOKEN_TTL_MAX - 5}, "vms": {"web1": NOW}}))
    result, dummy = session({}, vm="web1", revoke_time=NOW)
    assert result["changed"] is False and result["pruned"] == {"users": {}, "vms": {}, "pairs": {}}


def test_a_revoke_time_older_than_any_token_revokes_nothing(session, files):
    result, dummy = session({}, vm="web1", revoke_time=NOW - TOKEN_TTL_MAX - 1)
    assert result["changed"] is False and not files.revocations.exists()


# --- refusals: named by option, before anything is sent or written -----------------------------------

@pytest.mark.parametrize("args, message", [
    (dict(vm="../etc"), "vm '../etc' is not a valid VM name"),
    (dict(vm="a" * 65), "is not a valid VM name"),
    (dict(user=""), "user must be a non-empty string"),
    (dict(user="a" * 65), "user must be at most 64 characters, got 65"),
    (dict(user="alice\nbob"), "user must not contain control characters or line breaks"),
    (dict(user="alice", vms=["ok", "bad/name"]), "vms: vm 'bad/name' is not a valid VM name"),
    (dict(vm="web1", revoke_time=NOW + 3600), "revoke_time %d lies 3" % (NOW + 3600)),
    (dict(vm="web1", revoke_time=-1), "revoke_time must be epoch seconds"),
    (dict(vm="web1", timeout=0), "timeout must be a positive number of seconds"),
    (dict(vm="web1", vms=["web2"]), "parameters are mutually exclusive: vm|vms"),
    (dict(), "one of the following is required: vm, user"),
    (dict(user="alice", socket="/run/x.qmp"), "missing parameter(s) required by 'socket': vm"),
    (dict(vm="web1", state="present"), "value of state must be one of: absent"),
])
def test_bad_options_change_nothing(session, files, args, message):
    result, servers = session({"web1": console(channels(1))}, **args)
    assert result["failed"] is True and message in result["msg"], result["msg"]
    assert not SENDING & set(servers["web1"].commands)
    assert not files.revocations.exists()


def test_corrupt_revocations_file_is_named_and_left_alone(session, files):
    files.revocations.parent.mkdir()
    files.revocations.write_text("{garbage")
    result, servers = session({"web1": console(channels(1))}, vm="web1")
    assert result["failed"] is True
    assert result["msg"].startswith("revocations_file %s: not valid JSON" % files.revocations)
    assert not SENDING & set(servers["web1"].commands)
    assert files.revocations.read_text() == "{garbage"


def test_spice_without_ticketing_fails_before_any_change(session, files):
    result, servers = session({"web1": console(channels(1), spice=dict(SPICE, auth="none"))}, vm="web1")
    assert result["failed"] is True and "vm web1: its SPICE console does not use tickets (auth=none" in result["msg"]
    assert not SENDING & set(servers["web1"].commands) and not files.revocations.exists()


def test_vnc_without_password_fails_before_any_change(session, files):
    result, servers = session({"web1": console(vnc=dict(VNC, auth="none"))}, user="alice", vms=["web1"])
    assert result["failed"] is True and "vm web1: its VNC console has no password authentication" in result["msg"]
    assert not SENDING & set(servers["web1"].commands) and not files.revocations.exists()


def test_unwritable_audit_log_fails_before_any_change(session, files, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result, servers = session({"web1": console(channels(1))}, vm="web1", audit_log=str(blocker / "tickets.log"))
    assert result["failed"] is True and result["msg"].startswith("audit_log %s/tickets.log cannot be written" % blocker)
    assert servers["web1"].commands == [], "checked before connecting"
    assert not files.revocations.exists()


def test_unusable_revocations_folder_fails_before_qemu_is_touched(session, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result, servers = session({"web1": console(channels(1))}, vm="web1",
                              revocations_file=str(blocker / "proxy-revoked.json"))
    assert result["failed"] is True and "revocations_file %s/proxy-revoked.json" % blocker in result["msg"]
    assert not SENDING & set(servers["web1"].commands)


def test_qmp_error_while_locking_is_reported_with_what_was_done(session, files):
    script = console(channels(1), **{"expire_password": Error("GenericError", "Parameter 'time' is invalid")})
    result, dummy = session({"web1": script}, vm="web1")
    assert result["failed"] is True and result["qmp_error_class"] == "GenericError" and result["vm"] == "web1"
    assert result["revoked"]["vms"] == {"web1": result["revoke_time"]}, "the revocation was written before"
    assert "web1" in revocations(files)["vms"]


def test_qmp_that_is_not_qemu_fails(session, files, fake_qmp, short_tmp):
    def garbage(peer):
        peer.send_raw(b"SSH-2.0-OpenSSH_9.2\r\n")
        peer.hold()
    fake_qmp(garbage, name="web1.qmp")
    result, dummy = session({}, vm="web1", timeout=2)
    assert result["failed"] is True and result["qmp_error"] == "QMPProtocolError"
    assert not files.revocations.exists()


# --- audit ------------------------------------------------------------------------------------------

def test_audit_line_says_what_was_cut_and_revoked(session, files):
    result, dummy = session({"web1": console(channels(3))}, user="alice", vms=["web1", "web9"])
    (line,) = files.audit.read_text().splitlines()
    record = json.loads(line)
    assert (record["event"], record["user"], record["vm"]) == ("console_session", "alice", None)
    assert record["revoked"] == {"users": {"alice": result["revoke_time"]}, "vms": {}, "pairs": {}}
    assert record["cut"] == {"web1": dict(spice_channels=3, spice_clients=1, vnc_clients_left=0)}
    assert stat.S_IMODE(os.stat(str(files.audit)).st_mode) == 0o640


def test_empty_audit_log_turns_it_off(session, files):
    result, dummy = session({}, vm="web1", audit_log="")
    assert result["changed"] is True and not files.audit.parent.exists()


# --- the _tickets helpers ---------------------------------------------------------------------------

def test_add_revocation_never_moves_back_and_validates_names():
    table = parse_revocations("")
    assert add_revocation(table, "vms", "web1", NOW, now=NOW) is True
    assert add_revocation(table, "vms", "web1", NOW, now=NOW) is False
    assert add_revocation(table, "vms", "web1", NOW - 1, now=NOW) is False
    assert add_revocation(table, "users", "alice@example.org", NOW - TOKEN_TTL_MAX, now=NOW) is False, "all expired"
    assert table == {"users": {}, "vms": {"web1": NOW}, "pairs": {}}
    for kind, name in (("vms", "a/b"), ("users", ""), ("groups", "x")):
        with pytest.raises(ValueError):
            add_revocation(table, kind, name, NOW)
    with pytest.raises(ValueError):
        add_revocation(table, "vms", "web1", True)


def test_prune_and_dump():
    table = {"users": {"a": NOW - TOKEN_TTL_MAX, "b": NOW - TOKEN_TTL_MAX + 1}, "vms": {}}
    assert prune_revocations(table, now=NOW) == {"users": {"a": NOW - TOKEN_TTL_MAX}, "vms": {}, "pairs": {}}
    text = dump_revocations({"vms": {"z": 2, "a": 1}})
    assert text == '{\n  "pairs": {},\n  "users": {},\n  "vms": {\n    "a": 1,\n    "z": 2\n  }\n}\n'
    assert parse_revocations(text) == {"users": {}, "vms": {"a": 1, "z": 2}, "pairs": {}}


def test_a_person_and_a_vm_revoke_that_persons_tokens_for_that_vm_only(session, files):
    result, servers = session({"web1": console(channels(4))}, user="alice", vm="web1", revoke_time=NOW - 10)
    assert result["changed"] is True
    assert revocations(files) == {"users": {}, "vms": {}, "pairs": {"alice__web1": NOW - 10}}
    assert result["sessions"] == {}, "the VM's console stays: other people keep theirs"
    assert servers["web1"].connections == 0
    assert result["tunnels"] == {"checked": False, "cut": [], "by_console": {"spice": 0, "vnc": 0, "serial": 0, "other": 0}}
    signer = proxy_signer(b"k" * 32)
    keys = proxy_keys_of("hv1", signer)
    table = json.loads(files.revocations.read_text())
    for user, vm, status in (("alice", "web1", "revoked"), ("alice", "web2", "ok"), ("bob", "web1", "ok")):
        token = mint_proxy_token(signer, user, vm, "spice", now=NOW - 20)
        assert verify_proxy_token(keys, token.username, token.token, now=NOW, revocations=table).status == status


@pytest.mark.parametrize("text, words", [
    ("{not json", "proxy_fact_file: %s cannot be read"),
    (json.dumps({"url": "http://hv1:3128"}), "is not a connect_proxy fact of this collection's version"),
])
def test_an_unusable_proxy_fact_is_refused_before_anything_changes(session, files, tmp_path, text, words):
    fact = tmp_path / "vmconsole_proxy.fact"
    fact.write_text(text)
    result, servers = session({"web1": console(channels(4))}, vm="web1", proxy_fact_file=str(fact))
    assert result["failed"] is True and (words % fact if "%s" in words else words) in result["msg"], result["msg"]
    assert not files.revocations.exists() and servers["web1"].commands == []


def test_the_cut_ticket_kept_for_a_migration_is_forgotten(session, short_tmp):
    """migrate.yml sets the kept ticket on the target node: a cut ticket must not come back that way."""
    kept = os.path.join(short_tmp, "web1.ticket")
    with open(kept, "w") as f:
        f.write(json.dumps({"protocol": "spice", "ticket": "Cut0Ticket", "expires": NOW + 600, "set": NOW}))
    dry, dummy = session({"web1": console(channels(4))}, check_mode=True, vm="web1")
    assert os.path.exists(kept) and dry["sessions"]["web1"]["ticket_file_removed"] is False
    result, dummy = session({"web1": console(channels(4))}, vm="web1")
    assert result["sessions"]["web1"]["ticket_file_removed"] is True and not os.path.exists(kept)
    again, dummy = session({"web1": console()}, vm="web1", revoke_time=result["revoke_time"])
    assert again["sessions"]["web1"]["ticket_file_removed"] is False


def test_check_mode_lists_the_tunnels_it_would_cut_from_squids_report(session, tmp_path, manager):
    """The proxy path of the module: the node's fact, squid's report, the selection, the result."""
    report = ("Connection: 0x1\n\tremote: 10.90.6.21:50000\n\tlocal: 10.89.6.11:3128\nuri hv1:62001\n"
              "username alice__web1\n\nConnection: 0x2\n\tremote: 10.90.6.22:50001\n\tlocal: 10.89.6.11:3128\n"
              "uri hv1:61001\nusername bob__web1\n")
    port, seen = manager(b"HTTP/1.1 200 OK\r\n\r\n" + report.encode())
    password_file = tmp_path / "squid-manager.conf"
    password_file.write_text("cachemgr_passwd Mgr-Pw active_requests\n")
    fact = tmp_path / "vmconsole_proxy.fact"
    fact.write_text(json.dumps(dict(name="hv1", listen_address="127.0.0.1", port=port, manager_file=str(password_file),
                                    credentials_ttl=10,
                                    console_ports={"spice": [61000, 61999], "serial": [62000, 62999]})))
    result, dummy = session({}, check_mode=True, user="alice", proxy_fact_file=str(fact))
    assert result["tunnels"] == {"checked": True, "by_console": {"spice": 0, "vnc": 0, "serial": 1, "other": 0},
                                 "cut": [{"user": "alice", "vm": "web1", "destination": "hv1:62001",
                                          "console": "serial", "client": "10.90.6.21:50000"}]}
    assert "Mgr-Pw" not in json.dumps(result) and "squid-internal-mgr/active_requests" in seen[0]
