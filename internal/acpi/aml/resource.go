package aml

import (
	"encoding/binary"
	"fmt"
)

// Resource descriptors (ACPI 6.5, 6.4 "Resource Data Types for ACPI"), the
// contents of a _CRS ResourceTemplate. Small descriptors start with a
// tag byte holding their name and length, large ones with a tag byte and a
// 16-bit length.

// ResourceTemplate is ASL's ResourceTemplate() { descriptors }: a Buffer
// holding the descriptors and an End Tag (6.4.2.9). The End Tag's checksum
// is 0, "treated as if the checksum operation succeeded", as iasl writes it.
func ResourceTemplate(descs ...[]byte) []byte {
	var b []byte
	for _, d := range descs {
		b = append(b, d...)
	}
	return Buffer(append(b, 0x79, 0x00))
}

// IO is ASL's IO(Decode16, min, max, align, length) (6.4.2.5, I/O Port
// Descriptor): a device that decodes 16 address bits.
func IO(min, max uint16, align, length uint8) []byte {
	b := []byte{0x47, 0x01}
	b = binary.LittleEndian.AppendUint16(b, min)
	b = binary.LittleEndian.AppendUint16(b, max)
	return append(b, align, length)
}

// IRQNoFlags is ASL's IRQNoFlags() { irqs } (6.4.2.1, IRQ Descriptor
// without its information byte): ISA IRQs 0-15, active high, edge
// triggered, not shared.
func IRQNoFlags(irqs ...uint8) []byte {
	var mask uint16
	for _, irq := range irqs {
		if irq > 15 {
			panic(fmt.Sprintf("aml: IRQNoFlags: IRQ %d is not an ISA IRQ (0-15)", irq))
		}
		mask |= 1 << irq
	}
	return binary.LittleEndian.AppendUint16([]byte{0x22}, mask)
}

// Memory32Fixed is ASL's Memory32Fixed(ReadWrite or ReadOnly, base,
// length) (6.4.3.4, 32-bit Fixed Memory Range Descriptor).
func Memory32Fixed(readWrite bool, base, length uint32) []byte {
	info := byte(0)
	if readWrite {
		info = 1
	}
	b := []byte{0x86, 0x09, 0x00, info}
	b = binary.LittleEndian.AppendUint32(b, base)
	return binary.LittleEndian.AppendUint32(b, length)
}

// InterruptFlags are the information bits of an Extended Interrupt
// Descriptor (6.4.3.6, Table 6.51).
type InterruptFlags struct {
	Consumer  bool // ResourceConsumer (else ResourceProducer)
	Edge      bool // edge triggered (else level)
	ActiveLow bool // ActiveLow (else ActiveHigh)
	Shared    bool // Shared (else Exclusive)
}

// Interrupt is ASL's Interrupt(consumer, edge/level, polarity, sharing)
// { irqs } (6.4.3.6, Extended Interrupt Descriptor): GSIs of any size.
func Interrupt(f InterruptFlags, irqs ...uint32) []byte {
	if len(irqs) == 0 || len(irqs) > 255 {
		panic("aml: Interrupt needs 1 to 255 interrupt numbers")
	}
	var info byte
	for i, set := range []bool{f.Consumer, f.Edge, f.ActiveLow, f.Shared} {
		if set {
			info |= 1 << i
		}
	}
	b := binary.LittleEndian.AppendUint16([]byte{0x89}, uint16(2+4*len(irqs)))
	b = append(b, info, byte(len(irqs)))
	for _, irq := range irqs {
		b = binary.LittleEndian.AppendUint32(b, irq)
	}
	return b
}
