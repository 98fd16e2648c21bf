# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The Galaxy artifact's file list: what `ansible-galaxy collection build` puts in the tarball.

Built once from this checkout (about 2 s). Only what a user of the installed collection needs
ships: no development files (lab, tests, Molecule, tools, benchmarks, .config), a licence, and
no shipped file that sends its reader to a file that is not in the tarball. That the installed
copy works is tests/integration/test_galaxy_install.py.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import shutil
import subprocess
import tarfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Everything at the top level of the tarball; anything else is a development file that leaked.
SHIPPED_TOP = {"MANIFEST.json", "FILES.json", "README.md", "LICENSE", "meta", "plugins", "roles", "playbooks", "docs",
               "changelogs"}
# Named once more so that a failure says which development folder or file leaked.
NEVER_SHIPPED = (".config/", "tests/", "molecule/", "lab/", "tools/", ".work/", "benchmarks/", ".ci/", ".git/",
                 "changelogs/fragments/", "Makefile", "ansible.cfg", "galaxy.yml", "pytest.ini", "requirements.txt",
                 "requirements.lock", ".ansible-lint", ".ansible-lint-ignore", "DEVELOPMENT.md",
                 "docs/internal-api.md")
TEXT_SUFFIXES = (".md", ".yml", ".yaml", ".py", ".j2", ".txt", ".cfg", ".conf", ".sh", ".service")
# A link or an image in Markdown: [text](target "title").
MD_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
URL = re.compile(r"\b[a-z][a-z0-9+.-]*://\S+")

# Dangling references in files another change owns right now (reported to its owners, not edited
# here). Remove an entry when its file is fixed: the test fails on an entry that no longer occurs.
KNOWN_DANGLING = set()


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    """``(members, read)``: the tarball's file names and ``read(name)`` -> its text."""
    if shutil.which("ansible-galaxy") is None:
        pytest.skip("ansible-galaxy is not installed (run tools/bootstrap.sh, then . tools/env.sh)")
    out = tmp_path_factory.mktemp("galaxy")
    proc = subprocess.run(["ansible-galaxy", "collection", "build", "--output-path", str(out), ROOT],
                          capture_output=True, text=True, check=False, cwd=str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [tarball] = out.glob("vmconsole-secure-*.tar.gz")
    with tarfile.open(str(tarball)) as tar:
        texts = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    return sorted(texts), lambda name: texts[name].decode("utf-8")


def test_only_what_a_user_needs_ships(artifact):
    members, dummy = artifact
    leaked = [m for m in members for bad in NEVER_SHIPPED
              if m == bad.rstrip("/") or (bad.endswith("/") and m.startswith(bad))]
    assert not leaked, "development files in the tarball (galaxy.yml build_ignore): %s" % leaked
    top = {m.split("/", 1)[0] for m in members}
    assert top <= SHIPPED_TOP, "unexpected top-level entries: %s" % sorted(top - SHIPPED_TOP)
    assert not [m for m in members if m.endswith((".pyc", ".vv", ".tar.gz", ".orig", ".rej", "~"))
                or "/__pycache__/" in m or posixpath.basename(m).startswith(".")]
    for needed in ("README.md", "LICENSE", "meta/runtime.yml", "playbooks/console.yml", "playbooks/site.yml",
                   "plugins/modules/console_ticket.py", "plugins/action/console_ticket.py",
                   "changelogs/changelog.yaml"):
        assert needed in members


def test_licence_and_metadata(artifact):
    members, read = artifact
    licence = read("LICENSE")
    assert "GNU GENERAL PUBLIC LICENSE" in licence and "Version 3, 29 June 2007" in licence
    info = json.loads(read("MANIFEST.json"))["collection_info"]
    assert info["license"] == ["GPL-3.0-or-later"]
    # The lab (podman containers) and the tests are not part of the collection.
    assert info["dependencies"] == {"community.crypto": ">=2.10.0"}
    home = info["repository"]
    assert home == "https://github.com/vmconsole/secure"
    for key in ("homepage", "documentation", "issues"):
        assert info[key].startswith(home), key
    assert info["readme"] in members


def test_the_shipped_readme_is_for_the_installed_collection(artifact):
    members, read = artifact
    readme = read("README.md")
    assert "ansible-galaxy collection install" in readme
    assert "ansible-playbook -i " in readme and "vmconsole.secure.site" in readme
    assert "https://github.com/vmconsole/secure" in readme
    assert "tools/env.sh" not in readme


def _repository_files():
    """Files and folders of the checkout (what a reference may name), without .git and .work."""
    out = set()
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in (".git", ".work", "__pycache__", ".pytest_cache")]
        rel = os.path.relpath(folder, ROOT)
        for name in dirs + files:
            out.add(posixpath.normpath(posixpath.join(rel.replace(os.sep, "/"), name)))
    return out


