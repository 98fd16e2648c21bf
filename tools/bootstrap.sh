#!/usr/bin/env bash
# Installs everything the lab, the demo and the tests need on a Debian 12 host, and
# nothing twice: apt packages (only when one is missing), a pinned venv in .work/venv
# (rebuilt when requirements change), and the collection dependencies taken from the
# `ansible` wheel on PyPI (Galaxy is not reachable from the build machines).
#
# Usage: tools/bootstrap.sh [lab|test]   (test adds the packages only tests need)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=tools/env.sh
. "$here/tools/env.sh"

what=${1:-lab}
ANSIBLE_WHEEL_VERSION=12.3.0
# galaxy.yml's dependencies (community.crypto) and what only the lab and the tests use.
COLLECTIONS=(community/crypto ansible/posix containers/podman community/general community/libvirt)

apt_packages=(python3-venv python3-cryptography git rsync make openssl iproute2 iptables
              podman runc debootstrap)
if [ "$what" = test ]; then
  # Real components of the integration tests: QEMU with SPICE, a SPICE client on a
  # virtual screen, a screenshot tool, squid (the tests start their own on free loopback
  # ports), Cyrus SASL (saslpasswd2 and the SCRAM plugin, for VNC with SASL) and a real
  # browser for the console portal's pages (headless Chromium, driven by Selenium) with
  # Debian's spice-html5, which the portal serves for SPICE in the browser (without it the
  # SPICE page tests have nothing to load).
  apt_packages+=(qemu-system-x86 qemu-utils seabios virt-viewer xvfb imagemagick
                 squid sasl2-bin libsasl2-modules chromium chromium-driver spice-html5)
fi

log() { printf '\033[1m[bootstrap]\033[0m %s\n' "$*"; }
die() { printf '[bootstrap] error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (apt, podman and network namespaces need it)"
[ -r /etc/debian_version ] || die "this bootstrap supports Debian 12 only"

missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "apt: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Another checkout's bootstrap (or the machine's own apt) may hold dpkg's lock: wait for it
  # rather than fail.
  apt-get -o DPkg::Lock::Timeout=900 update -q >/dev/null
  apt-get -o DPkg::Lock::Timeout=900 install -y -q --no-install-recommends "${missing[@]}" >/dev/null
  # The tests run squid themselves: the distribution's service, started by the install
  # on a systemd host, is not wanted (it would listen on *:3128).
  if [[ " ${missing[*]} " == *" squid "* ]] && [ -d /run/systemd/system ]; then
    systemctl disable --now squid.service >/dev/null 2>&1 || true
  fi
fi

mkdir -p "$VMC_WORK"
stamp="$VMC_WORK/venv/.requirements.sha256"
want=$(cat "$here/requirements.txt" "$here/requirements.lock" | sha256sum | cut -d' ' -f1)
if [ ! -x "$VMC_VENV/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "venv: installing pinned Python requirements into $VMC_VENV"
  rm -rf "$VMC_VENV"
  /usr/bin/python3 -m venv "$VMC_VENV"
  "$VMC_VENV/bin/pip" install -q --disable-pip-version-check \
    -r "$here/requirements.txt" -c "$here/requirements.lock"
  echo "$want" > "$stamp"
fi

# The controller's Python caches what it compiles from Ansible's module zips, as the lab's hosts
# do (lab/python/vmc_lab_zipcache.py): modules run on localhost (the CA, the lab's podman, the
# integration tests' Ansible runs) then cost a third less CPU. Keyed by each source's SHA-256.
site=$("$VMC_VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
printf '%s\nimport vmc_lab_zipcache; vmc_lab_zipcache.install("%s")\n' "$here/lab/python" "$VMC_WORK/pycache-zip" \
  > "$site/vmc_lab_zipcache.pth"

colroot="$VMC_COLLECTIONS/ansible_collections"
cstamp="$VMC_COLLECTIONS/.ansible-$ANSIBLE_WHEEL_VERSION"
if [ ! -f "$cstamp" ]; then
  log "collections: extracting ${COLLECTIONS[*]} from ansible==$ANSIBLE_WHEEL_VERSION"
  mkdir -p "$VMC_WORK/cache"
  wheel=$(ls "$VMC_WORK/cache"/ansible-"$ANSIBLE_WHEEL_VERSION"-*.whl 2>/dev/null | head -n1 || true)
  if [ -z "$wheel" ]; then
    "$VMC_VENV/bin/pip" download -q --disable-pip-version-check --no-deps \
      -d "$VMC_WORK/cache" "ansible==$ANSIBLE_WHEEL_VERSION"
    wheel=$(ls "$VMC_WORK/cache"/ansible-"$ANSIBLE_WHEEL_VERSION"-*.whl | head -n1)
  fi
  rm -rf "$VMC_COLLECTIONS"
  mkdir -p "$colroot"
  "$VMC_VENV/bin/python" - "$wheel" "$VMC_COLLECTIONS" "${COLLECTIONS[@]}" <<'PY'
import sys, zipfile
wheel, dest, wanted = sys.argv[1], sys.argv[2], sys.argv[3:]
prefixes = tuple(f"ansible_collections/{c}/" for c in wanted)
with zipfile.ZipFile(wheel) as z:
    z.extractall(dest, [n for n in z.namelist() if n.startswith(prefixes)])
PY
  touch "$cstamp"
fi
# This checkout is the collection vmconsole.secure.
mkdir -p "$colroot/vmconsole"
ln -sfn "$here" "$colroot/vmconsole/secure"
log "ready: venv $VMC_VENV, collections $VMC_COLLECTIONS"
