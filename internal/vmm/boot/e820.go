package boot

import "github.com/microvm-dev/microvm/internal/vmm/layout"

// Range is one stretch of guest RAM: its guest-physical start and size.
type Range struct{ GPA, Size uint64 }

// E820 entry types.
const (
	E820RAM      = 1
	E820Reserved = 2
)

// E820Entry is one entry of the BIOS memory map handed to the guest.
type E820Entry struct {
	Addr, Size uint64
	Type       uint32
}

// E820 builds the memory map: low RAM up to the EBDA, the reserved EBDA/BIOS
// area holding the MP table, RAM from 1 MiB to the hole, and RAM above 4 GiB.
func E820(regions []Range) []E820Entry {
	low := regions[0]
	e := []E820Entry{
		{0, layout.EBDAStart, E820RAM},
		{layout.EBDAStart, layout.HighMemStart - layout.EBDAStart, E820Reserved},
	}
	if low.Size > layout.HighMemStart {
		e = append(e, E820Entry{layout.HighMemStart, low.Size - layout.HighMemStart, E820RAM})
	}
	for _, r := range regions[1:] {
		e = append(e, E820Entry{r.GPA, r.Size, E820RAM})
	}
	return e
}
