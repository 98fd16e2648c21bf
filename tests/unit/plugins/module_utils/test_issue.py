# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""_issue's options for a VNC ticket: remote-viewer's (no proxy) and the portal's VNC relay (a proxy and a token)."""

from __future__ import annotations

import pytest

from ansible_collections.vmconsole.secure.plugins.module_utils._console import OptionError
from ansible_collections.vmconsole.secure.plugins.module_utils._issue import ISSUE_ARGUMENT_SPEC, check_options

IGNORE = list.append.__get__([])          # warnings


def vnc_params(**changes):
    params = {name: spec.get("default") for name, spec in ISSUE_ARGUMENT_SPEC.items()}
    params.update(vm="vm1", protocol="vnc", password="Ab3dEf7h", proxy="http://hv1:3128", proxy_user="alice")
    params.update(changes)
    return params


def test_console_ticket_keeps_refusing_a_proxy_for_vnc():
    with pytest.raises(OptionError, match="proxy is SPICE-only"):
        check_options(vnc_params(), IGNORE)
    with pytest.raises(OptionError, match="proxy_user is for SPICE and serial consoles only"):
        check_options(vnc_params(proxy=None), IGNORE)


def test_the_portals_vnc_relay_gets_a_proxy_and_a_token():
    assert check_options(vnc_params(), IGNORE, relay=True) == 30
    with pytest.raises(OptionError, match="host_subject is SPICE-only"):
        check_options(vnc_params(host_subject="CN=hv1"), IGNORE, relay=True)
    with pytest.raises(OptionError, match="proxy must not hold credentials"):
        check_options(vnc_params(proxy="http://u:p@hv1:3128"), IGNORE, relay=True)
