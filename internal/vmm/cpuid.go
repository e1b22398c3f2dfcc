package vmm

import "math/bits"

// filterCPUID adapts KVM_GET_SUPPORTED_CPUID for one vCPU: hypervisor bit,
// KVM signature, APIC ID and topology for ncpus single-thread cores in one
// package, and no PMU (we don't virtualize one). tscDeadline offers the
// LAPIC's TSC-deadline mode (KVM_CAP_TSC_DEADLINE_TIMER with the in-kernel
// irqchip; KVM_GET_SUPPORTED_CPUID never reports it, api.rst "CPU[EAX=1]:
// ECX[24]"). With it Linux skips calibrate_APIC_clock, which spins with
// PAUSE until 25 PIT ticks have been injected: a boot-time cost, and the
// loop in which nested L1s were seen frozen (tests/nested/NOTES.md).
func filterCPUID(supported []cpuidEntry, id, ncpus int, tscDeadline bool) []cpuidEntry {
	out := make([]cpuidEntry, 0, len(supported)+2)
	coreBits := uint32(bits.Len(uint(ncpus - 1)))
	haveSig := false
	for _, e := range supported {
		switch e.Function {
		case 1:
			e.Ecx |= 1 << 31 // hypervisor present
			e.Ebx = e.Ebx&0x0000ffff | uint32(id)<<24 | uint32(ncpus)<<16
			if ncpus > 1 {
				e.Edx |= 1 << 28 // HTT: the logical count field is valid
			}
			if tscDeadline {
				e.Ecx |= 1 << 24
			}
		case 4:
			// Deterministic cache parameters: cores per package - 1 in 31:26,
			// threads sharing this cache - 1 in 25:14 (1 thread per core).
			if e.Eax&0x1f != 0 {
				e.Eax = e.Eax&0x3fff | uint32(ncpus-1)<<26
				if (e.Eax>>5)&7 == 3 { // L3 is shared by the package
					e.Eax |= uint32(ncpus-1) << 14
				}
			}
		case 6:
			e.Ecx &^= 1 << 3 // no energy-performance bias MSR
		case 0xa:
			e.Eax, e.Ebx, e.Ecx, e.Edx = 0, 0, 0, 0 // no PMU
		case 0xb, 0x1f:
			// Extended topology: level 0 is SMT (1 thread), level 1 is core.
			e.Edx = uint32(id)
			switch e.Index {
			case 0:
				e.Eax, e.Ebx, e.Ecx = 0, 1, 1<<8
			case 1:
				e.Eax, e.Ebx, e.Ecx = coreBits, uint32(ncpus), 2<<8|1
			default:
				e.Eax, e.Ebx, e.Ecx = 0, 0, e.Index
			}
		case 0x40000000:
			// "KVMKVMKVM\0\0\0" and the highest hypervisor leaf.
			haveSig = true
			e.Eax = max(e.Eax, 0x40000001)
			e.Ebx, e.Ecx, e.Edx = 0x4b4d564b, 0x564b4d56, 0x0000004d
		case 0x80000001:
			e.Ecx &^= 1 << 1 // CmpLegacy: no legacy HTT
		case 0x80000008:
			e.Ecx = e.Ecx&^0xf0ff | uint32(ncpus-1) | coreBits<<12
		}
		out = append(out, e)
	}
	if !haveSig {
		out = append(out, cpuidEntry{Function: 0x40000000, Eax: 0x40000001, Ebx: 0x4b4d564b, Ecx: 0x564b4d56, Edx: 0x4d})
	}
	return out
}
