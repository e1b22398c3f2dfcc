package tests

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/microvm-dev/microvm/internal/report"
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
	copy(initrd, "070701") // what makes it an initramfs to microvm's check
	path := filepath.Join(t.TempDir(), "x.cpio")
	if err := os.WriteFile(path, initrd, 0o644); err != nil {
		t.Fatal(err)
	}
	h := fnv.New32a()
	h.Write(initrd)
	cmdline := "console=ttyS0 hello=world quoted=\"a b\""
	initrdLine := fmt.Sprintf("initrd: addr=0x%x size=%d fnv=0x%08x", (256<<20-len(initrd))&^0xfff, len(initrd), h.Sum32())
	t.Run("acpi", func(t *testing.T) {
		r := bootGuest(t, "hello.elf", "--initrd", path, "--cmdline", cmdline, "--memory", "256M", "--timeout", "3m")
		if r.code != 0 {
			t.Fatalf("exit code %d, want 0 (i8042 reset)", r.code)
		}
		wantLines(t, r.stdout,
			"microguest: hello",
			// The DSDT announces the virtio devices: nothing is added.
			"cmdline: "+cmdline,
			"e820: 5 entries",
			"e820: 0x0000000000000000 0x000000000009fc00 1",
			"e820: 0x000000000009fc00 0x0000000000040400 2",
			"e820: 0x00000000000e0000 0x000000000001f000 3", // the ACPI tables
			"e820: 0x00000000000ff000 0x0000000000001000 2", // the VM generation ID's page
			"e820: 0x0000000000100000 0x000000000ff00000 1",
			initrdLine,
		)
	})
	t.Run("no acpi", func(t *testing.T) {
		r := bootGuest(t, "hello.elf", "--initrd", path, "--cmdline", cmdline, "--memory", "256M", "--timeout", "3m", "--acpi", "off")
		if r.code != 0 {
			t.Fatalf("exit code %d, want 0 (i8042 reset)", r.code)
		}
		wantLines(t, r.stdout,
			// Without ACPI the VMM announces its virtio-mmio devices
			// (here only virtio-rng) on the command line.
			"cmdline: "+cmdline+" virtio_mmio.device=4K@0xd0000000:5",
			"e820: 3 entries",
			"e820: 0x0000000000000000 0x000000000009fc00 1",
			"e820: 0x000000000009fc00 0x0000000000060400 2",
			"e820: 0x0000000000100000 0x000000000ff00000 1",
			initrdLine,
		)
	})
}

// TestMicroGuestExitCounts: --json's exit counts are the guest's own
// accesses. hello polls the UART's status before each byte it writes
// (THRE is always set, so once), then writes the debug port's done code
// and resets through the i8042: com1 has as many reads as writes as
// stdout has bytes, the debug port and the i8042 one write each, and the
// port I/O exits are exactly their sum.
func TestMicroGuestExitCounts(t *testing.T) {
	r := bootGuest(t, "hello.elf", "--acpi", "off", "--json", "--timeout", "3m")
	if r.code != 0 {
		t.Fatalf("exit code %d, want 0", r.code)
	}
	lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
	var b report.Boot
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &b); err != nil || b.Exits == nil {
		t.Fatalf("no exits in --json (%v): %s", err, lines[len(lines)-1])
	}
	got := map[string]report.DeviceExits{}
	var pio uint64
	for _, d := range b.Exits.Devices {
		got[d.Name] = d
		if d.Bus == "pio" {
			pio += d.Reads + d.Writes
		}
	}
	n := uint64(len(r.stdout))
	if c := got["com1"]; c.Writes != n || c.Reads != n || c.Base != 0x3f8 {
		t.Errorf("com1 %+v, want %d reads and %d writes at 0x3f8", c, n, n)
	}
	if d, i := got["debug"], got["i8042"]; d.Writes != 1 || i.Writes != 1 {
		t.Errorf("debug %+v, i8042 %+v: want one write each", d, i)
	}
	if b.Exits.IO != pio || b.Exits.Total < b.Exits.IO+b.Exits.MMIO {
		t.Errorf("exits %+v: port I/O exits should be the devices' %d accesses", b.Exits, pio)
	}
}

// TestMicroGuestACPI: a guest that reads the tables as an OS does (RSDP
// from boot_params, XSDT, FADT, MADT, DSDT, every checksum), floods the
// ACPI registers with garbage, then powers off through S5 or resets
// through the reset register: exit 0 at once, and the garbage costs one
// stderr line at most. Without ACPI it finds no RSDP.
func TestMicroGuestACPI(t *testing.T) {
	tables := []string{"acpi: RSDP ok (boot_params)", "acpi: XSDT ok, 52 bytes", "acpi: FACP ok, 276 bytes",
		"acpi: hw_reduced=1 reset_reg=1 sleep_control=0x600 reset=0x602 value=0x1", "acpi: garbage survived"}
	for _, c := range []struct {
		name, cmdline, reason string
	}{
		{"s5", "garbage=2000", "ACPI S5"},
		{"reset", "garbage=2000 end=reset", "ACPI reset register"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := bootGuest(t, "acpi.elf", "--cmdline", c.cmdline, "--timeout", "3m", "--json")
			if r.code != 0 {
				t.Fatalf("exit code %d, want 0", r.code)
			}
			wantLines(t, r.stdout, tables...)
			if strings.Contains(r.stdout, "still running") {
				t.Error("the guest ran on after its S5 or reset write")
			}
			lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
			if len(lines) != 2 || !strings.Contains(lines[0], "acpi: ignored") || !strings.Contains(lines[1], c.reason) {
				t.Errorf("stderr %q: want one line about the ignored writes, then the --json line naming %q", r.stderr, c.reason)
			}
		})
	}
	t.Run("off", func(t *testing.T) {
		r := bootGuest(t, "acpi.elf", "--acpi", "off", "--timeout", "3m")
		if r.code != 0 {
			t.Fatalf("exit code %d, want 0", r.code)
		}
		wantLines(t, r.stdout, "acpi: no RSDP")
	})
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
