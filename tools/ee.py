# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The execution environment test: build an EE with ansible-builder, run site.yml from inside it.

What AWX and Ansible Automation Platform do with the collection, on this machine without a
registry or Galaxy:

1. ``build``: the collection's tarball (ansible-galaxy collection build) and community.crypto's
   (packed from the copy tools/bootstrap.sh installed) go into ansible-builder's build context;
   ``ansible-builder build`` (pinned in tools/ee/requirements.txt, its own venv .work/ee-venv)
   makes localhost/vmconsole-ee:<key> from tools/ee/execution-environment.yml on the lab's
   Debian 13 base image (lab/build-image.sh base trixie). Each collection's
   meta/execution-environment.yml adds its Python and system packages (introspect). The key is
   what the image is built from (the base image's keyed tag, the EE definition, the builder's pins,
   both tarballs' file lists with their checksums): an image of the same key is used as it is,
   the build keeps no layer images, and the image's other keys are removed after a build (not with
   VMC_LAB_KEEP_IMAGES=1).
2. ``lab``: a lab of one Debian 13 hypervisor (hv1, guest vm1) and a client (lab name vmc-ee,
   10.89.20.0/24 and 10.90.20.0/24; tools/ee/lab.yml) made by molecule/shared/create.yml, with an SSH
   server and a key of this run on the hypervisor: from inside a container Ansible reaches nodes as it
   reaches real ones, over SSH.
3. ``run``: ``ansible-runner run`` with the EE as its container (what AWX does for a job; the
   host's network to reach the lab's bridge): playbooks ``vmconsole.secure.site`` (the whole rollout) and
   ``vmconsole.secure.console`` (a ticket and a .vv written on the controller, that is inside
   the EE, into a folder mounted from here), from the collection installed in the image; no
   file of this checkout is on the EE's Ansible path (only the lab's folder is mounted: the
   inventory, the CA, the .vv). A run counts when its recap reached every node with nothing
   failed or unreachable; the .vv is checked: vm1's SPICE console through hv1's proxy with a token,
   whose ticket and token are in none of ansible-runner's artifacts. Then the .vv opens: a real
   remote-viewer on the client connects with it through hv1's proxy, TLS end to end, and QEMU lists
   its channels (lab/console_open.yml, the demo's check, run from this machine).
4. ``again``: site.yml from the EE a second time: every host's recap says changed=0 (the tasks
   that changed are named otherwise).
5. ``down``: the lab removed, ansible-runner's folder too; the step fails when a container or a
   network of the lab, or a container of this test's ansible-runner jobs, is left.

Usage: python3 tools/ee.py [build] [lab] [run] [again] [down]   (none: all five, down also after a failure)
Each step prints its seconds; the exit status is non-zero when a step failed. VMC_EE_NO_CACHE=1 builds
the image again although one of the same key exists.
`make ee` runs all five.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from urllib.parse import urlsplit

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORK = os.path.join(ROOT, ".work", "ee")
VENV = os.path.join(ROOT, ".work", "ee-venv")
IMAGE = "localhost/vmconsole-ee"            # tagged with the key of what it is built from
IMAGE_STAMP = os.path.join(WORK, "image")    # the reference step_build made or found, for the steps after it
RUNNER_PREFIX = "ansible_runner_vmc-ee-"     # ansible-runner's container names, from the idents this test gives
LAB = "vmc-ee"
LAB_DIR = os.path.join(ROOT, ".work", "lab", LAB)
LAB_SPEC = os.path.join(ROOT, "tools", "ee", "lab.yml")    # molecule/shared/create.yml's inputs
SSH_OPTIONS = "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"


def log(message):
    sys.stderr.write("[ee] %s\n" % message)
    sys.stderr.flush()


def run(argv, **kwargs):
    log("$ " + " ".join(argv))
    subprocess.run(argv, check=True, **kwargs)


def ee_inventory(lab_inventory, key_file):
    """The lab's inventory as the EE sees it: every host over SSH as root at its cluster address.

    The lab's own inventory reaches the containers with lab_podman (nsenter on this machine),
    which a container cannot do; everything else (the lab's variables) stays as it is.
    """
    inventory = json.loads(json.dumps(lab_inventory))
    variables = inventory["all"].setdefault("vars", {})
    variables.update(ansible_connection="ssh", ansible_user="root", ansible_ssh_private_key_file=key_file,
                     ansible_ssh_common_args=SSH_OPTIONS)
    for group in inventory["all"].get("children", {}).values():
        for host in (group.get("hosts") or {}).values():
            address = host.get("vmconsole_cluster_address") or host.get("vmconsole_public_address")
            if not address:
                raise ValueError("a lab host without an address: %r" % host)
            host["ansible_host"] = address
    return inventory


