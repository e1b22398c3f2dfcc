package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/microvm-dev/microvm"
	"github.com/microvm-dev/microvm/internal/report"
)

// TestImageRelease reads the release from the project's own kernel build
// when it is in the cache (make kernel), else from a synthetic header.
func TestImageRelease(t *testing.T) {
	dir := t.TempDir()
	bz := make([]byte, 0x1000)
	copy(bz[0x202:], "HdrS")
	bz[0x20e], bz[0x20f] = 0x00, 0x02 // version string at 0x200+0x200
	copy(bz[0x400:], "6.1.0-test (root@x) #1 SMP\x00")
	elf := append(make([]byte, 100), []byte("Linux version 6.2.3-elf (gcc) #4\x00")...)
	cases := map[string][]byte{"bz": bz, "elf": elf, "none": []byte("nothing here")}
	want := map[string]string{"bz": "6.1.0-test", "elf": "6.2.3-elf", "none": ""}
	for name, b := range cases {
		p := filepath.Join(dir, name)
		os.WriteFile(p, b, 0o644)
		if got := imageRelease(p); got != want[name] {
			t.Errorf("%s: release %q, want %q", name, got, want[name])
		}
	}
	cache := cacheDir()
	rel, err := os.ReadFile(filepath.Join(cache, "kernel.release"))
	if err != nil {
		t.Logf("no built kernel in %s: checked synthetic images only", cache)
		return
	}
	for _, img := range []string{"bzImage", "vmlinux"} {
		if got := imageRelease(filepath.Join(cache, img)); got != strings.TrimSpace(string(rel)) {
			t.Errorf("%s: release %q, want %q", img, got, strings.TrimSpace(string(rel)))
		}
	}
}

// TestCheckExitCode: `microvm check` exits 0 exactly when CheckHost says a
// guest can boot. On a host without /dev/kvm (the development machines)
// that is exit 1.
func TestCheckExitCode(t *testing.T) {
	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	stdout := os.Stdout
	os.Stdout = null
	code := dispatch(&env{ctx: context.Background(), tty: &ttyGuard{}}, []string{"check"})
	os.Stdout = stdout
	want := 1
	if microvm.CheckHost().OK {
		want = 0
	}
	if _, err := os.Stat("/dev/kvm"); err != nil {
		want = 1
	}
	if code != want {
		t.Errorf("check exited %d, want %d", code, want)
	}
}

// TestRootfsCompareNoEngine: without an engine the container column is
// empty on every row (no invented numbers) and one line says why.
func TestRootfsCompareNoEngine(t *testing.T) {
	var b strings.Builder
	out := report.Compare{Rootfs: "/r", ContainerNote: "no container engine here: podman is not installed",
		VM: report.VMSide{FirstOutputMS: []float64{1, 2, 3}, FirstOutputMedianMS: 2, GuestRelease: "6.12-x", ImageRelease: "6.12-x", RunsGivenKernel: true}}
	printRootfsCompare(&b, out)
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 9 || lines[8] != "container: "+out.ContainerNote {
		t.Fatalf("want 7 rows, a blank line and the note:\n%s", b.String())
	}
	for _, l := range lines[1:7] {
		// Row label, then the VM cell: the container cell is blank, so
		// the label is followed by spaces only up to the VM column.
		if f := strings.Split(l, "   "); strings.ContainsAny(strings.Join(f[1:len(f)-1], ""), "0123456789") {
			t.Errorf("container cell filled without an engine: %q", l)
		}
	}
}

// TestTreeBytes: hard links count once, symlinks are not followed.
func TestTreeBytes(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "a"), make([]byte, 64<<10), 0o644)
	os.Link(filepath.Join(dir, "a"), filepath.Join(dir, "b"))
	os.Symlink("/usr", filepath.Join(dir, "usr"))
	n, err := treeBytes(dir)
	if err != nil || n < 64<<10 || n > 64<<10+64<<10 {
		t.Errorf("treeBytes = %d, %v: want one 64 KiB file, a directory and a link", n, err)
	}
}
