# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Controller half of code_bundle (all of it): the collection's module_utils that ``entry`` needs, or the files of a
controller ``folder``, as one zip.

The zip holds ``ansible_collections/vmconsole/secure/plugins/module_utils/<name>.py`` for each module in
``entry`` and every module of this collection's module_utils they import (followed through the imports,
read with ``ast``), plus the empty ``__init__.py`` of each package level, so that a Python with the zip on
``sys.path`` imports them with the names the modules run under (``zipimport``, as AnsiballZ runs modules).

The bytes depend only on the modules' text: entries sorted, every timestamp 1980-01-01, the same mode,
the same compression. The file goes to the host through ``ansible.builtin.copy`` (check mode, diff
of the checksum, owner, group and mode as copy does them), so an unchanged collection reports no change.
One module call per host replaces a copy task per file (33 files: 52 s of a converge under load).
"""

from __future__ import annotations

import ast
import io
import os
import shutil
import tempfile
import zipfile

from ansible.module_utils.common.text.converters import to_text
from ansible.plugins.action import ActionBase

PACKAGE = "ansible_collections.vmconsole.secure.plugins.module_utils"
MODULE_UTILS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "module_utils")
EPOCH = (1980, 1, 1, 0, 0, 0)           # the earliest time a zip entry can carry
ARGS = ("entry", "folder", "dest", "owner", "group", "mode")


def imported(source, filename="<module>"):
    """The names of this collection's module_utils that ``source`` imports (anywhere in it)."""
    names = set()
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == PACKAGE:
                names.update(alias.name for alias in node.names)
            elif node.module.startswith(PACKAGE + "."):
                names.add(node.module[len(PACKAGE) + 1:].split(".")[0])
        elif isinstance(node, ast.Import):
            names.update(alias.name[len(PACKAGE) + 1:].split(".")[0]
                         for alias in node.names if alias.name.startswith(PACKAGE + "."))
    return names


def closure(entry, source_dir=MODULE_UTILS):
    """The sorted names of ``entry`` and of every module_utils module they import, transitively.

    ValueError names a module that is not in ``source_dir``."""
    wanted, done = list(entry), set()
    while wanted:
        name = wanted.pop()
        if name in done:
            continue
        path = os.path.join(source_dir, name + ".py")
        if not name or not name.replace("_", "a").isalnum() or not os.path.isfile(path):
            raise ValueError("%s is not a module of %s" % (name, source_dir))
        with open(path, encoding="utf-8") as f:
            wanted.extend(imported(f.read(), path) - done)
        done.add(name)
    return sorted(done)


def _entry(name, data):
    info = zipfile.ZipInfo(name, date_time=EPOCH)
    info.external_attr = 0o100644 << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    return info, data


def build_zip(names, source_dir=MODULE_UTILS):
    """The zip's bytes: the modules ``names`` under PACKAGE's folders, with each level's empty __init__.py."""
    folder = PACKAGE.replace(".", "/")
    parts = folder.split("/")
    entries = [_entry("/".join(parts[:i + 1]) + "/__init__.py", b"") for i in range(len(parts))]
    for name in sorted(names):
        with open(os.path.join(source_dir, name + ".py"), "rb") as f:
            entries.append(_entry("%s/%s.py" % (folder, name), f.read()))
    return _zip(entries)


def _zip(entries):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for info, data in sorted(entries, key=lambda item: item[0].filename):
            archive.writestr(info, data, compresslevel=9)
    return buffer.getvalue()


def folder_files(folder):
    """The sorted paths (with ``/``) of the regular files under ``folder``; ValueError if it is not a folder, holds
    none, or holds a symbolic link (the zip would not say what it points to)."""
    if not os.path.isdir(folder):
        raise ValueError("%s is not a folder on the controller" % folder)
    names = []
    for top, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files) + [d for d in dirs if os.path.islink(os.path.join(top, d))]:
            path = os.path.join(top, name)
            if os.path.islink(path) or not os.path.isfile(path):
                raise ValueError("%s is not a regular file" % path)
            names.append(os.path.relpath(path, folder).replace(os.sep, "/"))
    if not names:
        raise ValueError("%s holds no file" % folder)
    return sorted(names)


def build_folder_zip(folder, names):
    """The zip's bytes: ``names`` (from :func:`folder_files`) with their paths under ``folder``."""
    entries = []
    for name in names:
        with open(os.path.join(folder, name), "rb") as f:
            entries.append(_entry(name, f.read()))
    return _zip(entries)


class ActionModule(ActionBase):

    TRANSFERS_FILES = True
    _supports_check_mode = True

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        args = dict(self._task.args)
        unknown = sorted(set(args) - set(ARGS))
        if unknown:
            return dict(result, failed=True, msg="unsupported option(s): %s (supported: %s)" % (", ".join(unknown), ", ".join(ARGS)))
        entry, folder = args.get("entry"), args.get("folder")
        if isinstance(entry, str):
            entry = [entry]
        if (entry is None) == (folder is None):
            return dict(result, failed=True, msg="give either entry (the module_utils modules the code starts from, "
                                                 "e.g. [_portal]) or folder (a folder on the controller), not %s"
                                                 % ("both" if entry is not None else "neither"))
        if entry is not None and (not entry or not isinstance(entry, list) or not all(isinstance(name, str) for name in entry)):
            return dict(result, failed=True, msg="entry: give the module_utils modules the code starts from, e.g. [_portal]")
        if folder is not None and (not isinstance(folder, str) or not folder):
            return dict(result, failed=True, msg="folder: give a folder on the controller")
        if not args.get("dest"):
            return dict(result, failed=True, msg="dest: give the zip's path on the host")
        try:
            if entry is not None:
                names = closure(entry)
                data = build_zip(names)
            else:
                names = folder_files(folder)
                data = build_folder_zip(folder, names)
        except (ValueError, SyntaxError, OSError) as exc:
            return dict(result, failed=True, msg="%s: %s" % ("entry" if entry is not None else "folder", to_text(exc)))

        folder = tempfile.mkdtemp(prefix="vmconsole-bundle-")
        try:
            source = os.path.join(folder, os.path.basename(args["dest"]) or "bundle.zip")
            with open(source, "wb") as f:
                f.write(data)
            copy_task = self._task.copy()
            copy_task.args = dict(src=source, dest=args["dest"], owner=args.get("owner"), group=args.get("group"),
                                  mode=args.get("mode"))
            copy_task.args = {key: value for key, value in copy_task.args.items() if value is not None}
            copy = self._shared_loader_obj.action_loader.get(
                "ansible.legacy.copy", task=copy_task, connection=self._connection, play_context=self._play_context,
                loader=self._loader, templar=self._templar, shared_loader_obj=self._shared_loader_obj)
            copied = copy.run(task_vars=task_vars)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        copied.pop("src", None)
        result.update(copied)
        result["modules" if entry is not None else "files"] = names
        return result
