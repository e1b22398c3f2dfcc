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
#   TESTS_TIMEOUT_MIN=N     limit for the whole test run in minutes (default 40; direct mode,
#                           nested groups use their l1Plan limits or GROUP_TIMEOUT_MIN)
#   L1_MEMORY_MIB, L1_CPUS  size of the L1 (default 4096 MiB, 1 CPU)
#   L1_APPEND               extra L1 kernel command line
#   L1_MONITOR=PATH         QEMU monitor socket, to inspect a stuck L1
#   L1_QEMU=PATH            the QEMU that runs L1 (default: scripts/l1-qemu.sh's)
#   L1_KERNEL=PATH          L1's bzImage, with KVM built in (default: Debian's stock
#                           cloud kernel and its KVM modules; scripts/kvm-mode.sh)
#   L1_JOBS=N               L1s at once (default 2, one per host core)
#   GROUP_TIMEOUT_MIN=N     one limit for every group, instead of l1Plan's
#   MICROVM_BIN             prebuilt microvm binary (default: built here)
#   KEEP_WORK=1             keep the scratch directory
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
GO=${GO:-go}
source "$ROOT/scripts/lib.sh"
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
missing=()
command -v gcc >/dev/null || missing+=(gcc)
{ command -v ld >/dev/null && command -v objcopy >/dev/null; } || missing+=(binutils)
[[ $mode == direct ]] || command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
# The disk tests format ext4 images with mkfs.ext4 and read them with debugfs.
{ PATH=$PATH:/usr/sbin:/sbin command -v mkfs.ext4 && PATH=$PATH:/usr/sbin:/sbin command -v debugfs; } >/dev/null || missing+=(e2fsprogs)
if ((${#missing[@]})); then
	log "installing ${missing[*]}"
	apt_install "${missing[@]}"
fi

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
# Debian 12's stock kernels, for tests/stock_test.go.
STOCK_CLOUD=$(./scripts/stock-kernel.sh cloud)
STOCK_GENERIC=$(./scripts/stock-kernel.sh generic)
# A whole Debian 12 disk image with its kernel and initrd, for
# tests/distro_test.go (debootstrap once; then cached).
DISTRO=$(./scripts/distro.sh)

make -s -C tests/guests OUT="$WORK/guests"

if [[ -z ${MICROVM_BIN:-} ]]; then
	MICROVM_BIN=$WORK/microvm
	CGO_ENABLED=0 "$GO" build -trimpath -o "$MICROVM_BIN" ./cmd/microvm
fi
[[ -x $MICROVM_BIN ]] || die "MICROVM_BIN=$MICROVM_BIN is not executable"

# TestLinuxCompareRootfs's root: the host's uname and sleep with the
# libraries ldd names, at the same paths; a few MiB, so one directory both
# podman and `microvm run --rootfs` can run, cheaply copied into L1.
COMPARE_ROOTFS=$WORK/compare-rootfs
mkdir -p "$COMPARE_ROOTFS"/{proc,sys,dev,tmp,etc}
# (ldd one file at a time: given two it prints "FILE:" headers.)
for f in /usr/bin/uname /usr/bin/sleep $({ ldd /usr/bin/uname; ldd /usr/bin/sleep; } | grep -o '/[^ ]*' | sort -u); do
	mkdir -p "$COMPARE_ROOTFS$(dirname "$f")"
	cp -L "$f" "$COMPARE_ROOTFS$f"
done
# podman runs it with Debian's runc (its default crun refuses these
# machines' hybrid cgroups: ../shared/notes/kvm-on-these-machines.md).
missing=()
command -v podman >/dev/null || missing+=(podman)
PATH=$PATH:/usr/sbin:/sbin command -v runc >/dev/null || missing+=(runc)
if ((${#missing[@]})); then
	log "installing ${missing[*]} for TestLinuxCompareRootfs's container column"
	apt_install "${missing[@]}"
fi

# Prints "vm-tests: N passed, N failed, N skipped" from go test -v output,
# counting top-level tests only.
summarize() {
	tr -d '\r' <"$1" | LC_ALL=C awk '
		/^--- PASS/ { p++ } /^--- FAIL/ { f++ } /^--- SKIP/ { s++ }
		/^l1run: / && !/payload exited/ { lost++ }
		/^run.sh: harness retry/ { retry++ }
		/@@L1-STALL revived/ { revived++ }
		END {
			printf "vm-tests: %d passed, %d failed, %d skipped\n", p, f, s
			if (revived) printf "vm-tests: %d L1 stall(s) revived by an NMI\n", revived
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
	MICROVM_STOCK_CLOUD=$STOCK_CLOUD \
	MICROVM_STOCK_GENERIC=$STOCK_GENERIC \
	MICROVM_DISTRO=$DISTRO \
	MICROVM_TMP=$WORK/tmp \
	MICROVM_COMPARE_ROOTFS=$COMPARE_ROOTFS \
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

L1_QEMU_BIN=$(l1_qemu)
l1_kernel || die "no L1 kernel (scripts/kvm-mode.sh l1_kernel)"
l1_kernel_name="$(<"$STOCK_CLOUD/release") (Debian's stock cloud kernel)"
[[ -z ${L1_KERNEL:-} ]] || l1_kernel_name=$L1_KERNEL
echo "vm tests: L1 runs under $("$L1_QEMU_BIN" --version | head -n1), kernel $l1_kernel_name"

# Layout inside L1: everything under /microvm, scratch in /tmp (tmpfs).
l1=/microvm
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
for bin in /usr/sbin/mkfs.ext4 /usr/sbin/debugfs; do
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

# Which tests run in which L1, with its CPUs and time limit, is declared
# next to the tests (l1Plan in tests/plan_test.go); every test must be in
# exactly one group.
names=$("$WORK/tests.test" -test.list '.*')
plan=$(MICROVM_PRINT_L1PLAN=1 "$WORK/tests.test")
for n in $names; do
	k=$(awk -v n="$n" '{ if (n ~ $4) c++ } END { print c+0 }' <<<"$plan")
	[[ $k == 1 ]] || die "$n is in $k groups of l1Plan (tests/plan_test.go); want exactly 1"
done
jobs_max=${L1_JOBS:-2}
group_re=() group_cpus=() group_min=() group_slots=()
while read -r cpus mins optin re; do
	[[ $optin == false || -n ${TESTS_RUN:-} ]] || continue
	sel=$(grep -E "$re" <<<"$names" | grep -E "${TESTS_RUN:-.}" | paste -sd'|' || true)
	[[ -n $sel ]] || continue
	group_re+=("^($sel)\$")
	cpus=${L1_CPUS:-$cpus}
	group_cpus+=("$cpus")
	# Host cores the group's L1 takes: its CPUs, at most all of them.
	group_slots+=("$((cpus < jobs_max ? cpus : jobs_max))")
	group_min+=("${GROUP_TIMEOUT_MIN:-$mins}")
done <<<"$plan"
ngroups=${#group_re[@]}
((ngroups > 0)) || die "no tests match TESTS_RUN=${TESTS_RUN:-}"

# The tests' own knobs (sizes of the density, durability, soak, distro and snapshot runs)
# pass through to L1.
knobs=()
for v in $(compgen -e | grep -E '^MICROVM_(DENSITY|DURABILITY|SOAK|DISTRO|SNAP)_' || true); do
	knobs+=(--env "$v=${!v}")
done

# run_group IDX LOG: one L1 running group IDX's tests, console to LOG.
# Only the stock-kernel groups get the stock kernels (22 MiB) in their L1,
# and only the Debian group the Debian image: every --file is copied into
# L1's initramfs, so into its RAM, whole (the image is sized to its content
# for that reason).
run_group() {
	local i=$1 gt=${group_min[$1]} extra=()
	if [[ ${group_re[$i]} == *TestStockKernel* ]]; then
		local k
		for k in cloud:$STOCK_CLOUD generic:$STOCK_GENERIC; do
			extra+=(--file "$l1/stock-${k%%:*}/vmlinuz=${k#*:}/vmlinuz" --file "$l1/stock-${k%%:*}/release=${k#*:}/release"
				--file "$l1/stock-${k%%:*}/config=${k#*:}/config" --file "$l1/stock-${k%%:*}/virtio=${k#*:}/virtio")
		done
		extra+=(--env "MICROVM_STOCK_CLOUD=$l1/stock-cloud" --env "MICROVM_STOCK_GENERIC=$l1/stock-generic")
	fi
	if [[ ${group_re[$i]} == *TestDebianBoot* ]]; then
		local f
		for f in debian.img vmlinuz initrd.img release; do
			extra+=(--file "$l1/distro/$f=$DISTRO/$f")
		done
		extra+=(--env "MICROVM_DISTRO=$l1/distro")
	fi
	if [[ ${group_re[$i]} == *TestLinuxCompareRootfs* ]]; then
		# No engine runs inside L1: the container column is measured
		# here on the host, on the same directory, and handed in.
		local cj=$WORK/compare-container.$i.json
		"$MICROVM_BIN" compare --rootfs "$COMPARE_ROOTFS" --runs 3 --container-only >"$cj" 2>"$2.container" ||
			{ cat "$2.container" >&2; return 1; }
		extra+=(--tree "$l1/compare-rootfs=$COMPARE_ROOTFS" --file "$l1/compare-container.json=$cj"
			--env "MICROVM_COMPARE_ROOTFS=$l1/compare-rootfs" --env "MICROVM_COMPARE_CONTAINER=$l1/compare-container.json")
	fi
	"$WORK/l1run" \
		"${L1_KERNEL_ARGS[@]}" \
		--l1init "$WORK/l1init" \
		--memory "${L1_MEMORY_MIB:-4096}" \
		--cpus "${group_cpus[$i]}" \
		${L1_APPEND:+--append "$L1_APPEND"} \
		${L1_MONITOR:+--monitor "$L1_MONITOR"} \
		--qemu "$L1_QEMU_BIN" \
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
		"${knobs[@]}" \
		"${extra[@]}" \
		--init "$l1/tests.test" \
		--arg -test.v --arg -test.count=1 --arg "-test.timeout=$((gt - 2))m" \
		--arg "-test.run=${group_re[$i]}" >"$2" 2>&1
}

# group IDX: run it, and again in a fresh L1 (twice at most) if L1 itself
# stopped without a result (a stall, tests/nested/NOTES.md) rather than
# giving a test verdict. Leaves the log in g.IDX.log, stalled ones in
# g.IDX.stallN.log, and "rc seconds retries" in g.IDX.rc.
group() {
	local i=$1 t0=$SECONDS grc=0 retried=0
	run_group "$i" "$WORK/g.$i.log" || grc=$?
	while ! grep -aq '@@L1-EXIT' "$WORK/g.$i.log" && ((retried < 2)); do
		retried=$((retried + 1))
		mv "$WORK/g.$i.log" "$WORK/g.$i.stall$retried.log"
		grc=0
		run_group "$i" "$WORK/g.$i.log" || grc=$?
	done
	echo "$grc $((SECONDS - t0)) $retried" >"$WORK/g.$i.rc"
}

# report IDX: the finished group's output, heartbeats left out unless it
# failed or stalled, and the diagnosis of any stall.
report() {
	local i=$1 grc secs retried verdict
	read -r grc secs retried <"$WORK/g.$i.rc"
	for f in "$WORK/g.$i".stall*.log "$WORK/g.$i.log"; do
		[[ -f $f ]] || continue
		if grep -aq '@@L1-EXIT' "$f"; then
			if ((grc == 0)); then grep -av '@@L1-HB' "$f"; else cat "$f"; fi
		else
			grep -av '@@L1-HB' "$f" | tail -n 40
			log "L1 for ${group_re[$i]} ended without a result; its last heartbeats:"
			grep -a '@@L1-HB' "$f" | tail -n 3 >&2 || true
		fi
	done
	for ((r = 1; r <= retried; r++)); do echo "run.sh: harness retry for ${group_re[$i]}"; done
	verdict=pass
	((grc == 0)) || verdict="FAIL (exit $grc)"
	printf 'run.sh: [%d/%d] %s: %s in %ds%s\n' $((i + 1)) "$ngroups" "${group_re[$i]}" "$verdict" "$secs" \
		"$( ((retried == 0)) || echo ", after $retried stalled L1(s)")" | tee -a "$WORK/times.txt" >&2
	return "$grc"
}

# Up to L1_JOBS L1s at once (default 2, one per host core: each 1-CPU L1
# is one QEMU TCG thread). 2-CPU groups count twice.
rc=0 busy=0 next=0
declare -A pid_group=()
: >"$WORK/test.log"
: >"$WORK/times.txt"
t_all=$SECONDS
while ((next < ngroups || busy > 0)); do
	if ((next < ngroups)); then
		if ((busy + group_slots[next] <= jobs_max)); then
			log "start [$((next + 1))/$ngroups] ${group_re[$next]} (${group_cpus[$next]} CPU, limit ${group_min[$next]} min)"
			group "$next" &
			pid_group[$!]=$next
			busy=$((busy + group_slots[next]))
			next=$((next + 1))
			continue
		fi
	fi
	wait -n -p done_pid "${!pid_group[@]}" || true
	i=${pid_group[$done_pid]}
	unset "pid_group[$done_pid]"
	busy=$((busy - group_slots[i]))
	report "$i" >"$WORK/g.$i.out" || rc=1
	cat "$WORK/g.$i.out"
	cat "$WORK/g.$i.out" >>"$WORK/test.log"
done
log "all groups done in $((SECONDS - t_all))s:"
cat "$WORK/times.txt" >&2
summarize "$WORK/test.log"
exit "$rc"
