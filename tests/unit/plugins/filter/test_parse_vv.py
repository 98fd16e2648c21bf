# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The parse_vv filter: module_utils/_vv.py's reader, with Ansible's error type (the reader's own
behaviour is tested in tests/unit/plugins/module_utils/test_vv.py)."""

from __future__ import annotations

import pytest

from ansible.errors import AnsibleFilterError
from ansible.utils.unsafe_proxy import AnsibleUnsafeText

from ansible_collections.vmconsole.secure.plugins.filter.parse_vv import FilterModule
from ansible_collections.vmconsole.secure.plugins.module_utils._vv import render_vv

parse_vv = FilterModule().filters()["parse_vv"]


def test_reads_a_rendered_vv_as_a_lookup_returns_it():
    text = render_vv(protocol="spice", host="hv1", password="T1cket", tls_port=61001,
                     proxy="http://carol__vm1:v1_tok@hv1:3128")
    values = parse_vv(AnsibleUnsafeText(text))
    assert values["password"] == "T1cket"
    assert values["proxy"] == "http://carol__vm1:v1_tok@hv1:3128"
    assert values["tls-port"] == "61001"


@pytest.mark.parametrize("text, message", [
    ("[virt-viewer]\npassword=T1cket\npassword=T2cket\n", "parse_vv: .vv sets 'password' more than once"),
    ("password=T1cket\n", "parse_vv: .vv line 1 comes before the first group"),
    (None, "parse_vv: .vv must be text, got NoneType"),
])
def test_errors_are_filter_errors_without_the_secret(text, message):
    with pytest.raises(AnsibleFilterError, match=message) as info:
        parse_vv(text)
    assert "T1cket" not in str(info.value) and "T2cket" not in str(info.value)
