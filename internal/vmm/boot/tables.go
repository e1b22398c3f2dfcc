// Package boot writes what the 64-bit Linux boot protocol
// (Documentation/arch/x86/boot.rst) and the Intel MP specification expect to
// find in guest memory: the zero page, the boot GDT, the identity-mapped page
// tables, the MP table and the e820 map; and it parses bzImage and ELF64
// kernels. It knows nothing about KVM or devices.
package boot

import (
	"encoding/binary"
	"fmt"

	"github.com/microvm-dev/microvm/internal/vmm/layout"
)

// Boot GDT entries. The 64-bit boot protocol wants __BOOT_CS = 0x10 and
// __BOOT_DS = 0x18 (Documentation/arch/x86/boot.rst, "64-bit Boot Protocol").
var GDT = [...]uint64{
	0,                  // null
	0,                  // unused
	0x00af9b000000ffff, // 0x10: code, 64-bit, present, DPL 0, 4 GiB
	0x00cf93000000ffff, // 0x18: data, read/write, 4 GiB
	0x00808b000000ffff, // 0x20: TSS (busy), required for a valid TR
	0x0000000000000000, // upper half of the 16-byte TSS descriptor
}

// Selectors of the boot GDT's code, data and task-state segments.
const (
	CS = 0x10
	DS = 0x18
	TR = 0x20
)

// WriteGDT places the boot GDT in guest memory at layout.GDTAddr.
func WriteGDT(mem Mem) error {
	b := make([]byte, 8*len(GDT))
	for i, d := range GDT {
		binary.LittleEndian.PutUint64(b[i*8:], d)
	}
	return mem.Write(layout.GDTAddr, b)
}

// identityMapSize is how much of the address space the boot page tables map:
// all of RAM, at least the first 4 GiB (so the LAPIC and IOAPIC are reachable),
// rounded up to whole GiB and capped at MaxIdentityMap.
func identityMapSize(ramTop uint64) uint64 {
	top := max(uint64(layout.MMIOHoleEnd), ramTop)
	top = (top + layout.GiB - 1) &^ (layout.GiB - 1)
	return min(top, layout.MaxIdentityMap)
}

// WritePageTables builds an identity map from 2 MiB pages: PML4[0] -> PDPT,
// PDPT[i] -> PD i, each PD mapping 1 GiB.
// ramTop is the end of the highest RAM region.
func WritePageTables(mem Mem, ramTop uint64) error {
	const present, rw, ps = 1, 2, 0x80
	gibs := identityMapSize(ramTop) / layout.GiB
	pml4 := make([]byte, 4096)
	binary.LittleEndian.PutUint64(pml4, layout.PDPTAddr|present|rw)
	pdpt := make([]byte, 4096)
	pds := make([]byte, 4096*gibs)
	for i := uint64(0); i < gibs; i++ {
		binary.LittleEndian.PutUint64(pdpt[i*8:], (layout.PDAddr+i*4096)|present|rw)
		for j := uint64(0); j < 512; j++ {
			binary.LittleEndian.PutUint64(pds[(i*512+j)*8:], (i<<30|j<<21)|present|rw|ps)
		}
	}
	for _, w := range []struct {
		addr uint64
		b    []byte
	}{{layout.PML4Addr, pml4}, {layout.PDPTAddr, pdpt}, {layout.PDAddr, pds}} {
		if err := mem.Write(w.addr, w.b); err != nil {
			return fmt.Errorf("write page tables: %w", err)
		}
	}
	return nil
}

// Intel MultiProcessor Specification 1.4 structures.
const (
	mpEntryProc      = 0
	mpEntryBus       = 1
	mpEntryIOAPIC    = 2
	mpEntryIOIntr    = 3
	mpEntryLocalIntr = 4
	mpIntINT         = 0
	mpIntNMI         = 1
	mpIntExtINT      = 3
	apicVersion      = 0x14
	ioapicVersion    = 0x11
)

func mpChecksum(b []byte) byte {
	var s byte
	for _, c := range b {
		s += c
	}
	return -s
}

// MPTable returns the MP floating pointer followed by the configuration
// table for ncpus processors, as it will sit at addr. The guest starts each
// AP itself through the in-kernel LAPIC (INIT/SIPI).
func MPTable(addr uint64, ncpus int) []byte {
	le := binary.LittleEndian
	ioapicID := IOAPICID(ncpus)
	var ents []byte
	for i := 0; i < ncpus; i++ {
		e := make([]byte, 20)
		e[0] = mpEntryProc
		e[1] = byte(i)
		e[2] = apicVersion
		e[3] = 1 // enabled
		if i == 0 {
			e[3] |= 2 // bootstrap processor
		}
		le.PutUint32(e[4:], 0x600)          // CPU signature: family 6
		le.PutUint32(e[8:], 1<<9|1<<0|1<<3) // APIC, FPU, PSE
		ents = append(ents, e...)
	}
	ents = append(ents, mpEntryBus, 0, 'I', 'S', 'A', ' ', ' ', ' ')
	ioapic := []byte{mpEntryIOAPIC, ioapicID, ioapicVersion, 1, 0, 0, 0, 0}
	le.PutUint32(ioapic[4:], layout.IOAPICAddr)
	ents = append(ents, ioapic...)
	for irq := 0; irq <= layout.MaxIRQ; irq++ {
		ents = append(ents, mpEntryIOIntr, mpIntINT, 0, 0, 0, byte(irq), ioapicID, byte(irq))
	}
	// LAPIC LINT0 is ExtINT (the PIC), LINT1 is NMI, on every CPU (0xff).
	ents = append(ents, mpEntryLocalIntr, mpIntExtINT, 0, 0, 0, 0, 0xff, 0)
	ents = append(ents, mpEntryLocalIntr, mpIntNMI, 0, 0, 0, 0, 0xff, 1)
	count := ncpus + 1 + 1 + (layout.MaxIRQ + 1) + 2

	hdr := make([]byte, 44)
	copy(hdr, "PCMP")
	le.PutUint16(hdr[4:], uint16(len(hdr)+len(ents)))
	hdr[6] = 4 // spec revision 1.4
	copy(hdr[8:], "MICROVM ")
	copy(hdr[16:], "000000000000")
	le.PutUint16(hdr[34:], uint16(count))
	le.PutUint32(hdr[36:], layout.LAPICAddr)
	table := append(hdr, ents...)
	table[7] = mpChecksum(table)

	fp := make([]byte, 16)
	copy(fp, "_MP_")
	le.PutUint32(fp[4:], uint32(addr+16))
	fp[8] = 1 // length in 16-byte units
	fp[9] = 4
	fp[10] = mpChecksum(fp)
	return append(fp, table...)
}

// IOAPICID is the IOAPIC's APIC ID in a machine with ncpus vCPUs: the
// first after theirs. The MP table and the ACPI MADT both say so.
func IOAPICID(ncpus int) uint8 { return uint8(ncpus) }

// MPTableMaxCPUs is how many processors fit in the reserved EBDA area
// below the ACPI tables.
const MPTableMaxCPUs = (layout.ACPITablesAddr - layout.EBDAStart - 16 - 44 - 8 - 8 - (layout.MaxIRQ+1)*8 - 16) / 20

// Mem is the guest memory the boot structures are written to; every address
// is bounds-checked by it.
type Mem interface {
	Write(gpa uint64, b []byte) error
	Slice(gpa, n uint64) ([]byte, error)
}
