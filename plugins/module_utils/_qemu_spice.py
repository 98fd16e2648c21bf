# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The input checks of the ``qemu_spice`` role (filter ``vmconsole.secure.qemu_spice_errors``).

Private to this collection. ``settings`` holds the role's variables keyed by name; ``host``
what the preflight knows: ``os_family`` and ``src_stat`` (the controller's stat of
``qemu_spice_source_src``, with its sha256). Every message names the variable and the reason.
"""

from __future__ import annotations

import re

from ansible_collections.vmconsole.secure.plugins.module_utils._values import is_list as _is_list, is_whole as _is_whole, text as _text

METHODS = ("package", "source")
_URL = re.compile(r"^(https?|ftp|file)://[^ ]+$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_TARGET = re.compile(r"^[a-z0-9_]+-softmmu$")
_VERSION = re.compile(r"^[0-9][0-9A-Za-z.+~_-]*$")
_FOLDER = re.compile(r"^/[^ ]*[^/ ]$")
_FIRMWARE_FOLDER = re.compile(r"^/[^: ]+$")
_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")


def input_errors(s, host):
    out = []
    if host.get("os_family") != "Debian":
        out.append("the role supports Debian hosts only (apt), this one is %s" % host.get("os_family"))
    method = s["qemu_spice_install_method"]
    if method not in METHODS:
        out.append("qemu_spice_install_method is '%s': use 'package' (Debian's qemu-system-x86) or 'source' "
                   "(a build from a tarball)" % _text(method))
    elif method == "package":
        if not _is_list(s["qemu_spice_packages"]) or not s["qemu_spice_packages"]:
            out.append("qemu_spice_packages must be a non-empty list of package names")
    else:
        out.extend(_source_errors(s, host))
    return out


def _source_errors(s, host):
    out = []
    src, url = _text(s["qemu_spice_source_src"]), _text(s["qemu_spice_source_url"])
    sha256 = _text(s["qemu_spice_source_sha256"]).strip().lower()
    if not src and not url:
        out.append("method source needs a tarball: set qemu_spice_source_url (downloaded on the host)"
                   " or qemu_spice_source_src (a file on the controller)")
    elif src and url:
        out.append("qemu_spice_source_url and qemu_spice_source_src are both set: set only one")
    elif url and not _URL.match(url):
        out.append("qemu_spice_source_url is '%s', which is not an http(s), ftp or file URL" % url)
    if not sha256:
        out.append("qemu_spice_source_sha256 is missing: method source builds only a tarball"
                   " whose SHA-256 is pinned (sha256sum FILE)")
    elif not _SHA256.match(sha256):
        out.append("qemu_spice_source_sha256 is '%s', which is not a SHA-256 (64 hex digits)"
                   % _text(s["qemu_spice_source_sha256"]))
    elif src and not url:
        stat = (host.get("src_stat") or {}).get("stat") or {}
        if not stat.get("exists") or not stat.get("isreg"):
            out.append("qemu_spice_source_src is '%s', which is not a file on the controller" % src)
        elif stat.get("checksum") != sha256:
            out.append("the checksum of qemu_spice_source_src (%s) does not match qemu_spice_source_sha256: the file "
                       "has %s, expected %s; nothing was installed" % (src, stat.get("checksum"), sha256))
    targets = s["qemu_spice_source_targets"]
    if not _is_list(targets) or not targets:
        out.append("qemu_spice_source_targets must be a non-empty list of system targets such as x86_64-softmmu")
    else:
        for target in targets:
            if not isinstance(target, str) or not _TARGET.match(target):
                out.append("qemu_spice_source_targets contains '%s', which is not a system target (<arch>-softmmu, "
                           "e.g. x86_64-softmmu)" % _text(target))
    version = _text(s["qemu_spice_source_version"])
    if version and not _VERSION.match(version):
        out.append("qemu_spice_source_version is '%s': a version starts with a digit and holds letters, digits and "
                   ". + ~ _ - only" % version)
    for var in ("qemu_spice_source_root", "qemu_spice_source_build_dir"):
        if not isinstance(s[var], str) or not _FOLDER.match(s[var]):
            out.append("%s is '%s': give an absolute path, not / itself" % (var, _text(s[var])))
    ccache = _text(s["qemu_spice_source_ccache_dir"])
    if ccache and not _FOLDER.match(ccache):
        out.append("qemu_spice_source_ccache_dir is '%s': give an absolute path, not / itself, or empty for no "
                   "compiler cache" % ccache)
    user = _text(s["qemu_spice_source_build_user"])
    if user and not _USER.match(user):
        out.append("qemu_spice_source_build_user is '%s', which is not a user name (or empty for root)" % user)
    jobs = s["qemu_spice_source_jobs"]
    if not _is_whole(jobs):
        out.append("qemu_spice_source_jobs is '%s': give a number of jobs, or 0 for one per CPU" % _text(jobs))
    firmware = s["qemu_spice_source_firmware_path"]
    if not _is_list(firmware) or not all(isinstance(f, str) and _FIRMWARE_FOLDER.match(f) for f in firmware):
        out.append("qemu_spice_source_firmware_path must be a list of absolute folders (no ':' or spaces)")
    return out
