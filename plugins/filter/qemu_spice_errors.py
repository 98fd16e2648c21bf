# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Filter ``qemu_spice_errors``: what is wrong with the qemu_spice role's input on a host (see
qemu_spice_errors.yml). The logic is in ``module_utils/_qemu_spice.py``.
"""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.vmconsole.secure.plugins.module_utils._qemu_spice import input_errors


def qemu_spice_errors(settings, host):
    """The qemu_spice role's input errors on one host (see qemu_spice_errors.yml)."""
    if not isinstance(settings, dict) or not isinstance(host, dict):
        raise AnsibleFilterError("qemu_spice_errors: the input and host must be dicts")
    return input_errors(settings, host)


class FilterModule:
    """The qemu_spice role's input checks."""

    def filters(self):
        return {"qemu_spice_errors": qemu_spice_errors}
