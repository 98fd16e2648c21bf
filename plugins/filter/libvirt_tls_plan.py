# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Filters ``libvirt_tls_plan`` and ``libvirt_tls_sasl_plan``: the decisions of the ``libvirt_tls``
role (see the ``.yml`` file of each). The logic is in ``module_utils/_libvirt_tls.py``.
"""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.vmconsole.secure.plugins.module_utils import _libvirt_tls


def libvirt_tls_plan(settings, missing_pki=(), pki_dry_run=False, units_show=None):
    """The libvirt_tls role's checks and the socket units' state (see libvirt_tls_plan.yml)."""
    if not isinstance(settings, dict):
        raise AnsibleFilterError("libvirt_tls_plan: the input must be a dict of the role's variables")
    return {"errors": _libvirt_tls.host_errors(settings, list(missing_pki or []), bool(pki_dry_run)),
            "units": _libvirt_tls.units(units_show)}


def libvirt_tls_sasl_plan(users, probe_output):
    """The SASL users of a realm to set and remove (see libvirt_tls_sasl_plan.yml). Never shows a password."""
    if not isinstance(users, (list, tuple)) or not all(isinstance(u, dict) and "name" in u for u in users):
        raise AnsibleFilterError("libvirt_tls_sasl_plan: the input must be the realm's checked users")
    return _libvirt_tls.sasl_plan(list(users), probe_output)


class FilterModule:
    """The libvirt_tls role's decisions."""

    def filters(self):
        return {"libvirt_tls_plan": libvirt_tls_plan, "libvirt_tls_sasl_plan": libvirt_tls_sasl_plan}
