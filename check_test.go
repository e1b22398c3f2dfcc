package microvm

import (
	"errors"
	"os"
	"strings"
	"testing"
)

// TestCheckHostVerdict compares CheckHost with what this machine really
// offers, found independently: on a host without /dev/kvm (like the
// project's development machines, whose KVM is kvm_pvm) the verdict must be
// "no" with the reason and fix; where /dev/kvm opens it must list the API
// version and capabilities.
func TestCheckHostVerdict(t *testing.T) {
	r := CheckHost()
	t.Logf("verdict: %s; problems: %q", r.Verdict, r.Problems)
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if r.OK || r.KVM.Exists || !strings.Contains(strings.Join(r.Problems, "\n"), "/dev/kvm cannot be used: does not exist") || r.KVM.Fix != FixKVMMissing {
			t.Errorf("no /dev/kvm here, but the report says ok=%v exists=%v problems=%q fix=%q", r.OK, r.KVM.Exists, r.Problems, r.KVM.Fix)
		}
	case errors.Is(err, os.ErrPermission):
		if r.OK || r.KVM.Openable || r.KVM.Fix != FixKVMGroup {
			t.Errorf("/dev/kvm is not permitted here, but ok=%v openable=%v fix=%q", r.OK, r.KVM.Openable, r.KVM.Fix)
		}
	case err == nil:
		f.Close()
		if !r.KVM.Openable || r.APIVersion != 12 || len(r.Caps) != 8 {
			t.Errorf("/dev/kvm opens here, but openable=%v api=%d caps=%v", r.KVM.Openable, r.APIVersion, r.Caps)
		}
	}
	if _, err := os.Stat("/sys/module/kvm_pvm"); err == nil {
		if r.OK || r.Hardware.Paravirtual != "kvm_pvm" || !strings.Contains(strings.Join(r.Problems, "\n"), "nested harness") {
			t.Errorf("kvm_pvm is loaded here, but ok=%v paravirtual=%q problems=%q", r.OK, r.Hardware.Paravirtual, r.Problems)
		}
	}
	if r.Limits.HostCPUs < 1 || r.Limits.MemTotal == 0 || r.Limits.MemAvailable == 0 || r.Limits.MemAvailable > r.Limits.MemTotal {
		t.Errorf("implausible limits %+v", r.Limits)
	}
}

func TestHardwareInfo(t *testing.T) {
	cases := []struct {
		name, cpuinfo string
		flag          string
		vm            bool
	}{
		{"intel host", "processor\t: 0\nflags\t\t: fpu vme vmx sse2\n", "vmx", false},
		{"amd guest", "flags\t\t: fpu svm hypervisor\n", "svm", true},
		{"pvm guest", "flags\t\t: fpu hypervisor\n", "", true},
		{"no flags line", "processor\t: 0\n", "", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := hardwareInfo([]byte(c.cpuinfo))
			if h.CPUFlag != c.flag || h.InsideVM != c.vm {
				t.Errorf("got flag %q vm %v, want %q %v", h.CPUFlag, h.InsideVM, c.flag, c.vm)
			}
			if c.flag == "" && h.HardwareBacked {
				t.Error("hardware-backed without vmx/svm")
			}
		})
	}
}
