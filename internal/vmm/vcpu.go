package vmm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync/atomic"
	"unsafe"

	"github.com/microvm-dev/microvm/internal/guard"
	"golang.org/x/sys/unix"
)

// vcpu is one virtual CPU: its fd, its mmapped struct kvm_run, and the OS
// thread it runs on (so it can be kicked out of KVM_RUN with a signal).
type vcpu struct {
	id  int
	f   *os.File
	run []byte
	tid atomic.Int32
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
	code, data, tss := segmentFromGDT(bootCS), segmentFromGDT(bootDS), segmentFromGDT(bootTR)
	s.CS = code
	s.DS, s.ES, s.FS, s.GS, s.SS = data, data, data, data, data
	s.TR = tss
	s.GDT = DTable{Base: GDTAddr, Limit: uint16(8*len(bootGDT) - 1)}
	s.IDT = DTable{}
	s.CR0 = cr0PE | cr0ET | cr0PG
	s.CR3 = PML4Addr
	s.CR4 = cr4PAE
	s.EFER = eferLME | eferLMA
	if _, err := ioctl(v.fd(), kvmSetSregs, uintptr(unsafe.Pointer(&s))); err != nil {
		return fmt.Errorf("vcpu %d: KVM_SET_SREGS: %w", v.id, err)
	}
	r := Regs{RIP: entry, RSI: ZeroPageAddr, RSP: BootStackAddr, RBP: BootStackAddr, RFLAGS: 2}
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

// exitKind says why a vCPU loop ended.
type vcpuExit struct {
	reason ExitReason
	detail string
	err    error
}

// guardedLoop is loop with a panic in the VMM's own exit handling turned
// into an internal error that stops the machine, so the process can restore
// the terminal and exit 1. A panic in a device's register handler is caught
// by the bus, which names the device.
func (v *vcpu) guardedLoop(m *Machine) (e vcpuExit) {
	err := guard.Run(func() error { e = v.loop(m); return nil })
	if err != nil {
		e = vcpuExit{reason: ExitError, err: guard.Internal(fmt.Sprintf("vcpu %d", v.id), err)}
	}
	return e
}

// loop runs the vCPU until the machine stops or the guest does something
// that ends it. It runs on its own locked OS thread for its whole life.
func (v *vcpu) loop(m *Machine) vcpuExit {
	runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
	v.tid.Store(int32(unix.Gettid()))
	defer v.tid.Store(0)
	le := binary.LittleEndian
	fd := uintptr(v.fd())
	first := true
	for !m.stopping.Load() {
		if first && v.id == 0 {
			m.timeline.Mark(PhaseFirstRun)
		}
		first = false
		err := kvmRunRaw(fd)
		if err != nil {
			if errors.Is(err, unix.EINTR) || errors.Is(err, unix.EAGAIN) {
				if !m.stopping.Load() {
					m.noteHalted(v.id, v.stoppedForGood())
				}
				continue
			}
			return vcpuExit{reason: ExitError, err: fmt.Errorf("vcpu %d: KVM_RUN: %w", v.id, err)}
		}
		u := v.run[runExitUnion:]
		switch reason := le.Uint32(v.run[runExitReason:]); reason {
		case exitIO:
			dir, size := u[0], int(u[1])
			port := uint64(le.Uint16(u[2:]))
			count := int(le.Uint32(u[4:]))
			off := le.Uint64(u[8:])
			if size == 0 || off+uint64(size*count) > uint64(len(v.run)) {
				return vcpuExit{reason: ExitError, err: fmt.Errorf("vcpu %d: malformed I/O exit", v.id)}
			}
			for i := 0; i < count; i++ {
				d := v.run[off+uint64(i*size) : off+uint64((i+1)*size)]
				var err error
				if dir == 1 {
					_, err = m.pio.Write(port, d)
				} else {
					_, err = m.pio.Read(port, d)
				}
				if err != nil {
					return vcpuExit{reason: ExitError, err: err}
				}
			}
		case exitMMIO:
			addr := le.Uint64(u[0:])
			n := le.Uint32(u[16:])
			if n > 8 {
				n = 8
			}
			d := u[8 : 8+n]
			var err error
			if u[20] != 0 {
				_, err = m.mmio.Write(addr, d)
			} else {
				_, err = m.mmio.Read(addr, d)
			}
			if err != nil {
				return vcpuExit{reason: ExitError, err: err}
			}
		case exitHLT:
			// Only without an in-kernel LAPIC; nothing to do but re-enter.
		case exitIntr:
			// A signal interrupted the guest; the loop condition decides.
		case exitShutdown:
			return vcpuExit{reason: ExitCrash, detail: v.crashDetail("triple fault (KVM_EXIT_SHUTDOWN)")}
		case exitInternalError:
			sub := le.Uint32(u[0:])
			what := fmt.Sprintf("KVM internal error, suberror %d", sub)
			if sub == 1 {
				what = "emulation failure (KVM_INTERNAL_ERROR_EMULATION)"
			}
			return vcpuExit{reason: ExitCrash, detail: v.crashDetail(what)}
		case exitFailEntry:
			return vcpuExit{reason: ExitError, err: fmt.Errorf("vcpu %d: KVM_EXIT_FAIL_ENTRY, hardware reason %#x", v.id, le.Uint64(u[0:]))}
		case exitSystemEvent:
			switch le.Uint32(u[0:]) {
			case systemEventShutdown:
				return vcpuExit{reason: ExitPoweroff}
			case systemEventReset:
				return vcpuExit{reason: ExitReset}
			default:
				return vcpuExit{reason: ExitCrash, detail: v.crashDetail("guest reported a crash (KVM_SYSTEM_EVENT_CRASH)")}
			}
		default:
			return vcpuExit{reason: ExitError, err: fmt.Errorf("vcpu %d: unexpected KVM exit reason %d", v.id, reason)}
		}
	}
	return vcpuExit{reason: ExitStopped}
}

// kvmRunRaw is KVM_RUN without the Go runtime's syscall bookkeeping
// (RawSyscall, no entersyscall/exitsyscall). With the bookkeeping, a vCPU
// thread that lives in KVM_RUN looks to the runtime like a goroutine stuck in
// a syscall: sysmon keeps retaking its P and polling at 20 µs, which on a
// 1-CPU host costs a context switch per guest exit (measured 2.5x the C
// loop's PIO round trip in the nested harness). Without it the goroutine
// looks busy: it keeps its P (ensureProcs leaves one spare for the other
// goroutines), and the runtime's preemption signal makes KVM_RUN return
// EINTR like any other kick, so GC and the scheduler still get it back.
func kvmRunRaw(fd uintptr) error {
	_, _, errno := unix.RawSyscall(unix.SYS_IOCTL, fd, kvmRun, 0)
	if errno != 0 {
		return errno
	}
	return nil
}

func (v *vcpu) crashDetail(what string) string {
	r, err := v.regs()
	if err != nil {
		return fmt.Sprintf("vcpu %d: %s", v.id, what)
	}
	return fmt.Sprintf("vcpu %d: %s at RIP %#x", v.id, what, r.RIP)
}
