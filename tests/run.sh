#!/usr/bin/env bash
# Runs the VM tests (package ./tests). Called by `make test-vm` and
# `make test-nested`; it can also be run by hand from anywhere.
#
# Where the host's /dev/kvm is hardware-backed (vmx/svm, not kvm_pvm) the
# tests run directly. Otherwise they run inside an L1 Linux under QEMU TCG
# (-cpu max emulates AMD SVM, so L1 has /dev/kvm through kvm_amd); see
# tests/nested.
#
# Environment:
#   MICROVM_FORCE_NESTED=1  use the nested harness even if direct would work
#   TESTS_RUN=REGEX         passed as -run / -test.run
#   TESTS_TIMEOUT_MIN=N     limit for the whole test run in minutes (default 40)
#   L1_MEMORY_MIB, L1_CPUS  size of the L1 (default 4096 MiB, 1 CPU)
#   L1_APPEND               extra L1 kernel command line
#   L1_MONITOR=PATH         QEMU monitor socket, to inspect a stuck L1
#   MICROVM_BIN             prebuilt microvm binary (default: built here)
#   KEEP_WORK=1             keep the scratch directory
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
GO=${GO:-go}
CACHE=${MICROVM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/microvm}
export MICROVM_CACHE=$CACHE
TIMEOUT_MIN=${TESTS_TIMEOUT_MIN:-40}
[[ $TIMEOUT_MIN =~ ^[0-9]+$ && $TIMEOUT_MIN -ge 5 ]] || { echo "run.sh: TESTS_TIMEOUT_MIN must be a whole number of minutes >= 5" >&2; exit 2; }

log() { echo "run.sh: $*" >&2; }
die() { log "$*"; exit 1; }

# --- decide direct or nested ------------------------------------------------
source "$ROOT/scripts/kvm-mode.sh"
mode=$KVM_MODE
reason=$KVM_MODE_REASON
echo "vm tests: $mode ($reason)"

