package boot

import "github.com/microvm-dev/microvm/internal/vmm/layout"

// Range is one stretch of guest RAM: its guest-physical start and size.
type Range struct{ GPA, Size uint64 }

// E820 entry types (ACPI 6.5, 15 "System Address Map Interfaces",
// Address Range Types).
const (
	E820RAM      = 1
	E820Reserved = 2
	E820ACPI     = 3 // AddressRangeACPI: the ACPI tables
)

// E820Entry is one entry of the BIOS memory map handed to the guest.
type E820Entry struct {
	Addr, Size uint64
	Type       uint32
}

// E820 builds the memory map: low RAM up to the EBDA, the reserved EBDA/BIOS
// area holding the MP table (and, with acpiTables, an ACPI entry for the
// tables at its top, then the VM generation ID's reserved page), RAM from
// 1 MiB to the hole, and RAM above 4 GiB.
func E820(regions []Range, acpiTables bool) []E820Entry {
	low := regions[0]
	e := []E820Entry{{0, layout.EBDAStart, E820RAM}}
	if acpiTables {
		e = append(e,
			E820Entry{layout.EBDAStart, layout.ACPITablesAddr - layout.EBDAStart, E820Reserved},
			E820Entry{layout.ACPITablesAddr, layout.VMGenIDAddr - layout.ACPITablesAddr, E820ACPI},
			E820Entry{layout.VMGenIDAddr, layout.HighMemStart - layout.VMGenIDAddr, E820Reserved})
	} else {
		e = append(e, E820Entry{layout.EBDAStart, layout.HighMemStart - layout.EBDAStart, E820Reserved})
	}
	if low.Size > layout.HighMemStart {
		e = append(e, E820Entry{layout.HighMemStart, low.Size - layout.HighMemStart, E820RAM})
	}
	for _, r := range regions[1:] {
		e = append(e, E820Entry{r.GPA, r.Size, E820RAM})
	}
	return e
}
