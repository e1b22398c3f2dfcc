package vmm

import (
	"fmt"
	"strings"

	"github.com/microvm-dev/microvm/internal/snapshot"
)

// A restored guest keeps the CPUID it booted with: it chose its code paths
// (AVX2, RDRAND, XSAVE features...) by it and will execute those
// instructions. So every feature bit it was given must be one this host's
// KVM supports (KVM_GET_SUPPORTED_CPUID), or the restore is refused with
// the features named, instead of the guest dying later on an invalid
// opcode.

// featureWord is one CPUID register of feature flags.
type featureWord struct {
	fn, index uint32
	reg       string
	// synth are bits the VMM sets itself rather than taking from the host
	// (filterCPUID): their support is checked otherwise, or is not the
	// host CPU's to give.
	synth uint32
	names map[uint]string
}

var featureWords = []featureWord{
	{1, 0, "ECX", 1<<31 | 1<<27 | 1<<24, map[uint]string{0: "sse3", 1: "pclmulqdq", 9: "ssse3", 12: "fma", 13: "cx16", 19: "sse4.1", 20: "sse4.2", 22: "movbe", 23: "popcnt", 25: "aes", 26: "xsave", 28: "avx", 29: "f16c", 30: "rdrand"}},
	{1, 0, "EDX", 1 << 28, map[uint]string{25: "sse", 26: "sse2"}},
	{7, 0, "EBX", 0, map[uint]string{0: "fsgsbase", 3: "bmi1", 5: "avx2", 7: "smep", 8: "bmi2", 9: "erms", 16: "avx512f", 18: "rdseed", 19: "adx", 20: "smap", 29: "sha"}},
	{7, 0, "ECX", 0, map[uint]string{1: "avx512vbmi", 2: "umip", 9: "vaes", 10: "vpclmulqdq", 22: "rdpid"}},
	{7, 0, "EDX", 0, nil},
	{7, 1, "EAX", 0, nil},
	{0xd, 0, "EAX", 0, map[uint]string{1: "xsave:sse", 2: "xsave:avx", 5: "xsave:avx512"}},
	{0xd, 1, "EAX", 0, map[uint]string{0: "xsaveopt", 1: "xsavec", 3: "xsaves"}},
	{0x80000001, 0, "ECX", 1 << 1, map[uint]string{0: "lahf_lm", 5: "abm", 6: "sse4a"}},
	{0x80000001, 0, "EDX", 0, map[uint]string{27: "rdtscp", 29: "lm"}},
}

func cpuidReg(ents []snapshot.CPUIDEntry, fn, index uint32, reg string) (uint32, bool) {
	for _, e := range ents {
		if e.Function != fn || (e.Flags&1 != 0 && e.Index != index) {
			continue // flag 1: KVM_CPUID_FLAG_SIGNIFCANT_INDEX
		}
		switch reg {
		case "EAX":
			return e.EAX, true
		case "EBX":
			return e.EBX, true
		case "ECX":
			return e.ECX, true
		default:
			return e.EDX, true
		}
	}
	return 0, false
}

// cpuidCompatible reports the features of guest that host lacks.
// tscDeadline is whether this host offers the LAPIC's TSC-deadline mode
// (KVM_CAP_TSC_DEADLINE_TIMER), which we add to the guest's CPUID.
func cpuidCompatible(guest, host []snapshot.CPUIDEntry, tscDeadline bool) error {
	var missing []string
	if v, _ := cpuidReg(guest, 1, 0, "ECX"); v&(1<<24) != 0 && !tscDeadline {
		missing = append(missing, "CPUID.1:ECX[24] (tsc-deadline timer)")
	}
	for _, w := range featureWords {
		g, ok := cpuidReg(guest, w.fn, w.index, w.reg)
		if !ok {
			continue
		}
		h, _ := cpuidReg(host, w.fn, w.index, w.reg)
		lack := g &^ h &^ w.synth
		for bit := uint(0); bit < 32; bit++ {
			if lack&(1<<bit) == 0 {
				continue
			}
			s := fmt.Sprintf("CPUID.%#x.%d:%s[%d]", w.fn, w.index, w.reg, bit)
			if n := w.names[bit]; n != "" {
				s += " (" + n + ")"
			}
			missing = append(missing, s)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("the guest uses CPU features this host lacks: %s", strings.Join(missing, ", "))
	}
	return nil
}
