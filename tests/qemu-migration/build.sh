#!/bin/sh
# Builds QEMU with live migration for vfio-user devices (the patches beside
# this file) and prints, as the last line of its output, the directory that
# holds it:
#   DIR/root/                         a Debian 13 (trixie) root with QEMU's
#                                     build and run-time dependencies
#   DIR/root/opt/qemu-mig/bin/qemu-system-x86_64   the patched QEMU
#   DIR/qemu-version                  the source version the patches went into
#
# QEMU runs inside the root: `chroot DIR/root /opt/qemu-mig/bin/qemu-system-x86_64
# -L /usr/share/seabios -L /usr/share/qemu ...`.
#
# The source is Debian's QEMU source package (10.2.2, whose vfio-user client
# the patches are written against), fetched with `apt-get source` from the
# unstable suite of the mirror the machine's own apt sources name (override
# with E1000E_VFU_MIRROR). The result is cached outside the clone in
# $E1000E_VFU_CACHE (default /var/cache/e1000e-vfu), keyed by a hash of this
# file and the patches; a build happens in a temporary directory renamed into
# place only when complete. Runs as root.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
cache=${E1000E_VFU_CACHE:-/var/cache/e1000e-vfu}
key=$(cat "$here/build.sh" "$here/../lib.sh" "$here"/patches/*.patch | sha256sum | cut -c1-16)
. "$here/../lib.sh"
dir="$cache/qemu-mig-$key"
qemu_version=${E1000E_VFU_QEMU_SOURCE:-1:10.2.2+ds-1}

log() { echo "qemu-mig: $*" >&2; }

if [ -f "$dir/complete" ]; then
	echo "$dir"
	exit 0
fi
if [ "$(id -u)" != 0 ]; then
	log "must run as root to build $dir"
	exit 1
fi

mkdir -p "$cache"
exec 9>"$cache/qemu-mig.lock"
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

tmp="$cache/.qemu-mig-$key.tmp"
root="$tmp/root"
cleanup() {
	for m in dev sys proc; do
		mountpoint -q "$root/$m" 2>/dev/null && umount -l "$root/$m" || true
	done
}
trap cleanup EXIT INT TERM
# A half-built tree of a killed run is never reused.
safe_rm "$tmp"
[ ! -e "$tmp" ] || { log "cannot remove $tmp"; exit 1; }
mkdir -p "$tmp"

step "debootstrap trixie from $mirror"
debootstrap --variant=minbase trixie "$root" "$mirror" >"$tmp/debootstrap.log" 2>&1 || {
	tail -20 "$tmp/debootstrap.log" >&2
	exit 1
}
mount --bind /proc "$root/proc"
mount --bind /sys "$root/sys"
mount --bind /dev "$root/dev"

# The archive may serve suites whose Release files are past their
# Valid-Until date (a frozen snapshot); accept them, as the host does.
cat >"$root/etc/apt/apt.conf.d/99e1000e-vfu" <<'APT'
Acquire::Check-Valid-Until "false";
Acquire::Check-Date "false";
APT
cat >"$root/etc/apt/sources.list.d/qemu-src.sources" <<SRC
Types: deb-src
URIs: $mirror
Suites: sid
Components: main
SRC

step "installing build dependencies"
chroot "$root" sh -c '
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq &&
	apt-get install -y -qq --no-install-recommends build-essential dpkg-dev \
		ninja-build meson python3-venv python3-pycotap pkg-config \
		libglib2.0-dev libpixman-1-dev libslirp-dev zlib1g-dev libfdt-dev \
		flex bison seabios ipxe-qemu qemu-system-data patch ca-certificates
' >"$tmp/deps.log" 2>&1 || {
	tail -20 "$tmp/deps.log" >&2
	exit 1
}

step "fetching the QEMU source package $qemu_version"
mkdir -p "$root/build/patches"
cp "$here"/patches/*.patch "$root/build/patches/"
chroot "$root" sh -c "
	cd /build &&
	apt-get source --download-only 'qemu=$qemu_version' &&
	dpkg-source -x qemu_*.dsc src
" >"$tmp/source.log" 2>&1 || {
	tail -20 "$tmp/source.log" >&2
	log "the source package qemu=$qemu_version could not be fetched; set E1000E_VFU_QEMU_SOURCE to a served version (10.1 or later)"
	exit 1
}
[ -d "$root/build/src/hw/vfio-user" ] || {
	log "qemu=$qemu_version has no hw/vfio-user: use 10.1 or later"
	exit 1
}

step "applying $(ls "$here"/patches/*.patch | wc -l) patch(es)"
for p in "$root"/build/patches/*.patch; do
	chroot "$root" sh -c "cd /build/src && patch -p1 --batch --forward < /build/patches/$(basename "$p")" \
		>>"$tmp/patch.log" 2>&1 || {
		cat "$tmp/patch.log" >&2
		exit 1
	}
done

step "configuring"
chroot "$root" sh -c '
	mkdir -p /build/src/build && cd /build/src/build &&
	../configure --prefix=/opt/qemu-mig --target-list=x86_64-softmmu \
		--disable-docs --disable-werror --without-default-features \
		--enable-slirp --enable-kvm --enable-tcg --enable-fdt \
		--disable-install-blobs
' >"$tmp/configure.log" 2>&1 || {
	tail -30 "$tmp/configure.log" >&2
	exit 1
}

step "building qemu-system-x86_64 (about 5 minutes on 2 cores)"
chroot "$root" sh -c 'ninja -C /build/src/build qemu-system-x86_64' >"$tmp/build.log" 2>&1 || {
	grep -E "error|Error" "$tmp/build.log" | head -30 >&2
	tail -10 "$tmp/build.log" >&2
	exit 1
}
mkdir -p "$root/opt/qemu-mig/bin"
cp "$root/build/src/build/qemu-system-x86_64" "$root/opt/qemu-mig/bin/"
echo "$qemu_version" >"$tmp/qemu-version"
# The source and build trees are large and no longer needed.
rm -rf "$root/build" "$root"/var/cache/apt/archives/*.deb

cleanup
trap - EXIT INT TERM
safe_rm "$dir"
mv "$tmp" "$dir"
touch "$dir/complete"
step "done: $dir"
echo "$dir"
