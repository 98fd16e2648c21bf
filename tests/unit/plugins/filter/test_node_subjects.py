# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""node_subjects: the subjects the pki role gives the nodes, as QEMU compares a TLS client."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.vmconsole.secure.plugins.filter.host_subject import FilterModule, host_subject, node_subjects
from ansible_collections.vmconsole.secure.plugins.module_utils._serial_clients import identities_errors


def test_one_subject_per_host_in_order_as_the_pki_role_writes_them():
    subjects = node_subjects(["hv2", "hv1"], "vmconsole.secure")
    assert subjects == ["O=vmconsole.secure,CN=hv2", "O=vmconsole.secure,CN=hv1"]
    # The same text host_subject writes for the pki role's wanted subject, and a valid serial client identity.
    assert subjects[1] == host_subject([["O", "vmconsole.secure"], ["CN", "hv1"]])
    assert identities_errors("qemu_vm_serial_relays", subjects) == []
    assert FilterModule().filters()["node_subjects"] is node_subjects


def test_special_characters_are_escaped():
    assert node_subjects(["hv1"], "Example, Inc.") == ["O=Example\\, Inc.,CN=hv1"]


@pytest.mark.parametrize("hosts, organization", [("hv1", "x"), ([""], "x"), ([1], "x"), (["hv1"], ""), (["hv1"], None)])
def test_bad_input_is_refused(hosts, organization):
    with pytest.raises(AnsibleFilterError, match="node_subjects: "):
        node_subjects(hosts, organization)
