# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Filter ``parse_vv``: the ``[virt-viewer]`` keys of a ``.vv`` file (see parse_vv.yml).
The logic is ``module_utils/_vv.py``, next to the collection's one ``.vv`` writer."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.vmconsole.secure.plugins.module_utils._vv import parse_vv as _parse_vv


def parse_vv(text):
    """The [virt-viewer] keys of a .vv text (see parse_vv.yml); errors never hold a value."""
    try:
        return _parse_vv(text)
    except ValueError as exc:
        raise AnsibleFilterError("parse_vv: %s" % exc) from None


class FilterModule:
    """virt-viewer connection files."""

    def filters(self):
        return {"parse_vv": parse_vv}
