# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A bytecode cache for modules imported from zip files (the lab's images only).

Ansible runs every module as a zip (AnsiballZ) imported with zipimport, which cannot write
``.pyc`` files: each task compiles ``ansible.module_utils.basic`` and everything it imports
again, and Python 3.11's ``zipimporter.get_filename`` compiles each module a second time.
This module replaces zipimport's ``_compile_source`` with one that keeps the code object
of each source it compiled under CACHE_DIR, keyed by the sha256 of the source, the
interpreter's bytecode magic and its optimisation level, and on a hit loads it and gives
it the file name of the zip it came from. The code that runs is the code the same source
compiles to; only the compiling is saved.

Loaded at interpreter start-up by ``vmc_lab_zipcache.pth``, which the lab mounts read-only
into every host's ``/usr/lib/python3/dist-packages`` (molecule/shared/create.yml); the cache
itself lives in the host and goes with it. Measured on a lab host: 20 ``command`` tasks
cost 4.3 s of the host's CPU without it, 2.8 s with it (benchmarks/README.md).
"""

import marshal
import os
import sys

CACHE_DIR = "/var/cache/vmc-lab-pycache"


def cache_path(source, cache_dir=CACHE_DIR):
    """Where the code compiled from ``source`` (bytes) is kept."""
    # Imported here: every Python that starts on a lab host loads this module.
    import hashlib  # pylint: disable=import-outside-toplevel
    import importlib.util  # pylint: disable=import-outside-toplevel
    digest = hashlib.sha256(importlib.util.MAGIC_NUMBER + bytes([sys.flags.optimize]) + source).hexdigest()
    return os.path.join(cache_dir, digest[:2], digest[2:])


def make_compile_source(original, fix_filename, cache_dir=CACHE_DIR):
    """A caching stand-in for ``zipimport._compile_source(pathname, source)``."""

    def compile_source(pathname, source):
        path = cache_path(source, cache_dir)
        try:
            with open(path, "rb") as cached:
                code = marshal.loads(cached.read())
        except (OSError, ValueError, EOFError, TypeError):
            code = None
        if code is not None and type(code).__name__ == "code":
            fix_filename(code, pathname)
            return code
        code = original(pathname, source)
        try:
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            tmp = "%s.%d" % (path, os.getpid())
            with open(tmp, "wb") as out:
                out.write(marshal.dumps(code))
            os.replace(tmp, path)
        except OSError:
            pass  # a read-only or full disk: compile every time, as without the cache
        return code

    return compile_source


def install(cache_dir=CACHE_DIR):
    try:
        import _imp  # pylint: disable=import-outside-toplevel
        import zipimport  # pylint: disable=import-outside-toplevel
        original = zipimport._compile_source  # pylint: disable=protected-access
    except (ImportError, AttributeError):
        return False
    if getattr(original, "vmc_lab_zipcache", False):
        return True
    replacement = make_compile_source(original, _imp._fix_co_filename, cache_dir)  # pylint: disable=protected-access
    replacement.vmc_lab_zipcache = True
    zipimport._compile_source = replacement  # pylint: disable=protected-access
    return True
