#!/usr/bin/env bash
# All tests of vmconsole.secure: ansible-lint and the contract check, ansible-test sanity, unit, integration
# (real QEMU, squid, Xvfb, remote-viewer) and every Molecule scenario (real podman labs).
# The integration tests run first, alone; then the scenarios run in the background (a
# few at a time) while lint, sanity, unit and the ansible-core matrix run in the foreground.
# Every stage runs even when an earlier one failed; the exit status is non-zero when
# anything failed, and the last line counts tests in pytest's "N passed, N failed" form
# (pytest tests counted one by one; lint, sanity and each scenario count as one test).
#
# The end is a time table: every stage and every scenario with its seconds (also in
# .work/test/times.tsv), so each change shows what it cost.
#
# Usage: tools/test.sh [stage...]   stages: lint sanity unit matrix integration molecule
# VMC_MOLECULE_JOBS: scenarios run at once (default 3; 2 cores do not gain from more).
set -uo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
t0=$(date +%s)
bash tools/bootstrap.sh test || exit 1
# shellcheck source=tools/env.sh
. tools/env.sh

stages=("$@")
[ ${#stages[@]} -gt 0 ] || stages=(lint sanity unit matrix integration molecule)
out=$VMC_WORK/test
rm -rf "$out"; mkdir -p "$out"
times=$out/times.tsv
printf 'bootstrap\t%s\t0\n' "$(( $(date +%s) - t0 ))" > "$times"
passed=0 failed=0 skipped=0
failures=()

note() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
count_one() {  # name rc
  if [ "$2" = 0 ]; then passed=$((passed + 1)); else failed=$((failed + 1)); failures+=("$1"); fi
}
count_junit() {  # name rc junit.xml
  local p f s
  if read -r p f s < <(python3 - "$3" <<'PY'
import sys, xml.etree.ElementTree as ET
try:
    root = ET.parse(sys.argv[1]).getroot()
except (OSError, ET.ParseError):
    sys.exit(1)
suites = [root] if root.tag == "testsuite" else list(root)
t = sum(int(s.get("tests", 0)) for s in suites)
f = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
k = sum(int(s.get("skipped", 0)) for s in suites)
print(t - f - k, f, k)
PY
  ); then
    passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + s))
    [ "$f" = 0 ] && [ "$2" = 0 ] && return
    [ "$f" = 0 ] && failed=$((failed + 1))  # pytest failed without a failing test (collection error)
    failures+=("$1")
  else
    count_one "$1" 1
  fi
}
timed() {  # name command...
  local name=$1 start end rc; shift
  start=$(date +%s)
  "$@"; rc=$?
  end=$(date +%s)
  echo "-- $name: rc=$rc in $(( end - start )) s"
  printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$(( end - start ))" "$rc" "$start" "$end" >> "$times"
  return $rc
}
# How busy the cores are through the run (the time table's "cpu N%"): the busy and the total
# jiffies of /proc/stat every 5 s, until the run ends.
cpu_sampler() {
  local _ u n s i w q sq st
  while :; do
    read -r _ u n s i w q sq st _ < /proc/stat
    echo "$(date +%s) $(( u + n + s + q + sq + st )) $(( u + n + s + i + w + q + sq + st ))"
    sleep 5
  done
}

