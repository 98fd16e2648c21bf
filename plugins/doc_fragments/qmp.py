# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations


class ModuleDocFragment:
    """Options that name a VM's QMP monitor; shared by every QMP module."""

    DOCUMENTATION = r"""
options:
  vm:
    description:
      - Name of the VM. Its QMP socket is O(socket_dir)/C(<vm>.qmp).
      - Exactly one of O(vm) and O(socket) (or C(libvirt_domain), where the module has it) is required.
    type: str
  socket:
    description:
      - Explicit path of the VM's QMP UNIX socket, instead of deriving it from O(vm).
    type: path
  socket_dir:
    description:
      - Folder that holds the QMP sockets, C(<vm>.qmp), of the VMs the module names.
    type: path
    default: /run/vmconsole
  timeout:
    description:
      - Seconds to wait for QEMU to answer (connect, greeting and each command).
    type: float
    default: 10
"""
