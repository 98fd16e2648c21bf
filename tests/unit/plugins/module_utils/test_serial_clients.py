# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""module_utils/_serial_clients.py: the identities of QEMU's serial console list, its object,
its systemd line, and the live change over QMP (against a fake QMP server)."""

from __future__ import annotations

import json

import pytest

from ansible_collections.vmconsole.secure.plugins.module_utils import _serial_clients as sc
from ansible_collections.vmconsole.secure.plugins.module_utils._qmp import QMPClient, QMPCommandError
from ansible_collections.vmconsole.secure.tests.unit.fakeqmp import Error, qemu


# --- Identities: what GnuTLS can print, or why not ---------------------------------------------

@pytest.mark.parametrize("identity", [
    "O=vmconsole.secure,CN=alice",
    "C=XX,O=vmconsole test,CN=vmc-test-node",
    "CN=alice",
    # As GnuTLS escapes (measured with QEMU 7.2's trace of the identity it compared).
    'O=Foo\\, Inc. \\+ \\"x\\",CN=w#\\;\\<\\>',
    "O=a=b,CN=\\ lead and trail\\ ",
    "CN=\\#hash,OU=x\\5cy",
    "OU=a+CN=b,O=multi-valued",
    "2.5.4.3=alice,UID=u1,emailAddress=a@example.org",
    "O=vmconsole.secure,CN=Zoë",
    "O=x,1.2.3.4=#0403616263",
])
def test_identities_gnutls_can_print(identity):
    assert sc.identity_error(identity) is None


@pytest.mark.parametrize("identity, reason", [
    ("", "it is empty"),
    (7, "it is a int, not a string"),
    ("O=x, CN=alice", "' CN=alice' has a space around the attribute name (GnuTLS writes none after ',')"),
    ("O=x,CN=alice\n", "it contains a control character"),
    ("alice", "'alice' is not TYPE=value"),
    ("O=x,,CN=a", "'' is not TYPE=value"),
    ("O=x,CN=", "in 'CN=', a value is empty"),
    ("O=x,CN=a\"b", "in 'CN=a\"b', '\"' inside a value must be escaped as '\\\"'"),
    ("O=x;CN=a", "in 'O=x;CN=a', ';' inside a value must be escaped"),
    ("O=x,CN=a\\q", "in 'CN=a\\\\q', '\\' is followed by 'q'"),   # the pair's repr doubles the backslash
    ("O=x,CN=a ", "in 'CN=a ', a value ends with a space"),
    ("O=x,CN= a", "in 'CN= a', a value starts with ' '"),
    ("O=x,CN=#x", "in 'CN=#x', a value starts with '#'"),
    ("O=x,C N=a", "'C N' is not an attribute name"),
    ("O" * 1100 + "=x", "it is longer than 1024 characters"),
])
def test_identities_that_can_never_match(identity, reason):
    found = sc.identity_error(identity)
    assert found is not None and found.startswith(reason), found


def test_list_errors_name_the_variable_the_index_and_the_reason():
    assert sc.identities_errors("v", ["O=x,CN=a", "O=x, CN=b", "O=x,CN=a"]) == [
        "v[1] \"O=x, CN=b\" is not a client certificate subject as QEMU compares it: ' CN=b' has a space around "
        "the attribute name (GnuTLS writes none after ','). Write it as GnuTLS prints it, in the certificate's "
        "order, e.g. 'O=vmconsole.secure,CN=alice'",
        "v[2] \"O=x,CN=a\" is also v[0]",
    ]
    assert sc.identities_errors("v", "O=x,CN=a") == [
        "v must be a list of client certificate subjects (e.g. 'O=vmconsole.secure,CN=alice'), not str"]
    assert sc.identities_errors("v", []) == []


# --- The object and its systemd line -----------------------------------------------------------

def test_the_object_denies_unless_listed():
    assert sc.authz_object(["O=x,CN=a", "O=x,CN=b"]) == {
        "qom-type": "authz-list", "id": "vmconsole-serial-authz", "policy": "deny",
        "rules": [{"match": "O=x,CN=a", "policy": "allow", "format": "exact"},
                  {"match": "O=x,CN=b", "policy": "allow", "format": "exact"}]}
    assert sc.authz_object([])["rules"] == []
    assert sc.authz_object_json(["O=x,CN=Zoë"]) == (
        '{"qom-type":"authz-list","id":"vmconsole-serial-authz","policy":"deny",'
        '"rules":[{"match":"O=x,CN=Zoë","policy":"allow","format":"exact"}]}')


def systemd_unquote(word):
    """What systemd's Environment= makes of one quoted word: C escapes undone, then %% -> %."""
    assert word[0] == word[-1] == '"'
    out, i, body = "", 0, word[1:-1]
    while i < len(body):
        if body[i] == "\\":
            out += {"\\": "\\", '"': '"'}[body[i + 1]]
            i += 2
        else:
            assert body[i] != '"', "an unescaped quote ends the word"
            out += body[i]
            i += 1
    return out.replace("%%", "%")


