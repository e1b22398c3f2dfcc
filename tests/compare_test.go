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

// TestLinuxCompareRootfs: `microvm compare --rootfs` on a tiny root
// (uname, sleep and their libraries, built by tests/run.sh) fills both
// columns from measurements. The container must report the host's kernel,
// the VM the guest kernel's own. In the nested harness run.sh measured the
// container column on the host (podman cannot run inside L1) and passes it
// in as MICROVM_COMPARE_CONTAINER; elsewhere compare runs podman itself.
func TestLinuxCompareRootfs(t *testing.T) {
	rootfs := os.Getenv("MICROVM_COMPARE_ROOTFS")
	if rootfs == "" {
		t.Fatal("MICROVM_COMPARE_ROOTFS is not set: run this test through tests/run.sh")
	}
	args := []string{"--memory", "128M", "--rootfs", rootfs, "--runs", "3"}
	if c := os.Getenv("MICROVM_COMPARE_CONTAINER"); c != "" {
		args = append(args, "--container-json", c)
	}
	var out report.Compare
	kernel, initrd := linuxArtifacts(t)
	linuxJSON(t, linuxLimit, &out, "compare", args...)
	v, c := out.VM, out.Container
	ks, _ := os.Stat(kernel)
	is, _ := os.Stat(initrd)
	if v.RootfsBytes < 1<<20 || v.DiskBytes != v.RootfsBytes+ks.Size()+is.Size() {
		t.Errorf("VM disk %d, want rootfs %d (at least 1 MiB: libc) + kernel %d + initrd %d", v.DiskBytes, v.RootfsBytes, ks.Size(), is.Size())
	}
	if want := os.Getenv("MICROVM_KERNEL_RELEASE"); v.GuestRelease != want || !v.RunsGivenKernel {
		t.Errorf("VM release %q (runs the given kernel: %v), want the guest kernel's %q", v.GuestRelease, v.RunsGivenKernel, want)
	}
	checkTimes := func(who string, times []float64, med float64) {
		if len(times) != 3 || med <= 0 {
			t.Errorf("%s: start times %v, median %v: want 3 measured", who, times, med)
		}
		for _, ms := range times {
			if ms <= 0 || ms > float64(linuxLimit.Milliseconds()) {
				t.Errorf("%s: start time %v ms", who, ms)
			}
		}
	}
	checkTimes("VM", v.FirstOutputMS, v.FirstOutputMedianMS)
	if v.OverheadBytes == 0 || v.GuestsFit < 1 {
		t.Errorf("VM memory overhead %d, %d guests fit", v.OverheadBytes, v.GuestsFit)
	}
	if c == nil {
		if out.ContainerNote == "" {
			t.Fatal("no container column and no note saying why")
		}
		t.Skipf("container column empty: %s", out.ContainerNote)
	}
	host := os.Getenv("MICROVM_HOST_RELEASE")
	if c.Release != host || c.HostRelease != host || !c.SharedKernel {
		t.Errorf("container release %q (host's per compare %q, shared %v), want the host's uname -r %q", c.Release, c.HostRelease, c.SharedKernel, host)
	}
	if c.Release == v.GuestRelease {
		t.Errorf("container and VM both report %q: the test needs a guest kernel unlike the host's", c.Release)
	}
	checkTimes("container", c.FirstOutputMS, c.FirstOutputMedianMS)
	if c.ImageBytes < 1<<20 {
		t.Errorf("container rootfs %d bytes", c.ImageBytes)
	}
	if c.UnmeasuredWhy != "" || c.MonitorPSSBytes == 0 || c.WorkloadPSSBytes == 0 || c.ContainersFit < 1 {
		t.Errorf("container memory: monitor %d, workload %d, %d fit (%s)", c.MonitorPSSBytes, c.WorkloadPSSBytes, c.ContainersFit, c.UnmeasuredWhy)
	}
}
