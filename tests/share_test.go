package tests

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The --share and --rootfs tests: the host prepares directories, a real
// guest works on them through virtio-9p, and the host checks the result
// after the guest has exited. The guest's side is this test binary itself,
// shared read-only into the guest (the CI recipe of docs/github-actions.md)
// and run there as TestInGuestShare / TestInGuestRoot.

// inGuest skips unless this process runs under the microvm guest agent.
func inGuest(t *testing.T) {
	cmdline, _ := os.ReadFile("/proc/cmdline")
	if !bytes.Contains(cmdline, []byte("microvm.cmd=")) && !bytes.Contains(cmdline, []byte("microvm.chan=1")) {
		t.Skip("not inside a microvm guest: TestLinuxShare and TestLinuxRootfs run this test there")
	}
}

// selfDir is the directory of this test binary and its name.
func selfDir(t *testing.T) (string, string) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Dir(self), filepath.Base(self)
}

const (
	bigDir     = 10000
	blobSize   = 4 << 20
	hostHello  = "hello from the host\n"
	guestWrote = "written by the guest\n"
)

func TestLinuxShare(t *testing.T) {
	kernel, initrd := linuxArtifacts(t)
	exeDir, exe := selfDir(t)
	rw, ro := filepath.Join(t.TempDir(), "rw"), filepath.Join(t.TempDir(), "ro")
	must(t, os.MkdirAll(filepath.Join(rw, "big"), 0o755))
	must(t, os.MkdirAll(filepath.Join(rw, "sub"), 0o755))
	must(t, os.MkdirAll(ro, 0o755))
	must(t, os.WriteFile(filepath.Join(rw, "hello"), []byte(hostHello), 0o644))
	must(t, os.WriteFile(filepath.Join(ro, "keep"), []byte("keep"), 0o644))
	for i := 0; i < bigDir; i++ {
		must(t, os.WriteFile(filepath.Join(rw, "big", fmt.Sprintf("f%05d", i)), nil, 0o644))
	}
	xattr := unix.Setxattr(filepath.Join(rw, "hello"), "user.color", []byte("blue"), 0) == nil
	must(t, os.WriteFile(filepath.Join(rw, "blob"), bytes.Repeat([]byte("0123456789abcdef"), blobSize/16), 0o644))
	// The host's working directory is inside the rw share: the command
	// starts at its guest path.
	t.Chdir(filepath.Join(rw, "sub"))
	args := []string{"run", "--kernel", kernel, "--initrd", initrd, "--timeout", "3m", "--console", "virtio",
		"--share", exeDir + ":/t,ro", "--share", rw, "--share", ro + ":/mnt/ro,ro"}
	// As root (always in the nested harness) the shares are served from a
	// jail, the sandbox's strictest form: chrooted into an empty directory
	// with no /proc, every capability dropped, the seccomp filter on. The
	// backend must then work through the descriptors it opened before.
	if os.Geteuid() == 0 {
		args = append(args, "--jail", filepath.Join(t.TempDir(), "jail"))
	}
	args = append(args, "--", "/t/"+exe, "-test.v", "-test.run", "^TestInGuestShare$", "--", rw, "/mnt/ro", fmt.Sprint(xattr))
	r := runMicrovm(t, linuxLimit, args...)
	t.Logf("exit %d in %v\nstdout:\n%s\nstderr:\n%s", r.code, r.elapsed, r.stdout, r.stderr)
	if r.code != 0 || !strings.Contains(r.stdout, "--- PASS: TestInGuestShare") {
		t.Fatalf("exit %d: want the in-guest test to pass", r.code)
	}
	// After the guest has gone: its writes are on the host, the read-only
	// share is as it was.
	if b, err := os.ReadFile(filepath.Join(rw, "out")); err != nil || string(b) != guestWrote {
		t.Errorf("guest's write: %q %v", b, err)
	}
	if b, err := os.ReadFile(filepath.Join(rw, "log")); err != nil || string(b) != "one\ntwo\n" {
		t.Errorf("O_APPEND file: %q %v", b, err)
	}
	if _, err := os.Lstat(filepath.Join(rw, "tmp")); !os.IsNotExist(err) {
		t.Errorf("the unlinked file is still there: %v", err)
	}
	if ents, _ := os.ReadDir(ro); len(ents) != 1 {
		t.Errorf("the read-only share has %d entries, want 1", len(ents))
	}
	if b, _ := os.ReadFile(filepath.Join(ro, "keep")); string(b) != "keep" {
		t.Errorf("the read-only file changed: %q", b)
	}
}

