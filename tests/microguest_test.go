package tests

import (
	"crypto/rand"
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Generous wall-clock limits: inside the nested harness everything runs
// under QEMU's software emulation.
const guestLimit = 5 * time.Minute

func bootGuest(t *testing.T, guest string, args ...string) result {
	t.Helper()
	needKVM(t)
	kernel := filepath.Join(guestsDir(t), guest)
	r := runMicrovm(t, guestLimit, append([]string{"boot", "--kernel", kernel}, args...)...)
	t.Logf("%s: exit %d in %v\nstdout:\n%s\nstderr:\n%s", guest, r.code, r.elapsed, r.stdout, r.stderr)
	return r
}

func wantLines(t *testing.T, out string, lines ...string) {
	t.Helper()
	for _, l := range lines {
		if !strings.Contains(out, l+"\n") {
			t.Errorf("output lacks line %q", l)
		}
	}
}

// TestMicroGuestBootProtocol is the "someone else's guest" contract: it sees
// its cmdline, the e820 map and the initrd bytes, and resets via the i8042.
func TestMicroGuestBootProtocol(t *testing.T) {
	initrd := make([]byte, 1<<20+123)
	rand.Read(initrd)
	path := filepath.Join(t.TempDir(), "x.cpio")
	if err := os.WriteFile(path, initrd, 0o644); err != nil {
		t.Fatal(err)
	}
	h := fnv.New32a()
	h.Write(initrd)
	cmdline := "console=ttyS0 hello=world quoted=\"a b\""
	r := bootGuest(t, "hello.elf", "--initrd", path, "--cmdline", cmdline, "--memory", "256M", "--timeout", "3m")
	if r.code != 0 {
		t.Fatalf("exit code %d, want 0 (i8042 reset)", r.code)
	}
	wantLines(t, r.stdout,
		"microguest: hello",
		// The VMM announces its virtio-mmio devices (here only virtio-rng).
		"cmdline: "+cmdline+" virtio_mmio.device=4K@0xd0000000:5",
		"e820: 3 entries",
		"e820: 0x0000000000000000 0x000000000009fc00 1",
		"e820: 0x000000000009fc00 0x0000000000060400 2",
		"e820: 0x0000000000100000 0x000000000ff00000 1",
		fmt.Sprintf("initrd: addr=0x%x size=%d fnv=0x%08x", (256<<20-len(initrd))&^0xfff, len(initrd), h.Sum32()),
	)
}

func TestMicroGuestTripleFault(t *testing.T) {
	r := bootGuest(t, "triple.elf", "--timeout", "3m")
	if r.code != 3 {
		t.Fatalf("exit code %d, want 3 (crash)", r.code)
	}
	wantLines(t, r.stdout, "microguest: triple")
	if !strings.Contains(r.stderr, "triple fault") || !strings.Contains(r.stderr, "RIP 0x") {
		t.Errorf("stderr does not name the triple fault and RIP: %q", r.stderr)
	}
}

func TestMicroGuestSMP(t *testing.T) {
	for _, n := range []int{2, 4} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			r := bootGuest(t, "smp.elf", "--cpus", fmt.Sprint(n), "--timeout", "3m")
			if r.code != 0 {
				t.Fatalf("exit code %d", r.code)
			}
			want := []string{fmt.Sprintf("mptable: %d cpus", n), fmt.Sprintf("smp: %d cpus up", n)}
			for i := 0; i < n; i++ {
				want = append(want, fmt.Sprintf("cpu %d up", i))
			}
			wantLines(t, r.stdout, want...)
		})
	}
}

func TestMicroGuestHighMemory(t *testing.T) {
	r := bootGuest(t, "mem.elf", "--memory", "6G", "--timeout", "3m")
	if r.code != 0 {
		t.Fatalf("exit code %d", r.code)
	}
	// 6 GiB: 3 GiB below the hole, 3 GiB from 4 GiB up to 7 GiB.
	wantLines(t, r.stdout, "mem: top=0x1c0000000", "mem: high ok 3")
}

func TestMicroGuestTimeout(t *testing.T) {
	r := bootGuest(t, "spin.elf", "--timeout", "3s")
	if r.code != 124 {
		t.Fatalf("exit code %d, want 124", r.code)
	}
	wantLines(t, r.stdout, "microguest: spin")
	if !strings.Contains(r.stderr, "--timeout 3s expired") {
		t.Errorf("stderr %q does not say the timeout expired", r.stderr)
	}
}
