# -*- coding: utf-8 -*-
# Copyright: vmconsole.secure contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""How long the pki role's signing path takes to issue host certificates, against the
openssl command line doing the same work, for 1, 10 and 50 hosts.

Run from the repository root after `. tools/env.sh`:
    python benchmarks/pki_issue.py [--hosts 1,10,50] [--forks 5] [--runs 1]

Both sides use one CA made here (RSA 4096, key encrypted with a passphrase, PKCS#8, as
the role makes it) and issue, per host: an RSA 3072 key, a CSR with the role's subject
(O, CN), SANs (DNS name, two IP addresses) and usages, and a certificate signed by the CA.

- role path: ansible-playbook with the same community.crypto modules and parameters as
  roles/pki/tasks/certificates.yml and install.yml: openssl_privatekey "on the host",
  openssl_csr_pipe "on the host", x509_certificate_pipe (provider ownca) delegated to the
  CA host, copy of the certificate. Hosts are localhost aliases (local connection), each
  with its own output folder; Ansible runs --forks hosts at a time.
- openssl CLI: genpkey, req, x509 -req per host, one host after the other, and the same
  with --forks hosts at a time (a fair match for Ansible's forks).
- ansible baseline: the same playbook with one ping task, for Ansible's start-up.

Prints the times side by side (medians over --runs), the ratios, and the cost per
additional host between the sizes (linear growth means the same cost per host from 1 to
10 as from 10 to 50). RSA key generation time varies a lot from key to key, so single
runs of one host are noisy; --runs 3 steadies them (about three times as long).
Everything lives in a temporary folder that is removed at the end.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

PASSPHRASE = "benchmark-ca-passphrase"

PLAYBOOK = """\
- name: Issue host certificates the way roles/pki does
  hosts: all
  gather_facts: false
  tasks:
    - name: Create the host key (on the host)
      community.crypto.openssl_privatekey:
        path: "{{ out }}/serverkey.pem"
        type: RSA
        size: 3072
        mode: "0600"

    - name: Make the host's signing request (on the host)
      community.crypto.openssl_csr_pipe:
        privatekey_path: "{{ out }}/serverkey.pem"
        subject_ordered:
          - O: vmconsole.secure
          - CN: "{{ inventory_hostname }}"
        subject_alt_name: ["DNS:{{ inventory_hostname }}", "IP:{{ cluster }}", "IP:{{ public }}"]
        use_common_name_for_san: false
        basic_constraints: ["CA:FALSE"]
        basic_constraints_critical: true
        key_usage: [digitalSignature, keyEncipherment]
        key_usage_critical: true
        extended_key_usage: [serverAuth, clientAuth]
      register: csr
      changed_when: false

    - name: Sign it on the CA host
      community.crypto.x509_certificate_pipe:
        provider: ownca
        csr_content: "{{ csr.csr }}"
        ownca_path: "{{ ca_dir }}/ca.crt"
        ownca_privatekey_path: "{{ ca_dir }}/ca.key"
        ownca_privatekey_passphrase: "{{ passphrase }}"
        ownca_not_before: "-10m"
        ownca_not_after: "+825d"
      register: signed
      delegate_to: localhost
      no_log: true

    - name: Install the certificate
      ansible.builtin.copy:
        content: "{{ signed.certificate }}"
        dest: "{{ out }}/servercert.pem"
        mode: "0644"
"""

PING = """\
- name: Ansible's own cost
  hosts: all
  gather_facts: false
  tasks:
    - name: Nothing
      ansible.builtin.ping:
"""

EXT = """\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth, clientAuth
subjectAltName = DNS:{name}, IP:{cluster}, IP:{public}
"""


def run(argv, **kwargs):
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, check=False, **kwargs)
    if proc.returncode != 0:
        raise SystemExit("%s failed (rc %d):\n%s%s" % (argv[0], proc.returncode, proc.stdout[-3000:], proc.stderr[-3000:]))
    return proc


def addresses(index):
    return "10.89.200.%d" % (index % 250 + 1), "10.90.200.%d" % (index % 250 + 1)


