#!/usr/bin/env bash
# Builds a lab image without a registry and prints its reference on stdout (progress on
# stderr). Two releases (bookworm = Debian 12, trixie = Debian 13), two layers each:
#   base    Debian with systemd (debootstrap into a folder, then `podman import`):
#           what a freshly installed node looks like; proves the roles' install paths.
#   stack   base plus the packages the roles and the scenarios' clients install again and
#           again (QEMU, squid, iptables, python3-cryptography, remote-viewer, Xvfb, ...),
#           so most scenarios start where a node is after its first rollout.
# Every tag is derived from what the image is made of: this script (package lists and
# steps) and the InRelease file of the suite the image installs from, so a new Debian
# point release or a changed list builds a new image and a cached one is never stale.
# Built once under a lock per release, so parallel scenarios share one build; the release's
# older tags are removed (not with VMC_LAB_KEEP_IMAGES=1: another checkout of the machine,
# another branch, may still use them).
#
# Usage: lab/build-image.sh [base|stack] [bookworm|trixie]   (default: stack bookworm)
#        lab/build-image.sh all     both layers of every release (make test, before its scenarios)
set -euo pipefail
releases=(bookworm trixie)
if [ "${1:-}" = all ]; then
  for r in "${releases[@]}"; do "$0" base "$r" >/dev/null && "$0" stack "$r" >/dev/null || exit 1; done
  exit 0
fi
layer=${1:-stack}
suite=${2:-bookworm}
base_packages=python3,systemd,systemd-sysv,dbus,iproute2,procps,ca-certificates,iputils-ping,netcat-openbsd
# What more than one scenario (or the demo) installs. Not here, on purpose, so that a
# scenario on this image still proves its role's install path: libvirt and SASL
# (libvirt_tls, scenario libvirt), iptables and nftables (console_firewall, scenario
# firewall), QEMU's build dependencies (qemu_spice's source method). Scenario migration
# rolls site.yml out onto base-image nodes (the whole install path from a bare Debian),
# and qemu_source installs both of qemu_spice's methods there.
# The QEMU packages are the qemu_spice role's per release (roles/qemu_spice/vars/): Debian 13
# ships SPICE and qxl in qemu-system-modules-spice.
# The console portal's aiohttp and spice-html5 are here too (scenario portal, the demo), and the clients' browser
# for the portal's pages (Chromium, its WebDriver, NSS's tools, curl, python3-venv for Selenium).
stack_packages=(qemu-system-x86 squid logrotate python3-cryptography openssl
                virt-viewer xvfb imagemagick libvirt-clients libsasl2-modules python3-aiohttp
                chromium chromium-driver libnss3-tools curl python3-venv spice-html5)
case $suite in
  bookworm) ;;
  trixie) stack_packages+=(qemu-system-modules-spice) ;;
  *) echo "build-image: error: unknown release '$suite' (bookworm or trixie)" >&2; exit 1 ;;
esac

die() { echo "build-image: error: $*" >&2; exit 1; }
case $layer in base|stack) ;; *) die "unknown layer '$layer' (base or stack)" ;; esac
for tool in podman debootstrap flock python3; do
  command -v "$tool" >/dev/null || die "$tool is missing: run tools/bootstrap.sh (apt-get install podman runc debootstrap)"
done
command -v runc >/dev/null || die "runc is missing: apt-get install runc (crun does not work with this host's cgroups)"

# The same Debian mirror the build host uses (deb822 or one-line sources).
mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
[ -n "$mirror" ] || mirror=$(awk '$1 == "deb" && $0 !~ /security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
[ -n "$mirror" ] || mirror=http://deb.debian.org/debian

# The suite's InRelease names every package index it serves (with their checksums): it
# changes whenever what debootstrap or apt-get would install changes.
release=$(python3 - "$mirror/dists/$suite/InRelease" <<'PY'
import hashlib, sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=60) as r:
    print(hashlib.sha256(r.read()).hexdigest())
PY
) || die "cannot read $mirror/dists/$suite/InRelease (the image is keyed by it)"
key=$(printf '%s\n%s\n' "$(sha256sum < "$0")" "$release" | sha256sum | cut -c1-12)
base_image=localhost/vmconsole-lab:$suite-base-$key
stack_image=localhost/vmconsole-lab:$suite-stack-$key
image=$base_image; [ "$layer" = stack ] && image=$stack_image

