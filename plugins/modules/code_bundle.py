#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: code_bundle
short_description: Install the collection's Python code (or a folder's files) that a service on the host runs, as one zip
version_added: 0.2.0
description:
  - Puts the modules of this collection's C(module_utils) that O(entry) names, and every C(module_utils) module they
    import (followed through their imports), into one zip at O(dest) on the host. A Python with the zip first on
    C(sys.path) imports them under their collection names, with C(zipimport), without Ansible on the host.
  - The console portal's two services run their code from such a zip. One file and one copy per host replace a copy
    task per module.
  - The zip's bytes depend on the modules' text only (sorted entries, fixed timestamps), so a second run with the same
    collection reports no change. The file is written by M(ansible.builtin.copy), with its check mode and its handling
    of O(owner), O(group) and O(mode).
  - Runs entirely in its action plugin on the controller; the host needs only what M(ansible.builtin.copy) needs.
author:
  - vmconsole.secure developers (@vmconsole)
extends_documentation_fragment:
  - vmconsole.secure.attributes
attributes:
  action:
    description: Has an action plugin that builds the zip on the controller and copies it with M(ansible.builtin.copy).
    support: full
  check_mode:
    support: full
    details:
      - Reports whether the zip on the host would change, and changes nothing.
  diff_mode:
    support: none
  idempotent:
    support: full
options:
  entry:
    description:
      - The C(module_utils) modules the service starts from, by file name without C(.py), for example V(_portal). A name
        that is not a module of this collection's C(module_utils) fails the task before the host is touched.
      - Exactly one of O(entry) and O(folder).
    type: list
    elements: str
  folder:
    description:
      - A folder on the controller whose files go into the zip instead, by their paths below it (the console
        portal's pages' scripts and styles, which it serves from the zip). Symbolic links are refused.
      - Exactly one of O(entry) and O(folder).
    type: path
  dest:
    description: The zip's path on the host.
    type: path
    required: true
  owner:
    description: The zip's owner, as M(ansible.builtin.copy) takes it.
    type: str
  group:
    description: The zip's group, as M(ansible.builtin.copy) takes it.
    type: str
  mode:
    description: The zip's mode, as M(ansible.builtin.copy) takes it.
    type: raw
seealso:
  - module: ansible.builtin.copy
"""

EXAMPLES = r"""
- name: Install the portal's code (the modules its two services import)
  vmconsole.secure.code_bundle:
    entry: [_portal, _portal_agent]
    dest: /usr/lib/vmconsole/portal/vmconsole.zip
    owner: root
    group: root
    mode: "0644"
"""

RETURN = r"""
modules:
  description: The C(module_utils) modules in the zip, sorted.
  returned: with O(entry)
  type: list
  elements: str
  sample: [_portal, _portal_agent, _qmp, _tickets]
files:
  description: The files of O(folder) in the zip, sorted.
  returned: with O(folder)
  type: list
  elements: str
  sample: [browser-console.js, xterm/xterm.css]
checksum:
  description: The SHA-1 of the zip, as M(ansible.builtin.copy) returns it.
  returned: success
  type: str
"""
