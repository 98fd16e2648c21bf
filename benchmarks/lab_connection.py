# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""What the lab's connection saves per task, against the connection it extends.

Run from the repository root after `. tools/env.sh`:  python benchmarks/lab_connection.py [--runs N] [--tasks N]

Starts one lab container (the stack image, systemd as PID 1) of its own and runs the same
playbook (N `ansible.builtin.command` tasks and one `ansible.builtin.copy`) with
`lab_podman` (lab/plugins/connection: nsenter into the container, modules piped in)
and with `containers.podman.podman` (mount, then mkdir, copy, chmod + run, rm per task),
interleaved, plus the floor under both: `podman exec` of `true` as many times as there
are tasks, and `nsenter` of `true` likewise; `lab_podman` runs with its fork server
(lab/python/vmc_lab_forkserver.py) and without it (VMC_LAB_FORK_SERVER=0). Then the CPU
the host (the container's cgroup) spends on the same playbook with the fork server and
lab/python/vmc_lab_zipcache.py, with the zip cache only, and with neither (a second
container without the cache). Last, the controller's side: N community.crypto
x509_certificate_info and N command tasks on localhost, with the lab's local connection
(lab/plugins/connection/local.py) and its fork server and without, the CPU of each
ansible-playbook's cgroup (which the fork server it starts joins). Prints medians, seconds per task and the ratios. Both
containers are removed at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAME = "vmc-bench-connection-%d" % os.getpid()

PLAYBOOK = """
- hosts: all
  gather_facts: false
  tasks:
    - ansible.builtin.command: "true"
      loop: "{{ range(%d) | list }}"
      changed_when: false
    - ansible.builtin.copy:
        content: "bench\\n"
        dest: /root/bench
        mode: "0600"
"""


def run(argv, **kwargs):
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False, **kwargs)
    if proc.returncode != 0:
        raise SystemExit("%s failed (rc %d):\n%s" % (" ".join(argv), proc.returncode, proc.stdout[-3000:]))
    return proc.stdout


def timed(argv, **kwargs):
    start = time.perf_counter()
    run(argv, **kwargs)
    return time.perf_counter() - start


def container_cpu_file(name):
    """The cgroup v1 cpuacct (or v2 cpu.stat) file of a running container."""
    path = run(["podman", "inspect", "--format", "{{.State.CgroupPath}}", name]).strip().strip("/")
    for candidate in ("/sys/fs/cgroup/cpuacct/%s/cpuacct.usage" % path, "/sys/fs/cgroup/%s/cpu.stat" % path):
        if os.path.exists(candidate):
            return candidate
    raise SystemExit("no CPU accounting file for container %s" % name)


def read_cpu(path):
    """CPU seconds the container's processes used so far."""
    with open(path) as f:
        text = f.read()
    if path.endswith("cpuacct.usage"):
        return int(text) / 1e9
    return int(dict(line.split() for line in text.splitlines())["usage_usec"]) / 1e6


LOCAL_PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  tasks:
    - community.crypto.x509_certificate_info:
        path: %(cert)s
      loop: "{{ range(%(tasks)d) | list }}"
    - ansible.builtin.command: "true"
      loop: "{{ range(%(tasks)d) | list }}"
      changed_when: false
