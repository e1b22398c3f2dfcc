package acpi

import (
	"bytes"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const (
	base = 0xe0000
	room = 0x20000
)

func sampleConfig(cpus int) Config {
	return Config{
		CPUs: cpus, LAPICAddr: 0xfee00000, IOAPICAddr: 0xfec00000, IOAPICID: uint8(cpus), ISAIRQs: 16,
		SleepControl: 0x600, SleepStatus: 0x601, Reset: 0x602, ResetValue: 1, S5SleepType: 5,
		Devices: []Device{
			{Name: "COM1", HID: "PNP0501", UID: 1, IOPort: true, Base: 0x3f8, Size: 8, IRQ: 4},
			{Name: "VR00", HID: "LNRO0005", UID: 0, Base: 0xd0000000, Size: 0x1000, IRQ: 5},
			{Name: "VR01", HID: "LNRO0005", UID: 1, Base: 0xd0001000, Size: 0x1000, IRQ: 6},
		},
	}
}

func build(t *testing.T, cpus int) *Tables {
	t.Helper()
	tb, err := Build(base, room, sampleConfig(cpus))
	if err != nil {
		t.Fatal(err)
	}
	return tb
}

var le = binary.LittleEndian

// at returns the table at guest-physical addr, which must lie in tb.
func at(t *testing.T, tb *Tables, addr uint64, sig string) []byte {
	t.Helper()
	if addr < tb.Base || addr+headerSize > tb.Base+uint64(len(tb.Blob)) {
		t.Fatalf("%s pointer %#x is outside the tables [%#x, +%#x)", sig, addr, tb.Base, len(tb.Blob))
	}
	b := tb.Blob[addr-tb.Base:]
	if sig != "" && string(b[:4]) != sig {
		t.Fatalf("%#x holds %q, want %s", addr, b[:4], sig)
	}
	return b[:le.Uint32(b[4:])]
}

// TestChecksums: every table sums to 0 over its header's length, the RSDP
// over its first 20 bytes and its 36 (ACPI 6.5, 5.2.5.3, 5.2.6), and each
// pointer (RSDP to XSDT to FADT and MADT, FADT to DSDT) finds its table.
func TestChecksums(t *testing.T) {
	for _, cpus := range []int{1, 2, 64, 254} {
		tb := build(t, cpus)
		rsdp := tb.Table("RSDP")
		if string(rsdp[:8]) != "RSD PTR " || Checksum8(rsdp[:20]) != 0 || Checksum8(rsdp) != 0 || rsdp[15] != 2 || le.Uint32(rsdp[20:]) != 36 {
			t.Fatalf("%d cpus: bad RSDP % x", cpus, rsdp)
		}
		if tb.Base%16 != 0 {
			t.Errorf("RSDP at %#x is not 16-byte aligned", tb.Base)
		}
		xsdt := at(t, tb, le.Uint64(rsdp[24:]), "XSDT")
		var sigs []string
		for off := headerSize; off < len(xsdt); off += 8 {
			tbl := at(t, tb, le.Uint64(xsdt[off:]), "")
			sigs = append(sigs, string(tbl[:4]))
		}
		if strings.Join(sigs, " ") != "FACP APIC" {
			t.Errorf("XSDT lists %v, want FACP APIC", sigs)
		}
		fadt := tb.Table("FACP")
		if d32, d64 := le.Uint32(fadt[fadtDSDT:]), le.Uint64(fadt[fadtXDSDT:]); uint64(d32) != d64 {
			t.Errorf("FADT DSDT %#x, X_DSDT %#x", d32, d64)
		}
		at(t, tb, le.Uint64(fadt[fadtXDSDT:]), "DSDT")
		for _, p := range tb.Parts[1:] {
			b := tb.Blob[p.Off : p.Off+p.Size]
			if int(le.Uint32(b[4:])) != p.Size || string(b[:4]) != p.Sig {
				t.Errorf("%d cpus: %s: header length %d, %d bytes written", cpus, p.Sig, le.Uint32(b[4:]), p.Size)
			}
			if s := Checksum8(b); s != 0 {
				t.Errorf("%d cpus: %s sums to %#x, want 0", cpus, p.Sig, s)
			}
			if p.Off%16 != 0 {
				t.Errorf("%s at offset %d is not 16-byte aligned", p.Sig, p.Off)
			}
		}
	}
}

// TestMADT: a local APIC per CPU, the IOAPIC, 16 identity overrides and
// the LINT1 NMI, as the MP table says (ACPI 6.5, 5.2.12).
func TestMADT(t *testing.T) {
	m := build(t, 3).Table("APIC")
	if le.Uint32(m[36:]) != 0xfee00000 || le.Uint32(m[40:])&1 != 1 {
		t.Fatalf("MADT header: LAPIC %#x flags %#x", le.Uint32(m[36:]), le.Uint32(m[40:]))
	}
	counts := map[byte]int{}
	for off := 44; off < len(m); off += int(m[off+1]) {
		typ, n := m[off], m[off+1]
		counts[typ]++
		switch typ {
		case madtLocalAPIC:
			if n != 8 || m[off+2] != m[off+3] || le.Uint32(m[off+4:]) != 1 {
				t.Errorf("local APIC entry % x", m[off:off+int(n)])
			}
		case madtIOAPIC:
			if n != 12 || m[off+2] != 3 || le.Uint32(m[off+4:]) != 0xfec00000 || le.Uint32(m[off+8:]) != 0 {
				t.Errorf("IOAPIC entry % x", m[off:off+int(n)])
			}
		case madtIntSrcOverrid:
			if n != 10 || uint32(m[off+3]) != le.Uint32(m[off+4:]) {
				t.Errorf("override entry % x: not the MP table's identity routing", m[off:off+int(n)])
			}
		case madtLocalAPICNMI:
			if n != 6 || m[off+2] != 0xff || m[off+5] != 1 {
				t.Errorf("LAPIC NMI entry % x", m[off:off+int(n)])
			}
		default:
			t.Errorf("unexpected entry type %d", typ)
		}
	}
	if counts[0] != 3 || counts[1] != 1 || counts[2] != 16 || counts[4] != 1 {
		t.Errorf("entries by type %v", counts)
	}
}

func TestBuildErrors(t *testing.T) {
	if _, err := Build(base, 200, sampleConfig(1)); err == nil || !strings.Contains(err.Error(), "reserved") {
		t.Errorf("too little room: %v", err)
	}
	if _, err := Build(base+8, room, sampleConfig(1)); err == nil {
		t.Error("unaligned base accepted")
	}
	c := sampleConfig(1)
	c.Devices = append(c.Devices, Device{Name: "BAD0", HID: "x", Base: 0x1000, Size: 8})
	if _, err := Build(base, room, c); err == nil {
		t.Error("a bad _HID accepted")
	}
}

// TestDSDTAgainstIasl: Build's DSDT is, byte for byte after the header,
// what iasl compiles from testdata/NAME.asl: the sample machine, and the
// same with the VM generation ID and its generic event device.
func TestDSDTAgainstIasl(t *testing.T) {
	withGenID := sampleConfig(1)
	withGenID.VMGenID = &VMGenID{Addr: 0xff000, IRQ: 21}
	for _, c := range []struct {
		name string
		cfg  Config
	}{{"dsdt", sampleConfig(1)}, {"dsdt-vmgenid", withGenID}} {
		t.Run(c.name, func(t *testing.T) {
			want, err := os.ReadFile("testdata/" + c.name + ".aml")
			if err != nil {
				t.Fatal(err)
			}
			tb, err := Build(base, room, c.cfg)
			if err != nil {
				t.Fatal(err)
			}
			got := tb.Table("DSDT")
			if !bytes.Equal(got[headerSize:], want[headerSize:]) {
				t.Errorf("DSDT AML\n got  % x\n want % x", got[headerSize:], want[headerSize:])
			}
			if iasl, err := exec.LookPath("iasl"); err == nil {
				out := filepath.Join(t.TempDir(), c.name)
				if b, err := exec.Command(iasl, "-p", out, "testdata/"+c.name+".asl").CombinedOutput(); err != nil {
					t.Fatalf("iasl: %v\n%s", err, b)
				}
				fresh, _ := os.ReadFile(out + ".aml")
				if !bytes.Equal(fresh[headerSize:], want[headerSize:]) {
					t.Errorf("testdata/%s.aml is not what iasl makes of %s.asl now: run testdata/gen.sh", c.name, c.name)
				}
			}
		})
	}
}

// TestIaslDecodes dumps each table to a file and disassembles it with
// `iasl -d`, which checks lengths, checksums and every field it knows:
// no errors and no warnings.
func TestIaslDecodes(t *testing.T) {
	iasl, err := exec.LookPath("iasl")
	if err != nil {
		t.Skip("iasl not installed (Debian's acpica-tools; `make test-unit` installs it with scripts/acpica-tools.sh)")
	}
	for _, cpus := range []int{1, 254} {
		decodeWithIasl(t, iasl, build(t, cpus))
	}
}

// decodeWithIasl runs `iasl -d` on every table but the RSDP (which iasl
// decodes only from a whole dump) and fails t on any complaint.
func decodeWithIasl(t *testing.T, iasl string, tb *Tables) {
	t.Helper()
	dir := t.TempDir()
	for _, p := range tb.Parts {
		if p.Sig == "RSDP" {
			continue
		}
		f := filepath.Join(dir, strings.ToLower(p.Sig)+".dat")
		if err := os.WriteFile(f, tb.Blob[p.Off:p.Off+p.Size], 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(iasl, "-d", f)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		lower := strings.ToLower(string(out))
		if err != nil || strings.Contains(lower, "error") && !strings.Contains(lower, "0 errors") || strings.Contains(lower, "warning") {
			t.Errorf("iasl -d %s: %v\n%s", p.Sig, err, out)
		}
		dsl, err := os.ReadFile(strings.TrimSuffix(f, ".dat") + ".dsl")
		if err != nil || len(dsl) == 0 {
			t.Errorf("iasl -d %s wrote no disassembly: %v", p.Sig, err)
		}
	}
}
