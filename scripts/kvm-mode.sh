# Sourced by scripts that boot guests. Sets KVM_MODE to "direct" when this
# host's /dev/kvm is hardware-backed, else "nested" (use the QEMU-TCG L1
# harness), and KVM_MODE_REASON to a short explanation.
KVM_MODE=nested
if [[ ${MICROVM_FORCE_NESTED:-0} == 1 ]]; then
	KVM_MODE_REASON="MICROVM_FORCE_NESTED=1"
elif [[ ! -e /dev/kvm ]]; then
	KVM_MODE_REASON="host /dev/kvm missing"
elif ! (exec 3<>/dev/kvm) 2>/dev/null; then
	KVM_MODE_REASON="host /dev/kvm not openable read-write"
elif [[ -e /sys/module/kvm_pvm ]]; then
	KVM_MODE_REASON="host /dev/kvm is the paravirtual kvm_pvm"
elif ! grep -qwE 'vmx|svm' /proc/cpuinfo; then
	KVM_MODE_REASON="host CPU has no vmx/svm"
else
	KVM_MODE=direct
	KVM_MODE_REASON="host /dev/kvm is hardware-backed ($(grep -owE 'vmx|svm' /proc/cpuinfo | head -n1))"
fi

# l1_qemu prints the QEMU that runs the nested harness's L1: $L1_QEMU, or
# the backports build that scripts/l1-qemu.sh keeps in the cache (why: see
# that script). Call it after qemu-system-x86 is installed, whose libraries
# it shares.
l1_qemu() {
	if [[ -n ${L1_QEMU:-} ]]; then
		echo "$L1_QEMU"
	elif ! "$(dirname "${BASH_SOURCE[0]}")/l1-qemu.sh"; then
		# Still a working harness, only a less stable one.
		echo "l1-qemu: could not fetch the backports QEMU; L1 runs under the system's $(qemu-system-x86_64 --version | head -n1), whose L1s freeze more often" >&2
		command -v qemu-system-x86_64
	fi
}

# l1_kernel sets L1_KERNEL_ARGS to l1run's flags for the nested harness's
# L1 kernel: Debian 12's stock cloud kernel (scripts/stock-kernel.sh, cached)
# rather than the project's guest kernel, so that the machine, L1 and the
# guest run three different kernels (`make demo` shows them), and the
# modules L1 loads from it, dependencies first: KVM (irqbypass, kvm,
# kvm-amd) and tun, for the net tests' TAP devices. L1_KERNEL=bzImage, one
# with those built in, overrides it.
l1_kernel() {
	L1_KERNEL_ARGS=()
	if [[ -n ${L1_KERNEL:-} ]]; then
		L1_KERNEL_ARGS=(--kernel "$L1_KERNEL")
		return
	fi
	local d m
	d=$("$(dirname "${BASH_SOURCE[0]}")/stock-kernel.sh" cloud) || return 1
	L1_KERNEL_ARGS=(--kernel "$d/vmlinuz")
	for m in virt/lib/irqbypass arch/x86/kvm/kvm arch/x86/kvm/kvm-amd drivers/net/tun; do
		[[ -f $d/modules/$m.ko ]] || { echo "l1_kernel: $d has no $m.ko" >&2; return 1; }
		L1_KERNEL_ARGS+=(--module "$d/modules/$m.ko")
	done
}
