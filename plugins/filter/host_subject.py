# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Filter ``host_subject``: a certificate's subject as a ``.vv`` host-subject (see host_subject.yml).
The logic is ``module_utils/_subject.py``, the collection's one subject writer."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.vmconsole.secure.plugins.module_utils._subject import subject_from_pairs, subject_from_pem


def host_subject(value):
    """The subject of a PEM certificate, or of (name, value) pairs (see host_subject.yml)."""
    try:
        if isinstance(value, (str, bytes)):
            return subject_from_pem(value)
        if isinstance(value, (list, tuple)) and all(isinstance(p, (list, tuple)) and len(p) == 2 for p in value):
            return subject_from_pairs([(str(name), str(text)) for name, text in value])
    except ValueError as exc:
        raise AnsibleFilterError("host_subject: %s" % exc) from None
    raise AnsibleFilterError("host_subject: give a PEM certificate or a list of [name, value] pairs, not %s"
                             % type(value).__name__)


class FilterModule:
    """Certificate subjects in the form spice-gtk and QEMU compare."""

    def filters(self):
        return {"host_subject": host_subject}
