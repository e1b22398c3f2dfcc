package tests

import (
	"os"
	"strings"
	"testing"

	"github.com/microvm-dev/microvm/internal/report"
)

// TestLinuxCompare runs `microvm compare` (table, then --json) and checks
// that the VM column holds measured, plausible numbers. The L1 has no
// container engine, so the container column must say so and stay empty.
func TestLinuxCompareJSON(t *testing.T) {
	kernel, initrd := linuxArtifacts(t)
	var out report.Compare
	linuxJSON(t, linuxLimit, &out, "compare", "--memory", "128M")
	v := out.VM
	ks, _ := os.Stat(kernel)
	is, _ := os.Stat(initrd)
	if v.KernelBytes != ks.Size() || v.InitrdBytes != is.Size() || v.DiskBytes != ks.Size()+is.Size() {
		t.Errorf("sizes %d+%d=%d, files are %d and %d", v.KernelBytes, v.InitrdBytes, v.DiskBytes, ks.Size(), is.Size())
	}
	if v.StartToInitMS <= 0 || v.StartToInitMS > float64(linuxLimit.Milliseconds()) {
		t.Errorf("start to init %.0f ms", v.StartToInitMS)
	}
	// The VMM is a Go process: a few MiB to some tens; the guest touched
	// some of its 128 MiB (kernel, initrd, page cache).
	if v.OverheadBytes < 1<<20 || v.OverheadBytes > 200<<20 || v.GuestRAMBytes < 8<<20 || v.GuestRAMBytes > 128<<20 || v.HostRSSBytes != v.OverheadBytes+v.GuestRAMBytes {
		t.Errorf("memory: RSS %d = overhead %d + guest %d?", v.HostRSSBytes, v.OverheadBytes, v.GuestRAMBytes)
	}
	if v.GuestMemory != 128<<20 || v.GuestsFit < 1 || v.GuestsFit != v.MemAvailable/(v.GuestMemory+v.OverheadBytes) {
		t.Errorf("fit: %d guests of %d in %d available", v.GuestsFit, v.GuestMemory, v.MemAvailable)
	}
	if want := os.Getenv("MICROVM_KERNEL_RELEASE"); v.GuestRelease != want || v.ImageRelease != want || !v.RunsGivenKernel || v.HostRelease == "" {
		t.Errorf("guest release %q, image %q (want %q), host %q, runs the given kernel %v", v.GuestRelease, v.ImageRelease, want, v.HostRelease, v.RunsGivenKernel)
	}
	if os.Getenv("MICROVM_NESTED") == "1" {
		if out.Container != nil || !strings.HasPrefix(out.ContainerNote, "no container engine here") {
			t.Errorf("L1 has no container engine, but container %+v, note %q", out.Container, out.ContainerNote)
		}
	}
}

// TestLinuxCompareTable: the table form, as a person sees it (a test of its
// own: the nested harness gives each Linux test a fresh L1).
func TestLinuxCompareTable(t *testing.T) {
	r := linuxCmd(t, linuxLimit, "compare", "--memory", "128M")
	for _, row := range []string{"start time to init", "on-disk size", "VMM overhead RSS", "guests of 128 MiB in free memory", "isolation", "can run a different kernel"} {
		if !strings.Contains(r.stdout, row) {
			t.Errorf("table lacks row %q", row)
		}
	}
	if !strings.Contains(r.stdout, "yes: it ran the --kernel image's "+os.Getenv("MICROVM_KERNEL_RELEASE")) {
		t.Error("table does not show the guest running the given kernel")
	}
	if os.Getenv("MICROVM_NESTED") == "1" && !strings.Contains(r.stdout, "container: no container engine here") {
		t.Error("table does not say there is no container engine")
	}
}
