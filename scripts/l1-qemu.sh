#!/usr/bin/env bash
# Prints the path of the QEMU that runs the nested harness's L1, fetching
# it into the cache the first time: Debian's qemu-system-x86 from
# ${codename}-backports (10.0 for bookworm), unpacked beside the system's
# own QEMU rather than installed over it.
#
# Why not the system's 7.2: under its TCG an L1 that starts L2 guests
# freezes at random (its own timer interrupt is never delivered: L1 spins in
# cpu_idle_poll, or an L2 spins in calibrate_APIC_clock waiting for PIT
# ticks that L1 can no longer inject). tests/nested/NOTES.md has the
# measurements. L1_QEMU=/usr/bin/qemu-system-x86_64 goes back to it.
#
# The mirror is the one this machine's apt already uses (its deb822 or
# one-line sources), with the backports suite; apt's state for it lives in
# the cache, so the system's apt configuration is not touched.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
dir=$CACHE/l1-qemu
wrapper=$dir/qemu-system-x86_64
if [[ -x $wrapper && -x $dir/root/usr/bin/qemu-system-x86_64 ]]; then
	echo "$wrapper"
	exit 0
fi
log() { echo "l1-qemu: $*" >&2; }
. /etc/os-release
suite=${VERSION_CODENAME:?no VERSION_CODENAME in /etc/os-release}-backports

# The first Debian archive URI the system's sources name.
uri=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '/^URIs:/ && $2 ~ /\/debian\/?$/ { print $2; exit }')
[[ -n $uri ]] || uri=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
	awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\/.*\/debian\/?$/) { print $i; exit } }')
[[ -n $uri ]] || { log "no Debian archive in /etc/apt sources"; exit 1; }

rm -rf "$dir.tmp"
mkdir -p "$dir.tmp/apt/lists/partial" "$dir.tmp/apt/cache/archives/partial" "$dir.tmp/debs"
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $uri $suite main" >"$dir.tmp/apt/sources.list"
apt_opts=(
	-o "Dir::Etc::SourceList=$dir.tmp/apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
	-o "Dir::State::Lists=$dir.tmp/apt/lists" -o "Dir::Cache=$dir.tmp/apt/cache"
	-o APT::Sandbox::User=root -qq
)
log "fetching qemu-system-x86 from $suite"
apt-get "${apt_opts[@]}" update >&2
(cd "$dir.tmp/debs" && apt-get "${apt_opts[@]}" download -t "$suite" qemu-system-x86 qemu-system-common qemu-system-data >&2)
for d in "$dir.tmp"/debs/*.deb; do dpkg-deb -x "$d" "$dir.tmp/root"; done
bin=$dir.tmp/root/usr/bin/qemu-system-x86_64
if missing=$(ldd "$bin" | grep 'not found'); then
	log "$bin needs libraries this system lacks:"
	echo "$missing" >&2
	exit 1
fi
# Its own firmware first, then the system's (bios-microvm.bin comes from
# the seabios package).
cat >"$dir.tmp/qemu-system-x86_64" <<EOW
#!/bin/sh
exec "$dir/root/usr/bin/qemu-system-x86_64" -L "$dir/root/usr/share/qemu" -L /usr/share/qemu "\$@"
EOW
chmod +x "$dir.tmp/qemu-system-x86_64"
rm -rf "$dir"
mv "$dir.tmp" "$dir"
log "$("$wrapper" --version | head -n1)"
echo "$wrapper"