lock=/run/lock/vmconsole-lab-image-$suite.lock
exec 9>"$lock"
flock -w 900 9 || die "timed out waiting for another image build ($lock)"
if podman image exists "$image"; then
  echo "$image"
  exit 0
fi

# Remove this release's lab images of other keys (not this one, not another release's,
# not those a container still uses).
prune() {
  [ "${VMC_LAB_KEEP_IMAGES:-0}" = 1 ] && return 0
  podman images --format '{{.Repository}}:{{.Tag}}' --filter reference=localhost/vmconsole-lab \
    | { grep -e ":$suite-" || true; } | { grep -v -e "-$key\$" || true; } \
    | while read -r old; do podman rmi "$old" >/dev/null 2>&1 || true; done
}

if ! podman image exists "$base_image"; then
  prune
  root=$(mktemp -d /var/tmp/vmconsole-lab-rootfs.XXXXXX)
  trap 'rm -rf "$root" "$root.log"' EXIT
  echo "build-image: debootstrap $suite from $mirror (about a minute)" >&2
  if ! debootstrap --variant=minbase --include="$base_packages" "$suite" "$root" "$mirror" >"$root.log" 2>&1; then
    tail -n 20 "$root.log" >&2
    die "debootstrap failed (mirror $mirror); nothing was imported"
  fi
  # Containers boot systemd as PID 1: drop units that make no sense there, keep apt usable.
  chroot "$root" systemctl mask getty@tty1.service console-getty.service systemd-logind.service \
    systemd-resolved.service systemd-timesyncd.service >/dev/null 2>&1 || true
  echo 'APT::Install-Recommends "false";' > "$root/etc/apt/apt.conf.d/90vmconsole-lab"
  rm -rf "$root"/var/cache/apt/archives/*.deb
  tar -C "$root" -c . | podman import --quiet \
    --change 'CMD ["/sbin/init"]' --change 'STOPSIGNAL SIGRTMIN+3' \
    --message "vmconsole.secure lab base ($suite: $base_packages)" - "$base_image" >/dev/null
  rm -rf "$root" "$root.log"; trap - EXIT
  echo "build-image: built $base_image" >&2
fi

if [ "$layer" = stack ] && ! podman image exists "$stack_image"; then
  echo "build-image: installing ${stack_packages[*]} (about two minutes)" >&2
  builder=vmconsole-lab-build-$key-$$
  trap 'podman rm -f "$builder" >/dev/null 2>&1 || true' EXIT
  # Not booted, and no service starts while packages install (policy-rc.d). squid is
  # disabled afterwards: on a node the connect_proxy role enables and starts it with its
  # own configuration, and a scenario that does not run the role gets no proxy on *:3128.
  if ! podman run --name "$builder" --network=host "$base_image" /bin/sh -c "
      set -e
      export DEBIAN_FRONTEND=noninteractive
      printf '#!/bin/sh\\nexit 101\\n' > /usr/sbin/policy-rc.d; chmod 0755 /usr/sbin/policy-rc.d
      apt-get update -q
      apt-get install -y -q --no-install-recommends ${stack_packages[*]}
      systemctl disable squid.service
      rm -f /usr/sbin/policy-rc.d
      apt-get clean
      rm -rf /var/lib/apt/lists/*" >"/var/tmp/$builder.log" 2>&1; then
    tail -n 20 "/var/tmp/$builder.log" >&2; rm -f "/var/tmp/$builder.log"
    die "installing the stack packages failed; nothing was committed"
  fi
  rm -f "/var/tmp/$builder.log"
  podman commit --quiet --change 'CMD ["/sbin/init"]' --change 'STOPSIGNAL SIGRTMIN+3' \
    --change "LABEL vmconsole.lab.packages=${stack_packages[*]}" "$builder" "$stack_image" >/dev/null
  echo "build-image: built $stack_image" >&2
fi
echo "$image"
