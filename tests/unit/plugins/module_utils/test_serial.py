# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The serial console's client command: exact argv, one shell line, no secret, bad input named."""

from __future__ import annotations

import shlex

import pytest

from ansible_collections.vmconsole.secure.plugins.module_utils._serial import (
    DEFAULT_PROXY_PORT, DEFAULT_TOKEN_ENV, serial_console_argv, serial_console_command,
)
from ansible_collections.vmconsole.secure.plugins.module_utils._tickets import proxy_username

USERNAME = proxy_username("alice@example.org", "web1.prod")          # alice_40example_2Eorg__web1_2Eprod
BASE = dict(node="hv1.example.org", port=62000, proxy_username=USERNAME,
            cert_file="/home/alice/.vmconsole/pki/clientcert.pem", key_file="/home/alice/.vmconsole/pki/clientkey.pem",
            ca_file="/home/alice/.vmconsole/pki/cacert.pem")


def args(**changes):
    out = dict(BASE)
    out.update(changes)
    return out


def test_argv_is_the_documented_command():
    assert serial_console_argv(**BASE) == [
        "openssl", "s_client", "-quiet",
        "-proxy", "hv1.example.org:3128",
        "-proxy_user", "alice_40example_2Eorg__web1_2Eprod",
        "-proxy_pass", "env:VMC_PROXY_TOKEN",
        "-connect", "hv1.example.org:62000",
        "-cert", "/home/alice/.vmconsole/pki/clientcert.pem",
        "-key", "/home/alice/.vmconsole/pki/clientkey.pem",
        "-CAfile", "/home/alice/.vmconsole/pki/cacert.pem",
        "-verify_return_error", "-verify_hostname", "hv1.example.org",
    ]
    assert DEFAULT_PROXY_PORT == 3128 and DEFAULT_TOKEN_ENV == "VMC_PROXY_TOKEN"


def test_command_is_one_shell_line_that_splits_back_to_the_argv():
    line = serial_console_command(**BASE)
    assert "\n" not in line
    assert line == (
        "openssl s_client -quiet -proxy hv1.example.org:3128 -proxy_user alice_40example_2Eorg__web1_2Eprod "
        "-proxy_pass env:VMC_PROXY_TOKEN -connect hv1.example.org:62000 "
        "-cert /home/alice/.vmconsole/pki/clientcert.pem -key /home/alice/.vmconsole/pki/clientkey.pem "
        "-CAfile /home/alice/.vmconsole/pki/cacert.pem -verify_return_error -verify_hostname hv1.example.org"
    )
    odd = args(cert_file="/home/al ice/my cert's.pem", openssl="/opt/openssl 3/bin/openssl")
    assert shlex.split(serial_console_command(**odd)) == serial_console_argv(**odd)
    assert "'/home/al ice/my cert'\"'\"'s.pem'" in serial_console_command(**odd)


def test_proxy_host_port_and_token_variable():
    argv = serial_console_argv(**args(proxy_host="10.90.2.11", proxy_port=8443, token_env="TOKEN_WEB1"))
    assert argv[argv.index("-proxy") + 1] == "10.90.2.11:8443"
    assert argv[argv.index("-proxy_pass") + 1] == "env:TOKEN_WEB1"
    # The CONNECT target and the verified name stay the node's name.
    assert argv[argv.index("-connect") + 1] == "hv1.example.org:62000"
    assert argv[-2:] == ["-verify_hostname", "hv1.example.org"]


@pytest.mark.parametrize("node, target, check", [
    ("10.89.2.11", "10.89.2.11:62000", ["-verify_ip", "10.89.2.11"]),
    ("fd00::11", "[fd00::11]:62000", ["-verify_ip", "fd00::11"]),
    ("hv1", "hv1:62000", ["-verify_hostname", "hv1"]),
])
def test_an_ip_address_is_verified_as_one(node, target, check):
    argv = serial_console_argv(**args(node=node))
    assert argv[argv.index("-connect") + 1] == target
    assert argv[argv.index("-proxy") + 1] == target.rsplit(":", 1)[0] + ":3128"
    assert argv[-2:] == check


def test_token_from_a_file():
    argv = serial_console_argv(**args(token_file="/home/alice/.vmconsole/tokens/web1.prod"))
    assert argv[argv.index("-proxy_pass") + 1] == "file:/home/alice/.vmconsole/tokens/web1.prod"
    with pytest.raises(ValueError, match="^token_file must be"):
        serial_console_argv(**args(token_file=""))


def test_no_secret_in_the_command():
    line = serial_console_command(**BASE)
    assert "pass:" not in line and "-proxy_pass env:" in line


@pytest.mark.parametrize("change, name", [
    (dict(node=""), "node"),
    (dict(node="hv1 -ign_eof"), "node"),
    (dict(node="-hv1"), "node"),
    (dict(node="hv1..example"), "node"),
    (dict(node=None), "node"),
    (dict(proxy_host="proxy/x"), "proxy_host"),
    (dict(port=0), "port"),
    (dict(port=65536), "port"),
    (dict(port="62000"), "port"),
    (dict(port=True), "port"),
    (dict(proxy_port=-1), "proxy_port"),
    (dict(proxy_username="alice"), "proxy_username"),
    (dict(proxy_username="alice@example.org__web1"), "proxy_username"),
    (dict(proxy_username="alice__web1 -debug"), "proxy_username"),
    (dict(token_env="VMC TOKEN"), "token_env"),
    (dict(token_env="1TOKEN"), "token_env"),
    (dict(token_env="pass:secret"), "token_env"),
    (dict(cert_file=""), "cert_file"),
    (dict(key_file="-engine"), "key_file"),
    (dict(ca_file="/a\nb"), "ca_file"),
])
def test_bad_input_names_the_argument(change, name):
    with pytest.raises(ValueError, match=r"^%s must be" % name):
        serial_console_argv(**args(**change))
    with pytest.raises(ValueError, match=r"^%s must be" % name):
        serial_console_command(**args(**change))


def test_every_argument_is_keyword_only():
    with pytest.raises(TypeError):
        serial_console_argv("hv1", 62000)    # pylint: disable=too-many-function-args,missing-kwoa
