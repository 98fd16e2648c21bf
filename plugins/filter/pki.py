# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Filters ``pki_days_errors``, ``pki_sans``, ``pki_host_errors`` and ``pki_outdated``: the decisions of the ``pki``
role (see the ``.yml`` file of each). The logic is in ``module_utils/_pki.py``.
"""

from __future__ import annotations

from ansible_collections.vmconsole.secure.plugins.module_utils import _pki


def pki_days_errors(ca_days, cert_days, renew_days):
    """What is wrong with the validity periods (see pki_days_errors.yml)."""
    return _pki.days_errors(ca_days, cert_days, renew_days)


def pki_sans(candidates):
    """Each candidate subjectAltName classified (see pki_sans.yml)."""
    return _pki.sans(candidates)


def pki_host_errors(checked, key_group, groups):
    """What is wrong with a host's names and key group (see pki_host_errors.yml)."""
    return _pki.host_errors(checked, key_group, groups)


def pki_outdated(files, installed, wanted_attrs, wanted_sha256):
    """The installed files that differ from what they must be (see pki_outdated.yml)."""
    return _pki.outdated(files, installed, wanted_attrs, wanted_sha256)


class FilterModule:
    """The pki role's decisions."""

    def filters(self):
        return {"pki_days_errors": pki_days_errors, "pki_sans": pki_sans, "pki_outdated": pki_outdated,
                "pki_host_errors": pki_host_errors}
