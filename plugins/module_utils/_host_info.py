# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""A host's files, packages and Python modules, read in one call (private; module host_info).

Stdlib only. Nothing here writes, and nothing returns the content of a file that holds a
private key, nor of one that is not world-readable unless it holds certificates only: a
private key never leaves its host through this code.
"""

from __future__ import annotations

import glob
import grp
import hashlib
import importlib.util
import json
import os
import pwd
import stat
import subprocess


def _name(get, number):
    try:
        return get(number)[0]
    except KeyError:
        return str(number)


def file_states(paths, checksum=True):
    """``{path: {mode, owner, group, regular, sha256}}`` of the paths that exist (not following a
    last symlink); ``sha256`` only for regular files and with ``checksum``."""
    out = {}
    for path in paths:
        try:
            st = os.lstat(path)
        except OSError:
            continue
        info = {"mode": "%04o" % stat.S_IMODE(st.st_mode), "owner": _name(pwd.getpwuid, st.st_uid),
                "group": _name(grp.getgrgid, st.st_gid), "regular": stat.S_ISREG(st.st_mode)}
        if info["regular"] and checksum:
            digest = hashlib.sha256()
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
            info["sha256"] = digest.hexdigest()
        out[path] = info
    return out


def public_contents(paths, limit=1 << 20):
    """``{path: text}`` of public regular files: world-readable, or holding certificates only
    (a certificate is public whatever its mode). A missing file gives None; a file that holds a
    private key, or another file that is not world-readable, is a ValueError naming the path."""
    out = {}
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            out[path] = None
            continue
        if not stat.S_ISREG(st.st_mode):
            raise ValueError("read: %s is not a regular file" % path)
        if st.st_size > limit:
            raise ValueError("read: %s is larger than %d bytes" % (path, limit))
        with open(path, "rb") as handle:
            text = handle.read().decode("utf-8", "replace")
        if "PRIVATE KEY" in text:
            raise ValueError("read: %s holds a private key; host_info never returns one" % path)
        if not st.st_mode & stat.S_IROTH and not _certificates_only(text):
            raise ValueError("read: %s is not world-readable and holds more than certificates; host_info returns "
                             "only public content" % path)
        out[path] = text
    return out


def _certificates_only(text):
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    markers = [line for line in lines if line.startswith("-----")]
    return bool(lines) and lines[0] == "-----BEGIN CERTIFICATE-----" and all(
        line in ("-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----") for line in markers)


def package_states(names, run=subprocess.run):
    """``{name: status}`` from dpkg (``installed``, ``config-files``, ``not-installed``, ...;
    ``unknown`` for a package dpkg does not know)."""
    out = dict((name, "unknown") for name in names)
    if not names:
        return out
    try:
        # run is subprocess.run unless a test passes a fake: this helper takes no AnsibleModule (run_command).
        done = run(["dpkg-query", "-W", "-f", "${Package}\t${db:Status-Status}\n"] + list(names),  # pylint: disable=ansible-bad-function
                   stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, universal_newlines=True, check=False)
    except OSError:
        return out
    for line in done.stdout.splitlines():
        name, _sep, status = line.partition("\t")
        if name in out and status:
            out[name] = status
    return out


def python_modules(names):
    """``{name: bool}``: whether this Python can import each module (found, not imported)."""
    out = {}
    for name in names:
        try:
            out[name] = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            out[name] = False
    return out


def json_files(pattern):
    """``[{path, mtime, data}]`` of the files matching a glob pattern that hold JSON, by path."""
    out = []
    for path in sorted(glob.glob(pattern)):
        try:
            with open(path) as handle:
                data = json.load(handle)
            mtime = os.stat(path).st_mtime
        except (OSError, ValueError):
            continue
        out.append({"path": path, "mtime": mtime, "data": data})
    return out


def cpus():
    """The CPUs this process may run on."""
    return len(os.sched_getaffinity(0))
