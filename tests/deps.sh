#!/bin/sh
# Installs, from Debian's archive, the host tools the tests use. Runs as root
# (as CI does); without root it only reports what is missing.
set -eu
need=""
command -v ip >/dev/null 2>&1 || need="$need iproute2"
# lspci decodes the config space a guest reads (lspci -F on a dump).
command -v lspci >/dev/null 2>&1 || need="$need pciutils"
[ -z "$need" ] && exit 0
if [ "$(id -u)" != 0 ]; then
	echo "missing packages:$need (run as root to install them)" >&2
	exit 0
fi
echo "installing:$need"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need