def make_ca(folder):
    os.makedirs(folder, mode=0o700)
    run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:4096", "-aes-256-cbc",
         "-pass", "env:PKI_PASS", "-out", os.path.join(folder, "ca.key")], env=dict(os.environ, PKI_PASS=PASSPHRASE))
    run(["openssl", "req", "-x509", "-new", "-key", os.path.join(folder, "ca.key"), "-passin", "env:PKI_PASS",
         "-subj", "/O=vmconsole.secure/CN=vmconsole.secure CA benchmark", "-days", "3650",
         "-addext", "basicConstraints=critical,CA:TRUE,pathlen:0", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
         "-out", os.path.join(folder, "ca.crt")], env=dict(os.environ, PKI_PASS=PASSPHRASE))


def ansible_env(work, forks):
    config = os.path.join(work, "ansible.cfg")
    with open(config, "w") as handle:
        handle.write("[defaults]\nhost_key_checking = false\nretry_files_enabled = false\nforks = %d\n" % forks)
    env = dict(os.environ, ANSIBLE_CONFIG=config, ANSIBLE_NOCOLOR="1", ANSIBLE_STDOUT_CALLBACK="ansible.builtin.minimal")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env.setdefault("ANSIBLE_COLLECTIONS_PATH", os.path.join(root, ".work", "collections"))
    return env


def inventory(work, name, tag, count, ca_dir):
    path = os.path.join(work, "%s-%s.yml" % (name, tag))
    lines = ["all:", "  vars:", "    ansible_connection: local",
             "    ansible_python_interpreter: %s" % sys.executable,
             "    ca_dir: %s" % ca_dir, "    passphrase: %s" % PASSPHRASE, "  hosts:"]
    for index in range(count):
        host = "h%03d" % index
        out = os.path.join(work, name, tag, host)
        os.makedirs(out)
        cluster, public = addresses(index)
        lines.append("    %s: {out: %s, cluster: %s, public: %s}" % (host, out, cluster, public))
    with open(path, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    return path


def role_path(work, env, count, ca_dir, playbook, tag):
    inv = inventory(work, "role", tag, count, ca_dir)
    start = time.perf_counter()
    run(["ansible-playbook", "-i", inv, playbook], env=env)
    return time.perf_counter() - start


def ansible_baseline(work, env, count, ca_dir, playbook, tag):
    inv = inventory(work, "ping", tag, count, ca_dir)
    start = time.perf_counter()
    run(["ansible-playbook", "-i", inv, playbook], env=env)
    return time.perf_counter() - start


def cli_one(work, name, tag, ca_dir, index):
    host = "h%03d" % index
    out = os.path.join(work, name, tag, host)
    os.makedirs(out)
    cluster, public = addresses(index)
    ext = os.path.join(out, "ext.cnf")
    with open(ext, "w") as handle:
        handle.write(EXT.format(name=host, cluster=cluster, public=public))
    key, csr, cert = (os.path.join(out, f) for f in ("serverkey.pem", "server.csr", "servercert.pem"))
    env = dict(os.environ, PKI_PASS=PASSPHRASE)
    run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:3072", "-out", key])
    os.chmod(key, 0o600)
    run(["openssl", "req", "-new", "-key", key, "-subj", "/O=vmconsole.secure/CN=%s" % host, "-out", csr])
    run(["openssl", "x509", "-req", "-in", csr, "-CA", os.path.join(ca_dir, "ca.crt"),
         "-CAkey", os.path.join(ca_dir, "ca.key"), "-passin", "env:PKI_PASS", "-set_serial",
         "0x%s" % os.urandom(16).hex(), "-days", "825", "-extfile", ext, "-out", cert], env=env)


def cli(work, name, count, ca_dir, workers, tag):
    start = time.perf_counter()
    if workers == 1:
        for index in range(count):
            cli_one(work, name, tag, ca_dir, index)
    else:
        with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(lambda index: cli_one(work, name, tag, ca_dir, index), range(count)))
    return time.perf_counter() - start


