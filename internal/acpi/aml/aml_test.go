package aml

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// cases are the encoder's terms for each testdata/*.asl file, in order.
var cases = map[string]func() [][]byte{
	"prims": func() [][]byte {
		return [][]byte{
			Name("I000", Int(0)),
			Name("I001", Int(1)),
			Name("I002", Int(0x2a)),
			Name("I003", Int(0x1234)),
			Name("I004", Int(0x12345678)),
			Name("I005", Int(0x123456789a)),
			Name("I006", Int(^uint64(0))),
			Name("S000", String("LNRO0005")),
			Name("E000", EISAID("PNP0501")),
			Name("E001", EISAID("PNP0A03")),
			Name("P000", Package(Int(5), Int(0), Int(0), Int(0))),
			Name("R000", ResourceTemplate(
				IO(0x3f8, 0x3f8, 0, 8),
				IRQNoFlags(4),
				IRQNoFlags(3, 15),
				Memory32Fixed(true, 0xd0000000, 0x1000),
				Memory32Fixed(false, 0xfec00000, 0x100),
				Interrupt(InterruptFlags{Consumer: true, Edge: true}, 5),
				Interrupt(InterruptFlags{Consumer: true, ActiveLow: true, Shared: true}, 20, 21),
			)),
			Scope("_SB",
				Device("DEV0", Name("_HID", String("LNRO0005")), Name("_UID", Int(15))),
				Device("DEV1", Name("_HID", EISAID("PNP0A05")),
					Device("SUB0", Name("_HID", EISAID("PNP0501")), Name("_UID", Int(1))))),
			Name("_SB.DEV1.SUB0.X000", Int(7)),
			Name("_SB.DEV0.X001", Int(8)),
		}
	},
	"methods": func() [][]byte {
		return [][]byte{Scope("_SB",
			Device("VGEN", Name("_HID", String("MVMG0001")), Name("_CID", String("VM_Gen_Counter")),
				Name("_DDN", String("VM_Gen_Counter")), Name("ADDR", Package(Int(0xff000), Int(0)))),
			Device("GED0", Name("_HID", String("ACPI0013")), Method("_EVT", 1, false, Notify("VGEN", 0x80))),
			Method("M000", 0, true, Notify("\\_SB.VGEN", 0), Notify("GED0", 0x1234)),
		)}
	},
	"long": func() [][]byte {
		var devs [][]byte
		for i := 0; i < 40; i++ {
			devs = append(devs, Device(fmt.Sprintf("D%03d", i), Name("_HID", String("LNRO0005")), Name("_UID", Int(uint64(i+2)))))
		}
		var strs [][]byte
		for i := 0; i < 200; i++ {
			strs = append(strs, String(strings.Repeat(fmt.Sprintf("S%03d", i), 6)))
		}
		return [][]byte{Scope("_SB", devs...), Name("P001", Package(strs...))}
	},
}

// body is a compiled table's AML, after its header (ACPI 6.5, 5.2.6).
func body(t *testing.T, aml []byte) []byte {
	t.Helper()
	if len(aml) < 36 {
		t.Fatalf("table of %d bytes", len(aml))
	}
	return aml[36:]
}

func encode(terms [][]byte) []byte { return bytes.Join(terms, nil) }

// TestAgainstIasl compares the encoder with the bytes iasl produced from
// the same ASL (testdata/gen.sh), term by term where they differ.
func TestAgainstIasl(t *testing.T) {
	for name, terms := range cases {
		t.Run(name, func(t *testing.T) {
			want, err := os.ReadFile(filepath.Join("testdata", name+".aml"))
			if err != nil {
				t.Fatal(err)
			}
			compare(t, encode(terms()), body(t, want))
		})
	}
}

func compare(t *testing.T, got, want []byte) {
	t.Helper()
	if bytes.Equal(got, want) {
		return
	}
	i := 0
	for i < len(got) && i < len(want) && got[i] == want[i] {
		i++
	}
	lo := max(i-8, 0)
	t.Errorf("differs at byte %d (of %d, want %d):\n got  % x\n want % x", i, len(got), len(want),
		got[lo:min(i+16, len(got))], want[lo:min(i+16, len(want))])
}

// TestTestdataIsIasls recompiles the ASL with the installed iasl: the
// checked-in bytes must be what it makes.
func TestTestdataIsIasls(t *testing.T) {
	iasl := needIasl(t)
	dir := t.TempDir()
	for name := range cases {
		src, _ := filepath.Abs(filepath.Join("testdata", name+".asl"))
		out := filepath.Join(dir, name)
		if b, err := exec.Command(iasl, "-p", out, src).CombinedOutput(); err != nil {
			t.Fatalf("iasl %s: %v\n%s", src, err, b)
		}
		got, err := os.ReadFile(out + ".aml")
		if err != nil {
			t.Fatal(err)
		}
		want, _ := os.ReadFile(filepath.Join("testdata", name+".aml"))
		if !bytes.Equal(body(t, got), body(t, want)) {
			t.Errorf("%s: iasl now compiles %s differently: run testdata/gen.sh", name, src)
		}
	}
}

// needIasl returns iasl's path or skips, naming the reason.
func needIasl(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("iasl")
	if err != nil {
		t.Skip("iasl not installed (Debian's acpica-tools; `make test-unit` installs it with scripts/acpica-tools.sh)")
	}
	return p
}

func TestPkgLength(t *testing.T) {
	// ACPI 6.5, 20.2.4: the length counts the PkgLength bytes themselves.
	for _, c := range []struct {
		n    int
		want []byte
	}{
		{0, []byte{0x01}},
		{62, []byte{0x3f}},
		{63, []byte{0x41, 0x04}},                  // 65 = 0x041: 1 extra byte
		{4093, []byte{0x4f, 0xff}},                // 4095
		{4094, []byte{0x81, 0x00, 0x01}},          // 4097 = 0x1001
		{1 << 16, []byte{0x83, 0x00, 0x10}},       // 65539 = 0x10003
		{1 << 20, []byte{0xc4, 0x00, 0x00, 0x01}}, // 0x100004
		{1<<28 - 5, []byte{0xcf, 0xff, 0xff, 0xff}},
	} {
		if got := pkgLength(c.n); !bytes.Equal(got, c.want) {
			t.Errorf("pkgLength(%d) = % x, want % x", c.n, got, c.want)
		}
	}
}

func TestNameString(t *testing.T) {
	for _, c := range []struct {
		path string
		want string
	}{
		{"_S5", "_S5_"},
		{"\\_SB", "\\_SB_"},
		{"\\", "\\\x00"},
		{"^^FOO", "^^FOO_"},
		{"_SB.COM1", "\x2e_SB_COM1"},
		{"\\_SB.A.B", "\\\x2f\x03_SB_A___B___"},
	} {
		if got := string(NameString(c.path)); got != c.want {
			t.Errorf("NameString(%q) = %q, want %q", c.path, got, c.want)
		}
	}
	for _, bad := range []string{"abcd", "1ABC", "TOOLONG", "A.", "A-B"} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("NameString(%q) did not panic", bad)
				}
			}()
			NameString(bad)
		}()
	}
}
