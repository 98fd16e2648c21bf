# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The lab's create/destroy playbooks against real podman: failures leave nothing behind."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CREATE = ROOT / "molecule" / "shared" / "create.yml"
DESTROY = ROOT / "molecule" / "shared" / "destroy.yml"

pytestmark = pytest.mark.skipif(shutil.which("podman") is None, reason="podman is not installed")


def lab_spec(tmp_path, name, platforms, n):
    spec = {
        "lab_name": name,
        "lab_networks": {"cluster": {"subnet": f"10.89.{n}.0/24"}, "public": {"subnet": f"10.90.{n}.0/24"}},
        "lab_platforms": platforms,
    }
    path = tmp_path / f"{name}.yml"
    path.write_text(yaml.safe_dump(spec))
    return path


def playbook(playbook_path, spec, work):
    env = dict(os.environ, VMC_WORK=str(work), ANSIBLE_NOCOLOR="1")
    return subprocess.run(
        ["ansible-playbook", str(playbook_path), "-e", f"@{spec}"],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )


def podman_lines(*args):
    out = subprocess.run(["podman", *args], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if line.strip()]


def leftovers(name):
    label = f"label=vmconsole.lab={name}"
    records = sorted(str(p) for p in Path("/run/vmconsole-lab/connection").glob(f"{name}-*.json"))
    return (podman_lines("ps", "--all", "--quiet", "--filter", label)
            + podman_lines("network", "ls", "--quiet", "--filter", label) + records)


@pytest.fixture
def lab_name(request):
    """A unique lab name; whatever the test leaves is removed afterwards by label."""
    name = "vmc-t-" + request.node.name.replace("_", "")[4:16].lower()
    yield name
    for cid in podman_lines("ps", "--all", "--quiet", "--filter", f"label=vmconsole.lab={name}"):
        subprocess.run(["podman", "rm", "--force", "--time", "2", cid], capture_output=True, check=False)
    for net in podman_lines("network", "ls", "--quiet", "--filter", f"label=vmconsole.lab={name}"):
        subprocess.run(["podman", "network", "rm", "--force", net], capture_output=True, check=False)


def test_create_fails_when_a_host_does_not_boot_and_removes_everything(tmp_path, lab_name):
    spec = lab_spec(tmp_path, lab_name, [
        {"name": "hv1", "groups": ["hypervisors"], "addresses": {"cluster": "10.89.201.11"}},
        {"name": "hv2", "groups": ["hypervisors"], "addresses": {"cluster": "10.89.201.12"},
         "command": ["/bin/false"]},
    ], 201)
    result = playbook(CREATE, spec, tmp_path)
    assert result.returncode != 0
    assert "did not come up" in result.stdout
    assert "Host hv2 did not boot" in result.stdout
    assert leftovers(lab_name) == []


def test_a_stale_lab_is_refused_and_destroy_leaves_nothing(tmp_path, lab_name):
    spec = lab_spec(tmp_path, lab_name, [
        {"name": "hv1", "groups": ["hypervisors"], "addresses": {"cluster": "10.89.202.11", "public": "10.90.202.11"}},
        {"name": "client", "groups": ["clients"], "addresses": {"public": "10.90.202.21"}},
    ], 202)
    first = playbook(CREATE, spec, tmp_path)
    assert first.returncode == 0, first.stdout[-3000:]
    inventory = yaml.safe_load((tmp_path / "lab" / lab_name / "inventory.yml").read_text())
    hv1 = inventory["all"]["children"]["hypervisors"]["hosts"]["hv1"]
    assert hv1["ansible_host"] == f"{lab_name}-hv1"
    assert hv1["vmconsole_cluster_address"] == "10.89.202.11"
    # The client resolves hv1 to hv1's address on the network they share.
    hosts = subprocess.run(["podman", "exec", f"{lab_name}-client", "getent", "hosts", "hv1"],
                           capture_output=True, text=True, check=True).stdout
    assert hosts.split()[0] == "10.90.202.11"

    again = playbook(CREATE, spec, tmp_path)
    assert again.returncode != 0
    assert f"A lab named {lab_name} from an earlier run exists" in again.stdout
    running = podman_lines("ps", "--filter", f"label=vmconsole.lab={lab_name}", "--format", "{{.Names}}")
    assert sorted(running) == [f"{lab_name}-client", f"{lab_name}-hv1"], "a refused create must not touch the lab"

    gone = playbook(DESTROY, spec, tmp_path)
    assert gone.returncode == 0, gone.stdout[-3000:]
    assert leftovers(lab_name) == []
    assert not (tmp_path / "lab" / lab_name).exists()
    assert playbook(DESTROY, spec, tmp_path).returncode == 0, "destroying an absent lab is not an error"


