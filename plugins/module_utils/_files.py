# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Files the collection writes on a node or the controller (private; stdlib only, no Ansible imports).

- :func:`write_file_atomic`: the one way a secret or a file a daemon reads is replaced: the
  ``.vv`` on the controller, the ticket file next to a QMP socket, the proxies' revocations file.
- :class:`AuditLog` and :func:`audit_record`: the node's console audit log (``console_ticket``
  issuances, ``console_session`` cuts), JSON lines that never hold a ticket or a token.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import tempfile
import time


def write_file_atomic(path, text, mode=0o600, owner=None):
    """Replace ``path`` with ``text``: mode (and owner) set before the first byte, fsync, rename.

    The temporary file sits next to ``path`` (same file system; ``mkstemp`` makes it 0600), so a
    reader sees the old content or the new, never a part, and a secret is never readable by
    others. ``owner`` is ``(uid, gid)`` or None (the caller's). OSError on failure; nothing is
    left behind.
    """
    folder, name = os.path.split(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".%s." % name, suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            if owner is not None:
                os.fchown(f.fileno(), owner[0], owner[1])
            if mode != 0o600:
                os.fchmod(f.fileno(), mode)
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:
        dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


class AuditLog:
    """The node's audit log, opened (folder 0750 and file 0640 made) before a change, appended after.

    In check mode nothing is made: the constructor only checks that opening would work. Both the
    constructor and :meth:`write` raise OSError; the caller words the message (which option, and
    what has or has not happened yet).
    """

    def __init__(self, path, check_mode):
        self.path = path
        self.fd = None
        if not path:
            return
        if check_mode:
            self._check_writable()
            return
        folder = os.path.dirname(path)
        if folder and not os.path.isdir(folder):
            os.makedirs(folder, mode=0o750)
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)

    def _check_writable(self):
        """Would opening the log for appending (making its folders) work?"""
        path = self.path
        if os.path.exists(path):
            if os.path.isdir(path) or not os.access(path, os.W_OK):
                raise OSError(13, "Permission denied" if not os.path.isdir(path) else "Is a directory")
            return
        folder = os.path.dirname(os.path.abspath(path))
        while not os.path.exists(folder):
            folder = os.path.dirname(folder)
        if not os.path.isdir(folder) or not os.access(folder, os.W_OK | os.X_OK):
            raise OSError(13, "Permission denied (%s)" % folder)

    def write(self, record):
        """Append ``record`` as one JSON line and close the log (one record per run)."""
        if self.fd is None:
            return
        try:
            os.write(self.fd, (json.dumps(record, sort_keys=True) + "\n").encode("utf-8"))
        finally:
            self.close()

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def audit_record(event, **fields):
    """``fields`` with what every audit line carries: event, time (UTC), epoch, node and who ran it."""
    try:
        account = os.environ.get("SUDO_USER") or getpass.getuser()
    except (KeyError, OSError):
        account = str(os.getuid())
    now = time.time()
    record = dict(event=event, time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)), epoch=int(now),
                  node=socket.gethostname(), run_by=account)
    record.update(fields)
    return record