def dangling_references(members, read):
    """``{(shipped file, what it names)}`` for every path a shipped text file names that does not ship.

    A reference is a relative Markdown link, a path that starts with a top-level folder of the
    repository (``tests/...``, ``docs/x.md``, ``tools/...``), or the name of a top-level file of the
    repository or of an upper-case Markdown file (``Makefile``, ``galaxy.yml``, ``LAB.md``). A path
    in a role may be relative to that role (``meta/argument_specs.yml``). Links to the project's
    repository (URLs) are fine: they say where the file is.
    """
    shipped = set(members)
    shipped_dirs = {posixpath.dirname(m) for m in members}
    for m in list(shipped_dirs):
        while m:
            m = posixpath.dirname(m)
            shipped_dirs.add(m)
    repo = _repository_files()
    top_dirs = sorted(p for p in repo if "/" not in p and os.path.isdir(os.path.join(ROOT, p)))
    top_files = sorted(p for p in repo if "/" not in p and os.path.isfile(os.path.join(ROOT, p)) and p not in shipped)
    path_ref = re.compile(r"(?<![\w./~-])((?:%s)/[\w./-]*[\w/])" % "|".join(re.escape(d) for d in top_dirs))
    name_ref = re.compile(r"(?<![\w./~-])(%s|[A-Z][A-Z_-]*\.md)(?![\w-])" % "|".join(re.escape(f) for f in top_files))

    def ships(path, base):
        path = posixpath.normpath(path).rstrip("/")
        for candidate in (path, posixpath.normpath(posixpath.join(base, path))):
            if candidate in shipped or candidate in shipped_dirs:
                return True
        return False

    found = set()
    for name in members:
        if not name.endswith(TEXT_SUFFIXES) or name.startswith("changelogs/"):
            continue  # changelogs/config.yaml names the CHANGELOG.md a release writes
        text = read(name)
        here = posixpath.dirname(name)
        role = "/".join(name.split("/")[:2]) if name.startswith("roles/") else ""
        if name.endswith(".md"):
            for target in MD_LINK.findall(text):
                target = target.split("#", 1)[0]
                if target and not URL.match(target) and not target.startswith("mailto:") and not ships(target, here):
                    found.add((name, target))
            text = MD_LINK.sub(lambda m: "" if URL.match(m.group(1)) else m.group(0), text)
        text = URL.sub("", text)
        for ref in path_ref.findall(text):
            ref = re.split(r"[<*{]", ref)[0].rstrip("./")
            if not ships(ref, role or here) and not ships(ref, here):   # e.g. a vendored package's own docs/
                found.add((name, ref))
        for ref in name_ref.findall(text):
            if not ships(ref, here):
                found.add((name, ref))
    return found


def test_no_shipped_file_names_one_that_does_not_ship(artifact):
    members, read = artifact
    found = dangling_references(members, read)
    assert not found - KNOWN_DANGLING, "shipped files that name files the tarball lacks:\n%s" % "\n".join(
        "%s: %s" % ref for ref in sorted(found - KNOWN_DANGLING))
    assert not KNOWN_DANGLING - found, "fixed, remove from KNOWN_DANGLING: %s" % sorted(KNOWN_DANGLING - found)


def test_the_reference_check_sees_what_it_must():
    texts = {
        "README.md": "See [the lab](lab/demo.yml), [ok](docs/a.md#x), `tools/test.sh`, DEVELOPMENT.md and "
                     "[home](https://github.com/vmconsole/secure/blob/main/tests/x.py); run make test.\n",
        "docs/a.md": "Back to [README](../README.md); `docs/gone.md`; LAB.md\n",
        "roles/r/README.md": "`meta/argument_specs.yml` and `roles/r/tasks/main.yml`\n",
        "roles/r/meta/argument_specs.yml": "# tools/check_contracts.py\n",
        "roles/r/tasks/main.yml": "---\n",
    }
    found = dangling_references(sorted(texts), lambda name: texts[name])
    assert found == {("README.md", "lab/demo.yml"), ("README.md", "tools/test.sh"), ("README.md", "DEVELOPMENT.md"),
                     ("docs/a.md", "docs/gone.md"), ("docs/a.md", "LAB.md"),
                     ("roles/r/meta/argument_specs.yml", "tools/check_contracts.py")}