// TestInGuestShare is the guest's side of TestLinuxShare. Arguments: the
// rw share's guest path, the ro share's, and whether the host could set
// user.color on hello.
func TestInGuestShare(t *testing.T) {
	inGuest(t)
	args := flag.Args()
	if len(args) != 3 {
		t.Fatalf("args %q: want RW RO XATTR", args)
	}
	rw, ro := args[0], args[1]
	if wd, _ := os.Getwd(); wd != filepath.Join(rw, "sub") {
		t.Errorf("cwd %q, want %q (the host's, inside the share)", wd, filepath.Join(rw, "sub"))
	}
	// A host file read, and mmap of it for reading.
	if b, err := os.ReadFile(filepath.Join(rw, "hello")); err != nil || string(b) != hostHello {
		t.Errorf("read hello: %q %v", b, err)
	}
	f, err := os.Open(filepath.Join(rw, "hello"))
	must(t, err)
	m, err := syscall.Mmap(int(f.Fd()), 0, len(hostHello), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil || string(m) != hostHello {
		t.Errorf("mmap hello: %q %v", m, err)
	}
	if err == nil {
		syscall.Munmap(m)
	}
	f.Close()
	// A write the host checks.
	must(t, os.WriteFile(filepath.Join(rw, "out"), []byte(guestWrote), 0o644))
	// The read-only share refuses.
	for what, err := range map[string]error{
		"create": os.WriteFile(filepath.Join(ro, "new"), []byte("x"), 0o644),
		"write":  os.WriteFile(filepath.Join(ro, "keep"), []byte("x"), 0o644),
		"remove": os.Remove(filepath.Join(ro, "keep")),
		"mkdir":  os.Mkdir(filepath.Join(ro, "d"), 0o755),
		"chmod":  os.Chmod(filepath.Join(ro, "keep"), 0o600),
	} {
		if !errors.Is(err, syscall.EROFS) {
			t.Errorf("%s on the read-only share: %v, want EROFS", what, err)
		}
	}
	// Unlink while open: fstat, read, write and ftruncate through the open file.
	tmp := filepath.Join(rw, "tmp")
	f, err = os.OpenFile(tmp, os.O_RDWR|os.O_CREATE, 0o644)
	must(t, err)
	_, err = f.WriteString("before")
	must(t, err)
	must(t, os.Remove(tmp))
	if fi, err := f.Stat(); err != nil || fi.Size() != 6 {
		t.Errorf("fstat after unlink: %v %v", fi, err)
	}
	if _, err := f.WriteAt([]byte(" after"), 6); err != nil {
		t.Errorf("write after unlink: %v", err)
	}
	buf := make([]byte, 32)
	if n, _ := f.ReadAt(buf, 0); string(buf[:n]) != "before after" {
		t.Errorf("read after unlink: %q", buf[:n])
	}
	// ftruncate through it too (Tsetattr on a deleted fid; the vendored
	// p9 server's patch).
	if err := f.Truncate(3); err != nil {
		t.Errorf("ftruncate after unlink: %v", err)
	} else if n, _ := f.ReadAt(buf, 0); string(buf[:n]) != "bef" {
		t.Errorf("read after ftruncate: %q", buf[:n])
	}
	f.Close()
	// Rename over an open file: it keeps its contents.
	must(t, os.WriteFile(filepath.Join(rw, "a"), []byte("old"), 0o644))
	must(t, os.WriteFile(filepath.Join(rw, "b"), []byte("new"), 0o644))
	f, err = os.Open(filepath.Join(rw, "a"))
	must(t, err)
	must(t, os.Rename(filepath.Join(rw, "b"), filepath.Join(rw, "a")))
	if n, _ := f.ReadAt(buf, 0); string(buf[:n]) != "old" {
		t.Errorf("the open file after rename over it: %q", buf[:n])
	}
	f.Close()
	// O_APPEND.
	for _, s := range []string{"one\n", "two\n"} {
		f, err := os.OpenFile(filepath.Join(rw, "log"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		must(t, err)
		f.WriteString(s)
		f.Close()
	}
	// readdir of 10 000 entries.
	if ents, err := os.ReadDir(filepath.Join(rw, "big")); err != nil || len(ents) != bigDir {
		t.Errorf("readdir big: %d entries, %v", len(ents), err)
	}
	// Sequential read throughput, for the README (not a check).
	start := time.Now()
	f, err = os.Open(filepath.Join(rw, "blob"))
	must(t, err)
	total := 0
	for b := make([]byte, 512<<10); ; {
		n, err := f.Read(b)
		total += n
		if err != nil {
			break
		}
	}
	f.Close()
	secs := time.Since(start).Seconds()
	fmt.Printf("9p sequential read: %d MiB in %.2f s = %.1f MiB/s\n", total>>20, secs, float64(total)/(1<<20)/secs)
	if total != blobSize {
		t.Errorf("read %d bytes of blob, want %d", total, blobSize)
	}
	// xattrs read through.
	if args[2] == "true" {
		v := make([]byte, 16)
		n, err := unix.Getxattr(filepath.Join(rw, "hello"), "user.color", v)
		if err != nil || string(v[:n]) != "blue" {
			t.Errorf("getxattr: %q %v", v[:max(n, 0)], err)
		}
	}
}

// TestLinuxRootfs boots twice with a directory as the root: read-only with
// the tmpfs overlay (the guest's writes stay in the guest), then ,rw
// (they reach the host); its binary is this test binary, in the directory.
// Then once with the host's / as the root.
func TestLinuxRootfs(t *testing.T) {
	kernel, initrd := linuxArtifacts(t)
	self, err := os.Executable()
	must(t, err)
	exe, err := os.ReadFile(self)
	must(t, err)
	root := t.TempDir()
	for _, d := range []string{"bin", "etc", "proc", "sys", "dev", "tmp"} {
		must(t, os.Mkdir(filepath.Join(root, d), 0o755))
	}
	must(t, os.WriteFile(filepath.Join(root, "bin", "t"), exe, 0o755))
	must(t, os.WriteFile(filepath.Join(root, "etc", "hostfile"), []byte("host\n"), 0o644))
	for _, mode := range []string{"ro", "rw"} {
		spec := root
		if mode == "rw" {
			spec += ",rw"
		}
		r := runMicrovm(t, linuxLimit, "run", "--kernel", kernel, "--initrd", initrd, "--timeout", "3m",
			"--rootfs", spec, "--", "/bin/t", "-test.v", "-test.run", "^TestInGuestRoot$", "--", mode)
		t.Logf("%s: exit %d in %v\nstdout:\n%s\nstderr:\n%s", mode, r.code, r.elapsed, r.stdout, r.stderr)
		if r.code != 0 || !strings.Contains(r.stdout, "--- PASS: TestInGuestRoot") {
			t.Errorf("%s: exit %d: want the in-guest test to pass", mode, r.code)
			continue
		}
		b, _ := os.ReadFile(filepath.Join(root, "etc", "hostfile"))
		want := map[string]string{"ro": "host\n", "rw": "guest\n"}[mode]
		if string(b) != want {
			t.Errorf("%s: the host's etc/hostfile is %q, want %q", mode, b, want)
		}
	}
	if ents, _ := os.ReadDir(root); len(ents) != 6 {
		t.Errorf("the root directory has %d entries, want 6", len(ents))
	}
	// The host's own / (in the harness, L1's): its binary, this one, runs
	// under the guest's kernel.
	r := runMicrovm(t, linuxLimit, "run", "--kernel", kernel, "--initrd", initrd, "--timeout", "3m",
		"--rootfs", "/", "--", self, "-test.v", "-test.run", "^TestInGuest$")
	t.Logf("--rootfs /: exit %d in %v\nstdout:\n%s\nstderr:\n%s", r.code, r.elapsed, r.stdout, r.stderr)
	if r.code != 0 || !strings.Contains(r.stdout, "in-guest kernel "+os.Getenv("MICROVM_KERNEL_RELEASE")) {
		t.Fatalf("--rootfs /: exit %d; want the host's binary to report the guest's kernel", r.code)
	}
}

// TestInGuestRoot is the guest's side of TestLinuxRootfs: / is the host
// directory, /proc and /tmp are the guest's own, and /etc/hostfile can be
// written (in the overlay, or through to the host with rw).
func TestInGuestRoot(t *testing.T) {
	inGuest(t)
	if b, err := os.ReadFile("/etc/hostfile"); err != nil || string(b) != "host\n" {
		t.Errorf("/etc/hostfile: %q %v", b, err)
	}
	if _, err := os.Stat("/bin/t"); err != nil {
		t.Errorf("this binary is not /bin/t: %v", err)
	}
	mounts, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		t.Fatal(err)
	}
	mode := flag.Arg(0)
	want := map[string]string{"ro": "overlay / overlay", "rw": " / 9p "}[mode]
	if !strings.Contains(string(mounts), want) {
		t.Errorf("want %q in /proc/self/mounts:\n%s", want, mounts)
	}
	for _, m := range []string{" /proc proc", " /sys sysfs", " /dev devtmpfs", " /tmp tmpfs"} {
		if !strings.Contains(string(mounts), m) {
			t.Errorf("%q not mounted", m)
		}
	}
	must(t, os.WriteFile("/etc/hostfile", []byte("guest\n"), 0o644))
	must(t, os.WriteFile("/tmp/scratch", []byte("x"), 0o644))
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
