# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Filter ``qemu_migration_errors``: why QEMU cannot move a guest between two nodes (see
qemu_migration_errors.yml). The logic is in ``module_utils/_qemu_binary.py``, the one place that knows what each
QEMU version takes.
"""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.vmconsole.secure.plugins.module_utils._qemu_binary import migration_errors


def qemu_migration_errors(vm, source, target):
    """The reasons ``vm`` cannot migrate from ``source`` to ``target`` (see qemu_migration_errors.yml)."""
    for what, end in (("source", source), ("target", target)):
        if not isinstance(end, dict) or not all(isinstance(end.get(k), str) and end.get(k) for k in ("host", "machine")):
            raise AnsibleFilterError("qemu_migration_errors: %s must be a dict with host, machine (and version), not %r"
                                     % (what, end))
    return migration_errors(str(vm), source, target)


class FilterModule:
    """Migration checks between QEMU versions."""

    def filters(self):
        return {"qemu_migration_errors": qemu_migration_errors}
