package tests

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Non-root use: an ordinary user in the group that owns /dev/kvm (mode
// 0660, as the udev rule in the README sets it) boots a guest; without the
// group it gets exit 1 and the fix. microvm has no setuid bit and needs no
// capability.

const (
	testUID    = 4242
	testGID    = 4242
	testKVMGID = 4343
)

func TestNonRoot(t *testing.T) {
	needKVM(t)
	if os.Geteuid() != 0 {
		t.Skip("not root: cannot create a test user or change /dev/kvm's group (run inside the nested harness, where the test is root in L1)")
	}
	st, err := os.Stat("/dev/kvm")
	if err != nil {
		t.Fatal(err)
	}
	sys := st.Sys().(*syscall.Stat_t)
	// This changes the ownership of /dev/kvm of the machine the test runs
	// on; under the nested harness that is L1's own, throwaway device.
	if os.Getenv("MICROVM_NESTED") != "1" {
		t.Skip("not inside the nested harness: will not change this machine's /dev/kvm ownership")
	}
	if err := os.Chown("/dev/kvm", 0, testKVMGID); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod("/dev/kvm", 0o660); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		os.Chown("/dev/kvm", int(sys.Uid), int(sys.Gid))
		os.Chmod("/dev/kvm", st.Mode().Perm())
	})

	// Copies the user can read, in a directory it can enter.
	dir := filepath.Join(os.TempDir(), "microvm-nonroot")
	os.RemoveAll(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	bin := copyFile(t, microvmBin(t), filepath.Join(dir, "microvm"), 0o755)
	hello := copyFile(t, filepath.Join(guestsDir(t), "hello.elf"), filepath.Join(dir, "hello.elf"), 0o644)
	if fi, _ := os.Stat(bin); fi.Mode()&(os.ModeSetuid|os.ModeSetgid) != 0 {
		t.Fatalf("%s is setuid/setgid", bin)
	}

	asUser := func(groups []uint32, args ...string) result {
		cmd := exec.Command(bin, args...)
		cmd.Dir = dir
		cmd.Env = []string{"HOME=" + dir, "PATH=/usr/bin:/bin"}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: testUID, Gid: testGID, Groups: groups}}
		var so, se bytes.Buffer
		cmd.Stdout, cmd.Stderr = &so, &se
		done := make(chan error, 1)
		if err := cmd.Start(); err != nil {
			t.Fatalf("start as uid %d: %v", testUID, err)
		}
		go func() { done <- cmd.Wait() }()
		var err error
		select {
		case err = <-done:
		case <-time.After(guestLimit):
			cmd.Process.Kill()
			t.Fatalf("microvm %v as uid %d did not exit", args, testUID)
		}
		r := result{stdout: so.String(), stderr: se.String()}
		if r.code, err = exitCode(err); err != nil {
			t.Fatal(err)
		}
		t.Logf("uid %d groups %v: microvm %s: exit %d\n%s%s", testUID, groups, strings.Join(args, " "), r.code, r.stdout, r.stderr)
		return r
	}

	t.Run("in kvm group", func(t *testing.T) {
		r := asUser([]uint32{testKVMGID}, "boot", "--kernel", hello, "--timeout", "3m")
		if r.code != 0 || !strings.Contains(r.stdout, "microguest: hello") {
			t.Fatalf("exit %d, want 0 and the guest's output", r.code)
		}
		if r := asUser([]uint32{testKVMGID}, "check"); r.code != 0 {
			t.Errorf("check: exit %d, want 0", r.code)
		}
	})
	t.Run("without the group", func(t *testing.T) {
		r := asUser([]uint32{}, "boot", "--kernel", hello, "--timeout", "3m")
		lines := strings.Split(strings.TrimRight(r.stderr, "\n"), "\n")
		if r.code != 1 || len(lines) != 1 || !strings.Contains(r.stderr, "permission denied") || !strings.Contains(r.stderr, "kvm group") {
			t.Fatalf("exit %d, stderr %q: want 1 and one line with the fix", r.code, r.stderr)
		}
		r = asUser([]uint32{}, "check")
		if r.code != 1 || !strings.Contains(r.stdout, "usermod -aG kvm") || !strings.Contains(r.stdout, `GROUP="kvm", MODE="0660"`) {
			t.Fatalf("check: exit %d; want 1 with the group and udev fix", r.code)
		}
	})
}

func copyFile(t *testing.T, src, dst string, mode os.FileMode) string {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	return dst
}
