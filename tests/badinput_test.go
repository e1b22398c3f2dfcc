package tests

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/microvm-dev/microvm/internal/testimg"
)

// TestBadInput: every case exits 2 with exactly one line on stderr that names
// the flag or file, and never a panic. Input is checked before /dev/kvm is
// opened, so these run on any host.
func TestBadInput(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	bz := testimg.BzImage(64 << 10)
	good := write("good.bz", bz)
	elf := write("guest.elf", testimg.ELF(0x200000, testimg.Seg{Paddr: 0x200000, Memsz: 0x1000, Data: []byte{0xf4}}))
	flipped := append([]byte(nil), bz...)
	flipped[0x202] ^= 0x10 // bit flip in "HdrS"
	mutate := func(name string, off int, v ...byte) string {
		b := append([]byte(nil), bz...)
		copy(b[off:], v)
		return write(name, b)
	}
	elf32 := append([]byte("\x7fELF\x01\x01\x01"), make([]byte, 100)...)
	zeroInitrd := filepath.Join(dir, "zero.cpio")
	if err := os.WriteFile(zeroInitrd, make([]byte, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	bigInitrd := filepath.Join(dir, "big.cpio")
	if f, err := os.Create(bigInitrd); err == nil {
		f.Truncate(300 << 20) // sparse: larger than the 256M guest
		f.Close()
	}
	cases := []struct {
		name string
		args []string
		want string // must appear in the one stderr line
		cmd  string // default "boot"
	}{
		{"missing kernel", []string{"--kernel", filepath.Join(dir, "nope")}, "no such file", ""},
		{"kernel is a directory", []string{"--kernel", dir}, "is a directory", ""},
		{"unreadable kernel", []string{"--kernel", "/proc/1/mem"}, "/proc/1/mem", ""},
		{"empty kernel", []string{"--kernel", write("empty", nil)}, "empty", ""},
		{"truncated bzImage", []string{"--kernel", write("trunc.bz", bz[:len(bz)/2])}, "truncated", ""},
		{"truncated header", []string{"--kernel", write("trunc2.bz", bz[:0x210])}, "truncated", ""},
		{"zeroed", []string{"--kernel", write("zero.bz", make([]byte, 8192))}, "not a bootable kernel", ""},
		{"bit-flipped", []string{"--kernel", write("flip.bz", flipped)}, "not a bootable kernel", ""},
		{"text file", []string{"--kernel", write("readme", []byte("just text\n"))}, "not a bootable kernel", ""},
		{"elf32", []string{"--kernel", write("e32", elf32)}, "32-bit ELF", ""},
		{"elf overlap", []string{"--kernel", write("ov.elf", testimg.ELF(0x200000,
			testimg.Seg{Paddr: 0x200000, Memsz: 0x2000, Data: []byte{1}}, testimg.Seg{Paddr: 0x201000, Memsz: 0x1000, Data: []byte{2}}))}, "overlap", ""},
		{"elf huge segment", []string{"--kernel", write("huge.elf", testimg.ELF(0x200000, testimg.Seg{Paddr: 0x200000, Memsz: 1 << 50, Data: []byte{1}}))}, "out of range", ""},
		{"initrd missing", []string{"--kernel", elf, "--initrd", filepath.Join(dir, "nope.cpio")}, "--initrd", ""},
		{"initrd directory", []string{"--kernel", elf, "--initrd", dir}, "--initrd", ""},
		{"initrd larger than RAM", []string{"--kernel", elf, "--initrd", bigInitrd, "--memory", "256M"}, "does not fit", ""},
		{"initrd not a cpio", []string{"--kernel", elf, "--initrd", elf}, "not an initramfs", ""},
		{"initrd all zeros", []string{"--kernel", elf, "--initrd", zeroInitrd}, "--initrd", ""},
		{"memory not a size", []string{"--kernel", good, "--memory", "lots"}, "--memory", ""},
		{"memory below minimum", []string{"--kernel", good, "--memory", "1M"}, "--memory", ""},
		{"memory absurd", []string{"--kernel", good, "--memory", "100000T"}, "--memory", ""},
		{"memory negative", []string{"--kernel", good, "--memory", "-1G"}, "--memory", ""},
		{"cpus zero", []string{"--kernel", good, "--cpus", "0"}, "--cpus", ""},
		{"cpus absurd", []string{"--kernel", good, "--cpus", "100000"}, "--cpus", ""},
		{"cpus not a number", []string{"--kernel", good, "--cpus", "two"}, "--cpus", ""},
		{"cmdline too long", []string{"--kernel", good, "--cmdline", strings.Repeat("x", 5000)}, "--cmdline", ""},
		{"no kernel", []string{}, "--kernel", ""},
		{"unknown flag", []string{"--kernel", good, "--frobnicate"}, "frobnicate", ""},
		{"timeout not a duration", []string{"--kernel", good, "--timeout", "soon"}, "--timeout", ""},
		{"stray argument", []string{"--kernel", good, "extra"}, "extra", ""},
		{"disk is a directory", []string{"--kernel", good, "--disk", dir}, "is a directory", ""},
		{"disk missing", []string{"--kernel", good, "--disk", filepath.Join(dir, "nope.img")}, "--disk", ""},
		{"disk too small", []string{"--kernel", good, "--disk", write("tiny.img", []byte("x"))}, "at least 512", ""},
		{"disk unknown option", []string{"--kernel", good, "--disk", write("d.img", make([]byte, 4096)) + ",rw,fast"}, "unknown option", ""},
		{"disk given twice", []string{"--kernel", good, "--disk", filepath.Join(dir, "d.img"), "--disk", filepath.Join(dir, "d.img")}, "in use", ""},
		{"tap name too long", []string{"--kernel", good, "--net", "tap=" + strings.Repeat("t", 16)}, "--net", ""},
		{"net without tap", []string{"--kernel", good, "--net", "mac=02:00:00:00:00:01"}, "tap=NAME", ""},
		{"net bad mac", []string{"--kernel", good, "--net", "tap=t0,mac=zz"}, "mac=zz", ""},
		{"net multicast mac", []string{"--kernel", good, "--net", "tap=t0,mac=01:00:5e:00:00:01"}, "unicast", ""},
		{"console kind", []string{"--kernel", good, "--console", "vga"}, "--console", ""},
		{"acpi bad value", []string{"--kernel", good, "--acpi", "yes"}, "--acpi", ""},
		{"acpi empty", []string{"--kernel", good, "--acpi="}, "--acpi", ""},
		{"run acpi bad value", []string{"--kernel", good, "--initrd", elf, "--acpi", "maybe", "--", "true"}, "--acpi", "run"},
		{"bench acpi bad value", []string{"--kernel", good, "--initrd", elf, "--acpi", "On"}, "--acpi", "bench"},
		{"bzImage bad boot flag", []string{"--kernel", mutate("flag.bz", 0x1fe, 0, 0)}, "boot_flag", ""},
		{"bzImage protocol too old", []string{"--kernel", mutate("old.bz", 0x206, 0x00, 0x02)}, "too old", ""},
		{"bzImage without 64-bit entry", []string{"--kernel", mutate("no64.bz", 0x236, 0)}, "64-bit entry", ""},
		{"bzImage setup header length", []string{"--kernel", mutate("hdrlen.bz", 0x201, 0x10)}, "setup header length", ""},
		{"elf no segments", []string{"--kernel", write("noseg.elf", testimg.ELF(0x200000))}, "no loadable segments", ""},
		{"elf segment below 1 MiB", []string{"--kernel", write("low.elf", testimg.ELF(0x1000, testimg.Seg{Paddr: 0x1000, Memsz: 0x1000, Data: []byte{1}}))}, "below 1 MiB", ""},
		{"elf entry outside segments", []string{"--kernel", write("entry.elf", testimg.ELF(0x900000, testimg.Seg{Paddr: 0x200000, Memsz: 0x1000, Data: []byte{1}}))}, "entry point", ""},
		{"kernel too big for memory", []string{"--kernel", write("bigmem.elf", testimg.ELF(0x200000, testimg.Seg{Paddr: 0x200000, Memsz: 200 << 20, Data: []byte{1}})), "--memory", "64M"}, "--memory", ""},
		{"cpus negative", []string{"--kernel", good, "--cpus", "-1"}, "--cpus", ""},
		{"memory zero", []string{"--kernel", good, "--memory", "0"}, "--memory", ""},
		{"timeout negative", []string{"--kernel", good, "--timeout", "-5s"}, "--timeout", ""},
		{"run without a command", []string{"--kernel", good, "--initrd", bigInitrd}, "no command", "run"},
		{"run cmdline too long", []string{"--kernel", good, "--initrd", elf, "--cmdline", strings.Repeat("y", 5000), "--", "true"}, "--cmdline", "run"},
		{"run absurd memory", []string{"--kernel", good, "--initrd", elf, "--memory", "99999999G", "--", "true"}, "--memory", "run"},
		{"share missing", []string{"--kernel", good, "--share", filepath.Join(dir, "nope")}, "--share", ""},
		{"share is a file", []string{"--kernel", good, "--share", good}, "is not a directory", ""},
		{"share relative guest path", []string{"--kernel", good, "--share", dir + ":mnt/x"}, "not absolute", ""},
		{"share guest path twice", []string{"--kernel", good, "--share", dir + ":/mnt/x", "--share", dir + ":/mnt/x/"}, "given twice", ""},
		{"share unknown option", []string{"--kernel", good, "--share", dir + ",rw"}, "unknown option", ""},
		{"share as the guest's root", []string{"--kernel", good, "--share", dir + ":/"}, "Rootfs", ""},
		{"rootfs is a file", []string{"--kernel", good, "--initrd", elf, "--rootfs", good, "--", "true"}, "--rootfs", "run"},
		{"rootfs unknown option", []string{"--kernel", good, "--rootfs", dir + ",ro"}, "unknown option", ""},
		{"snapshot with a share", []string{"--kernel", good, "--initrd", elf, "--snapshot", filepath.Join(dir, "snap"), "--share", dir, "--", "true"}, "not with --share or --rootfs", "run"},
		{"restore with a rootfs", []string{"--kernel", good, "--initrd", elf, "--restore", filepath.Join(dir, "snap"), "--rootfs", dir, "--", "true"}, "not with --share or --rootfs", "run"},
		{"check stray argument", []string{"now"}, "now", "check"},
		{"check unknown flag", []string{"--fix"}, "fix", "check"},
		{"compare stray argument", []string{"--kernel", good, "--initrd", elf, "docker"}, "docker", "compare"},
		{"compare --runs 0", []string{"--rootfs", dir, "--runs", "0"}, "--runs", "compare"},
		{"compare --runs without --rootfs", []string{"--runs", "3"}, "--rootfs", "compare"},
		{"compare --rootfs is a file", []string{"--rootfs", good}, "--rootfs", "compare"},
		{"compare --rootfs ,rw", []string{"--rootfs", dir + ",rw"}, "--rootfs", "compare"},
		{"compare both container flags", []string{"--rootfs", dir, "--container-only", "--container-json", good}, "--container-only", "compare"},
		{"compare bad --container-json", []string{"--kernel", good, "--initrd", elf, "--rootfs", dir, "--container-json", good}, "--container-json", "compare"},
		{"unknown command", []string{}, "unknown command", "frobnicate"},
		{"seccomp mode", []string{"--kernel", good, "--seccomp", "strict"}, "--seccomp", ""},
		{"run seccomp mode", []string{"--kernel", good, "--initrd", elf, "--seccomp", "", "--", "true"}, "--seccomp", "run"},
		{"uid not a number", []string{"--kernel", good, "--uid", "nobody", "--gid", "0"}, "--uid", ""},
		{"gid not a number", []string{"--kernel", good, "--uid", "0", "--gid", "-1"}, "--gid", ""},
		{"uid out of range", []string{"--kernel", good, "--uid", "4294967295", "--gid", "0"}, "--uid", ""},
		{"uid without gid", []string{"--kernel", good, "--uid", "4242"}, "--uid", ""},
		{"gid without uid", []string{"--kernel", good, "--gid", "4242"}, "--gid", ""},
		{"jail parent missing", []string{"--kernel", good, "--jail", filepath.Join(dir, "no", "jail")}, "--jail", ""},
		{"jail not empty", []string{"--kernel", good, "--jail", dir}, "--jail", ""},
		{"jail is a file", []string{"--kernel", good, "--jail", good}, "--jail", ""},
	}
	// As an ordinary user: what needs root says so. (As root these run
	// as uid testUID, from a copy of the binary that user may run.)
	userCases := []struct {
		name string
		args []string
		want string
	}{
		{"jail without root", []string{"boot", "--kernel", good, "--jail", filepath.Join(os.TempDir(), "microvm-jail")}, "--jail"},
		{"uid without root", []string{"boot", "--kernel", good, "--uid", "1", "--gid", "1"}, "--uid"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cmd := c.cmd
			if cmd == "" {
				cmd = "boot"
			}
			checkBadInput(t, runMicrovm(t, time.Minute, append([]string{cmd}, c.args...)...), c.want)
		})
	}
	for _, c := range userCases {
		t.Run(c.name, func(t *testing.T) {
			checkBadInput(t, runAsUser(t, c.args...), c.want)
		})
	}
}

// checkBadInput: exit 2, one "microvm: " line naming want, no panic.
func checkBadInput(t *testing.T, r result, want string) {
	t.Helper()
	if r.code != 2 {
		t.Errorf("exit code %d, want 2; stderr %q", r.code, r.stderr)
	}
	lines := strings.Split(strings.TrimRight(r.stderr, "\n"), "\n")
	if len(lines) != 1 || !strings.HasPrefix(lines[0], "microvm: ") {
		t.Errorf("stderr is not one 'microvm: ' line: %q", r.stderr)
	}
	if !strings.Contains(r.stderr, want) {
		t.Errorf("stderr %q does not mention %q", r.stderr, want)
	}
	if strings.Contains(r.stderr, "panic") || strings.Contains(r.stderr, "goroutine") {
		t.Errorf("stderr has a Go panic: %q", r.stderr)
	}
}

// runAsUser runs microvm as an ordinary user: as it is when the test is
// not root, else as testUID from a copy of the binary that user may run.
func runAsUser(t *testing.T, args ...string) result {
	t.Helper()
	if os.Geteuid() != 0 {
		return runMicrovm(t, time.Minute, args...)
	}
	dir, err := os.MkdirTemp("", "microvm-user")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := copyFile(t, microvmBin(t), filepath.Join(dir, "microvm"), 0o755)
	cmd := exec.Command(bin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: testUID, Gid: testGID}}
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	code, err := exitCode(cmd.Run())
	if err != nil {
		t.Fatalf("run microvm as uid %d: %v", testUID, err)
	}
	return result{stdout: so.String(), stderr: se.String(), code: code}
}
