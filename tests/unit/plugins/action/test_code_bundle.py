# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""code_bundle: which modules go into the zip, the zip's bytes, and the copy it hands the file to."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from unittest import mock

import pytest

from ansible_collections.vmconsole.secure.plugins.action import code_bundle as action

PREFIX = "ansible_collections/vmconsole/secure/plugins/module_utils/"


def write_modules(folder, modules):
    for name, text in modules.items():
        (folder / (name + ".py")).write_text(text)


def test_imported_finds_every_form_of_import_and_nothing_else():
    source = "\n".join([
        "from ansible_collections.vmconsole.secure.plugins.module_utils._a import x",
        "from ansible_collections.vmconsole.secure.plugins.module_utils import _b, _c",
        "import ansible_collections.vmconsole.secure.plugins.module_utils._d",
        "def later():",
        "    from ansible_collections.vmconsole.secure.plugins.module_utils._e import y",
        "import os",
        "from ansible.module_utils.basic import AnsibleModule",
        "from ansible_collections.community.crypto.plugins.module_utils._z import w",
        "from . import relative",
    ])
    assert action.imported(source) == {"_a", "_b", "_c", "_d", "_e"}


def test_closure_follows_imports_transitively_and_once(tmp_path):
    write_modules(tmp_path, {
        "_top": "from ansible_collections.vmconsole.secure.plugins.module_utils._mid import x\n",
        "_mid": "from ansible_collections.vmconsole.secure.plugins.module_utils._low import y\n"
                "from ansible_collections.vmconsole.secure.plugins.module_utils._top import z\n",
        "_low": "import os\n",
        "_unused": "import sys\n",
    })
    assert action.closure(["_top"], str(tmp_path)) == ["_low", "_mid", "_top"]


@pytest.mark.parametrize("name", ["_missing", "../_top", "", "_top.py"])
def test_closure_refuses_a_name_that_is_not_a_module(tmp_path, name):
    write_modules(tmp_path, {"_top": "import os\n"})
    with pytest.raises(ValueError, match="is not a module of"):
        action.closure([name], str(tmp_path))


def test_closure_refuses_an_import_of_a_missing_module(tmp_path):
    write_modules(tmp_path, {"_top": "from ansible_collections.vmconsole.secure.plugins.module_utils._gone import x\n"})
    with pytest.raises(ValueError, match="_gone is not a module"):
        action.closure(["_top"], str(tmp_path))


def test_the_portals_code_is_complete_and_leaves_out_what_it_does_not_import():
    names = action.closure(["_portal", "_portal_agent"])
    assert {"_portal", "_portal_agent", "_portal_auth", "_relay", "_issue", "_sessions", "_qmp", "_tickets"} <= set(names)
    assert "_firewall" not in names and "_pki" not in names


def test_the_zip_is_the_same_bytes_whatever_the_files_times(tmp_path):
    write_modules(tmp_path, {"_a": "A = 1\n", "_b": "B = 2\n"})
    first = action.build_zip(["_b", "_a"], str(tmp_path))
    os.utime(tmp_path / "_a.py", (1, 1))
    assert action.build_zip(["_a", "_b"], str(tmp_path)) == first
    (tmp_path / "_a.py").write_text("A = 3\n")
    assert action.build_zip(["_a", "_b"], str(tmp_path)) != first


