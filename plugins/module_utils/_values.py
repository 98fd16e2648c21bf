# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Role variables read as Jinja and Ansible read them (private; the roles' filters share it).

A role's filter gets its variables as the inventory wrote them: numbers as text, booleans as
"yes", lists where a string was meant. These helpers read them the way the Jinja they replace
did, so that every message stays the same.
"""

from __future__ import annotations

import json

from ansible.module_utils.parsing.convert_bool import boolean


def text(value):
    """A value as Jinja's ``~`` writes it into a message."""
    return value if isinstance(value, str) else str(value)


def as_json(value):
    """A value as Ansible's ``to_json`` writes it into a message."""
    return json.dumps(value)


def is_list(value):
    """A YAML list (not a string, not a mapping)."""
    return isinstance(value, (list, tuple))


def is_int(value):
    """Jinja's ``integer`` test: an int that is not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_whole(value):
    """A whole number of zero or more, as a number or as text; not a bool."""
    return not isinstance(value, bool) and text(value).isdigit() and text(value).isascii()


def to_bool(value):
    """Ansible's ``bool`` filter."""
    return boolean(value, strict=False)


def to_int(value):
    """Ansible's ``int`` filter: a number, or 0 for what is not one."""
    try:
        return int(value)
    except (TypeError, ValueError):
        try:
            return int(float(value))
        except (TypeError, ValueError):
            return 0
