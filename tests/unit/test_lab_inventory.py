# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The demo lab's inventory (molecule/shared/templates/inventory.yml.j2 with lab/demo.yml) also serves the
playbooks that run on the controller's implicit localhost (playbooks/client_cert.yml): every variable its
lab_vars read must be defined there too. ``inventory_dir`` is not (only the inventory's hosts have it):
client_cert.yml failed with "'inventory_dir' is undefined" (issue #16)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import jinja2
import jinja2.meta
import yaml

ROOT = Path(__file__).resolve().parents[2]


class _Unsafe(str):
    pass


class _Loader(yaml.SafeLoader):
    pass


_Loader.add_constructor("!unsafe", lambda loader, node: _Unsafe(loader.construct_scalar(node)))

# What Jinja in Ansible knows without any host or inventory (lookup and the like).
_GLOBALS = {"lookup", "query", "q", "now", "undef", "omit"}


def _inventory(demo):
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, trim_blocks=True)
    env.filters["to_json"] = json.dumps
    env.filters["dirname"] = os.path.dirname
    env.filters["flatten"] = lambda lists: [x for items in lists for x in items]
    env.filters["unique"] = lambda items: list(dict.fromkeys(items))
    template = env.from_string((ROOT / "molecule/shared/templates/inventory.yml.j2").read_text())
    platforms = [{"name": "hv1", "groups": ["hypervisors"], "addresses": {"cluster": "10.89.100.11"}}]
    text = template.render(ansible_managed="managed", lab_inventory="/w/.work/lab/vmc-demo/inventory.yml",
                           lab_platforms=platforms, **demo)
    return yaml.safe_load(text)


def test_the_demo_inventory_serves_the_implicit_localhost():
    demo = yaml.load((ROOT / "lab/demo.yml").read_text(), Loader=_Loader)
    inventory = _inventory(demo)
    defined = set(inventory["all"]["vars"]) | _GLOBALS
    env = jinja2.Environment()
    for key, value in demo["lab_vars"].items():
        if isinstance(value, str) and "{{" in value:
            names = jinja2.meta.find_undeclared_variables(env.parse(value))
            assert names <= defined, "lab_vars.%s reads %s, which the implicit localhost lacks" % (
                key, ", ".join(sorted(names - defined)))
    assert inventory["all"]["vars"]["lab_dir"] == "/w/.work/lab/vmc-demo"