def test_a_python_without_ansible_imports_the_portal_from_the_zip(tmp_path):
    """The zip alone (no collection on the path, -I: no PYTHONPATH, no site folders of the user) gives the modules,
    under their collection names, from the zip."""
    bundle = tmp_path / "vmconsole.zip"
    bundle.write_bytes(action.build_zip(action.closure(["_portal_auth"])))
    with zipfile.ZipFile(bundle) as archive:
        names = archive.namelist()
    assert names == sorted(names)
    assert "ansible_collections/__init__.py" in names and PREFIX + "__init__.py" in names
    code = ("import sys; sys.path.insert(0, sys.argv[1]); "
            "from ansible_collections.vmconsole.secure.plugins.module_utils import _portal_auth; "
            "print(_portal_auth.__file__)")
    out = subprocess.run([sys.executable, "-I", "-c", code, str(bundle)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(bundle / PREFIX / "_portal_auth.py")


def run(args, copy_result=None):
    """Run the action plugin with ansible.legacy.copy replaced by a recorder: (result, the copy's task args, the
    bytes of the file it was handed)."""
    task = mock.MagicMock()
    task.args = args
    task.async_val = 0
    task.check_mode = False
    seen = {}

    def get(name, task, **_kwargs):
        seen["name"] = name
        copy = mock.MagicMock()

        def copy_run(task_vars=None):
            seen["args"] = dict(task.args)
            with open(task.args["src"], "rb") as f:
                seen["bytes"] = f.read()
            return dict(copy_result or dict(changed=True, checksum="abc", dest=task.args["dest"]), src=task.args["src"])
        copy.run.side_effect = copy_run
        return copy

    copied_task = mock.MagicMock()
    task.copy.return_value = copied_task
    loader = mock.MagicMock()
    loader.action_loader.get.side_effect = get
    plugin = action.ActionModule(task, mock.MagicMock(), mock.MagicMock(), loader=None, templar=None, shared_loader_obj=None)
    plugin._shared_loader_obj = loader          # ansible-core 2.19 sets ansible.plugins.loader whatever it is given
    result = plugin.run(task_vars={})
    return result, seen


def test_the_zip_goes_to_the_host_through_copy_and_the_temporary_file_is_gone():
    result, seen = run(dict(entry=["_portal_auth"], dest="/usr/lib/x/vmconsole.zip", owner="root", group="root",
                            mode="0644"))
    assert seen["name"] == "ansible.legacy.copy"
    assert seen["args"]["dest"] == "/usr/lib/x/vmconsole.zip"
    assert (seen["args"]["owner"], seen["args"]["group"], seen["args"]["mode"]) == ("root", "root", "0644")
    assert not os.path.exists(seen["args"]["src"])
    assert seen["bytes"] == action.build_zip(action.closure(["_portal_auth"]))
    assert result["changed"] is True and "src" not in result
    assert result["modules"] == action.closure(["_portal_auth"])


def test_an_unchanged_zip_reports_no_change():
    result, _seen = run(dict(entry="_portal_auth", dest="/x.zip"), copy_result=dict(changed=False, checksum="abc"))
    assert result["changed"] is False and not result.get("failed")


@pytest.mark.parametrize("args, message", [
    (dict(dest="/x.zip"), "give either entry"),
    (dict(entry=["_portal"], folder="/tmp", dest="/x.zip"), "not both"),
    (dict(folder="", dest="/x.zip"), "folder: give a folder"),
    (dict(folder="/nonexistent-vmc", dest="/x.zip"), "folder: /nonexistent-vmc is not a folder on the controller"),
    (dict(entry=[], dest="/x.zip"), "entry: give the module_utils"),
    (dict(entry=[1], dest="/x.zip"), "entry: give the module_utils"),
    (dict(entry=["_portal"]), "dest: give the zip's path"),
    (dict(entry=["_nosuch"], dest="/x.zip"), "entry: _nosuch is not a module"),
    (dict(entry=["_portal"], dest="/x.zip", force=True), "unsupported option(s): force"),
])
def test_bad_input_fails_before_the_host_is_touched(args, message):
    result, seen = run(args)
    assert result["failed"] is True and message in result["msg"]
    assert "name" not in seen


def test_a_folder_zip_holds_its_files_by_relative_path_with_fixed_bytes(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "b.js").write_text("b")
    (tmp_path / "sub" / "a.css").write_text("a")
    names = action.folder_files(str(tmp_path))
    assert names == ["b.js", "sub/a.css"]
    first = action.build_folder_zip(str(tmp_path), names)
    os.utime(tmp_path / "b.js", (1, 1))
    assert action.build_folder_zip(str(tmp_path), names) == first
    with zipfile.ZipFile(__import__("io").BytesIO(first)) as archive:
        assert archive.read("sub/a.css") == b"a"


def test_a_folder_with_a_link_or_without_files_is_refused(tmp_path):
    with pytest.raises(ValueError, match="holds no file"):
        action.folder_files(str(tmp_path))
    (tmp_path / "a").write_text("a")
    (tmp_path / "link").symlink_to(tmp_path / "a")
    with pytest.raises(ValueError, match="is not a regular file"):
        action.folder_files(str(tmp_path))


def test_the_folder_zip_goes_through_copy_too(tmp_path):
    (tmp_path / "x.js").write_text("x")
    result, seen = run(dict(folder=str(tmp_path), dest="/usr/lib/x/static.zip"))
    assert seen["args"]["dest"] == "/usr/lib/x/static.zip" and result["files"] == ["x.js"]
    assert seen["bytes"] == action.build_folder_zip(str(tmp_path), ["x.js"])
