# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Filter ``preflight_report``: every host's preflight errors, each line naming its host.

Every role of the collection notes what is wrong on each host in a private variable; then one
task looks at all hosts of the play, so bad input anywhere stops every host at the same task.
This is that report, written once (see preflight_report.yml).
"""

from __future__ import annotations

from ansible.errors import AnsibleFilterError


def preflight_report(hosts, hostvars, variable):
    """``host: error`` for every error of every host in ``hosts`` (a host without the variable has none)."""
    if not isinstance(variable, str) or not variable:
        raise AnsibleFilterError("preflight_report: variable must name the variable that holds a host's errors")
    out = []
    for host in hosts:
        errors = hostvars[host].get(variable) or []
        if isinstance(errors, str):
            errors = [errors]
        out.extend("%s: %s" % (host, error) for error in errors)
    return out


class FilterModule:
    """The cross-host preflight report."""

    def filters(self):
        return {"preflight_report": preflight_report}