run_stage() {  # stage
  case $1 in
  lint)
    note "ansible-lint (profile production)"
    timed ansible-lint ansible-lint --nocolor; count_one ansible-lint $?
    note "contracts (defaults vs argument specs, no Jinja control flow in vars, no Python in YAML)"
    timed contracts python3 tools/check_contracts.py; count_one contracts $?
    note "antsibull-docs lint-collection-docs (plugin and role docs), antsibull-changelog lint (fragments)"
    timed collection-docs antsibull-docs lint-collection-docs --plugin-docs --validate-collection-refs dependent --disallow-unknown-collection-refs .; count_one collection-docs $?
    timed changelog antsibull-changelog lint; count_one changelog $?
    ;;
  sanity)
    note "ansible-test sanity --local"
    # ansible-test wants the collection under ansible_collections/<ns>/<name>: a copy of
    # the files git knows (tracked or new, not ignored).
    mkdir -p ~/.ansible/test/cache
    [ -f ~/.ansible/test/cache/get_pip_24_2.py ] || cp tools/get_pip_standin.py ~/.ansible/test/cache/get_pip_24_2.py
    sdir=$VMC_WORK/ansible-test/ansible_collections/vmconsole/secure
    rm -rf "$sdir"; mkdir -p "$sdir"
    git ls-files -z --cached --others --exclude-standard | rsync -a --from0 --files-from=- ./ "$sdir/"
    # The copy lies inside this (ignored) .work folder: a repository of its own lets
    # ansible-test list its files with git instead of seeing an ignored path.
    (cd "$sdir" && git init -q && git add -A)
    (cd "$sdir" && timed ansible-test-sanity ansible-test sanity --local --python 3.11 --color no)
    count_one ansible-test-sanity $?
    ;;
  unit)
    note "unit tests (pytest tests/unit)"
    timed unit pytest -q -p no:cacheprovider tests/unit --junitxml="$out/unit.xml"
    count_junit unit $? "$out/unit.xml"
    ;;
  matrix)
    note "ansible-core matrix (tools/matrix.py: unit tests on every other release requires_ansible admits, sanity on the oldest and newest; 2.20+ in a Debian 13 container)"
    timed matrix python3 tools/matrix.py run --skip-pinned --junit "$out/matrix.xml"
    count_junit matrix $? "$out/matrix.xml"
    ;;
  integration)
    note "integration tests (pytest tests/integration: real QEMU, Xvfb, remote-viewer)"
    # Two workers, each test file on one worker: files share no process, port or display
    # (each test takes free ones and retries a lost race). Measured from clean clones on
    # 2026-12-06: 198 s with two workers, 227 s in one process.
    timed integration pytest -q -p no:cacheprovider -n 2 --dist loadfile tests/integration --junitxml="$out/integration.xml"
    count_junit integration $? "$out/integration.xml"
    ;;
  esac
}

