# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The filter qemu_migration_errors (playbooks/migrate.yml's check of a mixed cluster)."""

from __future__ import annotations

import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.vmconsole.secure.plugins.filter.qemu_migration import FilterModule, qemu_migration_errors


def test_the_filter_refuses_what_qemu_cannot_migrate():
    source = {"host": "hv1", "machine": "pc-i440fx-7.2-machine", "version": "7.2.22"}
    assert qemu_migration_errors("vm1", source, {"host": "hv2", "machine": "pc-i440fx-7.2", "version": "10.0.13"}) == []
    (msg,) = qemu_migration_errors("vm1", source, {"host": "hv2", "machine": "pc", "version": "10.0.13"})
    assert msg.startswith("vm1 runs machine type pc-i440fx-7.2 on hv1 (QEMU 7.2.22), but hv2 would start it as "
                          "pc-i440fx-10.0")


@pytest.mark.parametrize("target", [None, {}, {"host": "hv2"}, {"host": "", "machine": "pc"}])
def test_the_filter_needs_host_and_machine(target):
    with pytest.raises(AnsibleFilterError, match="qemu_migration_errors: target must be a dict with host, machine"):
        qemu_migration_errors("vm1", {"host": "hv1", "machine": "pc"}, target)


def test_the_filter_is_registered():
    assert FilterModule().filters() == {"qemu_migration_errors": qemu_migration_errors}
