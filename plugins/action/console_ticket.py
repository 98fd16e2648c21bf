# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Controller half of console_ticket: makes the ticket, runs the module, writes the .vv.

The ticket is created here and handed to the module as its ``no_log`` option
``password``, so the module's output never contains it. It leaves this plugin only
in the ``.vv`` file (mode 0600) and, with ``return_secret: true``, in a result marked
``_ansible_no_log`` (``register`` gets it, callbacks print a censored result).

With ``proxy_user`` the module mints the proxy token on the node (the cluster key lives
there) and hands it over inside ``vv.proxy`` (the proxy URL with credentials). This plugin
drops ``vv`` from every result, so the token too leaves only in the ``.vv`` file and, with
``return_secret: true``, as ``proxy_token`` in the ``no_log`` result.

With ``protocol: serial`` there is no ticket: nothing is generated here, the module mints the
proxy token and hands it over in ``serial_handover``, which this plugin drops from every result
too; the token leaves only in ``dest`` (one line, mode 0600, the file the returned command reads
with ``-proxy_pass file:DEST``) and, with ``return_secret: true``, as ``proxy_token``.
"""

from __future__ import annotations

import getpass
import os
from urllib.parse import urlsplit

from ansible.module_utils.common.text.converters import to_text
from ansible.module_utils.parsing.convert_bool import boolean
from ansible.plugins.action import ActionBase

from ansible_collections.vmconsole.secure.plugins.module_utils._files import write_file_atomic
from ansible_collections.vmconsole.secure.plugins.module_utils._tickets import PROTOCOLS, new_ticket
from ansible_collections.vmconsole.secure.plugins.module_utils._vv import render_vv


def check_dest(dest):
    """Absolute form of ``dest``; ValueError unless a file can be created there."""
    path = os.path.abspath(os.path.expanduser(dest))
    folder = os.path.dirname(path)
    if os.path.isdir(path):
        raise ValueError("dest %s is a folder: give the file's path, e.g. %s" % (path, os.path.join(path, "VM.vv")))
    if not os.path.isdir(folder):
        if os.path.exists(folder):
            raise ValueError("dest: %s is not a folder on the controller" % folder)
        raise ValueError("dest: the folder %s does not exist on the controller; create it first" % folder)
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError("dest: the folder %s is not writable on the controller (permission denied)" % folder)
    return path


def controller_user():
    """The login name of the person running Ansible here, or None when the system does not know it."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return None


class ActionModule(ActionBase):

    TRANSFERS_FILES = False
    _supports_check_mode = True

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        task_vars = task_vars or {}
        args = dict(self._task.args)

        try:
            return_secret = boolean(args.get("return_secret", False), strict=True)
        except TypeError as exc:
            return dict(result, failed=True, msg="return_secret: %s" % exc)
        dest = args.get("dest")
        if dest is not None:
            try:
                dest = args["dest"] = check_dest(to_text(dest))
            except ValueError as exc:
                return dict(result, failed=True, msg=str(exc))

        protocol = args.get("protocol", "spice")
        ticket = args.get("password")
        if isinstance(ticket, int) and not isinstance(ticket, bool):
            ticket = str(ticket)   # YAML reads a digits-only VNC password as a number
        if protocol == "serial":
            if not dest and not return_secret:
                return dict(result, failed=True,
                            msg="the proxy token would reach nobody: set dest (a file for the token) or return_secret=true")
        elif ticket is None:
            if not dest and not return_secret:
                return dict(result, failed=True,
                            msg="the ticket would reach nobody: set dest (to write a .vv), return_secret=true, or password")
            if protocol in PROTOCOLS:   # otherwise the module reports the bad protocol
                ticket = new_ticket(protocol)
        if ticket is not None:
            args["password"] = ticket
        if not args.get("console_host"):
            args["console_host"] = self._task.delegate_to or task_vars.get("inventory_hostname")
        if protocol != "vnc" and args.get("proxy_user") is None:
            args["controller_user"] = controller_user()   # proxy_user's default where the node's proxy checks tokens

        result.update(self._execute_module(module_name="vmconsole.secure.console_ticket", module_args=args,
                                           task_vars=task_vars))
        self._remove_tmp_path(self._connection._shell.tmpdir)
        handover = result.pop("serial_handover", None)   # protocol=serial: the minted proxy token
        vv = result.pop("vv", None)   # the module's hand-over to this plugin: what the .vv holds besides the ticket
        if protocol == "serial":
            return self._serial_result(result, handover, dest, return_secret)
        if result.get("failed") or result.get("skipped") or vv is None:
            return result

        result["dest"] = dest
        if dest and not self._task.check_mode:
            try:
                write_file_atomic(dest, render_vv(password=ticket, **vv))
            except (OSError, ValueError) as exc:
                return dict(result, failed=True, msg="the ticket is set on the VM, but writing dest %s failed: %s "
                                                     "(the ticket expires unused)" % (dest, exc))
        if return_secret:
            result["ticket"] = ticket
            if result.get("proxy_username") and vv.get("proxy"):
                result["proxy_token"] = urlsplit(vv["proxy"]).password
            result["_ansible_no_log"] = True
        return result

    def _serial_result(self, result, handover, dest, return_secret):
        """protocol=serial: write the token to dest (the file the returned command reads), return it only if asked."""
        if result.get("failed") or result.get("skipped"):
            return result
        result["dest"] = dest
        token = (handover or {}).get("proxy_token")
        if token is None:          # check mode: nothing was minted
            return result
        if dest:
            try:
                write_file_atomic(dest, token + "\n")
            except OSError as exc:
                return dict(result, failed=True,
                            msg="a proxy token was minted for %s (valid until %s, see the audit log), but writing dest "
                                "%s failed: %s; revoke it with vmconsole.secure.console_session"
                                % (result.get("proxy_username"), result.get("proxy_token_expires"), dest, exc))
        if return_secret:
            result["proxy_token"] = token
            result["_ansible_no_log"] = True
        return result
