# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The collection's written rules, checked (make test runs this in its lint stage).

1. Every role's defaults/main.yml and meta/argument_specs.yml (entry point main) name the
   same variables, and a default that is not a template has the value the spec documents. A
   spec option may lack a default only when it is required.
2. A role's vars/ holds names and values, not programs: no Jinja control flow ({% for %},
   {% if %}, {% set %}, {% macro %}) in roles/*/vars/*.yml.
3. No Python inside YAML: no `python -c` and no line of a YAML string that starts with
   `import x` or `from x import`, in roles, playbooks, molecule and lab.
4. docs/internal-api.md is what tools/internal_api.py writes from the docstrings.
5. One home: every link to the collection's own repository (…/vmconsole/secure) in plugins,
   roles, playbooks, meta, docs, README.md and DEVELOPMENT.md starts with galaxy.yml's
   ``repository``, and so do galaxy.yml's ``homepage``, ``documentation`` and ``issues``.
6. One place for the cluster-wide inputs: every ``vmconsole_*`` variable a role's defaults (or
   the defaults its argument spec documents) read is an option of the private role
   roles/_common (entry point main, so rule 1 puts its one default value in that role's
   defaults/main.yml), read without a fallback value of the role's own (``| default(...)``); and
   every other role depends on roles/_common (meta/main.yml), whose defaults those are.

Usage: python3 tools/check_contracts.py [collection root]; exit 1 with one line per breach.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import re
import sys

import yaml

JINJA_CONTROL = re.compile(r"\{%-?\s*(for|if|elif|set|macro)\b")
PYTHON_LINE = re.compile(r"^\s*(import\s+[A-Za-z_][\w.]*(\s*,\s*[A-Za-z_][\w.]*)*\s*(#.*)?$"
                         r"|from\s+[A-Za-z_][\w.]*\s+import\s+\S)")
# python (or a variable naming one, e.g. ansible_playbook_python) followed by -c, on the same
# line of an argv list or as the next list item.
PYTHON_C = re.compile(r"python[\w.]*(\s*\}\})?['\"]?\s*,?\s*['\"]?(\s*\n\s*-)?\s*-c\b")


def _load(path):
    with open(path) as handle:
        return yaml.safe_load(handle)


def _is_template(value):
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def spec_breaches(root):
    out = []
    for role in sorted(glob.glob(os.path.join(root, "roles", "*"))):
        name = os.path.basename(role)
        defaults_path = os.path.join(role, "defaults", "main.yml")
        spec_path = os.path.join(role, "meta", "argument_specs.yml")
        if not os.path.exists(spec_path):
            out.append("roles/%s: no meta/argument_specs.yml" % name)
            continue
        defaults = _load(defaults_path) if os.path.exists(defaults_path) else {}
        options = ((_load(spec_path) or {}).get("argument_specs", {}).get("main", {}) or {}).get("options", {}) or {}
        for var in sorted(set(defaults or {}) - set(options)):
            out.append("roles/%s: %s is in defaults/main.yml but not in meta/argument_specs.yml" % (name, var))
        for var, spec in sorted(options.items()):
            if var not in (defaults or {}):
                if not spec.get("required"):
                    out.append("roles/%s: %s is in meta/argument_specs.yml but not in defaults/main.yml (and not "
                               "required)" % (name, var))
                continue
            value = defaults[var]
            if "default" in spec and not _is_template(value) and spec["default"] != value:
                out.append("roles/%s: %s defaults to %r in defaults/main.yml but meta/argument_specs.yml documents %r"
                           % (name, var, value, spec["default"]))
    return out


def jinja_breaches(root):
    out = []
    for path in sorted(glob.glob(os.path.join(root, "roles", "*", "vars", "*.yml"))):
        with open(path) as handle:
            for number, line in enumerate(handle, 1):
                if JINJA_CONTROL.search(line):
                    out.append("%s:%d: Jinja control flow in a role's vars (move the logic to a filter under "
                               "plugins/): %s" % (os.path.relpath(path, root), number, line.strip()[:80]))
    return out


def python_breaches(root):
    out = []
    paths = []
    for folder in ("roles", "playbooks", "molecule", "lab"):
        paths += glob.glob(os.path.join(root, folder, "**", "*.yml"), recursive=True)
    for path in sorted(paths):
        with open(path) as handle:
            text = handle.read()
        for number, line in enumerate(text.splitlines(), 1):
            if PYTHON_LINE.match(line):
                out.append("%s:%d: Python inside YAML (write a module or filter under plugins/): %s"
                           % (os.path.relpath(path, root), number, line.strip()[:80]))
        for match in PYTHON_C.finditer(text):
            number = text.count("\n", 0, match.start()) + 1
            out.append("%s:%d: python -c inside YAML (write a module or filter under plugins/)"
                       % (os.path.relpath(path, root), number))
    return out


def docs_breaches(root):
    spec = importlib.util.spec_from_file_location("internal_api", os.path.join(os.path.dirname(__file__),
                                                                               "internal_api.py"))
    internal_api = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(internal_api)
    path = os.path.join(root, "docs", "internal-api.md")
    try:
        with open(path) as handle:
            current = handle.read()
    except OSError:
        current = None
    if current != internal_api.render(root):
        return ["docs/internal-api.md is not what the docstrings say: run python3 tools/internal_api.py"]
    return []


SHARED_ROLE = "_common"
# A variable vmconsole_* read in a template (not an attribute, a key or a fact: .vmconsole_x, 'vmconsole_x').
SHARED_INPUT = re.compile(r"(?<![\w.'\"])(vmconsole_[a-z0-9_]+)\b(\s*\|\s*default\b)?")


def _role_defaults(role):
    """``{name: value}`` of a role's defaults and of the defaults its spec (entry point main) documents."""
    out = {}
    spec_path = os.path.join(role, "meta", "argument_specs.yml")
    if os.path.exists(spec_path):
        options = ((_load(spec_path) or {}).get("argument_specs", {}).get("main", {}) or {}).get("options", {}) or {}
        for var, spec in options.items():
            if "default" in (spec or {}):
                out["meta/argument_specs.yml: " + var] = spec["default"]
    defaults_path = os.path.join(role, "defaults", "main.yml")
    if os.path.exists(defaults_path):
        for var, value in (_load(defaults_path) or {}).items():
            out["defaults/main.yml: " + var] = value
    return out


def shared_breaches(root):
    shared = os.path.join(root, "roles", SHARED_ROLE)
    if not os.path.isdir(shared):
        return []
    spec_path = os.path.join(shared, "meta", "argument_specs.yml")
    spec = (_load(spec_path) or {}) if os.path.exists(spec_path) else {}
    inputs = set((spec.get("argument_specs", {}).get("main", {}) or {}).get("options", {}) or {})
    out = []
    for role in sorted(glob.glob(os.path.join(root, "roles", "*"))):
        name = os.path.basename(role)
        if name == SHARED_ROLE or not os.path.isdir(role):
            continue
        meta_path = os.path.join(role, "meta", "main.yml")
        meta = (_load(meta_path) or {}) if os.path.exists(meta_path) else {}
        depends = [dep.get("role", dep.get("name")) if isinstance(dep, dict) else dep
                   for dep in meta.get("dependencies") or []]
        if not any(isinstance(dep, str) and dep.split(".")[-1] == SHARED_ROLE for dep in depends):
            out.append("roles/%s: meta/main.yml does not depend on roles/%s (whose defaults are the vmconsole_* "
                       "inputs)" % (name, SHARED_ROLE))
        for where, value in sorted(_role_defaults(role).items()):
            if not _is_template(value):
                continue
            for match in SHARED_INPUT.finditer(value):
                if match.group(1) not in inputs:
                    out.append("roles/%s: %s reads %s, which roles/%s does not define (defaults/main.yml and "
                               "meta/argument_specs.yml)" % (name, where, match.group(1), SHARED_ROLE))
                elif match.group(2):
                    out.append("roles/%s: %s gives %s a fallback of its own: its one default is in roles/%s/"
                               "defaults/main.yml" % (name, where, match.group(1), SHARED_ROLE))
    return out


HOME_LINK = re.compile(r"https?://[^\s\"'<>)]*/vmconsole/secure\b[^\s\"'<>)]*")


