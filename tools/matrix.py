# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The controller matrix: every ansible-core release meta/runtime.yml's requires_ansible admits.

Each release runs in a venv of its own under .work/matrix/ (ansible-core at the pinned version
below, the unit tests' libraries pinned by requirements.lock), rebuilt only when what it is made
of changes. A release runs on this machine's Python (Debian 12: 3.11) when it supports it;
releases that need a newer Python (2.20 and later: 3.12+) run inside a container of the lab's
Debian 13 image (lab/build-image.sh base trixie, Python 3.13) with python3-venv, git and GLib added
(localhost/vmconsole-matrix, built once per base image), the checkout mounted at its own path.

Stages: ``unit`` (pytest tests/unit, the release's ansible-core imported by the plugins and the
tests) and ``sanity`` (ansible-test sanity --local of that release on a copy of the files git
knows, as tools/test.sh's sanity stage does for the pinned release). The default plan is the
cheap one `make test` runs: unit on every release, sanity on the oldest and the newest (the
pinned release's sanity is test.sh's own stage).

Usage:
  python3 tools/matrix.py run [--junit FILE] [--skip-pinned] [ENTRY...]
                                                         ENTRY: 2.16 (its default stages),
                                                         2.16:unit, 2.21:sanity, all (every stage
                                                         of every release); none: the default plan
  python3 tools/matrix.py plan [ENTRY...]                what would run where
  python3 tools/matrix.py releases                       PyPI's ansible-core minors against RELEASES
Prints a table (release, version, Python, where, stage, rc, wall and CPU seconds); with --junit,
a JUnit file (pytest's counts per unit entry, one test per sanity entry) for test.sh's count_junit.
--skip-pinned leaves out the release requirements.txt pins (test.sh's unit and sanity stages run it).
Exits non-zero when an entry failed.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
import urllib.request
import xml.etree.ElementTree as ET

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORK = os.path.join(ROOT, ".work", "matrix")

# Every minor release of ansible-core that requires_ansible admits and PyPI has as a final
# release (checked 2026-12-07: 2.22 has only 2.22.0rc1), the newest patch of each, and the
# controller Pythons each supports (ansible-core's support matrix; PyPI's Requires-Python is
# the lower bound).
RELEASES = [
    # (minor, version, oldest Python, newest Python)
    ("2.16", "2.16.19", (3, 10), (3, 12)),
    ("2.17", "2.17.14", (3, 10), (3, 12)),
    ("2.18", "2.18.19", (3, 11), (3, 13)),
    ("2.19", "2.19.14", (3, 11), (3, 13)),
    ("2.20", "2.20.10", (3, 12), (3, 14)),
    ("2.21", "2.21.5", (3, 12), (3, 14)),
]
STAGES = ("unit", "sanity")
# The unit tests' libraries besides ansible-core (which brings jinja2, PyYAML, cryptography).
UNIT_REQUIREMENTS = ["pytest", "cryptography", "aiohttp"]
# Pins of requirements.lock that are ansible-core's own business (2.16 wants resolvelib < 1.1).
NOT_PINNED = {"ansible-core", "resolvelib"}
# The container for releases this machine's Python cannot run.
CONTAINER_PYTHON = (3, 13)
# GLib: test_vv.py checks .vv files against GLib's own key-file parser (skipped without it).
CONTAINER_PACKAGES = ["python3-venv", "git", "libglib2.0-0t64"]
CONTAINER_IMAGE = "localhost/vmconsole-matrix"
MACHINE_HOME = "/var/cache/vmconsole-lab/matrix/home-trixie"


def python_of(release, host_python):
    """Where a release runs: ("host", host_python) when that Python supports it, else the container's."""
    minor, oldest, newest = release[0], release[2], release[3]
    if oldest <= host_python <= newest:
        return "host", host_python
    if oldest <= CONTAINER_PYTHON <= newest:
        return "trixie", CONTAINER_PYTHON
    raise ValueError("ansible-core %s supports no Python here (%s, %s)" % (minor, dotted(host_python), dotted(CONTAINER_PYTHON)))


def dotted(version):
    return ".".join(str(part) for part in version)


def version_key(text):
    return tuple(int(part) for part in text.split("."))


def requires_ansible(path=os.path.join(ROOT, "meta", "runtime.yml")):
    """The lowest ansible-core meta/runtime.yml admits, as (major, minor)."""
    with open(path) as handle:
        match = re.search(r"""^requires_ansible:\s*["']?>=\s*([0-9]+)\.([0-9]+)""", handle.read(), re.M)
    if not match:
        raise ValueError("%s: no requires_ansible '>=X.Y' found" % path)
    return int(match.group(1)), int(match.group(2))


def pinned_minor(path=os.path.join(ROOT, "requirements.txt")):
    """The minor release of the controller requirements.txt pins (``2.19``)."""
    with open(path) as handle:
        match = re.search(r"^ansible-core==([0-9]+\.[0-9]+)\.", handle.read(), re.M)
    if not match:
        raise ValueError("%s pins no ansible-core" % path)
    return match.group(1)


def default_plan():
    """``[(minor, stage)]``: unit on every release, sanity on the oldest and the newest."""
    minors = [release[0] for release in RELEASES]
    plan = [(minor, "unit") for minor in minors]
    plan += [(minor, "sanity") for minor in sorted({minors[0], minors[-1]}, key=version_key)]
    return plan


def parse_entries(words):
    """ENTRY words into ``[(minor, stage)]`` in RELEASES order; unknown ones raise ValueError."""
    if not words:
        return default_plan()
    known = [release[0] for release in RELEASES]
    wanted = set()
    for word in words:
        if word == "all":
            wanted.update((minor, stage) for minor in known for stage in STAGES)
            continue
        minor, _sep, stage = word.partition(":")
        if minor not in known:
            raise ValueError("unknown release %r (known: %s)" % (minor, " ".join(known)))
        if stage and stage not in STAGES:
            raise ValueError("unknown stage %r (%s)" % (stage, " ".join(STAGES)))
        if stage:
            wanted.add((minor, stage))
        else:
            wanted.update(entry for entry in default_plan() if entry[0] == minor)
    return [(minor, stage) for minor in known for stage in STAGES if (minor, stage) in wanted]


def lock_constraints(lock_text):
    """requirements.lock's pins without those ansible-core chooses itself."""
    lines = []
    for line in lock_text.splitlines():
        name = re.split(r"[=<>!~ ]", line.strip(), maxsplit=1)[0]
        if line.strip() and not line.startswith("#") and name.lower() not in NOT_PINNED:
            lines.append(line.strip())
    return lines


def venv_key(version, python, constraints):
    text = "\n".join(["ansible-core==" + version, dotted(python)] + UNIT_REQUIREMENTS + constraints)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def pip_versions(ansible_test_dir):
    """The pip versions an ansible-test bootstraps (names of its get-pip cache files)."""
    path = os.path.join(ansible_test_dir, "_internal", "python_requirements.py")
    try:
        with open(path) as handle:
            text = handle.read()
    except OSError:
        return []
    return sorted(set(re.findall(r"""\bpip['"]?\s*[=:]\s*['"]([0-9][0-9.]*)['"]""", text)))


def parse_junit(path):
    """(passed, failed, skipped) of a pytest JUnit file, or None."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return None
    suites = [root] if root.tag == "testsuite" else list(root)
    total = sum(int(s.get("tests", 0)) for s in suites)
    failed = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
    skipped = sum(int(s.get("skipped", 0)) for s in suites)
    return total - failed - skipped, failed, skipped


def junit(results):
    """One JUnit document for every entry: a unit entry counts pytest's tests, a sanity entry one test."""
    suites = ET.Element("testsuites")
    for result in results:
        name = "ansible-core %s (Python %s, %s) %s" % (result["version"], result["python"], result["where"], result["stage"])
        counts = result.get("counts") or ([1, 0, 0] if result["rc"] == 0 else [0, 1, 0])
        passed, failed, skipped = counts
        if result["rc"] != 0 and failed == 0:
            failed = 1  # pytest failed without a failing test (a collection error)
        suite = ET.SubElement(suites, "testsuite", name=name, tests=str(passed + failed + skipped),
                              failures=str(failed), errors="0", skipped=str(skipped), time=str(result["wall"]))
        case = ET.SubElement(suite, "testcase", classname="matrix", name=name, time=str(result["wall"]))
        if failed:
            ET.SubElement(case, "failure", message="rc=%s, log: %s" % (result["rc"], result["log"]))
    return ET.tostring(suites, encoding="unicode")


def table(results):
    rows = [("release", "version", "python", "where", "stage", "rc", "wall s", "cpu s", "tests")]
    for r in results:
        counts = r.get("counts")
        tests = "%d passed, %d failed, %d skipped" % tuple(counts) if counts else "-"
        rows.append((r["minor"], r["version"], r["python"], r["where"], r["stage"], str(r["rc"]),
                     "%.0f" % r["wall"], "%.0f" % r["cpu"], tests))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)


# --- what runs (on the host, or inside the container) ---------------------------------------

def log(message):
    sys.stderr.write("[matrix] %s\n" % message)
    sys.stderr.flush()


def children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(argv, logfile, **kwargs):
    with open(logfile, "a") as handle:
        handle.write("$ %s\n" % " ".join(argv))
        handle.flush()
        return subprocess.call(argv, stdout=handle, stderr=subprocess.STDOUT, **kwargs)


def ensure_venv(release, python, logfile):
    """The release's venv (made or remade when its key changed); its directory."""
    minor, version = release[0], release[1]
    with open(os.path.join(ROOT, "requirements.lock")) as handle:
        constraints = lock_constraints(handle.read())
    where = "trixie" if os.environ.get("VMC_MATRIX_INSIDE") else "host"
    venv = os.path.join(WORK, "venv-%s-py%s-%s" % (minor, dotted(python), where))
    key = venv_key(version, python, constraints)
    stamp = os.path.join(venv, ".matrix-key")
    try:
        with open(stamp) as handle:
            if handle.read().strip() == key:
                return venv
    except OSError:
        pass
    log("venv %s: ansible-core==%s on Python %s" % (os.path.basename(venv), version, dotted(python)))
    shutil.rmtree(venv, ignore_errors=True)
    cfile = os.path.join(WORK, "constraints-%s.txt" % minor)
    with open(cfile, "w") as handle:
        handle.write("\n".join(constraints) + "\n")
    if run([sys.executable, "-m", "venv", venv], logfile) or run(
            [os.path.join(venv, "bin", "pip"), "install", "-q", "--disable-pip-version-check", "-c", cfile,
             "ansible-core==" + version] + UNIT_REQUIREMENTS, logfile):
        shutil.rmtree(venv, ignore_errors=True)
        raise RuntimeError("venv for ansible-core %s failed (log: %s)" % (version, logfile))
    with open(stamp, "w") as handle:
        handle.write(key + "\n")
    return venv


def environ_for(venv):
    env = dict(os.environ)
    collections = os.path.join(ROOT, ".work", "collections")
    env.update(PATH=os.path.join(venv, "bin") + os.pathsep + env.get("PATH", ""), VIRTUAL_ENV=venv,
               ANSIBLE_COLLECTIONS_PATH=collections, PYTHONPATH=collections, PYTHONDONTWRITEBYTECODE="1")
    env.pop("ANSIBLE_CONFIG", None)
    env["ANSIBLE_CONFIG"] = os.path.join(ROOT, "ansible.cfg")
    return env


def git_files():
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                         capture_output=True, check=True).stdout
    return [name for name in out.decode().split("\0") if name]


def stage_unit(venv, minor, logfile, results_dir):
    xml = os.path.join(results_dir, "%s-unit.xml" % minor)
    rc = run([os.path.join(venv, "bin", "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", "tests/unit",
              "--junitxml=" + xml], logfile, cwd=ROOT, env=environ_for(venv))
    return rc, parse_junit(xml)


def stage_sanity(venv, minor, python, logfile, files):
    # A copy of the files git knows under ansible_collections/vmconsole/secure, in a
    # repository of its own (as test.sh's sanity stage does).
    tree = os.path.join(WORK, "tree-%s" % minor, "ansible_collections", "vmconsole", "secure")
    shutil.rmtree(os.path.dirname(os.path.dirname(os.path.dirname(tree))), ignore_errors=True)
    for name in files:
        source = os.path.join(ROOT, name)
        if os.path.isfile(source) or os.path.islink(source):
            os.makedirs(os.path.join(tree, os.path.dirname(name)), exist_ok=True)
            shutil.copy2(source, os.path.join(tree, name), follow_symlinks=False)
    env = environ_for(venv)
    env.pop("PYTHONPATH")
    if run(["git", "init", "-q"], logfile, cwd=tree) or run(["git", "add", "-A"], logfile, cwd=tree):
        return 1, None
    # ansible-test fetches get-pip from a host the lab machines cannot reach: the stand-in.
    cache = os.path.expanduser("~/.ansible/test/cache")
    os.makedirs(cache, exist_ok=True)
    site = subprocess.run([os.path.join(venv, "bin", "python"), "-c", "import ansible_test, os; print(os.path.dirname(ansible_test.__file__))"],
                          capture_output=True, text=True, check=False).stdout.strip()
    for pip in pip_versions(site):
        target = os.path.join(cache, "get_pip_%s.py" % pip.replace(".", "_"))
        if not os.path.exists(target):
            shutil.copy(os.path.join(ROOT, "tools", "get_pip_standin.py"), target)
    rc = run([os.path.join(venv, "bin", "ansible-test"), "sanity", "--local", "--python", dotted(python), "--color", "no"],
             logfile, cwd=tree, env=env)
    return rc, None


def run_here(entries, where):
    """Run entries with this Python; one JSON result file each in .work/matrix/results."""
    python = sys.version_info[:2]
    results_dir = os.path.join(WORK, "results")
    os.makedirs(results_dir, exist_ok=True)
    files = git_files() if any(entry[1] == "sanity" for entry in entries) else []
    releases = dict((release[0], release) for release in RELEASES)
    rc_all = 0
    for minor, stage in entries:
        release = releases[minor]
        logfile = os.path.join(results_dir, "%s-%s.log" % (minor, stage))
        open(logfile, "w").close()
        log("ansible-core %s on Python %s (%s): %s" % (release[1], dotted(python), where, stage))
        start, cpu0 = time.monotonic(), children_cpu()
        counts = None
        try:
            venv = ensure_venv(release, python, logfile)
            if stage == "unit":
                rc, counts = stage_unit(venv, minor, logfile, results_dir)
            else:
                rc, counts = stage_sanity(venv, minor, python, logfile, files)
        except (RuntimeError, OSError, subprocess.CalledProcessError) as error:
            with open(logfile, "a") as handle:
                handle.write("matrix: %s\n" % error)
            rc = 1
        result = dict(minor=minor, version=release[1], python=dotted(python), where=where, stage=stage, rc=rc,
                      wall=round(time.monotonic() - start, 1), cpu=round(children_cpu() - cpu0, 1),
                      counts=list(counts) if counts else None, log=logfile)
        with open(os.path.join(results_dir, "%s-%s.json" % (minor, stage)), "w") as handle:
            json.dump(result, handle)
        log("-- %s %s: rc=%s in %.0f s (%.0f s CPU)" % (minor, stage, rc, result["wall"], result["cpu"]))
        rc_all = rc_all or rc
    return rc_all


def container_image(logfile):
    """localhost/vmconsole-matrix:<key>: the lab's Debian 13 base with python3-venv and git."""
    base = subprocess.run(["bash", os.path.join(ROOT, "lab", "build-image.sh"), "base", "trixie"],
                          capture_output=True, text=True, check=False)
    if base.returncode:
        raise RuntimeError("lab/build-image.sh base trixie failed: %s" % base.stderr.strip()[-500:])
    base_ref = base.stdout.strip().splitlines()[-1]
    key = hashlib.sha256((base_ref + "\n" + " ".join(CONTAINER_PACKAGES)).encode()).hexdigest()[:12]
    image = "%s:trixie-%s" % (CONTAINER_IMAGE, key)
    with open("/run/lock/vmconsole-matrix-image.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if subprocess.call(["podman", "image", "exists", image]) == 0:
            return image
        log("building %s from %s (%s)" % (image, base_ref, " ".join(CONTAINER_PACKAGES)))
        builder = "vmconsole-matrix-build-%s-%d" % (key, os.getpid())
        try:
            if run(["podman", "run", "--name", builder, "--network=host", base_ref, "/bin/sh", "-c",
                    "set -e; export DEBIAN_FRONTEND=noninteractive; apt-get update -q; "
                    "apt-get install -y -q --no-install-recommends %s; apt-get clean; rm -rf /var/lib/apt/lists/*"
                    % " ".join(CONTAINER_PACKAGES)], logfile) or run(
                    ["podman", "commit", "--quiet", builder, image], logfile):
                raise RuntimeError("building %s failed (log: %s)" % (image, logfile))
        finally:
            subprocess.call(["podman", "rm", "-f", builder], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return image


def run_in_container(entries):
    """Run entries inside the Debian 13 container; its processes' CPU is measured inside."""
    results_dir = os.path.join(WORK, "results")
    os.makedirs(results_dir, exist_ok=True)
    logfile = os.path.join(results_dir, "container.log")
    open(logfile, "w").close()
    image = container_image(logfile)
    # The container's home holds ansible-test's sanity venvs and pip's cache: like ~/.ansible/test
    # on this machine it outlives a checkout (a fresh clone does not build them again).
    home = MACHINE_HOME
    os.makedirs(home, exist_ok=True)
    argv = ["podman", "run", "--rm", "--network=host", "-v", "%s:%s" % (ROOT, ROOT), "-v", "%s:%s" % (home, home), "-w", ROOT,
            "-e", "HOME=" + home, "-e", "VMC_MATRIX_INSIDE=1", "-e", "LANG=C.UTF-8"]
    # The machine's trust store (a TLS-inspecting proxy's CA, where there is one) for PyPI.
    bundle = "/etc/ssl/certs/ca-certificates.crt"
    if os.path.exists(bundle):
        argv += ["-v", "%s:%s:ro" % (bundle, bundle), "-e", "PIP_CERT=" + bundle, "-e", "SSL_CERT_FILE=" + bundle]
    argv += [image, "python3", os.path.join(ROOT, "tools", "matrix.py"), "inside"]
    argv += ["%s:%s" % entry for entry in entries]
    return run(argv, logfile)


def main(argv):
    if not argv or argv[0] not in ("run", "plan", "releases", "inside"):
        sys.stderr.write(__doc__[__doc__.index("Usage:"):])
        return 2
    command, args = argv[0], argv[1:]
    junit_path = None
    if "--junit" in args:
        index = args.index("--junit")
        junit_path = args[index + 1]
        del args[index:index + 2]
    skip_pinned = "--skip-pinned" in args
    args = [arg for arg in args if arg != "--skip-pinned"]
    entries = parse_entries(args)
    if skip_pinned:
        # tools/test.sh's own unit and sanity stages run the pinned release in the main venv.
        entries = [entry for entry in entries if entry[0] != pinned_minor()]
    if command == "inside":
        return run_here(entries, "trixie")
    if command == "releases":
        return releases_on_pypi()
    host = sys.version_info[:2]
    placed = [(entry, python_of(dict((r[0], r) for r in RELEASES)[entry[0]], host)) for entry in entries]
    if command == "plan":
        for (minor, stage), (where, python) in placed:
            print("%s %s on Python %s (%s)" % (minor, stage, dotted(python), where))
        return 0
    here = [entry for entry, place in placed if place[0] == "host"]
    there = [entry for entry, place in placed if place[0] != "host"]
    results_dir = os.path.join(WORK, "results")
    shutil.rmtree(results_dir, ignore_errors=True)
    if there:
        # podman starts at once and waits on the network; the host entries run beside it.
        log("in the Debian 13 container: %s" % " ".join("%s:%s" % e for e in there))
    rc = run_here(here, "host") if here else 0
    if there:
        start, cpu0 = time.monotonic(), children_cpu()
        try:
            rc = run_in_container(there) or rc
        except RuntimeError as error:
            log(str(error))
            rc = 1
        log("container: %.0f s, %.0f s CPU outside it (podman)" % (time.monotonic() - start, children_cpu() - cpu0))
    results = []
    for minor, stage in entries:
        path = os.path.join(results_dir, "%s-%s.json" % (minor, stage))
        try:
            with open(path) as handle:
                results.append(json.load(handle))
        except (OSError, ValueError):
            release = dict((r[0], r) for r in RELEASES)[minor]
            results.append(dict(minor=minor, version=release[1], python="?", where="?", stage=stage, rc=1,
                                wall=0, cpu=0, counts=None, log=os.path.join(results_dir, "container.log")))
    print(table(results))
    if junit_path:
        with open(junit_path, "w") as handle:
            handle.write(junit(results))
    failed = [r for r in results if r["rc"] != 0]
    for r in failed:
        print("failed: ansible-core %s %s (log: %s)" % (r["version"], r["stage"], r["log"]))
    return 1 if failed or rc else 0


def final_minors(versions):
    """{minor: newest final version} of PyPI's version strings (pre-releases left out)."""
    newest = {}
    for text in versions:
        if not re.fullmatch(r"[0-9]+\.[0-9]+\.[0-9]+", text):
            continue
        minor = text.rsplit(".", 1)[0]
        if minor not in newest or version_key(text) > version_key(newest[minor]):
            newest[minor] = text
    return newest


def releases_on_pypi():
    """Compare RELEASES with PyPI: a newer patch, a new minor, or a minor requires_ansible admits that is missing."""
    request = urllib.request.Request("https://pypi.org/simple/ansible-core/", headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        versions = json.load(response)["versions"]
    newest = final_minors(versions)
    floor = requires_ansible()
    pinned = dict((release[0], release[1]) for release in RELEASES)
    stale = 0
    for minor in sorted(newest, key=version_key):
        if version_key(minor) < floor:
            continue
        have = pinned.get(minor)
        state = "ok" if have == newest[minor] else ("missing" if have is None else "newer patch")
        stale += state != "ok"
        print("%s  PyPI %s  matrix %s  %s" % (minor, newest[minor], have or "-", state))
    pre = sorted({v for v in versions if not re.fullmatch(r"[0-9.]+", v) and v.rsplit(".", 1)[0] not in newest}, key=str)
    if pre:
        print("pre-releases of minors without a final release: %s" % " ".join(pre[-3:]))
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
