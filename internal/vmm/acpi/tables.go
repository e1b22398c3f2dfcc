// Package acpi builds the ACPI tables a micro-VM's guest reads (ACPI
// Specification 6.5; section numbers below are that document's): the RSDP,
// an XSDT listing a hardware-reduced FADT and a MADT, and a DSDT in AML
// (package internal/acpi/aml) describing the devices. It knows nothing of
// KVM or guest memory: Build returns bytes laid out for a given address.
package acpi

import (
	"encoding/binary"
	"fmt"
)

// Identification in every table header (5.2.6). The creator is the VMM,
// not an ASL compiler.
const (
	oemID       = "MICROV"
	oemTableID  = "MICROVM "
	oemRevision = 1
	creatorID   = "MVMM"
	creatorRev  = 1
)

// headerSize is the System Description Table Header (5.2.6).
const headerSize = 36

// Config is what the tables describe. Addresses come from the VMM's layout
// table; Devices from its device manager.
type Config struct {
	CPUs       int    // Processor Local APIC entries, APIC IDs 0..CPUs-1
	LAPICAddr  uint32 // the local APICs' address
	IOAPICAddr uint32
	IOAPICID   uint8
	// ISAIRQs are the ISA IRQs given an Interrupt Source Override, each
	// to the GSI of the same number, as the MP table routes them.
	ISAIRQs int
	// SleepControl, SleepStatus and Reset are the I/O ports of the
	// hardware-reduced sleep registers and the reset register (4.8.3.7,
	// 4.8.3.6); ResetValue is what the guest writes to reset.
	SleepControl, SleepStatus, Reset uint16
	ResetValue                       uint8
	// S5SleepType is the SLP_TYP value _S5 announces for soft-off.
	S5SleepType uint8
	Devices     []Device
	// VMGenID, if set, adds a VM generation ID device and the generic
	// event device that notifies it.
	VMGenID *VMGenID
}

// VMGenID is Microsoft's "Virtual Machine Generation ID" device (the
// vmgenid.docx specification; Linux drivers/virt/vmgenid.c): ADDR gives
// the guest-physical address of a 16-byte identifier that changes when
// the VM is restored from a snapshot, and the Notify(VGEN, 0x80) a GED
// interrupt runs (ACPI 6.5, 5.6.9) makes the guest read it again; Linux
// then reseeds its CRNG (add_vmfork_randomness).
type VMGenID struct {
	Addr uint64 // in e820-reserved memory
	IRQ  uint32 // the GED's GSI, edge-triggered, active high
}

// Device is one device in the DSDT, under \_SB.
type Device struct {
	Name string // 4-character ACPI name, e.g. "COM1"
	// HID is a PNP ID such as "PNP0501" (encoded as an EISA ID) or an
	// ACPI ID such as "LNRO0005" (a string).
	HID string
	UID uint64
	// IOPort: Base/Size are I/O ports and IRQ an ISA IRQ; otherwise a
	// 32-bit MMIO window and a GSI.
	IOPort     bool
	Base, Size uint64
	IRQ        uint32 // 0: none
}

// Tables are the encoded tables and where each lies.
type Tables struct {
	Base uint64 // guest-physical address of Blob[0]; the RSDP is there
	Blob []byte
	// Offsets and sizes within Blob, by signature ("RSDP", "XSDT",
	// "FACP", "APIC", "DSDT"), for tests and dumps.
	Parts []Part
}

// Part is one table within Tables.Blob.
type Part struct {
	Sig       string
	Off, Size int
}

// Table returns the bytes of the table with signature sig.
func (t *Tables) Table(sig string) []byte {
	for _, p := range t.Parts {
		if p.Sig == sig {
			return t.Blob[p.Off : p.Off+p.Size]
		}
	}
	return nil
}