def check_vv(text, node_names, proxy_port=3128):
    """What is wrong with a SPICE .vv through the proxy of a node called one of ``node_names`` ([] when nothing)."""
    from ansible_collections.vmconsole.secure.plugins.module_utils._vv import parse_vv  # the collection's one .vv reader

    try:
        vv = parse_vv(text)
    except ValueError as error:
        return [str(error)]
    errors = []
    if vv.get("type") != "spice":
        errors.append("type is %r, not spice" % vv.get("type"))
    for key in ("password", "tls-port", "ca", "host-subject"):
        if not vv.get(key):
            errors.append("no %s" % key)
    proxy = urlsplit(vv.get("proxy", ""))
    if proxy.scheme != "http" or proxy.hostname not in node_names or proxy.port != proxy_port or not proxy.password:
        errors.append("proxy is not a proxy token for port %d of %s" % (proxy_port, "/".join(sorted(node_names))))
    return errors


def node_names(lab_spec, node):
    """A lab host's inventory name and its addresses (a .vv may name its proxy by either)."""
    loader = type("Loader", (yaml.SafeLoader,), {})
    loader.add_constructor("!unsafe", lambda load, value: load.construct_scalar(value))
    with open(lab_spec) as handle:
        spec = yaml.load(handle, Loader=loader)  # nosec B506: SafeLoader plus one tag
    [platform] = [p for p in spec["lab_platforms"] if p["name"] == node]
    return {node} | set(platform["addresses"].values())


