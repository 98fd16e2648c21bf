# shellcheck shell=bash
# Environment shared by every lab, demo and test command. Source it; it changes nothing.
# Always this checkout's own folders, even when another checkout's env.sh was sourced before.
VMC_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VMC_WORK=$VMC_ROOT/.work
VMC_VENV=$VMC_WORK/venv
VMC_COLLECTIONS=$VMC_WORK/collections
export VMC_ROOT VMC_WORK VMC_VENV VMC_COLLECTIONS
export PATH="$VMC_VENV/bin:$PATH"
export ANSIBLE_COLLECTIONS_PATH="$VMC_COLLECTIONS"
export ANSIBLE_CONFIG="$VMC_ROOT/ansible.cfg"
# The lab's connection (lab/plugins/connection/lab_podman.py: podman with pipelining).
export ANSIBLE_CONNECTION_PLUGINS="$VMC_ROOT/lab/plugins/connection"
# The lab's podman: runc, cgroupfs and explicit ulimits (see lab/containers.conf for why).
export CONTAINERS_CONF="$VMC_ROOT/lab/containers.conf"
export CONTAINERS_STORAGE_CONF="$VMC_ROOT/lab/storage.conf"
export PYTHONPATH="$VMC_COLLECTIONS${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONDONTWRITEBYTECODE=1
# The lab's local connection (lab/plugins/connection/local.py) leaves a fork server running for
# two idle minutes; the tools end them when they are done (tools/test.sh, demo.sh, lab.sh).
vmc_stop_fork_servers() {
  python3 "$VMC_ROOT/lab/python/vmc_lab_forkserver.py" --stop-all /run/vmconsole-lab/forkserver >/dev/null 2>&1 || true
}