// Build lays out the tables from base, which must be 16-byte aligned (the
// RSDP's alignment for the legacy scan, 5.2.5.1), and returns them; max
// bounds the blob's size.
func Build(base uint64, max int, c Config) (*Tables, error) {
	if base%16 != 0 {
		return nil, fmt.Errorf("acpi: tables at %#x: not 16-byte aligned", base)
	}
	if c.CPUs < 1 || c.CPUs > 255 {
		return nil, fmt.Errorf("acpi: %d CPUs: the MADT's xAPIC entries hold 1 to 255", c.CPUs)
	}
	dsdt, err := DSDT(c)
	if err != nil {
		return nil, err
	}
	t := &Tables{Base: base}
	// Each table 16-byte aligned after the RSDP; the XSDT points at the
	// FADT and MADT, the FADT at the DSDT, so they are placed last first.
	off := align16(rsdpSize)
	xsdtOff := off
	xsdtLen := headerSize + 8*2
	fadtOff := align16(xsdtOff + xsdtLen)
	madt := MADT(c)
	madtOff := align16(fadtOff + fadtSize)
	dsdtOff := align16(madtOff + len(madt))
	end := dsdtOff + len(dsdt)
	if end > max {
		return nil, fmt.Errorf("acpi: tables need %d bytes, %d reserved for them", end, max)
	}
	t.Blob = make([]byte, end)
	at := func(o int) uint64 { return base + uint64(o) }
	fadt := FADT(c, at(dsdtOff))
	xsdt := XSDT(at(fadtOff), at(madtOff))
	rsdp := RSDP(at(xsdtOff))
	for _, p := range []struct {
		sig string
		off int
		b   []byte
	}{{"RSDP", 0, rsdp}, {"XSDT", xsdtOff, xsdt}, {"FACP", fadtOff, fadt}, {"APIC", madtOff, madt}, {"DSDT", dsdtOff, dsdt}} {
		copy(t.Blob[p.off:], p.b)
		t.Parts = append(t.Parts, Part{Sig: p.sig, Off: p.off, Size: len(p.b)})
	}
	return t, nil
}

func align16(n int) int { return (n + 15) &^ 15 }

// checksum returns the byte that makes b sum to zero (5.2.6, Checksum).
func checksum(b []byte) byte { return -Checksum8(b) }

// Checksum8 is the byte sum of b; a valid table sums to 0.
func Checksum8(b []byte) byte {
	var s byte
	for _, c := range b {
		s += c
	}
	return s
}

// table prepends a System Description Table Header (5.2.6) to body and
// sets its length and checksum.
func table(sig string, rev byte, body []byte) []byte {
	b := make([]byte, headerSize, headerSize+len(body))
	copy(b[0:4], sig)
	binary.LittleEndian.PutUint32(b[4:], uint32(headerSize+len(body)))
	b[8] = rev
	copy(b[10:16], oemID)
	copy(b[16:24], oemTableID)
	binary.LittleEndian.PutUint32(b[24:], oemRevision)
	copy(b[28:32], creatorID)
	binary.LittleEndian.PutUint32(b[32:], creatorRev)
	b = append(b, body...)
	b[9] = checksum(b)
	return b
}

// rsdpSize is the ACPI 2.0+ RSDP (5.2.5.3).
const rsdpSize = 36

// RSDP is the Root System Description Pointer (5.2.5.3), revision 2,
// pointing at the XSDT only (no RSDT: RsdtAddress 0).
func RSDP(xsdt uint64) []byte {
	b := make([]byte, rsdpSize)
	copy(b, "RSD PTR ")
	copy(b[9:15], oemID)
	b[15] = 2 // revision: ACPI 2.0 and later
	binary.LittleEndian.PutUint32(b[20:], rsdpSize)
	binary.LittleEndian.PutUint64(b[24:], xsdt)
	b[8] = checksum(b[:20])  // over the ACPI 1.0 part
	b[32] = checksum(b[:36]) // extended checksum, over the whole
	return b
}

// XSDT is the Extended System Description Table (5.2.8): 64-bit pointers
// to the other tables (the DSDT is reached through the FADT).
func XSDT(entries ...uint64) []byte {
	body := make([]byte, 0, 8*len(entries))
	for _, e := range entries {
		body = binary.LittleEndian.AppendUint64(body, e)
	}
	return table("XSDT", 1, body)
}