# The Molecule stage, in the background: the lab images, then the scenarios
# VMC_MOLECULE_JOBS at a time, in the order that ends first. Each scenario leaves its log, rc and seconds
# in $out; molecule_collect counts them.
molecule_start() {
  local mstart s
  mstart=$(date +%s)
  # Build the lab images once before the scenarios race for them.
  if ! timed lab-images lab/build-image.sh all; then
    echo 1 > "$out/lab-images.rc"; return
  fi
  # The order that ends first on the expected seconds (the last run's, else the ones
  # tools/molecule_order.py knows), VMC_MOLECULE_JOBS at a time.
  python3 tools/molecule_order.py "$VMC_WORK/molecule-times.tsv" "${VMC_MOLECULE_JOBS:-3}" molecule/*/molecule.yml \
    > "$out/molecule-order"
  local -a pids=()
  while read -r s; do
    while [ "$(jobs -rp | wc -l)" -ge "${VMC_MOLECULE_JOBS:-3}" ]; do sleep 2; done
    ( start=$(date +%s); molecule test -s "$s" >"$out/molecule-$s.log" 2>&1; rc=$?
      echo "$(( $(date +%s) - start )) $start $(date +%s)" > "$out/molecule-$s.secs"; echo $rc > "$out/molecule-$s.rc" ) &
    pids+=($!)
  done < "$out/molecule-order"
  wait "${pids[@]}"
  echo "$(( $(date +%s) - mstart )) $mstart $(date +%s)" > "$out/molecule-wall.secs"
}

molecule_collect() {  # pid of molecule_start
  local s rc secs start end
  wait "$1"
  note "molecule scenarios (${VMC_MOLECULE_JOBS:-3} at a time, in the order that ends first; logs in $out)"
  if [ -f "$out/lab-images.rc" ]; then count_one lab-images 1; return; fi
  : > "$out/molecule-times.tsv"
  while read -r s; do
    rc=$(cat "$out/molecule-$s.rc" 2>/dev/null || echo 1)
    start='' end=''
    read -r secs start end < "$out/molecule-$s.secs" 2>/dev/null || secs=0
    echo "-- molecule $s: rc=$rc in $secs s" | tee -a "$out/molecule-$s.log"
    printf 'molecule %s\t%s\t%s\t%s\t%s\n' "$s" "$secs" "$rc" "${start:-}" "${end:-}" >> "$times"
    printf '%s\t%s\n' "$s" "$secs" >> "$out/molecule-times.tsv"
    if [ "$rc" != 0 ]; then
      echo "---- molecule $s failed; the end of its log ($out/molecule-$s.log):"
      grep -v '^\s*$' "$out/molecule-$s.log" | tail -n 60
    fi
    count_one "molecule-$s" "$rc"
  done < "$out/molecule-order"
  cp "$out/molecule-times.tsv" "$VMC_WORK/molecule-times.tsv"
  start='' end=''
  read -r secs start end < "$out/molecule-wall.secs" 2>/dev/null || secs=0
  printf 'molecule (wall)\t%s\t0\t%s\t%s\n' "$secs" "${start:-}" "${end:-}" >> "$times"
}

for stage in "${stages[@]}"; do
  case $stage in lint|sanity|unit|matrix|integration|molecule) ;;
  *) echo "unknown stage: $stage (lint sanity unit matrix integration molecule)"; exit 2 ;;
  esac
done
# Order: the integration tests first, alone (they start real daemons and wait for them),
# then the Molecule scenarios in the background while lint, sanity and unit run: the
# scenarios wait on containers and daemons often enough to leave a core for them.
# Measured from clean clones on 2026-12-06: 1,302 s so; 1,388 s with the scenarios started
# first and the integration tests beside them (both compete for the two cores, and the
# longest scenarios, started first, took 30-50 % longer).
want() { [[ " ${stages[*]} " == *" $1 "* ]]; }
cpu_sampler > "$out/cpu.tsv" &
sampler_pid=$! sampler_start=$(date +%s)
trap 'kill "$sampler_pid" 2>/dev/null; vmc_stop_fork_servers' EXIT
want integration && run_stage integration
molecule_pid=
if want molecule; then
  molecule_start > "$out/molecule-stage.log" 2>&1 &
  molecule_pid=$!
fi
for stage in lint sanity unit matrix; do want $stage && run_stage $stage; done
[ -n "$molecule_pid" ] && molecule_collect "$molecule_pid"

# (The total's cpu share counts from the end of the bootstrap, when the sampler started.)
printf 'total\t%s\t0\t%s\t%s\n' "$(( $(date +%s) - t0 ))" "$sampler_start" "$(date +%s)" >> "$times"
sleep 5   # one more sample after the end; the EXIT trap stops the sampler
echo
echo "time table (seconds; scenarios overlap, 'molecule (wall)' is their stage; under each scenario its phases;"
echo "cpu: how busy both cores were meanwhile, near 100 % only less work is faster):"
python3 tools/time_table.py "$out"
echo
# What failed in each failed scenario, last: the end of a run is often all a CI page keeps.
for f in "${failures[@]}"; do
  case $f in molecule-*)
    echo "-- ${f}: the failed task (tools/failure_excerpt.py $out/$f.log)"
    python3 tools/failure_excerpt.py "$out/$f.log" --blocks 2 | sed 's/^/   /' ;;
  esac
done
[ ${#failures[@]} -eq 0 ] || echo "failed stages: ${failures[*]}"
echo "summary: $passed passed, $failed failed, $skipped skipped"
[ "$failed" = 0 ]
