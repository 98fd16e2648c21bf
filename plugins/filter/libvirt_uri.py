# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Filters ``libvirt_uri`` (parse a libvirt connection URI) and ``libvirt_uri_build``.

The documentation of each filter is in ``libvirt_uri.yml`` and ``libvirt_uri_build.yml`` next
to this file; the logic is in ``module_utils/_libvirt_uri.py``.
"""

from __future__ import annotations

from ansible.errors import AnsibleFilterError
from ansible.utils.display import Display

from ansible_collections.vmconsole.secure.plugins.module_utils._libvirt_uri import (
    LibvirtURIError, build_libvirt_uri, parse_libvirt_uri, unknown_param_warnings,
)

display = Display()


def _warn(parsed):
    for text in unknown_param_warnings(parsed):
        display.warning(text)


def libvirt_uri(uri):
    """Parse a libvirt connection URI into its parts (see libvirt_uri.yml)."""
    try:
        parsed = parse_libvirt_uri(uri)
    except LibvirtURIError as exc:
        raise AnsibleFilterError(str(exc)) from None
    _warn(parsed)
    return parsed


def libvirt_uri_build(parts):
    """Build the canonical libvirt connection URI of a dict of parts (see libvirt_uri_build.yml)."""
    try:
        uri = build_libvirt_uri(parts)
    except LibvirtURIError as exc:
        raise AnsibleFilterError("libvirt_uri_build: %s" % exc) from None
    _warn(parse_libvirt_uri(uri))
    return uri


class FilterModule:
    """libvirt connection URIs."""

    def filters(self):
        return {
            "libvirt_uri": libvirt_uri,
            "libvirt_uri_build": libvirt_uri_build,
        }