def test_the_systemd_line_gives_qemu_exactly_the_object():
    identity = 'O=Foo\\, Inc. \\"x\\" 100%,CN=a$b'
    line = sc.systemd_environment(sc.AUTHZ_ENV, sc.authz_object_json([identity]))
    name, value = systemd_unquote(line).split("=", 1)
    assert name == "VMCONSOLE_SERIAL_AUTHZ"
    assert json.loads(value)["rules"][0]["match"] == identity
    assert "%%" in line and "$b" in line          # specifiers doubled; $ has no meaning in Environment=
    with pytest.raises(ValueError):
        sc.systemd_environment("X", "a\nb")


def test_identities_from_rules_only_reads_this_modules_rules():
    assert sc.identities_from_rules(sc.authz_rules(["a=b", "c=d"])) == ["a=b", "c=d"]
    assert sc.identities_from_rules([{"match": "a=b", "policy": "allow"}]) == ["a=b"]   # exact is the default
    assert sc.identities_from_rules([{"match": "a=*", "policy": "allow", "format": "glob"}]) is None
    assert sc.identities_from_rules([{"match": "a=b", "policy": "deny", "format": "exact"}]) is None
    assert sc.identities_from_rules(None) is None


# --- The live change over QMP ------------------------------------------------------------------

class AuthzList:
    """The QOM properties of a fake authz-list object, answered over fake QMP."""

    def __init__(self, rules, policy="deny", exists=True):
        self.props = {"rules": rules, "policy": policy}
        self.exists = exists

    def table(self):
        def qom_get(peer, request):
            args = request["arguments"]
            if not self.exists or args["path"] != "/objects/vmconsole-serial-authz":
                peer.error(request, "DeviceNotFound", "Device '%s' not found" % args["path"])
            else:
                peer.reply(request, self.props[args["property"]])

        def qom_set(peer, request):
            args = request["arguments"]
            self.props[args["property"]] = args["value"]
            peer.reply(request, {})

        return {"qom-get": qom_get, "qom-set": qom_set}


def connected(fake_qmp, authz):
    server = fake_qmp(qemu(authz.table()))
    client = QMPClient(server.path, timeout=5)
    client.connect()
    return server, client


def test_a_changed_list_is_set_in_one_step(fake_qmp):
    authz = AuthzList(sc.authz_rules(["O=x,CN=a"]))
    server, client = connected(fake_qmp, authz)
    with client:
        result = sc.apply_identities(client, ["O=x,CN=b"])
    assert result == {"changed": True, "before": ["O=x,CN=a"], "after": ["O=x,CN=b"]}
    assert authz.props["rules"] == sc.authz_rules(["O=x,CN=b"])
    assert [r["execute"] for r in server.requests].count("qom-set") == 1


def test_the_same_list_changes_nothing_and_check_mode_only_reads(fake_qmp):
    authz = AuthzList(sc.authz_rules(["O=x,CN=a"]))
    server, client = connected(fake_qmp, authz)
    with client:
        assert sc.apply_identities(client, ["O=x,CN=a"])["changed"] is False
        assert sc.apply_identities(client, [], check_mode=True) == {"changed": True, "before": ["O=x,CN=a"], "after": []}
    assert "qom-set" not in server.commands
    assert authz.props["rules"] == sc.authz_rules(["O=x,CN=a"])


def test_a_list_someone_else_opened_is_closed_again(fake_qmp):
    authz = AuthzList([{"match": "*", "policy": "allow", "format": "glob"}], policy="allow")
    _server, client = connected(fake_qmp, authz)
    with client:
        result = sc.apply_identities(client, ["O=x,CN=a"])
    assert result == {"changed": True, "before": None, "after": ["O=x,CN=a"]}
    assert authz.props == {"rules": sc.authz_rules(["O=x,CN=a"]), "policy": "deny"}


def test_a_guest_without_the_list_is_reported(fake_qmp):
    _server, client = connected(fake_qmp, AuthzList([], exists=False))
    with client, pytest.raises(sc.AuthzMissing, match="not found"):
        sc.apply_identities(client, ["O=x,CN=a"])


def test_other_qmp_errors_pass_through(fake_qmp):
    server = fake_qmp(qemu({"qom-get": Error("GenericError", "boom")}))
    with QMPClient(server.path, timeout=5) as client, pytest.raises(QMPCommandError, match="boom"):
        sc.apply_identities(client, [])


@pytest.mark.parametrize("identity, names", [
    ("O=vmconsole.secure,CN=alice", ["alice"]),
    ("CN=a\\,b,O=x", ["a,b"]),
    ("CN=Zo\\C3\\A9+UID=1,O=x", ["Zoé"]),
    ("cn=bob,2.5.4.3=carol", ["bob", "carol"]),
    ("O=CN=x,OU=y", []),
])
def test_common_names_of_an_identity(identity, names):
    assert sc.common_names(identity) == names
