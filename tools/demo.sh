#!/usr/bin/env bash
# The main job: bring up the built-in two-hypervisor lab and roll the whole stack onto
# it with playbooks/site.yml, print what runs where, and end with a console opened from
# the client through the proxy (lab/console_check.yml). Safe to run again.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
start=$(date +%s)
bash tools/lab.sh up
# shellcheck source=tools/env.sh
. tools/env.sh
trap vmc_stop_fork_servers EXIT
ansible-playbook playbooks/site.yml
ansible-playbook lab/summary.yml
ansible-playbook lab/console_check.yml
ansible-playbook lab/portal_check.yml
echo "demo: done in $(( $(date +%s) - start )) s (the lab keeps running; 'make lab-down' removes it)"