def check(work, name, count, ca_dir, tag):
    """Every certificate verifies against the CA as a TLS server and as a TLS client."""
    certs = [os.path.join(work, name, tag, "h%03d" % i, "servercert.pem") for i in range(count)]
    for purpose in ("sslserver", "sslclient"):
        run(["openssl", "verify", "-purpose", purpose, "-CAfile", os.path.join(ca_dir, "ca.crt")] + certs)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--hosts", default="1,10,50", help="comma-separated host counts (default 1,10,50)")
    parser.add_argument("--forks", type=int, default=5, help="hosts at a time (Ansible forks, CLI workers; default 5)")
    parser.add_argument("--runs", type=int, default=1, help="runs per size, medians reported (default 1)")
    args = parser.parse_args()
    counts = [int(c) for c in args.hosts.split(",")]
    for tool in ("ansible-playbook", "openssl"):
        if not shutil.which(tool):
            raise SystemExit("%s is not on PATH: run `. tools/env.sh` first" % tool)

    work = tempfile.mkdtemp(prefix="vmconsole-pki-bench.")
    try:
        ca_dir = os.path.join(work, "ca")
        make_ca(ca_dir)
        env = ansible_env(work, args.forks)
        playbook, ping = os.path.join(work, "issue.yml"), os.path.join(work, "ping.yml")
        with open(playbook, "w") as handle:
            handle.write(PLAYBOOK)
        with open(ping, "w") as handle:
            handle.write(PING)

        rows = []
        for count in counts:
            samples = {"role": [], "cli1": [], "cliN": [], "ping": []}
            for run_index in range(args.runs):
                # Interleaved per size and run, so every side sees the same machine state.
                tag = "%d-%d" % (count, run_index)
                samples["role"].append(role_path(work, env, count, ca_dir, playbook, tag))
                samples["cli1"].append(cli(work, "cli1", count, ca_dir, 1, tag))
                samples["cliN"].append(cli(work, "cliN", count, ca_dir, args.forks, tag))
                samples["ping"].append(ansible_baseline(work, env, count, ca_dir, ping, tag))
                for name in ("role", "cli1", "cliN"):
                    check(work, name, count, ca_dir, tag)
            row = {name: statistics.median(values) for name, values in samples.items()}
            row["hosts"] = count
            rows.append(row)
            print("issued %d host certificate(s) each way %d time(s), all verified" % (count, args.runs), file=sys.stderr)

        forks = args.forks
        print("%6s  %12s  %12s  %12s  %12s  %10s  %10s  %12s"
              % ("hosts", "role path", "openssl x1", "openssl x%d" % forks, "ansible ping",
                 "role/x1", "role/x%d" % forks, "role - ping"))
        for row in rows:
            print("%6d  %10.2f s  %10.2f s  %10.2f s  %10.2f s  %10.2f  %10.2f  %10.2f s"
                  % (row["hosts"], row["role"], row["cli1"], row["cliN"], row["ping"],
                     row["role"] / row["cli1"], row["role"] / row["cliN"], row["role"] - row["ping"]))
        print()
        print("cost per additional host (s/host) between sizes:")
        print("%12s  %12s  %12s  %12s" % ("sizes", "role path", "openssl x1", "openssl x%d" % forks))
        for low, high in zip(rows, rows[1:]):
            span = high["hosts"] - low["hosts"]
            print("%12s  %12.3f  %12.3f  %12.3f"
                  % ("%d -> %d" % (low["hosts"], high["hosts"]), (high["role"] - low["role"]) / span,
                     (high["cli1"] - low["cli1"]) / span, (high["cliN"] - low["cliN"]) / span))
        if len(rows) >= 3:
            first = (rows[1]["role"] - rows[0]["role"]) / (rows[1]["hosts"] - rows[0]["hosts"])
            last = (rows[-1]["role"] - rows[-2]["role"]) / (rows[-1]["hosts"] - rows[-2]["hosts"])
            print("role path: per-host cost %d->%d / %d->%d = %.2f (1.0 = linear)"
                  % (rows[-2]["hosts"], rows[-1]["hosts"], rows[0]["hosts"], rows[1]["hosts"], last / first))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
