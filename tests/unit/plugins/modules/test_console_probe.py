# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""console_probe's options for VNC and VeNCrypt, run in-process against fake servers."""

from __future__ import annotations

import functools
import re

import pytest

from ansible_collections.vmconsole.secure.plugins.modules import console_probe
from ansible_collections.vmconsole.secure.tests.unit import fakespice
from ansible_collections.vmconsole.secure.tests.unit.plugins.module_utils.test_vnc import serve
from ansible_collections.vmconsole.secure.tests.unit.plugins.module_utils.test_vnc_vencrypt import FakeVeNCrypt

PASSWORD = "pw,=Vx8q"


@pytest.fixture
def tls(tmp_path):
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    ca = fakespice.make_ca()
    key, cert = fakespice.issue_cert(ca, x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "node1")]))
    ca_file = tmp_path / "ca.pem"
    ca_file.write_text(fakespice.pem(ca[1]))
    return dict(ca_file=str(ca_file), context=fakespice.server_context(str(tmp_path), key, cert))


@pytest.fixture
def vencrypt(tls):
    yield from serve(functools.partial(FakeVeNCrypt, tls["context"]))


def test_sasl_probe_through_the_module(run_module, vencrypt, tls):
    server = vencrypt(users={"alice": PASSWORD})
    args = dict(protocol="vnc", port=server.port, ticket=PASSWORD, vnc_sasl_user="alice", ca_file=tls["ca_file"],
                host_subject="CN=node1", expect="accepted")
    result = run_module(console_probe.main, args, check_mode=True)
    assert (result["status"], result["changed"], result["vencrypt_subtype"]) == ("accepted", False, 263)
    assert (result["sasl_mechanism"], result["subject"], result["link_result"]) == ("SCRAM-SHA-256", "CN=node1", None)
    assert result["security_types"] == [19]
    assert PASSWORD not in str(result)

    result = run_module(console_probe.main, dict(args, ticket=PASSWORD + "x"))
    assert result["failed"] and result["status"] == "refused"
    assert result["msg"].startswith("console probe: expected status accepted, got refused:")
    assert PASSWORD not in str(result)


def test_x509vnc_with_ca_pem(run_module, vencrypt, tls):
    server = vencrypt(subtypes=(261,), vnc_password="Vk3nP8qz")
    with open(tls["ca_file"]) as f:
        ca_pem = f.read()
    result = run_module(console_probe.main, dict(protocol="vnc", port=server.port, ticket="Vk3nP8qz", ca_pem=ca_pem))
    assert (result["status"], result["vencrypt_subtype"], result["sasl_mechanism"]) == ("accepted", 261, None)


@pytest.mark.parametrize("args, message", [
    (dict(protocol="vnc", proxy="http://h:3128"), "^proxy is SPICE-only"),
    (dict(protocol="vnc", vnc_sasl_user=""), "^vnc_sasl_user must not be empty"),
    (dict(vnc_sasl_user="alice"), "^vnc_sasl_user is VNC-only"),
    (dict(client_cert="/c.pem", client_key="/k.pem"), "^client_cert is VNC-only"),
    (dict(protocol="vnc", client_cert="/c.pem"), "parameters are required together: client_cert, client_key"),
])
def test_bad_option_combinations(run_module, args, message):
    result = run_module(console_probe.main, dict(dict(port=5901, ticket="Tk7-unused"), **args))
    assert result["failed"]
    assert re.search(message, result["msg"]), result["msg"]


def test_unreadable_ca_file_fails_the_task(run_module, vencrypt, tmp_path):
    server = vencrypt(subtypes=(261,), vnc_password="x")
    result = run_module(console_probe.main, dict(protocol="vnc", port=server.port, ticket="x",
                                                 ca_file=str(tmp_path / "missing.pem")))
    assert result["failed"] and result["msg"].startswith("ca_file %s cannot be read" % (tmp_path / "missing.pem"))


def test_plain_vnc_does_not_need_a_ca(run_module):
    with fakespice.FakeVNCServer(password="Vk3nP8qz") as server:
        result = run_module(console_probe.main, dict(protocol="vnc", port=server.port, ticket="Vk3nP8qz",
                                                     ca_file="/nonexistent/ca.pem"))
    assert (result["status"], result["vencrypt_subtype"], result["subject"]) == ("accepted", None, None)
