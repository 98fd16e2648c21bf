# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""lab/python/vmc_lab_zipcache.py: zip imports compiled once, the same code every time."""

from __future__ import annotations

import _imp
import importlib
import os
import sys
import zipfile
import zipimport
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "lab" / "python"))
import vmc_lab_zipcache  # noqa: E402  pylint: disable=wrong-import-position

SOURCE = b"def inner():\n    return __name__\n\nVALUE = 6 * 7\n"


def counting_compile(calls):
    def original(pathname, source):
        calls.append(pathname)
        return compile(source, pathname, "exec", dont_inherit=True)
    return original


def test_a_second_compile_of_the_same_source_is_loaded_with_the_new_file_name(tmp_path):
    calls = []
    compile_source = vmc_lab_zipcache.make_compile_source(counting_compile(calls), _imp._fix_co_filename, str(tmp_path))
    first = compile_source("/tmp/a.zip/mod.py", SOURCE)
    second = compile_source("/tmp/b.zip/mod.py", SOURCE)
    assert calls == ["/tmp/a.zip/mod.py"], "the second compile was not served from the cache"
    assert second.co_filename == "/tmp/b.zip/mod.py"
    inner = [c for c in second.co_consts if hasattr(c, "co_filename")]
    assert inner and inner[0].co_filename == "/tmp/b.zip/mod.py", "nested code keeps the old file name"
    ns1, ns2 = {"__name__": "m"}, {"__name__": "m"}
    exec(first, ns1)  # pylint: disable=exec-used
    exec(second, ns2)  # pylint: disable=exec-used
    assert ns1["VALUE"] == ns2["VALUE"] == 42 and ns2["inner"]() == "m"


def test_another_source_is_another_entry(tmp_path):
    calls = []
    compile_source = vmc_lab_zipcache.make_compile_source(counting_compile(calls), _imp._fix_co_filename, str(tmp_path))
    compile_source("m.py", SOURCE)
    ns = {}
    exec(compile_source("m.py", SOURCE.replace(b"6 * 7", b"6 * 8")), ns)  # pylint: disable=exec-used
    assert ns["VALUE"] == 48 and len(calls) == 2


def test_a_damaged_entry_is_compiled_again_and_replaced(tmp_path):
    calls = []
    compile_source = vmc_lab_zipcache.make_compile_source(counting_compile(calls), _imp._fix_co_filename, str(tmp_path))
    compile_source("m.py", SOURCE)
    entry = Path(vmc_lab_zipcache.cache_path(SOURCE, str(tmp_path)))
    entry.write_bytes(b"\x00garbage")
    ns = {}
    exec(compile_source("m.py", SOURCE), ns)  # pylint: disable=exec-used
    assert ns["VALUE"] == 42 and len(calls) == 2
    compile_source("m.py", SOURCE)
    assert len(calls) == 2, "the damaged entry was not replaced"


def test_an_unwritable_cache_still_compiles(tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    calls = []
    compile_source = vmc_lab_zipcache.make_compile_source(counting_compile(calls), _imp._fix_co_filename, str(blocked))
    ns = {}
    exec(compile_source("m.py", SOURCE), ns)  # pylint: disable=exec-used
    exec(compile_source("m.py", SOURCE), ns)  # pylint: disable=exec-used
    assert ns["VALUE"] == 42 and len(calls) == 2


def test_the_cache_key_covers_the_interpreter(tmp_path, monkeypatch):
    here = vmc_lab_zipcache.cache_path(SOURCE, str(tmp_path))
    monkeypatch.setattr(importlib.util, "MAGIC_NUMBER", b"\x00\x00\r\n")
    assert vmc_lab_zipcache.cache_path(SOURCE, str(tmp_path)) != here


@pytest.fixture
def patched_zipimport(tmp_path, monkeypatch):
    calls = []
    original = zipimport._compile_source  # pylint: disable=protected-access

    def counted(pathname, source):
        calls.append(pathname)
        return original(pathname, source)

    monkeypatch.setattr(zipimport, "_compile_source", counted)
    assert vmc_lab_zipcache.install(str(tmp_path / "cache"))
    installed = zipimport._compile_source  # pylint: disable=protected-access
    assert vmc_lab_zipcache.install(str(tmp_path / "cache")), "a second install is a no-op"
    assert zipimport._compile_source is installed  # pylint: disable=protected-access
    yield calls
    sys.modules.pop("vmc_zip_probe", None)


def test_imports_from_two_zips_compile_once_and_report_their_own_file(tmp_path, patched_zipimport):
    files = []
    for name in ("one", "two"):
        archive = tmp_path / f"{name}.zip"
        with zipfile.ZipFile(archive, "w") as z:
            z.writestr("vmc_zip_probe.py", SOURCE)
        sys.path.insert(0, str(archive))
        try:
            sys.modules.pop("vmc_zip_probe", None)
            importlib.invalidate_caches()
            module = importlib.import_module("vmc_zip_probe")
            assert module.VALUE == 42
            files.append(module.inner.__code__.co_filename)
        finally:
            sys.path.remove(str(archive))
    assert files == [os.path.join(str(tmp_path / "one.zip"), "vmc_zip_probe.py"),
                     os.path.join(str(tmp_path / "two.zip"), "vmc_zip_probe.py")]
    # Python 3.11 compiles a zip module twice per import (get_filename, get_code): once in all.
    assert len(patched_zipimport) == 1, patched_zipimport
