#!/usr/bin/env bash
# The main job: build the default guest if needed and show host vs guest
# kernels with `microvm uname`. Where this host's KVM cannot boot Linux, the
# same microvm binary runs inside the nested harness's L1 (QEMU TCG).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
GO=${GO:-go}
source scripts/lib.sh
source scripts/kvm-mode.sh
echo "demo: $KVM_MODE ($KVM_MODE_REASON)"

make -s build kernel initrd
if [[ $KVM_MODE == direct ]]; then
	exec bin/microvm uname
fi

command -v qemu-system-x86_64 >/dev/null || {
	echo "demo: installing qemu-system-x86 for the nested harness" >&2
	apt_install qemu-system-x86
}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
"$GO" build -o "$WORK/l1run" ./tests/nested/l1run
l1_kernel
echo "demo: booting L1 (Debian's stock kernel) under QEMU TCG, then the guest inside it with microvm (this takes a minute) ..."
"$WORK/l1run" "${L1_KERNEL_ARGS[@]}" --timeout 10m --qemu "$(l1_qemu)" \
	--file "/microvm/microvm=$ROOT/bin/microvm" \
	--file "/microvm/bzImage=$CACHE/bzImage" \
	--file "/microvm/initrd.cpio=$CACHE/initrd.cpio" \
	--env "MICROVM_OUTER_HOST=$(bin/microvm uname --host-only --json)" \
	--init /microvm/microvm \
	--arg uname --arg --kernel --arg /microvm/bzImage --arg --initrd --arg /microvm/initrd.cpio
