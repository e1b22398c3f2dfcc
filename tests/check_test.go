package tests

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"
)

// TestCheck: where /dev/kvm works (inside the nested harness's L1, or on a
// hardware-KVM host) `microvm check` must say yes and exit 0, listing API
// version 12 and every capability. (The "no" side runs on the development
// host itself, in the root package's TestCheckHostVerdict.)
func TestCheck(t *testing.T) {
	needKVM(t)
	r := runMicrovm(t, time.Minute, "check")
	t.Logf("microvm check: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	if r.code != 0 || !strings.Contains(r.stdout, "yes: this host can boot") {
		t.Fatalf("exit %d, want 0 and a yes", r.code)
	}
	r = runMicrovm(t, time.Minute, "check", "--json")
	var rep struct {
		OK         bool `json:"ok"`
		APIVersion int  `json:"api_version"`
		Caps       []struct {
			Name string
			OK   bool
		} `json:"capabilities"`
		Hardware struct {
			CPUFlag        string `json:"cpu_flag"`
			InsideVM       bool   `json:"inside_vm"`
			Module         string `json:"module"`
			Nested         string `json:"nested"`
			HardwareBacked bool   `json:"hardware_backed"`
		} `json:"hardware"`
		Limits struct {
			HostCPUs     int    `json:"host_cpus"`
			MemAvailable uint64 `json:"mem_available_bytes"`
			MaxVCPUs     int    `json:"kvm_max_vcpus"`
		} `json:"limits"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil || r.code != 0 {
		t.Fatalf("check --json: exit %d, %v\n%s", r.code, err, r.stdout)
	}
	if !rep.OK || rep.APIVersion != 12 || len(rep.Caps) != 8 || !rep.Hardware.HardwareBacked || rep.Limits.MaxVCPUs < 1 || rep.Limits.MemAvailable == 0 {
		t.Errorf("report %+v", rep)
	}
	for _, c := range rep.Caps {
		if !c.OK {
			t.Errorf("capability %s missing", c.Name)
		}
	}
	if os.Getenv("MICROVM_NESTED") == "1" {
		// L1 runs under QEMU TCG -cpu max: emulated AMD SVM, kvm_amd.
		h := rep.Hardware
		if h.CPUFlag != "svm" || h.Module != "kvm_amd" || !h.InsideVM || h.Nested == "" {
			t.Errorf("in the nested harness's L1, want svm, kvm_amd, inside a VM and its nested parameter; got %+v", h)
		}
	}
}
