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


def node_subjects(hosts, organization):
    """The host certificate subject the pki role gives each of ``hosts`` (O=organization, CN=the inventory name),
    in the order ``hosts`` has them: the identities of those nodes as QEMU compares a TLS client (see
    node_subjects.yml)."""
    if not isinstance(hosts, (list, tuple)) or not all(isinstance(host, str) and host for host in hosts):
        raise AnsibleFilterError("node_subjects: give a list of inventory host names, not %r" % (hosts,))
    if not isinstance(organization, str) or not organization:
        raise AnsibleFilterError("node_subjects: the organization must be a non-empty string (pki_organization)")
    try:
        return [subject_from_pairs([("O", organization), ("CN", host)]) for host in hosts]
    except ValueError as exc:
        raise AnsibleFilterError("node_subjects: %s" % exc) from None


class FilterModule:
    """Certificate subjects in the form spice-gtk and QEMU compare."""

    def filters(self):
        return {"host_subject": host_subject, "node_subjects": node_subjects}
