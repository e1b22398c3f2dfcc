#!/usr/bin/env bash
# microvm's benchmarks, in one run (`make bench`):
#   - the exit path: the pio micro-guest's 100k port-I/O exits against a C
#     loop doing the same KVM_RUN round trips (bench/pioloop.c);
#   - `microvm bench`: boot timeline and VMM memory overhead;
#   - microvm against gokvm (pinned pseudo-version, built with the Go
#     toolchain from the module proxy) and against
#     `qemu-system-x86_64 -M microvm -enable-kvm`, on the same kernel,
#     initrd and command line, alternating: exec to guest init, exec to the
#     VMM's exit after the guest resets, peak RSS; with ratios.
#
# Where this host's /dev/kvm can run Linux guests (scripts/kvm-mode.sh says
# "direct") everything runs here. Otherwise it all runs inside one L1 of the
# nested harness (tests/nested), and the output says so.
#
# Environment:
#   BENCH_KERNEL=bzImage|vmlinux  which image of the same kernel build every
#                        VMM boots (default bzImage; vmlinux: microvm's ELF
#                        entry, QEMU's and gokvm's PVH entry, no decompressor)
#   BENCH_ROUNDS=N       comparison rounds (default 3)
#   BENCH_RUNS=N         microvm bench --runs (default 3)
#   PIO_COUNT=N          exits per PIO run (default 100000)
#   PIO_REPS=N           PIO runs per side (default 3)
#   BENCH_PEERS="gokvm qemu"  which peers to compare against
#   BENCH_TIMEOUT_MIN=N  limit for the first L1 run (default 40; each
#                        comparison boot gets its own L1 and 6 minutes:
#                        a frozen L1 is stopped and reported, the rest go on)
#   PIO_PROFILE=FILE     write a CPU profile of microvm's PIO runs (direct mode only)
#   BENCH_PROFILE=0      skip the boot profile (one verbose boot of microvm and
#                        QEMU each with initcall_debug; on by default with qemu)
#   BENCH_VIRTFS=0|1|only  the virtio-9p comparison against QEMU's 9p server
#                        (bench/virtfs; default 1, only: nothing else)
#   VIRTFS_RUNS=N        its repetitions (default 5); VIRTFS_TIMEOUT_MIN its L1 limit (40)
#   VIRTFS_SKIP_FS=1     only its `uname -r` row
#   VIRTFS_BLOB_MIB, VIRTFS_FILES, VIRTFS_CREATE  its sizes (default 256, 10000,
#                        1000; nested 8, 1000, 200)
#   BENCH_SNAPSHOT=0|1|only  the snapshot rows (issue 15): `run -- true` cold,
#                        restored with --snapshot, and QEMU's -incoming
#                        restore of the same guest, in one L1 (default 1;
#                        only: nothing else)
#   BENCH_SNAPSHOT_ROUNDS=N  their rounds (default 10)
#   MICROVM_FORCE_NESTED=1  use the nested harness even where direct works
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
GO=${GO:-go}
source "$ROOT/scripts/lib.sh"
GOKVM_MODULE=github.com/bobuhiro11/gokvm
GOKVM_VERSION=v0.0.8-0.20231003020000-f53faca69d28
ROUNDS=${BENCH_ROUNDS:-3}
RUNS=${BENCH_RUNS:-3}
PEERS=${BENCH_PEERS:-gokvm qemu}
TIMEOUT_MIN=${BENCH_TIMEOUT_MIN:-40}
SNAPSHOT=${BENCH_SNAPSHOT:-1}
SNAP_ROUNDS=${BENCH_SNAPSHOT_ROUNDS:-10}
KIMG=${BENCH_KERNEL:-bzImage}

