package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/microvm-dev/microvm"
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
