#!/usr/bin/env bash
# `make compare`: the seed's "container or VM?" table with both columns
# measured on one root directory. It installs the container engine
# (Debian's podman, run with Debian's runc) and debootstrap if missing,
# builds a small Debian root once (debootstrap --variant=minbase bookworm,
# cached as $CACHE/rootfs-bookworm), and runs
# `microvm compare --rootfs` on it: the directory once in a container, once
# in a microVM.
#
# Where this host's /dev/kvm cannot boot Linux (scripts/kvm-mode.sh), the
# container column is measured here on the host and the VM column inside
# one L1 of the nested harness, which gets a copy of the same directory;
# the table says so.
#
# Environment:
#   COMPARE_ROOTFS=DIR     compare this directory instead of the cached Debian root
#   COMPARE_RUNS=N         timed starts per column (default 5)
#   DEBIAN_MIRROR=URL      debootstrap's mirror (default http://deb.debian.org/debian)
#   MICROVM_FORCE_NESTED=1 use the nested harness even where direct works
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
GO=${GO:-go}
source scripts/lib.sh
source scripts/kvm-mode.sh
RUNS=${COMPARE_RUNS:-5}
log() { echo "compare: $*" >&2; }
[[ $RUNS =~ ^[0-9]+$ && $RUNS -ge 1 ]] || { log "COMPARE_RUNS must be a whole number >= 1 (got '$RUNS')"; exit 2; }
log "KVM mode: $KVM_MODE ($KVM_MODE_REASON)"

missing=()
command -v podman >/dev/null || missing+=(podman)
PATH=$PATH:/usr/sbin:/sbin command -v runc >/dev/null || missing+=(runc)
[[ -n ${COMPARE_ROOTFS:-} ]] || PATH=$PATH:/usr/sbin:/sbin command -v debootstrap >/dev/null || missing+=(debootstrap)
[[ $KVM_MODE == direct ]] || command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
if ((${#missing[@]})); then
	log "installing ${missing[*]} (the container engine and its runtime, the rootfs builder, the harness)"
	apt_install "${missing[@]}"
fi

# The demo root: built once, moved into place only when complete, so an
# interrupted debootstrap is never mistaken for a root.
rootfs=${COMPARE_ROOTFS:-$CACHE/rootfs-bookworm}
if [[ -z ${COMPARE_ROOTFS:-} && ! -d $rootfs ]]; then
	log "building $rootfs: debootstrap --variant=minbase bookworm (a few minutes; progress below)"
	rm -rf "$rootfs.tmp"
	mkdir -p "$CACHE"
	as_root env PATH="$PATH:/usr/sbin:/sbin" debootstrap --variant=minbase bookworm "$rootfs.tmp" \
		"${DEBIAN_MIRROR:-http://deb.debian.org/debian}" >&2
	mv "$rootfs.tmp" "$rootfs"
fi
[[ -d $rootfs ]] || { log "COMPARE_ROOTFS=$rootfs is not a directory"; exit 2; }
log "rootfs $rootfs ($(du -sh "$rootfs" | cut -f1))"

make -s build kernel initrd
if [[ $KVM_MODE == direct ]]; then
	as_root bin/microvm compare --rootfs "$rootfs" --runs "$RUNS"
	exit
fi

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
log "container column, here on the host: $RUNS timed podman runs"
as_root bin/microvm compare --rootfs "$rootfs" --runs "$RUNS" --container-only >"$WORK/container.json"
"$GO" build -o "$WORK/l1run" ./tests/nested/l1run
l1_kernel
log "VM column, inside L1 under QEMU TCG: copying the rootfs in, then 1 + $RUNS boots (several minutes)"
"$WORK/l1run" "${L1_KERNEL_ARGS[@]}" --timeout 20m --qemu "$(l1_qemu)" \
	--file "/microvm/microvm=$ROOT/bin/microvm" \
	--file "/microvm/bzImage=$CACHE/bzImage" \
	--file "/microvm/initrd.cpio=$CACHE/initrd.cpio" \
	--file "/microvm/container.json=$WORK/container.json" \
	--tree "/microvm/rootfs=$rootfs" \
	--env "MICROVM_OUTER_HOST=$(bin/microvm uname --host-only --json)" \
	--init /microvm/microvm \
	--arg compare --arg --kernel --arg /microvm/bzImage --arg --initrd --arg /microvm/initrd.cpio \
	--arg --rootfs --arg /microvm/rootfs --arg --runs --arg "$RUNS" \
	--arg --container-json --arg /microvm/container.json
