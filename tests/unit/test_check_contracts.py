# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""tools/check_contracts.py: defaults against argument specs, no Jinja control flow in a role's
vars, no Python inside YAML. Each check on a small collection made here, and on this one."""

from __future__ import annotations

import importlib.util
import os
import textwrap

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
_SPEC = importlib.util.spec_from_file_location("check_contracts", os.path.join(ROOT, "tools", "check_contracts.py"))
check = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(check)


def write(root, path, text):
    full = root / path
    full.parent.mkdir(parents=True, exist_ok=True)
    full.write_text(textwrap.dedent(text))


def role(root, defaults, options):
    write(root, "roles/r1/defaults/main.yml", defaults)
    write(root, "roles/r1/meta/argument_specs.yml", "argument_specs:\n  main:\n    options:\n" + textwrap.indent(
        textwrap.dedent(options), "      "))


def test_this_collection_keeps_its_contracts():
    assert check.main(["check", ROOT]) == 0


def test_defaults_and_specs(tmp_path):
    role(tmp_path, "r1_a: 1\nr1_b: \"{{ x }}\"\nr1_c: [1]\n", """\
        r1_a: {type: int, default: 1}
        r1_b: {type: str, default: y}
        r1_c: {type: list, default: [2]}
        r1_d: {type: str}
        r1_e: {type: str, required: true}
        """)
    write(tmp_path, "roles/r1/defaults/main.yml", "r1_a: 1\nr1_b: \"{{ x }}\"\nr1_c: [1]\nr1_f: 0\n")
    assert check.spec_breaches(str(tmp_path)) == [
        "roles/r1: r1_f is in defaults/main.yml but not in meta/argument_specs.yml",
        "roles/r1: r1_c defaults to [1] in defaults/main.yml but meta/argument_specs.yml documents [2]",
        "roles/r1: r1_d is in meta/argument_specs.yml but not in defaults/main.yml (and not required)",
    ]


def test_a_role_without_a_spec(tmp_path):
    write(tmp_path, "roles/r2/defaults/main.yml", "r2_a: 1\n")
    assert check.spec_breaches(str(tmp_path)) == ["roles/r2: no meta/argument_specs.yml"]


def test_jinja_control_flow_in_vars(tmp_path):
    write(tmp_path, "roles/r1/vars/main.yml", """\
        __r1_ok: "{{ a | map('int') | list if b else [] }}"
        __r1_bad: >-
          {%- set out = [] -%}
          {%- for x in y -%}{{ out.append(x) }}{%- endfor -%}
        """)
    write(tmp_path, "roles/r1/templates/t.j2", "{% for x in y %}{{ x }}{% endfor %}\n")
    found = check.jinja_breaches(str(tmp_path))
    assert [line.split(": ")[0] for line in found] == ["roles/r1/vars/main.yml:3", "roles/r1/vars/main.yml:4"]


def test_python_inside_yaml(tmp_path):
    write(tmp_path, "roles/r1/vars/main.yml", """\
        __r1_script: |-
          import json, sys
          from os import path
          print(json.dumps(sys.argv))
        __r1_text: "important: import nothing here"
        """)
    write(tmp_path, "molecule/s/verify.yml", """\
        - name: run
          ansible.builtin.command:
            argv: ["{{ ansible_playbook_python }}", -c, "print(1)"]
        - name: fine
          ansible.builtin.command:
            argv: [virsh, -c, "qemu:///system", list]
        """)
    found = check.python_breaches(str(tmp_path))
    assert [line.split(": ")[0] for line in found] == ["molecule/s/verify.yml:3", "roles/r1/vars/main.yml:2",
                                                       "roles/r1/vars/main.yml:3"]


def test_the_internal_api_document_follows_the_docstrings(tmp_path):
    write(tmp_path, "plugins/module_utils/_one.py", '''\
        """One private module."""


        def public(a, b=1):
            """Does one thing.

            In detail.
            """


        def _private():
            pass


        class Thing(ValueError):
            """A thing."""
        ''')
    write(tmp_path, "docs/internal-api.md", "hand-written\n")
    assert check.docs_breaches(str(tmp_path)) == [
        "docs/internal-api.md is not what the docstrings say: run python3 tools/internal_api.py"]
    spec = importlib.util.spec_from_file_location("internal_api", os.path.join(ROOT, "tools", "internal_api.py"))
    internal_api = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(internal_api)
    internal_api.main(["internal_api", str(tmp_path)])
    text = (tmp_path / "docs" / "internal-api.md").read_text()
    assert "## `_one.py`\n\nOne private module.\n\n- `def public(a, b=1)` — Does one thing.\n" in text
    assert "- `class Thing(ValueError)` — A thing.\n" in text and "_private" not in text
    assert check.docs_breaches(str(tmp_path)) == []


def test_one_home(tmp_path):
    write(tmp_path, "galaxy.yml", "repository: https://github.com/vmconsole/secure\n"
                                  "issues: https://github.com/vmconsole/secure/issues\n"
                                  "homepage: https://vmconsole.example.org/\n")
    write(tmp_path, "README.md", "see https://github.com/vmconsole/secure/tree/main/docs and "
                                 "https://example.invalid/vmconsole/secure\n")
    write(tmp_path, "plugins/modules/m.py", 'link: https://gitlab.com/vmconsole/secure/-/blob/main/x.md\n'
                                            'other: https://gitlab.com/virt-viewer/virt-viewer\n')
    write(tmp_path, "roles/r/README.md", "[a](https://github.com/vmconsole/secure/blob/main/x.md)\n")
    assert check.home_breaches(str(tmp_path)) == [
        "galaxy.yml: homepage https://vmconsole.example.org/ is not under its repository "
        "https://github.com/vmconsole/secure",
        "README.md:1: https://example.invalid/vmconsole/secure is not under galaxy.yml's repository "
        "https://github.com/vmconsole/secure",
        "plugins/modules/m.py:1: https://gitlab.com/vmconsole/secure/-/blob/main/x.md is not under galaxy.yml's "
        "repository https://github.com/vmconsole/secure"]


def shared_role(root):
    write(root, "roles/_common/defaults/main.yml", "vmconsole_ports: [1, 2]\nvmconsole_name: default\n")
    write(root, "roles/_common/meta/argument_specs.yml", """\
        argument_specs:
          main:
            options:
              vmconsole_ports: {type: list, default: [1, 2]}
              vmconsole_name: {type: str, default: default}
          packages:
            options:
              _common_packages: {type: list, required: true}
        """)


def test_one_place_for_the_cluster_wide_inputs(tmp_path):
    shared_role(tmp_path)
    write(tmp_path, "roles/r1/meta/main.yml", "dependencies:\n  - role: vmconsole.secure._common\n")
    write(tmp_path, "roles/r1/defaults/main.yml", """\
        r1_ports: "{{ vmconsole_ports }}"
        r1_name: "{{ vmconsole_name | default('default') }}"
        r1_other: "{{ vmconsole_other }}"
        r1_fact: "{{ ansible_local.vmconsole_qemu.binary | default('/usr/bin/qemu') }}"
        r1_nodes: "{{ groups['all'] | map('extract', hostvars) | map(attribute='vmconsole_cluster_address') }}"
        r1_text: vmconsole_ports
        """)
    write(tmp_path, "roles/r1/meta/argument_specs.yml", """\
        argument_specs:
          main:
            options:
              r1_ports: {type: list, default: "{{ vmconsole_ports | default([1, 2]) }}"}
        """)
    write(tmp_path, "roles/r2/meta/main.yml", "dependencies: []\n")
    write(tmp_path, "roles/r2/defaults/main.yml", "r2_a: 1\n")
    write(tmp_path, "roles/r3/meta/main.yml", "dependencies: [_common]\n")
    assert check.shared_breaches(str(tmp_path)) == [
        "roles/r1: defaults/main.yml: r1_name gives vmconsole_name a fallback of its own: its one default is in "
        "roles/_common/defaults/main.yml",
        "roles/r1: defaults/main.yml: r1_other reads vmconsole_other, which roles/_common does not define "
        "(defaults/main.yml and meta/argument_specs.yml)",
        "roles/r1: meta/argument_specs.yml: r1_ports gives vmconsole_ports a fallback of its own: its one default is "
        "in roles/_common/defaults/main.yml",
        "roles/r2: meta/main.yml does not depend on roles/_common (whose defaults are the vmconsole_* inputs)",
    ]


def test_no_shared_role_no_shared_check(tmp_path):
    write(tmp_path, "roles/r1/defaults/main.yml", "r1_ports: \"{{ vmconsole_ports | default([1, 2]) }}\"\n")
    assert check.shared_breaches(str(tmp_path)) == []


def test_the_shared_role_is_held_to_the_defaults_contract(tmp_path):
    shared_role(tmp_path)
    write(tmp_path, "roles/_common/defaults/main.yml", "vmconsole_ports: [1, 3]\nvmconsole_name: default\n")
    assert check.spec_breaches(str(tmp_path)) == [
        "roles/_common: vmconsole_ports defaults to [1, 3] in defaults/main.yml but meta/argument_specs.yml "
        "documents [1, 2]"]
