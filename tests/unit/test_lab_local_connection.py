# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""lab/plugins/connection/local.py: which commands go to the fork server, and which server."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

PLUGIN = Path(__file__).resolve().parents[2] / "lab" / "plugins" / "connection" / "local.py"
_spec = importlib.util.spec_from_file_location("vmc_lab_local", PLUGIN)
local = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(local)


@pytest.mark.parametrize("cmd, interpreter", [
    ("/bin/sh -c '/usr/bin/python3 && sleep 0'", "/usr/bin/python3"),
    ("/bin/sh -c '/work/x/.work/venv/bin/python3 && sleep 0'", "/work/x/.work/venv/bin/python3"),
    # Anything else runs the usual way: settings in front, another command, a relative or odd path.
    ("/bin/sh -c 'FOO=1 /usr/bin/python3 && sleep 0'", None),
    ("/bin/sh -c '/usr/bin/python3 -c pass && sleep 0'", None),
    ("/bin/sh -c 'python3 && sleep 0'", None),
    ("/bin/sh -c '/usr/bin/python3;rm -rf / && sleep 0'", None),
    ("/bin/sh -c '/usr/bin/python3 && sleep 0' extra", None),
    ("/bin/sh -c 'echo ~root && sleep 0'", None),
])
def test_only_a_module_piped_into_an_interpreter_goes_to_the_fork_server(cmd, interpreter):
    match = local.PIPELINED.fullmatch(cmd)
    assert (match.group(1) if match else None) == interpreter


def test_each_interpreter_its_python_settings_and_each_server_version_have_a_socket_of_their_own():
    env = {"PATH": "/usr/bin", "PYTHONPATH": "/a"}
    one = local.socket_path("/usr/bin/python3", b"server v1", env)
    assert one.startswith(local.SOCKET_DIR + "/") and one.endswith(".sock")
    assert one == local.socket_path("/usr/bin/python3", b"server v1", dict(env, PATH="/bin", OTHER="x"))
    assert one != local.socket_path("/opt/venv/bin/python3", b"server v1", env)
    assert one != local.socket_path("/usr/bin/python3", b"server v2", env)
    assert one != local.socket_path("/usr/bin/python3", b"server v1", dict(env, PYTHONPATH="/b"))
    assert one != local.socket_path("/usr/bin/python3", b"server v1", dict(env, PYTHONHASHSEED="0"))
    assert len(one) < 108, "longer than a Unix socket's path may be"


def test_every_option_of_the_installed_builtin_is_this_plugins_too():
    import yaml  # pylint: disable=import-outside-toplevel
    builtin = yaml.safe_load(local._builtin.DOCUMENTATION)  # pylint: disable=protected-access
    ours = yaml.safe_load(local.DOCUMENTATION)
    assert ours["name"] == "local"
    for name, spec in (builtin.get("options") or {}).items():
        assert name in ours["options"], "the builtin local connection has an option %s this plugin lacks" % name
        assert {k: v for k, v in spec.items() if k not in ("description", "version_added")} == \
            {k: v for k, v in ours["options"][name].items() if k != "description"}
    assert ours["extends_documentation_fragment"] == builtin["extends_documentation_fragment"]
    assert local.Connection.__mro__[1] is local.LocalConnection