def test_the_lab_connection_pipes_modules_and_still_copies_files(tmp_path, lab_name):
    """lab_podman: a module runs in the container (no podman call, nothing copied), forked by the
    fork server the connection started there, in the container's cgroup and environment; with
    the fork server off it runs as a process entered into the container; copy and fetch work,
    and a container that was replaced under the same name is found again."""
    spec = lab_spec(tmp_path, lab_name, [
        {"name": "hv1", "groups": ["hypervisors"], "addresses": {"cluster": "10.89.203.11"}},
    ], 203)
    created = playbook(CREATE, spec, tmp_path)
    assert created.returncode == 0, created.stdout[-3000:]
    inventory = tmp_path / "lab" / lab_name / "inventory.yml"
    env = dict(os.environ, VMC_WORK=str(tmp_path), ANSIBLE_NOCOLOR="1")

    def adhoc(module, args, *extra):
        return subprocess.run(["ansible", "-i", str(inventory), "hv1", "-m", module, "-a", args, *extra],
                              env=env, capture_output=True, text=True, timeout=120, check=False)

    container = f"{lab_name}-hv1"
    cgroup = subprocess.run(["podman", "inspect", "--format", "{{.State.CgroupPath}}", container],
                            capture_output=True, text=True, check=True).stdout.strip()
    ran = adhoc("ansible.builtin.command", "sh -c 'cat /etc/hostname /proc/self/cgroup; echo container=$container'",
                "-vvv")
    assert ran.returncode == 0, ran.stdout[-3000:]
    assert "hv1" in ran.stdout and "container=podman" in ran.stdout
    assert f":{cgroup}\n" in ran.stdout, "the command did not run in the container's cgroup"
    podman_runs = [line for line in ran.stdout.splitlines() if "RUN [" in line]
    forked = [line for line in ran.stdout.splitlines() if f"> FORK {container} [" in line]
    assert podman_runs == [] and len(forked) == 1, ran.stdout[-3000:]
    # The first module on the host started the fork server (lab/python/vmc_lab_forkserver.py),
    # inside the container: the command above ran in the container's cgroup and environment.
    assert f"FORK SERVER {container}: started " in ran.stdout, ran.stdout[-3000:]
    assert "NSENTER " not in ran.stdout and "PUT " not in ran.stdout, "the module was not piped to the fork server"
    # The usual way still works, and is the way with the fork server turned off.
    plain = subprocess.run(["ansible", "-i", str(inventory), "hv1", "-m", "ansible.builtin.command",
                            "-a", "sh -c 'cat /proc/self/cgroup; echo container=$container'", "-vvv"],
                           env=dict(env, VMC_LAB_FORK_SERVER="0"), capture_output=True, text=True, timeout=120, check=False)
    assert plain.returncode == 0 and f":{cgroup}\n" in plain.stdout and "container=podman" in plain.stdout, plain.stdout[-3000:]
    assert len([line for line in plain.stdout.splitlines() if "NSENTER " in line]) == 1 and "> FORK " not in plain.stdout
    # lab/python/vmc_lab_zipcache.py is loaded and keeps what the module's zip compiled to.
    cached = adhoc("ansible.builtin.command", "find /var/cache/vmc-lab-pycache -type f")
    assert cached.returncode == 0 and len(cached.stdout.splitlines()) > 20, cached.stdout[-3000:]

    copied = adhoc("ansible.builtin.copy", "content='lab\n' dest=/root/copied mode=0600")
    assert copied.returncode == 0 and "CHANGED" in copied.stdout, copied.stdout[-3000:]
    fetched = adhoc("ansible.builtin.fetch", f"src=/root/copied dest={tmp_path}/fetched/ flat=true")
    assert fetched.returncode == 0, fetched.stdout[-3000:]
    assert (tmp_path / "fetched" / "copied").read_text() == "lab\n"
    mode = adhoc("ansible.builtin.command", "stat -c %a /root/copied")
    assert mode.returncode == 0 and "\n600" in mode.stdout, mode.stdout[-3000:]

    # Same name, new container (new PID): the cached PID is noticed as stale.
    old = subprocess.run(["podman", "inspect", "--format", "{{.State.Pid}}", container],
                         capture_output=True, text=True, check=True).stdout.strip()
    subprocess.run(["podman", "restart", "--time", "2", container], capture_output=True, check=True)
    # As create.yml does: a task waits for the boot (systemd-tmpfiles empties /tmp while it boots).
    deadline = time.monotonic() + 90
    while subprocess.run(["podman", "exec", container, "systemctl", "is-system-running", "--wait"],
                         capture_output=True, text=True, check=False).stdout.strip() not in ("running", "degraded"):
        assert time.monotonic() < deadline, "the restarted container did not boot in 90 s"
        time.sleep(0.5)
    again = adhoc("ansible.builtin.command", "cat /etc/hostname", "-vvv")
    assert again.returncode == 0 and "hv1" in again.stdout, again.stdout[-3000:]
    assert f"FORK SERVER {container}: started " in again.stdout, "the new container got no fork server of its own"
    new = subprocess.run(["podman", "inspect", "--format", "{{.State.Pid}}", container],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert new != old
    assert playbook(DESTROY, spec, tmp_path).returncode == 0
    assert leftovers(lab_name) == [], "destroy left the connection's record of the container"


def test_the_lab_local_connection_runs_piped_modules_in_its_fork_server_as_they_run_without(tmp_path):
    """lab/plugins/connection/local.py: on localhost a piped module runs in the lab's fork server,
    with this run's environment, folder and umask, and gives what it gives without the server."""
    venv_python = shutil.which("python3")
    command = ["ansible", "-i", "localhost,", "-c", "local", "localhost", "-e", f"ansible_python_interpreter={venv_python}",
               "-m", "ansible.builtin.command", "-a", "sh -c 'echo $VMC_PROBE; pwd; umask'", "-vvv"]
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_PIPELINING="1", VMC_PROBE="probe-value")

    def output(result):
        assert result.returncode == 0, result.stdout[-3000:]
        return result.stdout.split("CHANGED | rc=0 >>\n", 1)[1].splitlines()[:3]

    forked = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert f"FORK /bin/sh -c '{venv_python} && sleep 0'" in forked.stdout, forked.stdout[-3000:]
    plain = subprocess.run(command, cwd=tmp_path, env=dict(env, VMC_LAB_FORK_SERVER="0"), capture_output=True,
                           text=True, timeout=120, check=False)
    assert "FORK" not in plain.stdout
    umask = os.umask(0o022)
    os.umask(umask)
    assert output(forked) == output(plain) == ["probe-value", str(tmp_path), "%04o" % umask]
    # tools/test.sh ends the servers when it is done; nothing is left.
    subprocess.run(["python3", str(ROOT / "lab" / "python" / "vmc_lab_forkserver.py"), "--stop-all",
                    "/run/vmconsole-lab/forkserver"], check=True, capture_output=True)
    assert not list(Path("/run/vmconsole-lab/forkserver").glob("*.sock"))
