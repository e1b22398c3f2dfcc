package vmm

import (
	"fmt"
	"slices"
	"unsafe"

	"github.com/microvm-dev/microvm/internal/snapshot"
)

// MSRs whose order matters on restore (see restoreState).
const (
	msrIA32TSCDeadline = 0x6e0
)

// saveState reads every piece of this vCPU's state KVM keeps, with every
// vCPU of the machine paused (KVM_GET_VCPU_EVENTS is not safe while other
// vCPUs run). The order is Firecracker's (src/vmm/src/arch/x86_64/vcpu.rs,
// save_state) and Cloud Hypervisor's (hypervisor/src/kvm/mod.rs, state):
//   - KVM_GET_MP_STATE first: it runs kvm_apic_accept_events(), which can
//     change the vCPU and LAPIC state the other calls read;
//   - KVM_GET_LAPIC may update the LAPIC before returning it, so it comes
//     before the MSRs, which include the LAPIC's TSC deadline;
//   - KVM_GET_VCPU_EVENTS last: the other GETs may change what it reports.
//
// msrs is KVM_GET_MSR_INDEX_LIST; xsaveSize is KVM_CAP_XSAVE2's (0: use
// KVM_GET_XSAVE).
func (v *vcpu) saveState(msrs []uint32, xsaveSize int) (snapshot.VCPU, error) {
	s := snapshot.VCPU{ID: uint32(v.id)}
	fd := v.fd()
	if _, err := ioctl(fd, kvmGetMPState, uintptr(unsafe.Pointer(&s.MPState))); err != nil {
		return s, fmt.Errorf("vcpu %d: KVM_GET_MP_STATE: %w", v.id, err)
	}
	xsave := struct {
		name string
		req  uintptr
		size int
	}{"KVM_GET_XSAVE", kvmGetXSave, sizeXSave}
	if xsaveSize > 0 {
		xsave.name, xsave.req, xsave.size = "KVM_GET_XSAVE2", kvmGetXSave2, xsaveSize
	}
	for _, g := range []struct {
		dst  *[]byte
		name string
		req  uintptr
		size int
	}{
		{&s.Regs, "KVM_GET_REGS", kvmGetRegs, sizeRegs},
		{&s.Sregs, "KVM_GET_SREGS", kvmGetSregs, sizeSregs},
		{&s.XSave, xsave.name, xsave.req, xsave.size},
		{&s.XCRs, "KVM_GET_XCRS", kvmGetXCRs, sizeXCRs},
		{&s.DebugRegs, "KVM_GET_DEBUGREGS", kvmGetDebugRegs, sizeDebugRegs},
		{&s.LAPIC, "KVM_GET_LAPIC", kvmGetLAPIC, sizeLAPIC},
	} {
		b, err := getRaw(fd, g.name, g.req, g.size)
		if err != nil {
			return s, fmt.Errorf("vcpu %d: %w", v.id, err)
		}
		*g.dst = b
	}
	if khz, err := ioctl(fd, kvmGetTSCKHz, 0); err == nil {
		s.TSCKHz = uint32(khz)
	}
	s.CPUID = toSnapshotCPUID(v.cpuid)
	m, err := v.getMSRs(msrs)
	if err != nil {
		return s, err
	}
	s.MSRs = m
	if s.Events, err = getRaw(fd, "KVM_GET_VCPU_EVENTS", kvmGetVCPUEvents, sizeEvents); err != nil {
		return s, fmt.Errorf("vcpu %d: %w", v.id, err)
	}
	return s, nil
}

// getMSRs reads every MSR of index that KVM lets userspace read. Some on
// the list cannot be read for this guest (the PMU's, hidden by our CPUID;
// nested VMX's): KVM_GET_MSRS stops at the first such one and returns how
// many it read, so that one is skipped and the rest read again, as Cloud
// Hypervisor does. The TSC deadline goes last, after IA32_TSC (see
// restoreState).
func (v *vcpu) getMSRs(index []uint32) ([]snapshot.MSR, error) {
	var out []snapshot.MSR
	for rest := index; len(rest) > 0; {
		ents := make([]msrEntry, min(len(rest), maxIOMSRs))
		for i := range ents {
			ents[i].Index = rest[i]
		}
		n, err := msrIO(v.fd(), kvmGetMSRs, ents)
		if err != nil {
			return nil, fmt.Errorf("vcpu %d: KVM_GET_MSRS: %w", v.id, err)
		}
		for _, e := range ents[:n] {
			out = append(out, snapshot.MSR{Index: e.Index, Data: e.Data})
		}
		skip := n
		if n < len(ents) {
			skip++ // the one KVM could not read
		}
		rest = rest[skip:]
	}
	return deferMSRs(out), nil
}

