# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""A role's settings as its filter gets them, from the role's own files (unit tests of the roles' filters)."""

from __future__ import annotations

import os

import yaml

ROLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "roles")


def role_settings(role, templated=None):
    """The dict ``__<role>_settings`` of roles/<role>/vars/main.yml names, with the values of the
    role's defaults/main.yml and vars/main.yml; ``templated`` gives the values of those that are
    templates (a test must say what they come out as)."""
    with open(os.path.join(ROLES, role, "defaults", "main.yml")) as handle:
        defaults = yaml.safe_load(handle) or {}
    with open(os.path.join(ROLES, role, "vars", "main.yml")) as handle:
        private = yaml.safe_load(handle) or {}
    values = dict(defaults, **private)
    values.update(templated or {})
    out = dict((key, values[key]) for key in private["__%s_settings" % role])
    unresolved = [key for key, value in out.items() if "{{" in str(value)]
    assert not unresolved, "give the values of the templated settings %s" % unresolved
    return out
