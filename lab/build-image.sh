#!/usr/bin/env bash
# Builds the lab's base image (Debian bookworm with systemd) without a registry:
# debootstrap into a folder, then `podman import`. Built once, cached by a tag derived
# from this script's content, under a lock so parallel scenarios share one build.
# Prints the image reference on stdout; progress goes to stderr.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
packages=python3,systemd,systemd-sysv,dbus,iproute2,procps,ca-certificates,iputils-ping,netcat-openbsd
tag=$(cat "$0" | sha256sum | cut -c1-12)
image=localhost/vmconsole-lab:bookworm-$tag
lock=/run/lock/vmconsole-lab-image.lock

die() { echo "build-image: error: $*" >&2; exit 1; }
for tool in podman debootstrap flock; do
  command -v "$tool" >/dev/null || die "$tool is missing: run tools/bootstrap.sh (apt-get install podman runc debootstrap)"
done
command -v runc >/dev/null || die "runc is missing: apt-get install runc (crun does not work with this host's cgroups)"

# The same Debian mirror the build host uses (deb822 or one-line sources).
mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
[ -n "$mirror" ] || mirror=$(awk '$1 == "deb" && $0 !~ /security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
[ -n "$mirror" ] || mirror=http://deb.debian.org/debian

exec 9>"$lock"
flock -w 600 9 || die "timed out waiting for another image build ($lock)"
if podman image exists "$image"; then
  echo "$image"
  exit 0
fi

root=$(mktemp -d /var/tmp/vmconsole-lab-rootfs.XXXXXX)
trap 'rm -rf "$root"' EXIT
echo "build-image: debootstrap bookworm from $mirror (about a minute)" >&2
if ! debootstrap --variant=minbase --include="$packages" bookworm "$root" "$mirror" >"$root.log" 2>&1; then
  tail -n 20 "$root.log" >&2; rm -f "$root.log"
  die "debootstrap failed (mirror $mirror); nothing was imported"
fi
rm -f "$root.log"
# Containers boot systemd as PID 1: drop units that make no sense there, keep apt usable.
chroot "$root" systemctl mask getty@tty1.service console-getty.service systemd-logind.service \
  systemd-resolved.service systemd-timesyncd.service >/dev/null 2>&1 || true
echo 'APT::Install-Recommends "false";' > "$root/etc/apt/apt.conf.d/90vmconsole-lab"
rm -rf "$root"/var/cache/apt/archives/*.deb
tar -C "$root" -c . | podman import --quiet \
  --change 'CMD ["/sbin/init"]' --change 'STOPSIGNAL SIGRTMIN+3' \
  --message "vmconsole.secure lab base ($packages)" - "$image" >/dev/null
echo "build-image: built $image" >&2
echo "$image"