// deferMSRs moves IA32_TSC_DEADLINE after every other MSR. KVM arms the
// deadline timer when it is written by comparing it with the guest's TSC,
// so the TSC must be restored first, or a timer is lost or fires at the
// wrong time (Firecracker, vcpu.rs DEFERRED_MSRS). A deadline of 0 with
// the timer in deadline mode is replaced by the TSC: Firecracker saw a
// snapshot taken just as the timer fired restore with no timer at all
// (fix_zero_tsc_deadline_msr); this way it fires once more at once.
func deferMSRs(m []snapshot.MSR) []snapshot.MSR {
	var tsc uint64
	var deadline []snapshot.MSR
	m = slices.DeleteFunc(m, func(e snapshot.MSR) bool {
		if e.Index == msrIA32TSC {
			tsc = e.Data
		}
		if e.Index == msrIA32TSCDeadline {
			deadline = append(deadline, e)
			return true
		}
		return false
	})
	for i := range deadline {
		if deadline[i].Data == 0 {
			deadline[i].Data = tsc
		}
	}
	return append(m, deadline...)
}

// restoreState puts a saved state into this freshly created vCPU, in the
// order Firecracker and Cloud Hypervisor restore it (same files,
// restore_state / set_state), for these reasons:
//   - KVM_SET_CPUID2 first: which MSRs and XSAVE features are valid, and
//     whether the vCPU is the BSP for KVM_SET_MP_STATE, follow from it
//     (api.rst, KVM_SET_CPUID2: set it before the rest of the state);
//   - KVM_SET_REGS before KVM_SET_VCPU_EVENTS: it drops pending exceptions,
//     which the events carry back;
//   - KVM_SET_SREGS before KVM_SET_LAPIC: SREGS holds the APIC base;
//   - KVM_SET_LAPIC before KVM_SET_MSRS: the TSC deadline MSR only takes
//     with the LAPIC timer already in deadline mode. (Issue 15 asked for
//     the LAPIC after the MSRs; both projects do it this way round, for
//     this reason, and so do we.)
//   - KVM_SET_VCPU_EVENTS last.
//
// Then KVM_KVMCLOCK_CTRL tells the guest's watchdogs it was paused.
// Every structure is length-checked first: the state is untrusted.
func (v *vcpu) restoreState(s *snapshot.VCPU, xsaveSize int, amd bool) error {
	fd := v.fd()
	if err := v.setCPUID(s.CPUID); err != nil {
		return err
	}
	sregs := s.Sregs
	if amd {
		sregs = availableTR(sregs)
	}
	mp := s.MPState
	if _, err := ioctl(fd, kvmSetMPState, uintptr(unsafe.Pointer(&mp))); err != nil {
		return fmt.Errorf("vcpu %d: KVM_SET_MP_STATE %d: %w", v.id, mp, err)
	}
	xsave := s.XSave
	if len(xsave) < sizeXSave || len(xsave) > max(sizeXSave, xsaveSize) {
		return fmt.Errorf("vcpu %d: XSAVE state of %d bytes; this host takes %d to %d", v.id, len(xsave), sizeXSave, max(sizeXSave, xsaveSize))
	}
	// KVM_SET_XSAVE reads as many bytes as this host's XSAVE layout has
	// (api.rst, KVM_SET_XSAVE), which can be more than were saved.
	xsave = append(slices.Clone(xsave), make([]byte, max(sizeXSave, xsaveSize)-len(xsave))...)
	lapic := s.LAPIC
	for _, st := range []struct {
		name string
		req  uintptr
		b    []byte
		size int
	}{
		{"KVM_SET_REGS", kvmSetRegs, s.Regs, sizeRegs},
		{"KVM_SET_SREGS", kvmSetSregs, sregs, sizeSregs},
		{"KVM_SET_XSAVE", kvmSetXSave, xsave, len(xsave)},
		{"KVM_SET_XCRS", kvmSetXCRs, s.XCRs, sizeXCRs},
		{"KVM_SET_DEBUGREGS", kvmSetDebugRegs, s.DebugRegs, sizeDebugRegs},
		{"KVM_SET_LAPIC", kvmSetLAPIC, lapic, sizeLAPIC},
	} {
		if err := setRaw(fd, st.name, st.req, st.b, st.size); err != nil {
			return fmt.Errorf("vcpu %d: %w", v.id, err)
		}
	}
	if err := v.setMSRs(s.MSRs); err != nil {
		return err
	}
	if err := setRaw(fd, "KVM_SET_VCPU_EVENTS", kvmSetVCPUEvents, s.Events, sizeEvents); err != nil {
		return fmt.Errorf("vcpu %d: %w", v.id, err)
	}
	// EINVAL when the guest has no kvmclock: nothing to tell it then.
	_, _ = ioctl(fd, kvmKVMClockCtrl, 0)
	return nil
}

