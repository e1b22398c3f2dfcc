package devices

import "sync/atomic"

// ACPIPM is a hardware-reduced ACPI platform's power registers (ACPI 6.5,
// 4.8.3.6 "Reset Register" and 4.8.3.7 "Sleep Control and Status
// Registers"), one byte each at the offsets below, which the FADT points
// at. Writing SLP_TYP=S5 with SLP_EN to the sleep control register powers
// the machine off; writing the reset value to the reset register resets
// it. Everything else a guest writes is ignored: the first such write is
// reported through Logf, the rest silently, since a guest can repeat it
// forever.
type ACPIPM struct {
	// S5SleepType is the SLP_TYP value of soft-off, as _S5 announces it.
	S5SleepType byte
	// ResetValue is the FADT's RESET_VALUE.
	ResetValue byte
	// OnPoweroff and OnReset are called from a vCPU thread.
	OnPoweroff, OnReset func()
	// Logf reports the first ignored write (nil: not reported).
	Logf func(format string, a ...any)

	reported atomic.Bool
}

// Register offsets within the device's window.
const (
	ACPISleepControl = 0
	ACPISleepStatus  = 1
	ACPIReset        = 2
	ACPIPMSize       = 4 // offset 3 is unused: reads 0, writes are ignored
)

// Bits of the sleep control and status registers (4.8.3.7, Tables 4.19
// and 4.20).
const (
	slpTypShift = 2
	slpTypMask  = 0x7 << slpTypShift
	slpEn       = 1 << 5
	wakSts      = 1 << 7
)

// Read: the sleep status register reads 0 (WAK_STS clear: the machine
// never wakes from a sleep state, it only ends); SLP_EN is write-only
// (reads 0); the reset register reads 0.
func (d *ACPIPM) Read(off uint64, data []byte) {
	clear(data)
}

func (d *ACPIPM) Write(off uint64, data []byte) {
	if len(data) != 1 {
		// The FADT declares byte access (Generic Address Structure,
		// 5.2.3.2); a wider access is not one of these registers'.
		d.ignored("%d-byte write at offset %d: the registers are byte-wide", len(data), off)
		return
	}
	v := data[0]
	switch off {
	case ACPISleepControl:
		switch {
		case v&^(slpTypMask|slpEn) != 0:
			d.ignored("sleep control write %#02x sets reserved bits", v)
		case v&slpEn == 0:
			// Selecting a sleep type without entering it: nothing to do.
		case (v&slpTypMask)>>slpTypShift == d.S5SleepType:
			if d.OnPoweroff != nil {
				d.OnPoweroff()
			}
		default:
			d.ignored("sleep control write %#02x asks for sleep type %d; only S5 (%d) is supported", v, (v&slpTypMask)>>slpTypShift, d.S5SleepType)
		}
	case ACPISleepStatus:
		// WAK_STS is write-1-to-clear (Linux clears it before sleeping),
		// and never set here.
		if v&^wakSts != 0 {
			d.ignored("sleep status write %#02x sets reserved bits", v)
		}
	case ACPIReset:
		if v != d.ResetValue {
			d.ignored("reset register write %#02x is not the reset value %#02x", v, d.ResetValue)
			return
		}
		if d.OnReset != nil {
			d.OnReset()
		}
	default:
		d.ignored("write %#02x at unused offset %d", v, off)
	}
}

// ignored reports the first ignored write, with a note that later ones
// are not reported.
func (d *ACPIPM) ignored(format string, a ...any) {
	if d.Logf == nil || d.reported.Swap(true) {
		return
	}
	d.Logf("acpi: ignored "+format+" (further bad writes to the ACPI registers are ignored silently)", a...)
}
