package vmm

import (
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The KVM state ioctls a snapshot uses (Documentation/virt/kvm/api.rst,
// section 4), with the size of the structure each one copies. A snapshot
// keeps these structures as raw bytes: they are the kernel's ABI, so a
// state saved by one kernel restores on another, and a restore checks each
// one's length before handing it to KVM.
const (
	kvmGetMSRIndexList = 0xC004AE02 // _IOWR(KVMIO, 0x02, struct kvm_msr_list)
	kvmGetIRQChip      = 0xC208AE62 // _IOWR(KVMIO, 0x62, struct kvm_irqchip)
	kvmSetIRQChip      = 0x8208AE63 // _IOR(KVMIO, 0x63, struct kvm_irqchip)
	kvmSetClock        = 0x4030AE7B // _IOW(KVMIO, 0x7b, struct kvm_clock_data)
	kvmGetClock        = 0x8030AE7C // _IOR(KVMIO, 0x7c, struct kvm_clock_data)
	kvmGetMSRs         = 0xC008AE88 // _IOWR(KVMIO, 0x88, struct kvm_msrs)
	kvmGetCPUID2       = 0xC008AE91 // _IOWR(KVMIO, 0x91, struct kvm_cpuid2)
	kvmSetMPState      = 0x4004AE99 // _IOW(KVMIO, 0x99, struct kvm_mp_state)
	kvmGetPIT2         = 0x8070AE9F // _IOR(KVMIO, 0x9f, struct kvm_pit_state2)
	kvmSetPIT2         = 0x4070AEA0 // _IOW(KVMIO, 0xa0, struct kvm_pit_state2)
	kvmGetVCPUEvents   = 0x8040AE9F // _IOR(KVMIO, 0x9f, struct kvm_vcpu_events)
	kvmSetVCPUEvents   = 0x4040AEA0 // _IOW(KVMIO, 0xa0, struct kvm_vcpu_events)
	kvmGetDebugRegs    = 0x8080AEA1 // _IOR(KVMIO, 0xa1, struct kvm_debugregs)
	kvmSetDebugRegs    = 0x4080AEA2 // _IOW(KVMIO, 0xa2, struct kvm_debugregs)
	kvmSetTSCKHz       = 0xAEA2     // _IO(KVMIO, 0xa2)
	kvmGetTSCKHz       = 0xAEA3     // _IO(KVMIO, 0xa3)
	kvmGetXSave        = 0x9000AEA4 // _IOR(KVMIO, 0xa4, struct kvm_xsave)
	kvmSetXSave        = 0x5000AEA5 // _IOW(KVMIO, 0xa5, struct kvm_xsave)
	kvmGetXCRs         = 0x8188AEA6 // _IOR(KVMIO, 0xa6, struct kvm_xcrs)
	kvmSetXCRs         = 0x4188AEA7 // _IOW(KVMIO, 0xa7, struct kvm_xcrs)
	kvmKVMClockCtrl    = 0xAEAD     // _IO(KVMIO, 0xad)
	kvmGetXSave2       = 0x9000AECF // _IOR(KVMIO, 0xcf, struct kvm_xsave)

	capXCRs  = 56
	capXSave = 55
	// capXSave2 returns the size KVM_GET_XSAVE2 needs (at least 4096).
	capXSave2 = 208
)

// Sizes of the structures above (include/uapi/linux/kvm.h and
// arch/x86/include/uapi/asm/kvm.h, x86-64).
const (
	sizeRegs      = int(unsafe.Sizeof(Regs{}))
	sizeSregs     = int(unsafe.Sizeof(Sregs{}))
	sizeLAPIC     = int(unsafe.Sizeof(lapicState{}))
	sizeIRQChip   = 520 // chip_id, pad, 512-byte union
	sizePIT2      = 112 // 3 x 24-byte channels, flags, reserved[9]
	sizeClock     = 48
	sizeEvents    = 64
	sizeDebugRegs = 128
	sizeXCRs      = 392 // nr_xcrs, flags, 16 x struct kvm_xcr, padding[16]
	sizeXSave     = 4096
	maxIOMSRs     = 255 // KVM refuses a KVM_GET/SET_MSRS of MAX_IO_MSRS (256) or more
)

// KVM_IRQCHIP_* chip IDs, in the order a snapshot keeps them.
var irqChipIDs = [3]uint32{0, 1, 2} // PIC master, PIC slave, IOAPIC

// kvm_clock_data.flags bits.
const (
	clockTSCStable = 1 << 1
	clockRealtime  = 1 << 2
	clockHostTSC   = 1 << 3
)

// getRaw runs a GET ioctl into a fresh buffer of size bytes.
func getRaw(fd int, name string, req uintptr, size int) ([]byte, error) {
	b := make([]byte, size)
	if _, err := ioctl(fd, req, uintptr(unsafe.Pointer(&b[0]))); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return b, nil
}

// setRaw runs a SET ioctl with b, which must be the structure's size: a
// snapshot's bytes are untrusted, and KVM reads exactly that many.
func setRaw(fd int, name string, req uintptr, b []byte, size int) error {
	if len(b) != size {
		return fmt.Errorf("%s: %d bytes in the snapshot, want %d", name, len(b), size)
	}
	if _, err := ioctl(fd, req, uintptr(unsafe.Pointer(&b[0]))); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// MSRIndexList returns KVM_GET_MSR_INDEX_LIST: the MSRs KVM saves and
// restores for userspace (msrs_to_save plus emulated_msrs in
// arch/x86/kvm/x86.c).
func (k *KVM) MSRIndexList() ([]uint32, error) {
	var n uint32
	_, err := ioctl(k.fd(), kvmGetMSRIndexList, uintptr(unsafe.Pointer(&n)))
	if err != nil && !errors.Is(err, unix.E2BIG) {
		return nil, fmt.Errorf("KVM_GET_MSR_INDEX_LIST: %w", err)
	}
	if n == 0 || n > 4096 {
		return nil, fmt.Errorf("KVM_GET_MSR_INDEX_LIST: %d MSRs", n)
	}
	buf := make([]uint32, 1+n)
	buf[0] = n
	if _, err := ioctl(k.fd(), kvmGetMSRIndexList, uintptr(unsafe.Pointer(&buf[0]))); err != nil {
		return nil, fmt.Errorf("KVM_GET_MSR_INDEX_LIST: %w", err)
	}
	return buf[1 : 1+min(buf[0], n)], nil
}

// xsaveSize is the struct kvm_xsave size this VM's KVM_GET_XSAVE2 fills
// (KVM_CAP_XSAVE2 on the VM fd), or 0 without KVM_GET_XSAVE2.
func (v *vm) xsaveSize() int {
	r, err := ioctl(int(v.f.Fd()), kvmCheckExtension, capXSave2)
	if err != nil || int(r) < sizeXSave {
		return 0
	}
	return int(r)
}

// msrIO runs KVM_GET_MSRS or KVM_SET_MSRS on ents (at most maxIOMSRs) and
// returns how many KVM processed: entries from that one on failed.
func msrIO(fd int, req uintptr, ents []msrEntry) (int, error) {
	b := make([]byte, 8+16*len(ents))
	*(*uint32)(unsafe.Pointer(&b[0])) = uint32(len(ents))
	dst := unsafe.Slice((*msrEntry)(unsafe.Pointer(&b[8])), len(ents))
	copy(dst, ents)
	n, err := ioctl(fd, req, uintptr(unsafe.Pointer(&b[0])))
	if err != nil {
		return 0, err
	}
	copy(ents, dst)
	return int(n), nil
}