def home_breaches(root):
    with open(os.path.join(root, "galaxy.yml")) as handle:
        galaxy = yaml.safe_load(handle) or {}
    home = galaxy.get("repository", "")
    out = ["galaxy.yml: %s %s is not under its repository %s" % (key, galaxy[key], home or "(none)")
           for key in ("homepage", "documentation", "issues")
           if galaxy.get(key) and not (home and galaxy[key].startswith(home))]
    paths = [os.path.join(root, "README.md"), os.path.join(root, "DEVELOPMENT.md")]
    for pattern in ("plugins/**/*.py", "plugins/**/*.yml", "roles/**/*.yml", "roles/**/*.md", "playbooks/**/*.yml",
                    "meta/*.yml", "docs/**/*.md"):
        paths += glob.glob(os.path.join(root, pattern), recursive=True)
    for path in sorted(p for p in paths if os.path.isfile(p)):
        with open(path) as handle:
            for number, line in enumerate(handle, 1):
                for link in HOME_LINK.findall(line):
                    if not home or not link.startswith(home):
                        out.append("%s:%d: %s is not under galaxy.yml's repository %s"
                                   % (os.path.relpath(path, root), number, link, home or "(none)"))
    return out


def main(argv):
    root = argv[1] if len(argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    breaches = (spec_breaches(root) + jinja_breaches(root) + python_breaches(root) + docs_breaches(root)
                + home_breaches(root) + shared_breaches(root))
    for line in breaches:
        print(line)
    print("contracts: %d breach(es)" % len(breaches))
    return 1 if breaches else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