def pack_dependency(name, dest):
    """community.crypto as a tarball, packed as tests/integration/test_galaxy_install.py packs it."""
    path = os.path.join(ROOT, "tests", "integration", "test_galaxy_install.py")
    spec = importlib.util.spec_from_file_location("vmc_galaxy_install", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.pack_installed(name, os.environ["ANSIBLE_COLLECTIONS_PATH"], dest)


def tool_venv():
    requirements = os.path.join(ROOT, "tools", "ee", "requirements.txt")
    stamp = os.path.join(VENV, ".requirements")
    with open(requirements) as handle:
        want = handle.read()
    try:
        with open(stamp) as handle:
            if handle.read() == want:
                return
    except OSError:
        pass
    shutil.rmtree(VENV, ignore_errors=True)
    run([sys.executable, "-m", "venv", VENV])
    run([os.path.join(VENV, "bin", "pip"), "install", "-q", "--disable-pip-version-check", "-r", requirements])
    with open(stamp, "w") as handle:
        handle.write(want)


def image_key(base, files):
    """The EE image's tag: 12 hex digits of what it is built from.

    ``base`` is the base image's reference (keyed by lab/build-image.sh), ``files`` maps a name to the
    bytes of each input: the EE definition, the builder's pins, each collection tarball's MANIFEST.json
    and FILES.json (every file's checksum; the tarballs' own bytes change with their timestamps).
    """
    digest = hashlib.sha256(base.encode("utf-8") + b"\0")
    for name in sorted(files):
        digest.update(name.encode("utf-8") + b"\0" + hashlib.sha256(files[name]).hexdigest().encode("ascii") + b"\n")
    return digest.hexdigest()[:12]


def tarball_listing(path):
    """A collection tarball's MANIFEST.json and FILES.json (what it holds, with checksums), by member name."""
    with tarfile.open(path) as tar:
        return {"%s:%s" % (os.path.basename(path), name): tar.extractfile(name).read() for name in ("MANIFEST.json", "FILES.json")}


def stale_images(references, keep):
    """The tags of IMAGE among ``references`` other than ``keep`` (what a build leaves to remove)."""
    return sorted(r for r in references if r.startswith(IMAGE + ":") and r != keep)


def step_build():
    tool_venv()
    base = subprocess.run(["bash", os.path.join(ROOT, "lab", "build-image.sh"), "base", "trixie"],
                          capture_output=True, text=True, check=True).stdout.split()[-1]
    definition = os.path.join(WORK, "definition")
    shutil.rmtree(definition, ignore_errors=True)
    collections = os.path.join(definition, "_collections")
    os.makedirs(collections)
    shutil.copy(os.path.join(ROOT, "tools", "ee", "execution-environment.yml"), definition)
    out = os.path.join(WORK, "dist")
    shutil.rmtree(out, ignore_errors=True)
    run(["ansible-galaxy", "collection", "build", "--output-path", out, ROOT], stdout=subprocess.DEVNULL)
    [artifact] = [name for name in os.listdir(out) if name.startswith("vmconsole-secure-")]
    shutil.copy(os.path.join(out, artifact), os.path.join(collections, "vmconsole-secure.tar.gz"))
    shutil.move(pack_dependency("community.crypto", out), os.path.join(collections, "community-crypto.tar.gz"))
    inputs = {}
    for name in ("execution-environment.yml", "requirements.txt"):
        with open(os.path.join(ROOT, "tools", "ee", name), "rb") as handle:
            inputs[name] = handle.read()
    for name in sorted(os.listdir(collections)):
        inputs.update(tarball_listing(os.path.join(collections, name)))
    image = "%s:%s" % (IMAGE, image_key(base, inputs))
    no_cache = os.environ.get("VMC_EE_NO_CACHE") == "1"
    if no_cache:
        subprocess.run(["podman", "rmi", image], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    if no_cache or subprocess.run(["podman", "image", "exists", image], check=False).returncode != 0:
        # The build's RUN steps reach Debian's mirror and PyPI on the host's network, with the
        # machine's trust store (a TLS-inspecting proxy's CA, where there is one). No layer images:
        # the keyed image is the cache, and nothing else of a build stays in podman's storage.
        extra = "--network=host --layers=false"
        bundle = "/etc/ssl/certs/ca-certificates.crt"
        if os.path.exists(bundle):
            extra += " --volume=%s:%s:ro" % (bundle, bundle)
        run([os.path.join(VENV, "bin", "ansible-builder"), "build", "-f", os.path.join(definition, "execution-environment.yml"),
             "-c", os.path.join(WORK, "context"), "-t", image, "--container-runtime", "podman",
             "--build-arg", "EE_BASE_IMAGE=" + base, "--extra-build-cli-args", extra, "-v", "2"]
            + (["--no-cache"] if no_cache else []))
        if os.environ.get("VMC_LAB_KEEP_IMAGES") != "1":
            # This image's other keys (older checkouts' builds); one a container still uses stays.
            tags = subprocess.run(["podman", "images", "--format", "{{.Repository}}:{{.Tag}}", IMAGE],
                                  capture_output=True, text=True, check=True).stdout.split()
            for stale in stale_images(tags, image):
                subprocess.run(["podman", "rmi", stale], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    else:
        log("%s exists (built from the same inputs): no build" % image)
    # What the image holds: the pinned ansible-core, both collections, the packages their
    # meta/execution-environment.yml ask for.
    listing = subprocess.run(["podman", "run", "--rm", image, "sh", "-c",
                              "ansible --version | head -n1; ansible-galaxy collection list 2>/dev/null | grep -E 'vmconsole|crypto'; "
                              "python3 -c 'import cryptography; print(\"cryptography\", cryptography.__version__)'; ssh -V 2>&1"],
                             capture_output=True, text=True, check=True).stdout
    log("image %s:\n%s" % (image, listing))
    for needed in ("core 2.19.14", "vmconsole.secure", "community.crypto", "cryptography", "OpenSSH"):
        if needed not in listing:
            raise RuntimeError("the image lacks %s" % needed)
    with open(IMAGE_STAMP, "w") as handle:
        handle.write(image + "\n")


def built_image():
    """The EE image step_build made or found (a step on its own after an earlier ``build``)."""
    try:
        with open(IMAGE_STAMP) as handle:
            image = handle.read().strip()
    except OSError:
        raise RuntimeError("no EE image yet: run tools/ee.py build first") from None
    if subprocess.run(["podman", "image", "exists", image], check=False).returncode != 0:
        raise RuntimeError("%s is gone: run tools/ee.py build again" % image)
    return image


def step_lab():
    run(["ansible-playbook", os.path.join(ROOT, "molecule", "shared", "create.yml"), "-e", "@" + LAB_SPEC])
    run([sys.executable, os.path.join(ROOT, "lab", "portal_user.py"), LAB_DIR, "demo"])
    key = os.path.join(LAB_DIR, "ee_ssh_key")
    if not os.path.exists(key):
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "vmconsole-ee-test", "-f", key])
    with open(key + ".pub") as handle:
        public = handle.read().strip()
    inventory = os.path.join(LAB_DIR, "inventory.yml")
    # An SSH server on the nodes (through the lab's own connection, from this machine).
    run(["ansible", "-i", inventory, "hypervisors", "-m", "ansible.builtin.apt", "-a", "name=openssh-server state=present update_cache=true"],
        stdout=subprocess.DEVNULL)
    run(["ansible", "-i", inventory, "hypervisors", "-m", "ansible.posix.authorized_key", "-a", "user=root key='%s'" % public],
        stdout=subprocess.DEVNULL)
    run(["ansible", "-i", inventory, "hypervisors", "-m", "ansible.builtin.systemd_service", "-a", "name=ssh state=started enabled=true"],
        stdout=subprocess.DEVNULL)
    with open(inventory) as handle:
        lab_inventory = yaml.safe_load(handle)
    with open(os.path.join(LAB_DIR, "ee-inventory.yml"), "w") as handle:
        yaml.safe_dump(ee_inventory(lab_inventory, key), handle, default_flow_style=False)
    os.chmod(key, 0o600)


def runner(ident, playbook, *extra_vars):
    """``ansible-runner run`` in the EE (as AWX runs a job): a project playbook that imports the collection's.

    Returns the job's stdout. ansible-navigator would do the same through ansible-runner, but refuses to
    start on a machine without /dev/mqueue (this lab's), although podman runs containers here without one.
    The job's container is ansible_runner_vmc-ee-<ident> (RUNNER_PREFIX): step_down looks for it.
    """
    image = built_image()
    private = os.path.join(WORK, "runner")
    shutil.rmtree(private, ignore_errors=True)
    os.makedirs(os.path.join(private, "project"))
    # ansible-runner mounts its private data folder as /runner: the inventory goes in there.
    os.makedirs(os.path.join(private, "inventory"))
    shutil.copy(os.path.join(LAB_DIR, "ee-inventory.yml"), os.path.join(private, "inventory", "hosts.yml"))
    with open(os.path.join(private, "project", "play.yml"), "w") as handle:
        handle.write("---\n- name: %s from the execution environment\n  ansible.builtin.import_playbook: %s\n" % (playbook, playbook))
    env = dict(os.environ)
    for name in list(env):
        # Nothing of this checkout on the EE's Ansible path: the collection comes from the image.
        if name.startswith("ANSIBLE_") or name == "PYTHONPATH":
            del env[name]
    argv = [os.path.join(VENV, "bin", "ansible-runner"), "run", private, "-p", "play.yml", "--ident", LAB + "-" + ident,
            "--process-isolation", "--process-isolation-executable", "podman", "--container-image", image,
            # The host's network reaches the lab's bridge; root writes the CA into the mounted lab folder.
            "--container-option=--network=host", "--container-option=--user=0",
            "--container-volume-mount", "%s:%s:Z" % (LAB_DIR, LAB_DIR)]
    if extra_vars:
        argv += ["--cmdline", " ".join("-e %s" % pair for pair in extra_vars)]
    run(argv, env=env)
    with open(os.path.join(private, "artifacts", LAB + "-" + ident, "stdout")) as handle:
        return handle.read()


def files_holding(folder, secrets):
    """The files under ``folder`` that hold one of ``secrets`` (paths only: a secret is never printed)."""
    found = []
    for parent, _dirs, names in os.walk(folder):
        for name in names:
            path = os.path.join(parent, name)
            with open(path, "rb") as handle:
                data = handle.read()
            if any(secret.encode("utf-8") in data for secret in secrets):
                found.append(os.path.relpath(path, folder))
    return sorted(found)


def recap(stdout):
    """``{host: {"ok": n, "changed": n, "unreachable": n, "failed": n, ...}}`` of a PLAY RECAP."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", stdout)
    hosts = {}
    for line in text.split("PLAY RECAP", 1)[-1].splitlines()[1:]:
        match = re.match(r"^(\S+)\s+:\s+(.*)$", line)
        if match:
            hosts[match.group(1)] = dict((key, int(value)) for key, value in re.findall(r"(\w+)=(\d+)", match.group(2)))
    return hosts


def check_recap(hosts, names):
    """What is wrong with a run whose recap is ``hosts``, which must have reached every one of ``names``."""
    errors = ["%s did not run" % name for name in sorted(names) if name not in hosts]
    errors += ["%s: %s" % (name, counts) for name, counts in sorted(hosts.items())
               if counts.get("failed", 0) or counts.get("unreachable", 0)]
    return errors


def changed_tasks(stdout):
    """``["TASK NAME (host)", ...]``: every task result reported as changed in a run's stdout."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", stdout)
    task, found = "?", []
    for line in text.splitlines():
        header = re.match(r"^(?:TASK|RUNNING HANDLER) \[(.*)\] \**$", line)
        if header:
            task = header.group(1)
            continue
        result = re.match(r"^changed: \[([^\]]+)\]", line)
        if result:
            found.append("%s (%s)" % (task, result.group(1)))
    return found


def check_unchanged(hosts, stdout):
    """What is wrong with a second run: a host whose recap has changed > 0, and the tasks that changed."""
    errors = ["%s: changed=%d" % (name, counts.get("changed", 0)) for name, counts in sorted(hosts.items()) if counts.get("changed", 0)]
    if errors:
        errors += ["changed: " + task for task in changed_tasks(stdout)]
    return errors


def step_run():
    tool_venv()
    errors = check_recap(recap(runner("site", "vmconsole.secure.site")), {"hv1"})
    if errors:
        raise RuntimeError("site.yml: " + "; ".join(errors))
    vv = os.path.join(LAB_DIR, "vm1-from-ee.vv")
    if os.path.exists(vv):
        os.unlink(vv)
    # The ticket lives 120 s: long enough for the viewer below to connect (an open console stays open).
    errors = check_recap(recap(runner("console", "vmconsole.secure.console", "vm=vm1", "target=hv1", "proxy_user=demo", "ttl=120",
                                      "dest=" + vv)), {"hv1", "localhost"})
    if errors:
        raise RuntimeError("console.yml: " + "; ".join(errors))
    with open(vv) as handle:
        text = handle.read()
    errors = check_vv(text, node_names(LAB_SPEC, "hv1"))
    if errors:
        raise RuntimeError("%s: %s" % (vv, "; ".join(errors)))
    log("%s: vm1's SPICE console through hv1's proxy (mode %o)" % (vv, os.stat(vv).st_mode & 0o777))
    from ansible_collections.vmconsole.secure.plugins.module_utils._vv import parse_vv

    fields = parse_vv(text)
    secrets = [fields["password"], urlsplit(fields["proxy"]).password]
    leaks = files_holding(os.path.join(WORK, "runner"), secrets)
    if leaks:
        raise RuntimeError("the .vv's ticket or proxy token is in ansible-runner's artifacts: %s" % ", ".join(leaks))
    # The .vv opens: remote-viewer on the client, through hv1's proxy, QEMU lists it (the demo's check).
    run(["ansible-playbook", "-i", os.path.join(LAB_DIR, "inventory.yml"), os.path.join(ROOT, "lab", "console_open.yml"),
         "-e", "console_vv=" + vv, "-e", "vm=vm1", "-e", "target=hv1"])


def step_again():
    """site.yml from the EE once more: nothing to change."""
    tool_venv()
    stdout = runner("site-again", "vmconsole.secure.site")
    hosts = recap(stdout)
    errors = check_recap(hosts, {"hv1"}) + check_unchanged(hosts, stdout)
    if errors:
        raise RuntimeError("site.yml a second time: " + "; ".join(errors))
    log("site.yml a second time: %s" % ", ".join("%s changed=%d" % (name, counts["changed"]) for name, counts in sorted(hosts.items())))


def leftovers():
    """What of this test still exists in podman: the lab's containers and networks, ansible-runner's containers."""
    names = subprocess.run(["podman", "ps", "--all", "--external", "--format", "{{.Names}}"],
                           capture_output=True, text=True, check=True).stdout.split()
    networks = subprocess.run(["podman", "network", "ls", "--format", "{{.Name}}"],
                              capture_output=True, text=True, check=True).stdout.split()
    return left_behind(names, networks)


def left_behind(containers, networks):
    """Of ``containers`` and ``networks`` (podman's names), those this test made."""
    return (["container " + n for n in sorted(containers) if n.startswith((LAB + "-", RUNNER_PREFIX))]
            + ["network " + n for n in sorted(networks) if n.startswith(LAB + "-")])


def step_down():
    try:
        run(["ansible-playbook", os.path.join(ROOT, "molecule", "shared", "destroy.yml"), "-e", "lab_name=" + LAB])
    finally:
        shutil.rmtree(os.path.join(WORK, "runner"), ignore_errors=True)   # the jobs' artifacts
    left = leftovers()
    if left:
        raise RuntimeError("left behind: " + ", ".join(left))


STEPS = ("build", "lab", "run", "again", "down")


def main(argv):
    steps = argv or list(STEPS)
    unknown = [s for s in steps if s not in STEPS]
    if unknown:
        sys.stderr.write(__doc__[__doc__.index("Usage:"):])
        return 2
    rc = 0
    for step in steps:
        if rc and step != "down":
            continue
        start = time.monotonic()
        try:
            globals()["step_" + step]()
        except (subprocess.CalledProcessError, RuntimeError, OSError, ValueError) as error:
            log("%s failed: %s" % (step, error))
            rc = 1
        log("-- %s: rc=%d in %.0f s" % (step, rc, time.monotonic() - start))
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
