#!/bin/sh
# Prepares what the real-QEMU tests need and prints the directory that holds
# it as the last line of its output:
#   DIR/root/         a Debian 13 (trixie) root with QEMU from trixie-backports
#   DIR/firmware/     QEMU's firmware and option ROMs, symlinks resolved
#   DIR/vmlinuz       the guest kernel (Debian's linux-image-amd64)
#   DIR/base.cpio.gz  the guest initramfs without the agent: busybox, e1000e.ko
#                     and the modules it needs, /init
#   DIR/kernel-release, DIR/qemu-version
#
# The cache lives outside the clone, in $E1000E_VFU_CACHE (default
# /var/cache/e1000e-vfu), one directory per hash of the recipe (this file and
# tests/guest/init), so a change of the recipe builds afresh. A build happens
# in a temporary directory renamed into place only when complete, so a killed
# run leaves nothing that a later run would reuse. Runs as root (debootstrap,
# chroot); packages come from the Debian mirror the machine's own apt sources
# name (override with E1000E_VFU_MIRROR).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
cache=${E1000E_VFU_CACHE:-/var/cache/e1000e-vfu}
key=$(cat "$here/prepare.sh" "$here/lib.sh" "$here/guest/init" | sha256sum | cut -c1-16)
. "$here/lib.sh"
dir="$cache/$key"

log() { echo "prepare: $*" >&2; }

if [ -f "$dir/complete" ]; then
	echo "$dir"
	exit 0
fi
if [ "$(id -u)" != 0 ]; then
	log "must run as root to build $dir"
	exit 1
fi

mkdir -p "$cache"
# One builder at a time per cache; the others wait, then reuse its result.
exec 9>"$cache/lock"
flock 9
if [ -f "$dir/complete" ]; then
	echo "$dir"
	exit 0
fi

t0=$(date +%s)
step() {
	now=$(date +%s)
	log "[$((now - t0))s] $*"
}

# Host tools, from the machine's own archive.
need=""
for p in debootstrap:debootstrap flock:util-linux sha256sum:coreutils; do
	command -v "${p%%:*}" >/dev/null 2>&1 || need="$need ${p#*:}"
done
[ -f /usr/share/keyrings/debian-archive-keyring.gpg ] || need="$need debian-archive-keyring"
if [ -n "$need" ]; then
	step "installing host packages:$need"
	install_host_packages $need
fi

# The mirror: the one the machine's apt sources name.
find_mirror || exit 1

tmp="$cache/tmp.$key.$$"
root="$tmp/root"
mounted=""
cleanup() {
	for m in $mounted; do umount -l "$m" 2>/dev/null || true; done
	mounted=""
	if [ -n "${tmp:-}" ] && [ -d "$tmp" ]; then safe_rm "$tmp"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP
# Leftovers of killed runs are never reused; remove them.
for old in "$cache"/tmp.*; do
	[ -e "$old" ] || continue
	safe_rm "$old"
done
mkdir -p "$tmp"

step "debootstrap trixie (minbase) from $mirror"
debootstrap --variant=minbase --include=ca-certificates,cpio,xz-utils,kmod \
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
step "installing qemu-system-x86 from trixie-backports"
in_root apt-get update -qq
in_root apt-get install -y -qq --no-install-recommends -t trixie-backports qemu-system-x86 >"$tmp/apt.log" 2>&1 || {
	tail -n 30 "$tmp/apt.log" >&2
	exit 1
}
in_root qemu-system-x86_64 --version | head -n1 >"$tmp/qemu-version"
in_root qemu-system-x86_64 -device help | grep -q '"vfio-user-pci"' || {
	log "this QEMU has no vfio-user-pci"
	exit 1
}

step "fetching the guest kernel and busybox-static"
kpkg=$(in_root apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
mkdir -p "$root/tmp/pkgs" "$root/tmp/x"
chmod 777 "$root/tmp/pkgs"
in_root sh -c "cd /tmp/pkgs && apt-get download -qq $kpkg busybox-static"
for deb in "$root"/tmp/pkgs/*.deb; do
	in_root dpkg-deb -x "/tmp/pkgs/$(basename "$deb")" /tmp/x
done
x="$root/tmp/x"
release=$(ls "$x/usr/lib/modules" 2>/dev/null || ls "$x/lib/modules")
echo "$release" >"$tmp/kernel-release"
cp "$x/boot/vmlinuz-$release" "$tmp/vmlinuz"
# The package leaves modules.dep to its maintainer scripts; compute it here.
if [ -d "$x/usr/lib/modules" ]; then in_root depmod -b /tmp/x/usr "$release"; else in_root depmod -b /tmp/x "$release"; fi

step "building the base initramfs (kernel $release)"
mods="$x/lib/modules/$release"
[ -f "$mods/modules.dep" ] || mods="$x/usr/lib/modules/$release"
ird="$root/tmp/initramfs"
mkdir -p "$ird/bin" "$ird/lib/modules" "$ird/proc" "$ird/sys" "$ird/dev" "$ird/tmp"
cp "$x/usr/bin/busybox" "$ird/bin/busybox" 2>/dev/null || cp "$x/bin/busybox" "$ird/bin/busybox"
cp "$here/guest/init" "$ird/init"
chmod 755 "$ird/init" "$ird/bin/busybox"
# e1000e, 8021q (VLAN tests) and what they depend on, decompressed; "order"
# lists all but e1000e in load order (init loads e1000e last, with options).
: >"$ird/lib/modules/order"
for want in 8021q e1000e; do
	line=$(awk -F: -v m="/$want.ko" 'index($1, m) { print; exit }' "$mods/modules.dep")
	[ -n "$line" ] || { log "no $want module in $release"; exit 1; }
	deps=""
	for d in ${line#*:}; do deps="$d $deps"; done # listed deepest last
	for m in $deps ${line%%:*}; do
		b=$(basename "$m")
		b=${b%.xz}; b=${b%.gz}
		[ -f "$ird/lib/modules/$b" ] && continue
		# Decompress with the root's tools: the host may lack xz.
		case "$m" in
		*.xz) in_root xz -dc "${mods#"$root"}/$m" >"$ird/lib/modules/$b" ;;
		*.gz) in_root gzip -dc "${mods#"$root"}/$m" >"$ird/lib/modules/$b" ;;
		*) cp "$mods/$m" "$ird/lib/modules/$b" ;;
		esac
		[ "$b" = e1000e.ko ] || echo "$b" >>"$ird/lib/modules/order"
	done
done
[ -f "$ird/lib/modules/e1000e.ko" ] || {
	log "no e1000e.ko in $release"
	exit 1
}
in_root sh -c 'set -e; cd /tmp/initramfs; find . | cpio -o -H newc --quiet >/tmp/base.cpio'
gzip -1 <"$root/tmp/base.cpio" >"$tmp/base.cpio.gz"
rm -f "$root/tmp/base.cpio"

step "collecting firmware"
in_root sh -c 'mkdir -p /fw && cp -rL /usr/share/qemu/. /fw/ 2>/dev/null; cp -L /usr/share/seabios/*.bin /fw/ 2>/dev/null; true'
mv "$root/fw" "$tmp/firmware"

in_root apt-get clean
rm -rf "$root/tmp/pkgs" "$x" "$ird"
for m in $mounted; do umount -l "$m"; done
mounted=""

now=$(date +%s)
echo "$((now - t0))" >"$tmp/prepare-seconds"
touch "$tmp/complete"
rm -rf "$dir"
mv "$tmp" "$dir"
tmp=""
step "ready in $dir ($(cat "$dir/qemu-version"), kernel $release)"
echo "$dir"
