# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""docs/internal-api.md, written from the docstrings of plugins/module_utils/_*.py.

Each private module gets its docstring, then every public class and function (no leading
underscore) with its signature and the first paragraph of its docstring. tools/check_contracts.py
fails when the file in the repository is not what this writes.

Usage: python3 tools/internal_api.py [collection root]   (rewrites docs/internal-api.md)
"""

from __future__ import annotations

import ast
import glob
import os
import sys

HEADER = """# Internal interfaces (module_utils)

Written by `tools/internal_api.py` from the docstrings; do not edit by hand (`make test` checks
that it is current). Every `plugins/module_utils/_*.py` is private to the collection (leading
underscore). Module-side code runs on managed hosts: Python 3.8+, stdlib only, except where a
module says otherwise (`cryptography` for `_spice.py`/`_vnc.py`, imported once and reported with
`missing_required_lib`).
"""


def _first_paragraph(doc):
    return (doc or "").strip().split("\n\n")[0].strip()


def _signature(node):
    args = ast.unparse(node.args) if hasattr(ast, "unparse") else "..."
    return "%s(%s)" % (node.name, args)


def describe(path):
    with open(path) as handle:
        tree = ast.parse(handle.read())
    lines = ["## `%s`" % os.path.basename(path), ""]
    doc = ast.get_docstring(tree)
    if doc:
        lines += [doc.strip(), ""]
    entries = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
            kind = "class" if isinstance(node, ast.ClassDef) else "def"
            head = node.name if kind == "class" else _signature(node)
            if kind == "class" and node.bases:
                head += "(%s)" % ", ".join(ast.unparse(b) for b in node.bases)
            summary = _first_paragraph(ast.get_docstring(node)).replace("\n", " ")
            entries.append("- `%s %s`%s" % (kind, head, (" — " + summary) if summary else ""))
    if entries:
        lines += entries + [""]
    return "\n".join(lines)


def render(root):
    paths = sorted(glob.glob(os.path.join(root, "plugins", "module_utils", "_*.py")))
    return HEADER + "\n" + "\n".join(describe(p) for p in paths)


def main(argv):
    root = argv[1] if len(argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    with open(os.path.join(root, "docs", "internal-api.md"), "w") as handle:
        handle.write(render(root))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
