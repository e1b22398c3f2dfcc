package vmm

import (
	"encoding/binary"
	"fmt"
	"os"
	"sync/atomic"
	"unsafe"

	"github.com/microvm-dev/microvm/internal/vmm/boot"
	"github.com/microvm-dev/microvm/internal/vmm/layout"
	"golang.org/x/sys/unix"
)

// vcpu is one virtual CPU: its fd, its mmapped struct kvm_run, and the OS
// thread it runs on (so it can be kicked out of KVM_RUN with a signal).
type vcpu struct {
	id  int
	f   *os.File
	run []byte
	tid atomic.Int32
	// cpuid is what KVM_SET_CPUID2 gave the vCPU, for its snapshot.
	cpuid []cpuidEntry
	// exits counts KVM_RUN's returns; only the vCPU's own loop writes it,
	// and it is read once that loop has ended (Run's WaitGroup).
	exits Exits
}

func (v *vcpu) fd() int { return int(v.f.Fd()) }

func (v *vcpu) close() {
	if v.run != nil {
		_ = unix.Munmap(v.run)
		v.run = nil
	}
	v.f.Close()
}

// x86 control-register and MSR bits used at boot.
const (
	cr0PE      = 1 << 0
	cr0ET      = 1 << 4
	cr0PG      = 1 << 31
	cr4PAE     = 1 << 5
	rflagsIF   = 1 << 9
	eferLME    = 1 << 8
	eferLMA    = 1 << 10
	apicLVT0   = 0x350
	apicLVT1   = 0x360
	apicExtInt = 7 << 8
	apicNMI    = 4 << 8

	msrIA32TSC        = 0x10
	msrSysenterCS     = 0x174
	msrSysenterESP    = 0x175
	msrSysenterEIP    = 0x176
	msrMiscEnable     = 0x1a0
	msrMTRRDefType    = 0x2ff
	msrSTAR           = 0xc0000081
	msrLSTAR          = 0xc0000082
	msrCSTAR          = 0xc0000083
	msrSyscallMask    = 0xc0000084
	msrKernelGSBase   = 0xc0000102
	miscEnableFastStr = 1
	mtrrEnableWB      = 1<<11 | 6
)

// setupCPU applies what every vCPU needs: CPUID, boot MSRs, FPU state and
// LAPIC LINT0=ExtINT / LINT1=NMI (as a BIOS would leave them).
func (v *vcpu) setupCPU(supported []cpuidEntry, ncpus int, tscDeadline bool) error {
	ents := filterCPUID(supported, v.id, ncpus, tscDeadline)
	c := &cpuid2{Nent: uint32(len(ents))}
	copy(c.Entries[:], ents)
	if _, err := ioctl(v.fd(), kvmSetCPUID2, uintptr(unsafe.Pointer(c))); err != nil {
		return fmt.Errorf("vcpu %d: KVM_SET_CPUID2: %w", v.id, err)
	}
	v.cpuid = ents
	m := &msrs{}
	for _, e := range []msrEntry{
		{Index: msrSysenterCS}, {Index: msrSysenterESP}, {Index: msrSysenterEIP},
		{Index: msrSTAR}, {Index: msrCSTAR}, {Index: msrKernelGSBase},
		{Index: msrSyscallMask}, {Index: msrLSTAR}, {Index: msrIA32TSC},
		{Index: msrMiscEnable, Data: miscEnableFastStr},
		{Index: msrMTRRDefType, Data: mtrrEnableWB},
	} {
		m.Entries[m.N] = e
		m.N++
	}
	n, err := ioctl(v.fd(), kvmSetMSRs, uintptr(unsafe.Pointer(m)))
	if err != nil {
		return fmt.Errorf("vcpu %d: KVM_SET_MSRS: %w", v.id, err)
	}
	if int(n) != int(m.N) {
		return fmt.Errorf("vcpu %d: KVM_SET_MSRS: set %d of %d MSRs (MSR %#x refused)", v.id, n, m.N, m.Entries[n].Index)
	}
	f := &fpu{FCW: 0x37f, MXCSR: 0x1f80}
	if _, err := ioctl(v.fd(), kvmSetFPU, uintptr(unsafe.Pointer(f))); err != nil {
		return fmt.Errorf("vcpu %d: KVM_SET_FPU: %w", v.id, err)
	}
	l := &lapicState{}
	if _, err := ioctl(v.fd(), kvmGetLAPIC, uintptr(unsafe.Pointer(l))); err != nil {
		return fmt.Errorf("vcpu %d: KVM_GET_LAPIC: %w", v.id, err)
	}
	setLVT := func(off int, mode uint32) {
		r := binary.LittleEndian.Uint32(l.Regs[off:])
		binary.LittleEndian.PutUint32(l.Regs[off:], r&^0x700|mode)
	}
	setLVT(apicLVT0, apicExtInt)
	setLVT(apicLVT1, apicNMI)
	if _, err := ioctl(v.fd(), kvmSetLAPIC, uintptr(unsafe.Pointer(l))); err != nil {
		return fmt.Errorf("vcpu %d: KVM_SET_LAPIC: %w", v.id, err)
	}
	return nil
}