// availableTR returns sregs with TR's type "available 64-bit TSS" (9)
// instead of "busy" (11). On SVM, KVM_GET_SREGS reports TR busy whatever
// the VMCB holds (svm_get_segment: "Work around a bug where the busy flag
// in the tr selector isn't exposed"); the VMCB of a guest that loaded TR
// holds type 9, and AMD hardware does not check the bit on VMRUN. Restored
// as 11, QEMU's emulated SVM (the nested harness's L1) refuses the I/O
// permission bitmap of a busy TSS (target/i386 check_io), so a restored
// guest's ioperm(2)ed OUT faulted with #GP: the guest agent's reset did.
// On Intel the type stays 11, which VMX requires of a 64-bit guest.
func availableTR(sregs []byte) []byte {
	if len(sregs) != sizeSregs {
		return sregs // setRaw refuses it
	}
	var s Sregs
	copy(unsafe.Slice((*byte)(unsafe.Pointer(&s)), sizeSregs), sregs)
	if s.TR.Type == 11 {
		s.TR.Type = 9
	}
	return slices.Clone(unsafe.Slice((*byte)(unsafe.Pointer(&s)), sizeSregs))
}

// setCPUID gives the vCPU the saved CPUID, which restoreCompatible has
// checked against this host.
func (v *vcpu) setCPUID(ents []snapshot.CPUIDEntry) error {
	if len(ents) == 0 || len(ents) > maxCPUIDEntries {
		return fmt.Errorf("vcpu %d: %d CPUID entries", v.id, len(ents))
	}
	c := &cpuid2{Nent: uint32(len(ents))}
	for i, e := range ents {
		c.Entries[i] = cpuidEntry{Function: e.Function, Index: e.Index, Flags: e.Flags, Eax: e.EAX, Ebx: e.EBX, Ecx: e.ECX, Edx: e.EDX}
	}
	if _, err := ioctl(v.fd(), kvmSetCPUID2, uintptr(unsafe.Pointer(c))); err != nil {
		return fmt.Errorf("vcpu %d: KVM_SET_CPUID2: %w", v.id, err)
	}
	v.cpuid = append([]cpuidEntry(nil), c.Entries[:len(ents)]...)
	return nil
}

// setMSRs writes the saved MSRs in their saved order (the TSC deadline
// last). Every one was readable when saved, so one KVM refuses now is a
// host that cannot run this guest: an error naming it.
func (v *vcpu) setMSRs(m []snapshot.MSR) error {
	for rest := m; len(rest) > 0; {
		ents := make([]msrEntry, min(len(rest), maxIOMSRs))
		for i := range ents {
			ents[i] = msrEntry{Index: rest[i].Index, Data: rest[i].Data}
		}
		n, err := msrIO(v.fd(), kvmSetMSRs, ents)
		if err != nil {
			return fmt.Errorf("vcpu %d: KVM_SET_MSRS: %w", v.id, err)
		}
		if n < len(ents) {
			return fmt.Errorf("vcpu %d: KVM_SET_MSRS: this host refuses MSR %#x = %#x", v.id, ents[n].Index, ents[n].Data)
		}
		rest = rest[n:]
	}
	return nil
}

// setTSCKHz makes the guest's TSC run at the rate it ran at when saved, if
// this host's differs by more than 250 ppm (the tolerance Firecracker and
// QEMU allow for calibration differences); a host that cannot scale the
// TSC cannot run the guest, whose clocks would run fast or slow.
func (v *vcpu) setTSCKHz(khz uint32) error {
	if khz == 0 {
		return nil
	}
	cur, err := ioctl(v.fd(), kvmGetTSCKHz, 0)
	if err != nil {
		return nil // no TSC frequency control here; nothing to compare
	}
	diff := int64(cur) - int64(khz)
	if diff < 0 {
		diff = -diff
	}
	if diff*1_000_000 <= int64(khz)*250 {
		return nil
	}
	if _, err := ioctl(v.fd(), kvmSetTSCKHz, uintptr(khz)); err != nil {
		return fmt.Errorf("vcpu %d: the snapshot's TSC runs at %d kHz, this host's at %d kHz, and KVM_SET_TSC_KHZ failed: %w", v.id, khz, cur, err)
	}
	return nil
}