log() { echo "bench: $*" >&2; }
die() { log "$*"; exit 1; }
for v in ROUNDS RUNS TIMEOUT_MIN SNAP_ROUNDS; do
	[[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a whole number (got '${!v}')"
done
[[ $SNAPSHOT == 0 || $SNAPSHOT == 1 || $SNAPSHOT == only ]] || die "BENCH_SNAPSHOT must be 0, 1 or only (got '$SNAPSHOT')"
[[ $KIMG == bzImage || $KIMG == vmlinux ]] || die "BENCH_KERNEL must be bzImage or vmlinux (got '$KIMG')"

source "$ROOT/scripts/kvm-mode.sh"
log "KVM mode: $KVM_MODE ($KVM_MODE_REASON)"

# --- dependencies -------------------------------------------------------------
missing=()
command -v gcc >/dev/null || missing+=(gcc)
{ command -v ld >/dev/null && command -v objcopy >/dev/null; } || missing+=(binutils)
[[ -e /usr/lib/x86_64-linux-gnu/libc.a ]] || missing+=(libc6-dev)
[[ " $PEERS " != *" qemu "* && $KVM_MODE == direct ]] || command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
if ((${#missing[@]})); then
	log "installing ${missing[*]}"
	apt_install "${missing[@]}"
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/microvm-bench.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# --- build --------------------------------------------------------------------
log "[1/4] kernel and initrd (cached after the first build)"
make -s kernel
make -s initrd
KERNEL_RELEASE=$(<"$CACHE/kernel.release")

log "[2/4] microvm, runner, pio micro-guest, C loop"
CGO_ENABLED=0 "$GO" build -trimpath -o "$WORK/microvm" ./cmd/microvm
CGO_ENABLED=0 "$GO" build -trimpath -o "$WORK/runner" ./bench/runner
make -s -C tests/guests OUT="$WORK/guests" "$WORK/guests/pio.elf"
gcc -O2 -Wall -Wextra -static -o "$WORK/pioloop" bench/pioloop.c

runner_args=(--pio-count "${PIO_COUNT:-100000}" --pio-reps "${PIO_REPS:-3}"
	--rounds "$ROUNDS" --bench-runs "$RUNS"
	--kernel-name "Linux $KERNEL_RELEASE, the project's kernel/microvm.config, $KIMG")

# gokvm: `go run module@version` would build exactly this; we build it once
# (static) so the same binary can be copied into L1, which has no Go toolchain.
if [[ " $PEERS " == *" gokvm "* ]]; then
	log "[3/4] gokvm $GOKVM_VERSION (go install from the module proxy)"
	GOBIN="$WORK" CGO_ENABLED=0 GOFLAGS=-trimpath "$GO" install "$GOKVM_MODULE@$GOKVM_VERSION" ||
		die "building gokvm $GOKVM_VERSION failed"
fi

files=()
if [[ $KVM_MODE == direct ]]; then
	d=$WORK
	kernel=$CACHE/$KIMG initrd=$CACHE/initrd.cpio pio=$WORK/guests/pio.elf syms=$CACHE/vmlinux
	note="running directly on this host: $KVM_MODE_REASON"
else
	d=/bench
	kernel=$d/$KIMG initrd=$d/initrd.cpio pio=$d/pio.elf syms=$d/vmlinux
	note="running inside the nested harness's L1 (QEMU TCG, -cpu max, kvm_amd), because $KVM_MODE_REASON: all numbers are nested, and slow"
	for f in microvm runner pioloop gokvm; do
		[[ -e $WORK/$f ]] && files+=(--file "$d/$f=$WORK/$f")
	done
	files+=(--file "$pio=$WORK/guests/pio.elf" --file "$kernel=$CACHE/$KIMG" --file "$initrd=$CACHE/initrd.cpio")
	[[ $KIMG == vmlinux ]] || files+=(--file "$d/vmlinux=$CACHE/vmlinux")
fi
# The boot profile names initcalls from the same build's vmlinux symbols.
runner_args+=(--profile-symbols "$syms")
runner_args+=(--note "$note" --microvm "$d/microvm" --pioloop "$d/pioloop" --pio-guest "$pio"
	--kernel "$kernel" --initrd "$initrd")
[[ " $PEERS " != *" gokvm "* ]] || runner_args+=(--gokvm "$d/gokvm")

# QEMU inside L1 needs its binary, every library ldd lists (at the same
# paths), and the microvm firmware and option ROMs.
if [[ " $PEERS " == *" qemu "* ]]; then
	qemu=$(command -v qemu-system-x86_64) || die "qemu-system-x86_64 not found"
	runner_args+=(--qemu "$qemu")
	if [[ $KVM_MODE != direct ]]; then
		log "[3/4] QEMU $("$qemu" --version | head -n1) and $(ldd "$qemu" | grep -c /) libraries for L1"
		files+=(--file "$qemu=$qemu")
		while read -r lib; do
			files+=(--file "$lib=$lib")
		done < <(ldd "$qemu" | grep -o '/[^ ]*' | sort -u)
		for f in bios-microvm.bin qboot.rom linuxboot_dma.bin linuxboot.bin pvh.bin; do
			[[ -e /usr/share/qemu/$f ]] || die "/usr/share/qemu/$f missing (apt-get install qemu-system-x86)"
			files+=(--file "/usr/share/qemu/$f=/usr/share/qemu/$f")
		done
	fi
fi
[[ -z ${PIO_PROFILE:-} || $KVM_MODE != direct ]] || runner_args+=(--pio-cpuprofile "$PIO_PROFILE")

# The virtio-9p share against QEMU's 9p server (bench/virtfs), with the
# same guest kernel, in one L1 (or here, direct). It needs the qemu peer.
# BENCH_VIRTFS=0 skips it, BENCH_VIRTFS=only runs nothing else.
VIRTFS=${BENCH_VIRTFS:-1}
[[ $VIRTFS == 0 || $VIRTFS == 1 || $VIRTFS == only ]] || die "BENCH_VIRTFS must be 0, 1 or only (got '$VIRTFS')"
run_virtfs() {
	[[ $VIRTFS != 0 ]] || return 0
	[[ " $PEERS " == *" qemu "* ]] || { log "virtfs: skipped, it compares against the qemu peer (BENCH_PEERS)"; return 0; }
	CGO_ENABLED=0 "$GO" build -trimpath -o "$WORK/virtfs" ./bench/virtfs
	# The issue's sizes where guests run at hardware speed. Nested, 9p moves
	# about 0.6 MiB/s and a request costs milliseconds (README), so 256 MiB
	# x 5 runs x 2 VMMs alone would take over an hour: smaller by default.
	local blob=256 nfiles=10000 ncreate=1000
	[[ $KVM_MODE == direct ]] || blob=8 nfiles=1000 ncreate=200
	local args=(--microvm "$d/microvm" --qemu "$qemu" --kernel "$d/bzImage" --initrd "$initrd" --runs "${VIRTFS_RUNS:-5}"
		--blob-mib "${VIRTFS_BLOB_MIB:-$blob}" --files "${VIRTFS_FILES:-$nfiles}" --create "${VIRTFS_CREATE:-$ncreate}")
	[[ ${VIRTFS_SKIP_FS:-0} != 1 ]] || args+=(--skip-fs)
	echo
	echo "== virtio-9p: microvm --share / --rootfs against QEMU's 9p server (-fsdev local + virtio-9p-device), same guest kernel"
	if [[ $KVM_MODE == direct ]]; then
		"$WORK/virtfs" "${args[@]}" --kernel "$CACHE/bzImage"
		return
	fi
	echo "(inside one L1 of the nested harness: QEMU TCG, -cpu max, kvm_amd; all numbers are nested)"
	# `--rootfs /` runs L1's own uname: it and its libraries go in at the
	# same paths.
	local extra=(--file "$d/virtfs=$WORK/virtfs" --file "$d/bzImage=$CACHE/bzImage") a l1args=()
	extra+=(--file "/usr/bin/uname=/usr/bin/uname")
	for lib in $(ldd /usr/bin/uname | grep -o '/[^ ]*' | sort -u); do
		extra+=(--file "$lib=$(readlink -f "$lib")")
	done
	for a in "${args[@]}"; do l1args+=(--arg "$a"); done
	"$WORK/l1run" "${L1_KERNEL_ARGS[@]}" --l1init "$WORK/l1init" --memory "${L1_MEMORY_MIB:-4096}" --cpus 1 \
		--qemu "$L1_QEMU_BIN" --timeout "${VIRTFS_TIMEOUT_MIN:-40}m" "${files[@]}" "${extra[@]}" \
		--init "$d/virtfs" "${l1args[@]}" 2>&1 | sed -u -e '/^\[ *[0-9.]*\] /d' -e '/^@@L1 /d'
}

snap_args=()
[[ $SNAPSHOT == 0 ]] || snap_args=(--snapshot-rounds "$SNAP_ROUNDS")

log "[4/4] running the benchmarks ($KVM_MODE)"
if [[ $KVM_MODE == direct ]]; then
	profile=()
	[[ " $PEERS " != *" qemu "* || ${BENCH_PROFILE:-1} != 1 ]] || profile=(--profile)
	if [[ $SNAPSHOT == only ]]; then
		"$WORK/runner" "${runner_args[@]}" --pio-guest "" --bench-runs 0 --rounds 0 "${snap_args[@]}"
		exit 0
	fi
	[[ $VIRTFS == only ]] || "$WORK/runner" "${runner_args[@]}" "${profile[@]}" "${snap_args[@]}"
	run_virtfs
	exit 0
fi
"$GO" build -o "$WORK/l1run" ./tests/nested/l1run
CGO_ENABLED=0 "$GO" build -trimpath -o "$WORK/l1init" ./tests/nested/l1init

[[ $KVM_MODE == direct ]] || L1_QEMU_BIN=$(l1_qemu)
l1_kernel
if [[ $VIRTFS == only ]]; then
	run_virtfs
	exit 0
fi

# run_l1 ARGS...: the runner with runner_args plus ARGS, in a fresh L1.
# L1's own kernel log lines and harness lines are dropped from the output;
# everything is also kept in $WORK/bench.log for the final summary.
run_l1() {
	local timeout=$1 l1args=() a
	shift
	for a in "${runner_args[@]}" "$@"; do
		l1args+=(--arg "$a")
	done
	"$WORK/l1run" \
		"${L1_KERNEL_ARGS[@]}" \
		--l1init "$WORK/l1init" \
		--memory "${L1_MEMORY_MIB:-3072}" \
		--cpus 1 \
		--qemu "$L1_QEMU_BIN" \
		--timeout "$timeout" \
		"${files[@]}" \
		--init "$d/runner" \
		"${l1args[@]}" \
		2>&1 | sed -u -e '/^\[ *[0-9.]*\] /d' -e '/^@@L1 /d' | tee -a "$WORK/bench.log"
}
: >"$WORK/bench.log"

# The snapshot rows (issue 15): microvm cold and restored, and QEMU's
# restore, interleaved in one fresh L1.
run_snapshot() {
	[[ $SNAPSHOT != 0 ]] || return 0
	run_l1 40m --pio-guest "" --bench-runs 0 --rounds 0 "${snap_args[@]}" ||
		echo "bench: the snapshot L1 run failed (see above)"
}
if [[ $SNAPSHOT == only ]]; then
	run_snapshot
	exit 0
fi

# The exit path, micro-guest start-up and microvm bench in one L1.
run_l1 "${TIMEOUT_MIN}m" --rounds 0 || echo "bench: the exit-path and microvm bench L1 run failed (see above)"

# The boot profile (issue 17): one verbose boot of microvm and of QEMU in one
# fresh L1, and where their guests' boot logs differ most.
if [[ " $PEERS " == *" qemu "* && ${BENCH_PROFILE:-1} == 1 ]]; then
	run_l1 10m --pio-guest "" --bench-runs 0 --rounds 0 --profile ||
		echo "bench: the boot-profile L1 run failed (see above)"
fi

# The comparison: one fresh L1 per boot. Under QEMU TCG an L1 that has
# already run Linux guests was seen to freeze while starting the next one
# (tests/run.sh does the same for its Linux tests), which would stop the
# whole comparison.
vmms=(microvm $PEERS)
n=${#vmms[@]}
if ((ROUNDS > 0)); then
	echo
	echo "== comparison: ${vmms[*]}, $ROUNDS rounds, order rotating each round, each boot in a fresh L1"
fi
for ((r = 1; r <= ROUNDS; r++)); do
	for ((k = 0; k < n; k++)); do
		v=${vmms[(k + r - 1) % n]}
		run_l1 6m --pio-guest "" --bench-runs 0 --only "$v" --round "$r" ||
			echo "bench: round $r: $v: the L1 run failed (see above)"
	done
done
if ((ROUNDS > 0)); then
	"$WORK/runner" "${runner_args[@]}" --summarize "$WORK/bench.log"
fi
run_snapshot
run_virtfs || echo "bench: the virtio-9p L1 run failed (see above)"