// setupBoot puts the boot CPU in 64-bit mode at entry, per the 64-bit boot
// protocol: paging on with the identity map, flat segments, %rsi = zero page.
func (v *vcpu) setupBoot(entry uint64) error {
	var s Sregs
	if _, err := ioctl(v.fd(), kvmGetSregs, uintptr(unsafe.Pointer(&s))); err != nil {
		return fmt.Errorf("vcpu %d: KVM_GET_SREGS: %w", v.id, err)
	}
	code, data, tss := segmentFromGDT(boot.CS), segmentFromGDT(boot.DS), segmentFromGDT(boot.TR)
	s.CS = code
	s.DS, s.ES, s.FS, s.GS, s.SS = data, data, data, data, data
	s.TR = tss
	s.GDT = DTable{Base: layout.GDTAddr, Limit: uint16(8*len(boot.GDT) - 1)}
	s.IDT = DTable{}
	s.CR0 = cr0PE | cr0ET | cr0PG
	s.CR3 = layout.PML4Addr
	s.CR4 = cr4PAE
	s.EFER = eferLME | eferLMA
	if _, err := ioctl(v.fd(), kvmSetSregs, uintptr(unsafe.Pointer(&s))); err != nil {
		return fmt.Errorf("vcpu %d: KVM_SET_SREGS: %w", v.id, err)
	}
	r := Regs{RIP: entry, RSI: layout.ZeroPageAddr, RSP: layout.BootStackAddr, RBP: layout.BootStackAddr, RFLAGS: 2}
	if _, err := ioctl(v.fd(), kvmSetRegs, uintptr(unsafe.Pointer(&r))); err != nil {
		return fmt.Errorf("vcpu %d: KVM_SET_REGS: %w", v.id, err)
	}
	return nil
}

// regs returns the vCPU's registers (for crash reports).
func (v *vcpu) regs() (Regs, error) {
	var r Regs
	_, err := ioctl(v.fd(), kvmGetRegs, uintptr(unsafe.Pointer(&r)))
	return r, err
}

// stoppedForGood reports whether this vCPU can never run again on its own:
// halted with interrupts disabled (how Linux ends a poweroff without ACPI:
// every CPU in stop_this_cpu), or an AP still waiting for INIT/SIPI.
// Called on the vCPU's own thread, between KVM_RUNs.
func (v *vcpu) stoppedForGood() bool {
	var st uint32
	if _, err := ioctl(v.fd(), kvmGetMPState, uintptr(unsafe.Pointer(&st))); err != nil {
		return false
	}
	switch st {
	case mpStateUninitialized, mpStateInitReceived:
		return v.id != 0
	case mpStateHalted:
		r, err := v.regs()
		return err == nil && r.RFLAGS&rflagsIF == 0
	}
	return false
}

// poke interrupts KVM_RUN without stopping the vCPU, so the loop can look at
// its state.
func (v *vcpu) poke() {
	if tid := v.tid.Load(); tid != 0 {
		_ = unix.Tgkill(unix.Getpid(), int(tid), unix.SIGURG)
	}
}

// kick makes KVM_RUN return (now or at its next entry): set immediate_exit,
// then signal the thread. SIGURG is harmless to the Go runtime, which uses
// it for preemption itself.
func (v *vcpu) kick() {
	// immediate_exit is byte 1 of kvm_run; bytes 0 and 2-3 are ours and zero.
	atomic.StoreUint32((*uint32)(unsafe.Pointer(&v.run[0])), 1<<8)
	if tid := v.tid.Load(); tid != 0 {
		_ = unix.Tgkill(unix.Getpid(), int(tid), unix.SIGURG)
	}
}

// segmentFromGDT expands a GDT descriptor into the kvm_segment KVM wants.
func segmentFromGDT(sel uint16) Segment {
	d := boot.GDT[sel>>3]
	limit := uint32(d&0xffff) | uint32((d>>48)&0xf)<<16
	g := uint8(d>>55) & 1
	if g == 1 {
		limit = limit<<12 | 0xfff
	}
	return Segment{
		Base:     (d>>16)&0xffffff | (d>>56&0xff)<<24,
		Limit:    limit,
		Selector: sel,
		Type:     uint8(d>>40) & 0xf,
		S:        uint8(d>>44) & 1,
		DPL:      uint8(d>>45) & 3,
		Present:  uint8(d>>47) & 1,
		AVL:      uint8(d>>52) & 1,
		L:        uint8(d>>53) & 1,
		DB:       uint8(d>>54) & 1,
		G:        g,
	}
}