"""


def local_cpu(tasks, runs):
    """The CPU the controller spends on localhost modules, with the lab's local fork server and without.

    Each ansible-playbook runs in a cgroup of its own (cgroup v1 cpuacct or v2), which the fork
    server it starts joins too; the servers are ended before and after (they outlive a run).
    """
    stop = [sys.executable, os.path.join(ROOT, "lab", "python", "vmc_lab_forkserver.py"), "--stop-all",
            "/run/vmconsole-lab/forkserver"]
    v1 = os.path.isdir("/sys/fs/cgroup/cpuacct")
    group = os.path.join("/sys/fs/cgroup/cpuacct" if v1 else "/sys/fs/cgroup", "vmc-bench-local-%d" % os.getpid())
    usage = os.path.join(group, "cpuacct.usage" if v1 else "cpu.stat")
    os.makedirs(group)
    cpu = {"fork server": [], "no fork server": []}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            from cryptography import x509  # pylint: disable=import-outside-toplevel
            from cryptography.hazmat.primitives import hashes  # pylint: disable=import-outside-toplevel
            from cryptography.hazmat.primitives.asymmetric import ec  # pylint: disable=import-outside-toplevel
            from cryptography.hazmat.primitives.serialization import Encoding  # pylint: disable=import-outside-toplevel
            import datetime  # pylint: disable=import-outside-toplevel
            key = ec.generate_private_key(ec.SECP256R1())
            name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "bench")])
            now = datetime.datetime.now(datetime.timezone.utc)
            cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                    .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
                    .sign(key, hashes.SHA256()))
            cert_path = os.path.join(tmp, "cert.pem")
            with open(cert_path, "wb") as f:
                f.write(cert.public_bytes(Encoding.PEM))
            playbook = os.path.join(tmp, "local.yml")
            with open(playbook, "w") as f:
                f.write(LOCAL_PLAYBOOK % {"cert": cert_path, "tasks": tasks})
            argv = ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', group, "ansible-playbook", "-i", "localhost,",
                    "-c", "local", "-e", "ansible_python_interpreter=%s" % sys.executable, playbook]
            run(stop)
            for _run in range(runs):
                for side, flag in (("fork server", "1"), ("no fork server", "0")):
                    before = read_cpu(usage)
                    run(argv, env=dict(os.environ, VMC_LAB_FORK_SERVER=flag, ANSIBLE_PIPELINING="1"))
                    cpu[side].append(read_cpu(usage) - before)
    finally:
        run(stop)
        os.rmdir(group)
    return {side: statistics.median(values) for side, values in cpu.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tasks", type=int, default=20)
    args = parser.parse_args()

    image = run([os.path.join(ROOT, "lab", "build-image.sh"), "stack"]).strip().splitlines()[-1]
    pydir = os.path.join(ROOT, "lab", "python")
    cache = ["--volume=%s/%s:/usr/lib/python3/dist-packages/%s:ro" % (pydir, f, f)
             for f in ("vmc_lab_zipcache.py", "vmc_lab_zipcache.pth")]
    # NAME as the lab starts its hosts (with the zip cache); NAME-nocache without it.
    run(["podman", "run", "--detach", "--privileged", "--systemd=always", "--tmpfs=/tmp", "--name", NAME] + cache + [image])
    run(["podman", "run", "--detach", "--privileged", "--systemd=always", "--tmpfs=/tmp", "--name", NAME + "-nocache", image])
    try:
        # systemd's bus appears a moment after the container starts: ask until it answers.
        deadline = time.monotonic() + 90
        while subprocess.run(["podman", "exec", NAME, "systemctl", "is-system-running", "--wait"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False).stdout.strip() not in (
                                 b"running", b"degraded"):
            if time.monotonic() > deadline:
                raise SystemExit("the container's systemd did not come up in 90 s")
            time.sleep(0.5)
        with tempfile.TemporaryDirectory() as tmp:
            playbook = os.path.join(tmp, "bench.yml")
            with open(playbook, "w") as f:
                f.write(PLAYBOOK % args.tasks)
            common = ["ansible-playbook", "-i", NAME + ",", "-e", "ansible_python_interpreter=/usr/bin/python3",
                      "-e", "ansible_user=root", playbook]
            sides = {
                "lab_podman": common + ["-c", "lab_podman"],
                "lab_podman, no fork server": common + ["-c", "lab_podman"],
                "containers.podman.podman": common + ["-c", "containers.podman.podman"],
            }
            no_fork = dict(os.environ, VMC_LAB_FORK_SERVER="0")
            envs = {"lab_podman, no fork server": no_fork}
            floor = "podman exec true x%d" % (args.tasks + 1)
            enter = "nsenter true x%d" % (args.tasks + 1)
            pid = run(["podman", "inspect", "--format", "{{.State.Pid}}", NAME]).strip()
            times = {name: [] for name in list(sides) + [floor, enter]}
            host_cpu = {"fork server and zip cache": [], "zip cache only": [], "neither": []}
            cgroups = {"fork server and zip cache": container_cpu_file(NAME), "zip cache only": container_cpu_file(NAME),
                       "neither": container_cpu_file(NAME + "-nocache")}
            nocache = ["ansible-playbook", "-i", NAME + "-nocache,", "-e", "ansible_python_interpreter=/usr/bin/python3",
                       "-e", "ansible_user=root", "-c", "lab_podman", playbook]
            for _run in range(args.runs):
                for name, argv in sides.items():
                    times[name].append(timed(argv, env=envs.get(name)))
                for name, argv, env in (("fork server and zip cache", sides["lab_podman"], None),
                                        ("zip cache only", sides["lab_podman"], no_fork),
                                        ("neither", nocache, no_fork)):
                    before = read_cpu(cgroups[name])
                    run(argv, env=env)
                    host_cpu[name].append(read_cpu(cgroups[name]) - before)
                times[floor].append(timed(["sh", "-c", 'for i in $(seq %d); do podman exec "$0" true; done' % (args.tasks + 1),
                                           NAME]))
                times[enter].append(timed(["sh", "-c", 'for i in $(seq %d); do nsenter -t "$0" -a true; done' % (args.tasks + 1),
                                           pid]))
    finally:
        subprocess.run(["podman", "rm", "--force", "--time", "2", NAME, NAME + "-nocache"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=False)
        for name in (NAME, NAME + "-nocache"):  # lab_podman's records of the two containers
            try:
                os.unlink("/run/vmconsole-lab/connection/%s.json" % name)
            except OSError:
                pass

    tasks = args.tasks + 1
    med = {name: statistics.median(values) for name, values in times.items()}
    for name, value in med.items():
        print("%-60s %7.2f s  %6.3f s/task  (%d runs)" % (name, value, value / tasks, args.runs))
    print("%-60s %7.2f" % ("ratio containers.podman.podman / lab_podman",
                           med["containers.podman.podman"] / med["lab_podman"]))
    print("%-60s %7.2f" % ("ratio lab_podman / podman exec floor", med["lab_podman"] / med[floor]))
    print("%-60s %7.2f" % ("ratio lab_podman without / with fork server", med["lab_podman, no fork server"] / med["lab_podman"]))
    print("%-60s %7.3f s/task" % ("lab_podman above its nsenter floor", (med["lab_podman"] - med[enter]) / tasks))
    cpu = {name: statistics.median(values) for name, values in host_cpu.items()}
    for name, value in cpu.items():
        print("%-60s %7.2f s  %6.3f s/task  (%d runs)" % ("host CPU, lab_podman, " + name, value, value / tasks, args.runs))
    print("%-60s %7.2f" % ("ratio host CPU zip cache only / neither", cpu["zip cache only"] / cpu["neither"]))
    print("%-60s %7.2f" % ("ratio host CPU fork server and zip cache / zip cache only",
                           cpu["fork server and zip cache"] / cpu["zip cache only"]))
    local = local_cpu(args.tasks, args.runs)
    for name, value in local.items():
        label = "controller CPU, localhost modules, " + name
        print("%-60s %7.2f s  %6.3f s/task  (%d runs)" % (label, value, value / (2 * args.tasks), args.runs))
    print("%-60s %7.2f" % ("ratio controller CPU with / without fork server", local["fork server"] / local["no fork server"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
