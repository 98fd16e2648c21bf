#!/usr/bin/env bash
# The built-in demo lab outside Molecule (same create/destroy playbooks as the scenarios).
#   tools/lab.sh up     start hv1..hvN and client (kept when already running); N = $NODES
#                       (default 2; `make lab-up NODES=8`), hosts from lab/topology.py; their
#                       Debian releases $RELEASES (default trixie; RELEASES=bookworm,trixie mixes)
#   tools/lab.sh down   remove every container, network and volume of the lab (any size)
# The inventory is written to .work/lab/vmc-demo/inventory.yml (ansible.cfg points there).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
case ${1:-} in
  up) bash tools/bootstrap.sh lab ;;
  down) ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
# shellcheck source=tools/env.sh
. tools/env.sh
[ -x "$VMC_VENV/bin/ansible-playbook" ] || { echo "no venv yet: run tools/bootstrap.sh" >&2; exit 1; }
trap vmc_stop_fork_servers EXIT
if [ "$1" = up ]; then
  mkdir -p "$VMC_WORK/lab"
  hosts="$VMC_WORK/lab/vmc-demo-hosts.json"
  python3 lab/topology.py "${NODES:-2}" "${GUEST_MEMORY:-128M}" "${RELEASES:-trixie}" > "$hosts"
  ansible-playbook molecule/shared/create.yml -e @lab/demo.yml -e "@$hosts"
  # The console portal's demo user (lab/demo.yml): a random password, its hash next to the inventory.
  python3 lab/portal_user.py "$VMC_WORK/lab/vmc-demo" demo
else
  ansible-playbook molecule/shared/destroy.yml -e @lab/demo.yml
fi
