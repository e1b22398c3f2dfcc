package devices

import (
	"strings"
	"testing"
)

// TestACPIPM: S5 and the reset value end the machine; every other write,
// whatever its size, offset or value, is ignored with one line at most.
func TestACPIPM(t *testing.T) {
	var off, reset int
	var lines []string
	d := &ACPIPM{S5SleepType: 5, ResetValue: 1,
		OnPoweroff: func() { off++ }, OnReset: func() { reset++ },
		Logf: func(f string, a ...any) { lines = append(lines, f) }}
	// What Linux writes before S5 (hwesleep.c): WAK_STS to the status
	// register; then a sleep type without SLP_EN: both silent, no effect.
	d.Write(ACPISleepStatus, []byte{0x80})
	d.Write(ACPISleepControl, []byte{5 << 2})
	if off+reset != 0 || len(lines) != 0 {
		t.Fatalf("benign writes: poweroff %d reset %d, lines %q", off, reset, lines)
	}
	// Garbage: every other value at every offset and size.
	for v := 0; v < 256; v++ {
		b := byte(v)
		if b != 5<<2|slpEn {
			d.Write(ACPISleepControl, []byte{b})
		}
		if b != 1 {
			d.Write(ACPIReset, []byte{b})
		}
		d.Write(ACPISleepStatus, []byte{b})
		d.Write(3, []byte{b})
		d.Write(ACPISleepControl, []byte{b, b})
		d.Write(ACPIReset, []byte{b, b, b, b})
	}
	if off+reset != 0 {
		t.Fatalf("garbage ended the machine: poweroff %d reset %d", off, reset)
	}
	if len(lines) != 1 || !strings.Contains(lines[0], "ignored") {
		t.Errorf("garbage logged %d lines (%q), want 1", len(lines), lines)
	}
	buf := []byte{0xff, 0xff}
	d.Read(ACPISleepStatus, buf[:1])
	d.Read(ACPISleepControl, buf)
	if buf[0] != 0 || buf[1] != 0 {
		t.Errorf("registers read %x, want 0", buf)
	}
	d.Write(ACPISleepControl, []byte{5<<2 | slpEn})
	d.Write(ACPIReset, []byte{1})
	if off != 1 || reset != 1 {
		t.Errorf("S5 and reset: poweroff %d reset %d, want 1 and 1", off, reset)
	}
}
