#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: host_info
short_description: A host's files, packages and Python modules, in one read-only call
version_added: 0.2.0
description:
  - Tells, in one call, what the collection's roles look at before they change anything - for many paths their mode,
    owner, group and SHA-256; the text of public files such as certificates; which Debian packages are installed;
    which Python modules this Python can import; JSON files matching a pattern; the CPUs.
  - One module call costs one round trip, however many paths it reads - a task per path and host does not scale to a
    cluster.
  - Returns the content of public files only - world-readable ones, or ones that hold certificates only; never of a
    file that holds a private key.
author:
  - vmconsole.secure developers (@vmconsole)
extends_documentation_fragment:
  - vmconsole.secure.attributes
  - vmconsole.secure.attributes.INFO_MODULE
options:
  paths:
    description: Paths to describe (RV(files)). A path that does not exist is left out; a symbolic link is described itself.
    type: list
    elements: path
    default: []
  read:
    description:
      - Files whose text to return (RV(contents)); each must be a regular file of at most 1 MiB, world-readable or
        holding certificates only, and must not hold a private key, or the module fails naming it. A missing file
        gives null.
    type: list
    elements: path
    default: []
  packages:
    description: Debian packages whose dpkg status to return (RV(packages)).
    type: list
    elements: str
    default: []
  python_modules:
    description: Python modules to look for (RV(python_modules)), without importing them.
    type: list
    elements: str
    default: []
  json_glob:
    description: A glob pattern; every matching file that holds JSON is returned in RV(json_files).
    type: str
seealso:
  - module: ansible.builtin.stat
  - module: ansible.builtin.package_facts
"""

EXAMPLES = r"""
- name: Look at the certificate files and the Python library in one call
  vmconsole.secure.host_info:
    paths: [/etc/pki/qemu, /etc/pki/qemu/server-cert.pem, /etc/pki/qemu/server-key.pem]
    read: [/etc/pki/qemu/server-cert.pem]
    python_modules: [cryptography]
  register: host

- name: Which packages are missing
  ansible.builtin.debug:
    msg: "{{ host.packages | dict2items | rejectattr('value', '==', 'installed') | map(attribute='key') | list }}"
"""

RETURN = r"""
files:
  description: Each path of O(paths) that exists - C(mode) (four octal digits), C(owner), C(group), C(regular), and
    C(sha256) for a regular file.
  returned: always
  type: dict
  sample: {"/etc/pki/qemu/server-key.pem": {"mode": "0640", "owner": "root", "group": "vmconsole-qemu",
           "regular": true, "sha256": "9f86d0..."}}
contents:
  description: The text of each file of O(read), null when it does not exist.
  returned: always
  type: dict
packages:
  description: The dpkg status of each package of O(packages) - C(installed), C(config-files), C(not-installed), or
    C(unknown) when dpkg does not know it.
  returned: always
  type: dict
  sample: {"squid": "installed", "python3-apt": "unknown"}
python_modules:
  description: Whether each module of O(python_modules) can be imported.
  returned: always
  type: dict
  sample: {"cryptography": true}
json_files:
  description: The files matching O(json_glob) that hold JSON, sorted by path - C(path), C(mtime), C(data).
  returned: always
  type: list
  elements: dict
cpus:
  description: The CPUs the module may run on.
  returned: always
  type: int
  sample: 2
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.vmconsole.secure.plugins.module_utils import _host_info


def main():
    module = AnsibleModule(
        argument_spec=dict(
            paths=dict(type="list", elements="path", default=[]),
            read=dict(type="list", elements="path", default=[]),
            packages=dict(type="list", elements="str", default=[]),
            python_modules=dict(type="list", elements="str", default=[]),
            json_glob=dict(type="str"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    try:
        contents = _host_info.public_contents(p["read"])
    except ValueError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(
        changed=False,
        files=_host_info.file_states(p["paths"]),
        contents=contents,
        packages=_host_info.package_states(p["packages"]),
        python_modules=_host_info.python_modules(p["python_modules"]),
        json_files=_host_info.json_files(p["json_glob"]) if p["json_glob"] else [],
        cpus=_host_info.cpus(),
    )


if __name__ == "__main__":
    main()