# --- dependencies -------------------------------------------------------------
apt_install() {
	local sudo=()
	[[ $(id -u) == 0 ]] || sudo=(sudo)
	export DEBIAN_FRONTEND=noninteractive
	log "installing $*"
	if ! "${sudo[@]}" apt-get install -y --no-install-recommends "$@" >/dev/null; then
		log "apt-get install failed; running apt-get update once and retrying"
		"${sudo[@]}" apt-get update >/dev/null
		"${sudo[@]}" apt-get install -y --no-install-recommends "$@" >/dev/null
	fi
}
missing=()
command -v gcc >/dev/null || missing+=(gcc)
{ command -v ld >/dev/null && command -v objcopy >/dev/null; } || missing+=(binutils)
[[ $mode == direct ]] || command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
# The disk tests format ext4 images with mkfs.ext4.
PATH=$PATH:/usr/sbin:/sbin command -v mkfs.ext4 >/dev/null || missing+=(e2fsprogs)
[[ ${#missing[@]} == 0 ]] || apt_install "${missing[@]}"

# --- artifacts ----------------------------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/microvm-tests.XXXXXX")
if [[ ${KEEP_WORK:-0} == 1 ]]; then
	log "keeping $WORK"
else
	trap 'rm -rf "$WORK"' EXIT
fi

make -s kernel
make -s initrd
for f in bzImage vmlinux kernel.release initrd.cpio; do
	[[ -s $CACHE/$f ]] || die "$CACHE/$f missing after make kernel/initrd"
done
KERNEL_RELEASE=$(<"$CACHE/kernel.release")

make -s -C tests/guests OUT="$WORK/guests"

if [[ -z ${MICROVM_BIN:-} ]]; then
	MICROVM_BIN=$WORK/microvm
	CGO_ENABLED=0 "$GO" build -trimpath -o "$MICROVM_BIN" ./cmd/microvm
fi
[[ -x $MICROVM_BIN ]] || die "MICROVM_BIN=$MICROVM_BIN is not executable"

# Prints "vm-tests: N passed, N failed, N skipped" from go test -v output,
# counting top-level tests only.
summarize() {
	tr -d '\r' <"$1" | awk '
		/^--- PASS/ { p++ } /^--- FAIL/ { f++ } /^--- SKIP/ { s++ }
		/^l1run: / && !/payload exited/ { lost++ }
		/^run.sh: harness retry/ { retry++ }
		END {
			printf "vm-tests: %d passed, %d failed, %d skipped\n", p, f, s
			if (retry) printf "vm-tests: %d group(s) retried after an L1 stall\n", retry
			if (lost) printf "vm-tests: %d L1 run(s) ended without a test result (see l1run lines above)\n", lost
		}'
}

run_args=()
[[ -z ${TESTS_RUN:-} ]] || run_args=(-run "$TESTS_RUN")

# --- direct -------------------------------------------------------------------
if [[ $mode == direct ]]; then
	mkdir -p "$WORK/tmp"
	rc=0
	MICROVM_BIN=$MICROVM_BIN \
	MICROVM_GUESTS=$WORK/guests \
	MICROVM_KERNEL=$CACHE/bzImage \
	MICROVM_VMLINUX=$CACHE/vmlinux \
	MICROVM_INITRD=$CACHE/initrd.cpio \
	MICROVM_KERNEL_RELEASE=$KERNEL_RELEASE \
	MICROVM_HOST_RELEASE=$(uname -r) \
	MICROVM_TMP=$WORK/tmp \
		"$GO" test -count=1 -v -timeout "${TIMEOUT_MIN}m" "${run_args[@]}" ./tests/ 2>&1 |
		tee "$WORK/test.log" || rc=$?
	summarize "$WORK/test.log"
	exit "$rc"
fi

# --- nested -------------------------------------------------------------------
CGO_ENABLED=0 "$GO" test -c -o "$WORK/tests.test" ./tests/
[[ -x $WORK/tests.test ]] || die "no test binary built from ./tests (no *_test.go files?)"
CGO_ENABLED=0 "$GO" build -trimpath -o "$WORK/l1init" ./tests/nested/l1init
"$GO" build -o "$WORK/l1run" ./tests/nested/l1run

# Layout inside L1: everything under /microvm, scratch in /tmp (tmpfs).
l1=/microvm
test_args=(--arg -test.v --arg -test.count=1 --arg "-test.timeout=$((TIMEOUT_MIN - 2))m")
[[ -z ${TESTS_RUN:-} ]] || test_args+=(--arg "-test.run=$TESTS_RUN")
files=(
	--file "$l1/microvm=$MICROVM_BIN"
	--file "$l1/guests=$WORK/guests"
	--file "$l1/bzImage=$CACHE/bzImage"
	--file "$l1/vmlinux=$CACHE/vmlinux"
	--file "$l1/initrd.cpio=$CACHE/initrd.cpio"
	--file "$l1/tests.test=$WORK/tests.test"
)
# Host tools the tests use inside L1, with the shared libraries they need
# (ldd), at the same paths.
for bin in /usr/sbin/mkfs.ext4; do
	real=$(readlink -f "$bin")
	files+=(--file "$bin=$real")
	for lib in $(ldd "$real" | grep -o '/[^ ]*'); do
		files+=(--file "$lib=$(readlink -f "$lib")")
	done
done
[[ ! -f /etc/mke2fs.conf ]] || files+=(--file /etc/mke2fs.conf=/etc/mke2fs.conf)
dir=$l1
if [[ -d tests/testdata ]]; then
	# Run in a copy of the package directory, as go test would.
	files+=(--file "$l1/src/tests/testdata=$ROOT/tests/testdata")
	dir=$l1/src/tests
fi

# One L1 per Linux-boot test, so each test starts from a known L1. Guests
# with 2 vCPUs get an L1 with 2 CPUs: in a 1-CPU L1 a guest vCPU spinning
# for an IPI from its sibling can starve L1 for good under QEMU TCG (see
# tests/nested/NOTES.md). Everything else shares one L1.
names=$("$WORK/tests.test" -test.list '.*' | grep -E "${TESTS_RUN:-.}" || true)
linux=$(grep '^TestLinux' <<<"$names" || true)
other=$(grep -v '^TestLinux' <<<"$names" | paste -sd'|' || true)
groups=()
[[ -z $other ]] || groups+=("^($other)\$")
for n in $linux; do groups+=("^$n\$"); done
[[ ${#groups[@]} -gt 0 ]] || die "no tests match TESTS_RUN=${TESTS_RUN:-}"
# run_group GROUP LIMIT_MIN CPUS: one L1 running the tests matching GROUP.
run_group() {
	local g=$1 gt=$2 cpus=$3
	"$WORK/l1run" \
		--kernel "$CACHE/bzImage" \
		--l1init "$WORK/l1init" \
		--memory "${L1_MEMORY_MIB:-4096}" \
		--cpus "$cpus" \
		${L1_APPEND:+--append "$L1_APPEND"} \
		${L1_MONITOR:+--monitor "$L1_MONITOR"} \
		--timeout "${gt}m" \
		--dir "$dir" \
		"${files[@]}" \
		--env "MICROVM_BIN=$l1/microvm" \
		--env "MICROVM_GUESTS=$l1/guests" \
		--env "MICROVM_KERNEL=$l1/bzImage" \
		--env "MICROVM_VMLINUX=$l1/vmlinux" \
		--env "MICROVM_INITRD=$l1/initrd.cpio" \
		--env "MICROVM_KERNEL_RELEASE=$KERNEL_RELEASE" \
		--env "MICROVM_HOST_RELEASE=$(uname -r)" \
		--env "MICROVM_TMP=/tmp" \
		--env "MICROVM_NESTED=1" \
		--env "MICROVM_DENSITY_N=${MICROVM_DENSITY_N:-}" \
		--init "$l1/tests.test" \
		--arg -test.v --arg -test.count=1 --arg "-test.timeout=$((gt - 2))m" \
		--arg "-test.run=$g" 2>&1 | tee "$WORK/group.log"
}

rc=0
: >"$WORK/test.log"
for g in "${groups[@]}"; do
	gt=${GROUP_TIMEOUT_MIN:-8}
	# The density test runs 20 Linux guests at once on L1's one CPU: about
	# 3 minutes alone, over 7 on a busy host (its own guard is 15 min).
	[[ $g != *Density* || $gt -ge 18 ]] || gt=18
	# 21 sequential boots.
	[[ $g != *Durability* || $gt -ge 14 ]] || gt=14
	cpus=${L1_CPUS:-1}
	[[ $g != *SMP* || $cpus -ge 2 ]] || cpus=2
	grc=0
	run_group "$g" "$gt" "$cpus" || grc=1
	if ! grep -q '@@L1-EXIT' "$WORK/group.log"; then
		# No result at all: L1 itself stopped (a QEMU TCG nested-SVM stall,
		# tests/nested/NOTES.md), not a test verdict. Say so and run the
		# group once more in a fresh L1; a second stall fails the run.
		log "L1 for ${g} ended without a result (nested harness stall); retrying once in a fresh L1"
		echo "run.sh: harness retry for ${g}" >>"$WORK/test.log"
		grc=0
		run_group "$g" "$gt" "$cpus" || grc=1
	fi
	cat "$WORK/group.log" >>"$WORK/test.log"
	((grc == 0)) || rc=1
done
summarize "$WORK/test.log"
exit "$rc"
