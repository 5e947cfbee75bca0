# Shell functions the preparation recipes share (tests/prepare.sh and
# tests/qemu-migration/build.sh source this file, and hash it into their cache
# keys). POSIX sh.

# find_mirror sets $mirror to the Debian mirror the machine's own apt sources
# name (the first .../debian URI), or to $E1000E_VFU_MIRROR, without a
# trailing slash; it fails when there is none.
find_mirror() {
	mirror=${E1000E_VFU_MIRROR:-}
	if [ -z "$mirror" ]; then
		mirror=$(
			for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
				[ -f "$f" ] || continue
				case "$f" in
				*.sources) awk '/^URIs:/ { for (i = 2; i <= NF; i++) print $i }' "$f" ;;
				*) awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; break } }' "$f" ;;
				esac
			done | grep -E '/debian/?$' | head -n1
		)
	fi
	if [ -z "$mirror" ]; then
		echo "no Debian mirror in /etc/apt/sources*; set E1000E_VFU_MIRROR" >&2
		return 1
	fi
	mirror=${mirror%/}
}

# install_host_packages installs the Debian packages named, if any, quietly.
install_host_packages() {
	[ $# -gt 0 ] || return 0
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# safe_rm removes a build directory, first lazily unmounting anything mounted
# below it (a killed run may leave proc, sys or dev bound into its root), and
# only when nothing is mounted there any more: rm -rf through a bind mount of
# /dev or /sys would damage the host.
safe_rm() {
	awk -v d="$1/" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r |
		while read -r m; do umount -l "$m" 2>/dev/null || true; done
	if awk -v d="$1/" 'index($2, d) == 1 { found = 1 } END { exit !found }' /proc/mounts; then
		echo "something is still mounted under $1; leaving it in place" >&2
		return 0
	fi
	rm -rf "$1"
}
