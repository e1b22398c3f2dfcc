package acpi

import "encoding/binary"

// fadtSize is the ACPI 6.x FADT (5.2.9, Table 5.9): 276 bytes, revision 6.
const (
	fadtSize     = 276
	fadtRevision = 6
	fadtMinor    = 5 // FADT Minor Version: ACPI 6.5
)

// FADT field offsets (5.2.9, Table 5.9).
const (
	fadtDSDT          = 40
	fadtIAPCBootArch  = 109
	fadtFlags         = 112
	fadtResetReg      = 116
	fadtResetValue    = 128
	fadtMinorVersion  = 131
	fadtXDSDT         = 140
	fadtSleepControl  = 244
	fadtSleepStatus   = 256
	fadtHypervisorVID = 268
)

// FADT Fixed Feature Flags (5.2.9, Table 5.10).
const (
	fadtPwrButton     = 1 << 4  // no fixed power button (none at all here)
	fadtSlpButton     = 1 << 5  // no fixed sleep button
	fadtResetRegSup   = 1 << 10 // RESET_REG is supported
	fadtHWReducedACPI = 1 << 20
)

// IA-PC Boot Architecture Flags (5.2.9.3, Table 5.11): no VGA, no CMOS RTC
// and no 8042 announced (the i8042 is there only for its reset line, so
// no keyboard driver should bind it), no legacy ISA devices beyond those
// in the DSDT. MSI Not Supported: there is no PCI.
const iapcBootArch = 1<<2 | 1<<3 | 1<<5

// Generic Address Structure (5.2.3.2, Table 5.1) constants.
const (
	gasSystemIO   = 1
	gasAccessByte = 1
)

// gas writes a byte-wide System I/O register's Generic Address Structure.
func gas(b []byte, port uint16) {
	b[0] = gasSystemIO
	b[1] = 8 // register bit width
	b[2] = 0 // bit offset
	b[3] = gasAccessByte
	binary.LittleEndian.PutUint64(b[4:], uint64(port))
}

// FADT is the Fixed ACPI Description Table (5.2.9) of a hardware-reduced
// ACPI platform (4.1, HW_REDUCED_ACPI): no PM1 or GPE blocks, no SCI, no
// FACS (allowed with HW_REDUCED_ACPI when both FIRMWARE_CTRL fields are
// 0); power state changes go through the sleep control and status
// registers (4.8.3.7) and reset through the reset register (4.8.3.6).
func FADT(c Config, dsdt uint64) []byte {
	b := make([]byte, fadtSize-headerSize)
	le := binary.LittleEndian
	body := func(off int) []byte { return b[off-headerSize:] }
	le.PutUint32(body(fadtDSDT), uint32(dsdt))
	le.PutUint16(body(fadtIAPCBootArch), iapcBootArch)
	le.PutUint32(body(fadtFlags), fadtHWReducedACPI|fadtResetRegSup|fadtPwrButton|fadtSlpButton)
	gas(body(fadtResetReg), c.Reset)
	body(fadtResetValue)[0] = c.ResetValue
	body(fadtMinorVersion)[0] = fadtMinor
	le.PutUint64(body(fadtXDSDT), dsdt)
	gas(body(fadtSleepControl), c.SleepControl)
	gas(body(fadtSleepStatus), c.SleepStatus)
	copy(body(fadtHypervisorVID), "MICROVM ")
	return table("FACP", fadtRevision, b)
}

// MADT entry types (5.2.12, Table 5.21) and flags.
const (
	madtLocalAPIC     = 0 // 5.2.12.2
	madtIOAPIC        = 1 // 5.2.12.3
	madtIntSrcOverrid = 2 // 5.2.12.5
	madtLocalAPICNMI  = 4 // 5.2.12.7
	madtPCATCompat    = 1 // Table 5.20: the 8259 PICs are there too
	madtLAPICEnabled  = 1 // Table 5.23
	// MPS INTI flags (Table 5.26): polarity and trigger mode as the
	// bus (ISA: active high, edge) defines them, as the MP table's
	// entries say.
	mpsINTIConforming = 0
	allProcessors     = 0xff // Local APIC NMI: every processor
)

// MADT is the Multiple APIC Description Table (5.2.12), saying what the
// MP table says: one enabled local APIC per vCPU (APIC IDs 0..CPUs-1, ACPI
// processor UIDs the same), the IOAPIC with GSIs from 0, each ISA IRQ on
// the IOAPIC pin of its number with the bus's polarity and trigger, and
// LINT1 as NMI on every processor. The MP table's LINT0 (ExtINT) needs no
// entry: PCAT_COMPAT says the 8259s are there.
func MADT(c Config) []byte {
	le := binary.LittleEndian
	b := le.AppendUint32(nil, c.LAPICAddr)
	b = le.AppendUint32(b, madtPCATCompat)
	for i := 0; i < c.CPUs; i++ {
		b = append(b, madtLocalAPIC, 8, byte(i), byte(i))
		b = le.AppendUint32(b, madtLAPICEnabled)
	}
	b = append(b, madtIOAPIC, 12, c.IOAPICID, 0)
	b = le.AppendUint32(b, c.IOAPICAddr)
	b = le.AppendUint32(b, 0) // GSI base
	for irq := 0; irq < c.ISAIRQs; irq++ {
		b = append(b, madtIntSrcOverrid, 10, 0 /* ISA */, byte(irq))
		b = le.AppendUint32(b, uint32(irq))
		b = le.AppendUint16(b, mpsINTIConforming)
	}
	b = append(b, madtLocalAPICNMI, 6, allProcessors)
	b = le.AppendUint16(b, mpsINTIConforming)
	b = append(b, 1) // LINT1
	return table("APIC", 5, b)
}
