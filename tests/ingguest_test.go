package tests

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestLinuxGoTestInGuest is the CI recipe of docs/github-actions.md: a
// static Go test binary (this one) is shared into the guest read-only
// (--share, virtio-9p) and run there with `microvm run`, whose exit status
// is the test binary's.
func TestLinuxGoTestInGuest(t *testing.T) {
	kernel, initrd := linuxArtifacts(t)
	dir, exe := selfDir(t)
	r := runMicrovm(t, linuxLimit, "run", "--kernel", kernel, "--initrd", initrd, "--memory", "512M", "--timeout", "2m",
		"--share", dir+",ro", "--", filepath.Join(dir, exe), "-test.v", "-test.run", "^TestInGuest$")
	t.Logf("exit %d in %v\nstdout:\n%s\nstderr:\n%s", r.code, r.elapsed, r.stdout, r.stderr)
	if r.code != 0 || !strings.Contains(r.stdout, "--- PASS: TestInGuest") || !strings.Contains(r.stdout, "in-guest kernel "+os.Getenv("MICROVM_KERNEL_RELEASE")) {
		t.Fatalf("exit %d; want the in-guest test to pass and report its kernel", r.code)
	}
}

// TestInGuest runs inside a microvm guest (started by TestLinuxGoTestInGuest);
// elsewhere it skips, saying so.
func TestInGuest(t *testing.T) {
	cmdline, _ := os.ReadFile("/proc/cmdline")
	if !bytes.Contains(cmdline, []byte("microvm.cmd=")) {
		t.Skip("not inside a microvm guest: TestLinuxGoTestInGuest runs this test there")
	}
	var u syscall.Utsname
	if err := syscall.Uname(&u); err != nil {
		t.Fatal(err)
	}
	var rel []byte
	for _, c := range u.Release {
		if c == 0 {
			break
		}
		rel = append(rel, byte(c))
	}
	fmt.Printf("in-guest kernel %s\n", rel)
}
