#!/bin/sh
# Prepares the root that make test-libvirt runs each libvirt "host" from and
# prints its directory as the last line of its output:
#   DIR/root/            a Debian 13 (trixie) root with libvirt 12.x from
#                        trixie-backports (libvirtd, its QEMU driver, virsh)
#                        and the libraries and firmware the patched QEMU of
#                        tests/qemu-migration/ runs with
#   DIR/libvirt-version  libvirtd --version
#
# The test mounts two overlays on DIR/root, one per host, so each host
# writes its own configuration, state and logs while the root stays as
# built. The patched QEMU is not part of the root: the test copies it in,
# at /opt/qemu-mig/bin/qemu-system-x86_64, whose data directory
# (/opt/qemu-mig/share/qemu) links to the root's firmware. Debian's
# libvirt QEMU driver also brings the stock QEMU (/usr/bin), which the
# test uses to show that it refuses the NIC.
#
# Cached like tests/prepare.sh: in $E1000E_VFU_CACHE (default
# /var/cache/e1000e-vfu), in libvirt-<hash of this file and ../lib.sh>,
# built in a temporary directory renamed into place when complete. Runs
# as root; packages come from the mirror the machine's apt sources name
# (override with E1000E_VFU_MIRROR).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
cache=${E1000E_VFU_CACHE:-/var/cache/e1000e-vfu}
key=$(cat "$here/prepare.sh" "$here/../lib.sh" | sha256sum | cut -c1-16)
. "$here/../lib.sh"
dir="$cache/libvirt-$key"

log() { echo "libvirt-root: $*" >&2; }

if [ -f "$dir/complete" ]; then
	echo "$dir"
	exit 0
fi
if [ "$(id -u)" != 0 ]; then
	log "must run as root to build $dir"
	exit 1
fi

mkdir -p "$cache"
exec 9>"$cache/libvirt.lock"
flock 9
if [ -f "$dir/complete" ]; then
	echo "$dir"
	exit 0
fi

t0=$(date +%s)
step() { log "[$(($(date +%s) - t0))s] $*"; }

need=""
command -v debootstrap >/dev/null 2>&1 || need="$need debootstrap"
[ -f /usr/share/keyrings/debian-archive-keyring.gpg ] || need="$need debian-archive-keyring"
if [ -n "$need" ]; then
	step "installing host packages:$need"
	install_host_packages $need
fi

find_mirror || exit 1

tmp="$cache/.libvirt-$key.tmp.$$"
root="$tmp/root"
mounted=""
probe=""
cleanup() {
	if [ -n "$probe" ]; then
		kill "$probe" 2>/dev/null || true
		wait "$probe" 2>/dev/null || true
	fi
	for m in $mounted; do umount -l "$m" 2>/dev/null || true; done
	mounted=""
	if [ -n "${tmp:-}" ] && [ -d "$tmp" ]; then safe_rm "$tmp"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP
# Leftovers of this recipe's killed runs are never reused. (Not named
# tmp.*: tests/prepare.sh removes those under its own lock, not ours.)
for old in "$cache"/.libvirt-*.tmp.*; do
	[ -e "$old" ] || continue
	safe_rm "$old"
done
mkdir -p "$tmp"

step "debootstrap trixie (minbase) from $mirror"
debootstrap --variant=minbase --include=ca-certificates \
	trixie "$root" "$mirror" >"$tmp/debootstrap.log" 2>&1 || {
	tail -n 30 "$tmp/debootstrap.log" >&2
	exit 1
}
for m in proc sys dev; do
	mount --bind "/$m" "$root/$m"
	mounted="$root/$m $mounted"
done
in_root() { chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive "$@"; }

cat >"$root/etc/apt/sources.list" <<SRC
deb $mirror trixie main
deb $mirror trixie-updates main
deb $mirror trixie-backports main
SRC
# A frozen snapshot of the archive may serve Release files past their
# Valid-Until date; accept them, as the host does.
cat >"$root/etc/apt/apt.conf.d/99e1000e-vfu" <<'APT'
Acquire::Check-Valid-Until "false";
Acquire::Check-Date "false";
APT

# libvirt without its systemd units and socket activation: the test runs
# libvirtd itself, in the foreground of a namespace. The libraries are the
# patched QEMU's (ldd of the build), the firmware what it boots with;
# iproute2 is for the hook, which puts a NIC's TAP on its bridge.
step "installing libvirt from trixie-backports"
in_root apt-get update -qq
in_root apt-get install -y -qq --no-install-recommends -t trixie-backports \
	libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients \
	libglib2.0-0t64 libpixman-1-0 libslirp0 libfdt1 zlib1g libatomic1 \
	seabios qemu-system-data ipxe-qemu iproute2 >"$tmp/apt.log" 2>&1 || {
	tail -n 30 "$tmp/apt.log" >&2
	exit 1
}
in_root libvirtd --version >"$tmp/libvirt-version"
# The patched QEMU's data directory (its prefix is /opt/qemu-mig): the
# BIOS and option ROMs it looks for there, which Debian's own build finds
# through a firmware path of its own.
in_root sh -c 'set -e; d=/opt/qemu-mig/share/qemu; mkdir -p /opt/qemu-mig/bin "$d"
	for f in /usr/share/seabios/* /usr/share/qemu/*; do
		[ -e "$d/${f##*/}" ] || ln -s "$f" "$d/"
	done'
in_root test -e /opt/qemu-mig/share/qemu/bios-256k.bin || {
	log "no bios-256k.bin for the patched QEMU"
	exit 1
}

# libvirtd probes every QEMU of the root when it starts (about 3.5 s each
# for Debian's i386 and x86_64 ones under TCG), and caches the result by
# the binaries' and its own ctime, which the test's overlays keep: probe
# once here, with the test's QEMU settings, so the hosts start quicker.
step "probing the root's QEMUs for libvirt's capability cache"
cp "$root/etc/libvirt/qemu.conf" "$tmp/qemu.conf.orig"
cat >"$root/etc/libvirt/qemu.conf" <<'CONF'
user = "root"
group = "root"
security_driver = "none"
cgroup_controllers = [ ]
namespaces = [ ]
CONF
# Started as a simple command, so that $! is libvirtd itself (chroot and
# env exec it) and the kill below reaches it; without the lock's fd, so a
# straggler could never hold the cache's lock.
chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin libvirtd >"$tmp/probe.log" 2>&1 9>&- &
probe=$!
n=0
until in_root virsh -c qemu:///system capabilities >/dev/null 2>&1; do
	n=$((n + 1))
	if [ $n -ge 300 ] || ! kill -0 $probe 2>/dev/null; then
		tail -n 20 "$tmp/probe.log" >&2
		log "libvirtd did not answer"
		exit 1
	fi
	sleep 0.2
done
kill $probe
wait $probe 2>/dev/null || true
probe=""
cp "$tmp/qemu.conf.orig" "$root/etc/libvirt/qemu.conf"
ls "$root"/var/cache/libvirt/qemu/capabilities/*.xml >/dev/null 2>&1 || {
	log "libvirtd cached no QEMU capabilities"
	exit 1
}
rm -rf "$root"/run/libvirt "$root"/var/log/libvirt/* "$tmp/qemu.conf.orig" "$tmp/probe.log"

in_root apt-get clean
for m in $mounted; do umount -l "$m"; done
mounted=""

echo "$(($(date +%s) - t0))" >"$tmp/prepare-seconds"
touch "$tmp/complete"
rm -rf "$dir"
mv "$tmp" "$dir"
tmp=""
step "ready in $dir ($(cat "$dir/libvirt-version"))"
echo "$dir"
