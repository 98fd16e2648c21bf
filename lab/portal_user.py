# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The demo lab's portal user: a random password and its yescrypt hash, next to the lab's inventory.

Usage: python3 lab/portal_user.py FOLDER NAME
Writes FOLDER/portal-NAME-password (made once, kept afterwards) and FOLDER/portal-NAME.hash,
both 0600; lab/demo.yml puts the hash into console_portal_users. Prints the password file's path,
never the password. A real cluster keeps such hashes in ansible-vault.
"""

from __future__ import annotations

import os
import re
import secrets
import sys

from ansible_collections.vmconsole.secure.plugins.module_utils._portal_auth import hash_password, verify_password


def write_secret(path, text):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(path, 0o600)


def portal_user(folder, name):
    """(password file, hash file) of ``name`` in ``folder``, made or kept; the hash always matches the password."""
    if not re.fullmatch(r"[a-z][a-z0-9_-]{0,31}", name):
        raise ValueError("NAME must be a short lower-case user name, not %r" % name)
    password_file = os.path.join(folder, "portal-%s-password" % name)
    hash_file = os.path.join(folder, "portal-%s.hash" % name)
    if not os.path.exists(password_file):
        write_secret(password_file, secrets.token_urlsafe(18))
    with open(password_file, encoding="utf-8") as handle:
        password = handle.read().strip()
    try:
        with open(hash_file, encoding="utf-8") as handle:
            current = handle.read().strip()
    except FileNotFoundError:
        current = ""
    if not current or not verify_password(current, password):
        write_secret(hash_file, hash_password(password))
    return password_file, hash_file


def main(argv):
    if len(argv) != 3:
        sys.stderr.write(__doc__.split("\n\n")[1] + "\n")
        return 2
    try:
        password_file, dummy = portal_user(argv[1], argv[2])
    except (OSError, ValueError) as exc:
        sys.stderr.write("lab/portal_user.py: %s\n" % exc)
        return 1
    print("portal user %s: password in %s" % (argv[2], password_file))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
