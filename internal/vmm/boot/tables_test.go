package boot

import (
	"encoding/binary"
	"fmt"
	"reflect"
	"testing"

	"github.com/microvm-dev/microvm/internal/vmm/layout"
)

// fakeMem is guest memory from address 0, for writing boot structures.
type fakeMem []byte

func (m fakeMem) Slice(gpa, n uint64) ([]byte, error) {
	if gpa > uint64(len(m)) || n > uint64(len(m))-gpa {
		return nil, fmt.Errorf("[%#x, +%#x) out of range", gpa, n)
	}
	return m[gpa : gpa+n], nil
}

func (m fakeMem) Write(gpa uint64, b []byte) error {
	d, err := m.Slice(gpa, uint64(len(b)))
	if err == nil {
		copy(d, b)
	}
	return err
}

// ranges is the RAM layout of a guest with size bytes.
func ranges(size uint64) []Range {
	low := layout.LowRAM(size)
	r := []Range{{0, low}}
	if size > low {
		r = append(r, Range{layout.MMIOHoleEnd, size - low})
	}
	return r
}

func TestE820(t *testing.T) {
	tests := []struct {
		mem  uint64
		want []E820Entry
	}{
		{256 * layout.MiB, []E820Entry{
			{0, 0x9fc00, E820RAM}, {0x9fc00, 0x60400, E820Reserved}, {0x100000, 255 * layout.MiB, E820RAM},
		}},
		{3 * layout.GiB, []E820Entry{
			{0, 0x9fc00, E820RAM}, {0x9fc00, 0x60400, E820Reserved}, {0x100000, 3*layout.GiB - layout.MiB, E820RAM},
		}},
		{6 * layout.GiB, []E820Entry{
			{0, 0x9fc00, E820RAM}, {0x9fc00, 0x60400, E820Reserved}, {0x100000, 3*layout.GiB - layout.MiB, E820RAM},
			{4 * layout.GiB, 3 * layout.GiB, E820RAM},
		}},
	}
	for _, tt := range tests {
		if got := E820(ranges(tt.mem), false); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("E820(%d MiB) = %+v, want %+v", tt.mem/layout.MiB, got, tt.want)
		}
	}
}

func TestPageTables(t *testing.T) {
	for _, tt := range []struct {
		mem  uint64
		gibs uint64
	}{{256 * layout.MiB, 4}, {6 * layout.GiB, 7}, {64 * layout.GiB, 16}} {
		m := make(fakeMem, layout.HighMemStart)
		r := ranges(tt.mem)
		if err := WritePageTables(m, r[len(r)-1].GPA+r[len(r)-1].Size); err != nil {
			t.Fatal(err)
		}
		rd := func(a uint64) uint64 { b, _ := m.Slice(a, 8); return binary.LittleEndian.Uint64(b) }
		if got := rd(layout.PML4Addr); got != layout.PDPTAddr|3 {
			t.Errorf("%d MiB: PML4[0] = %#x", tt.mem/layout.MiB, got)
		}
		for i := uint64(0); i < tt.gibs; i++ {
			if got := rd(layout.PDPTAddr + i*8); got != (layout.PDAddr+i*4096)|3 {
				t.Errorf("%d MiB: PDPT[%d] = %#x", tt.mem/layout.MiB, i, got)
			}
			if got, want := rd(layout.PDAddr+i*4096+511*8), (i<<30|511<<21)|0x83; got != want {
				t.Errorf("%d MiB: PD%d[511] = %#x, want %#x", tt.mem/layout.MiB, i, got, want)
			}
		}
		if got := rd(layout.PDPTAddr + tt.gibs*8); got != 0 {
			t.Errorf("%d MiB: PDPT[%d] = %#x, want unmapped", tt.mem/layout.MiB, tt.gibs, got)
		}
	}
}

func TestMPTable(t *testing.T) {
	for _, n := range []int{1, 2, 8, 64} {
		b := MPTable(layout.MPTableAddr, n)
		if string(b[:4]) != "_MP_" || string(b[16:20]) != "PCMP" {
			t.Fatalf("%d cpus: bad signatures", n)
		}
		var s byte
		for _, c := range b[:16] {
			s += c
		}
		if s != 0 {
			t.Errorf("%d cpus: floating pointer checksum %d", n, s)
		}
		tbl := b[16:]
		l := int(binary.LittleEndian.Uint16(tbl[4:]))
		if l != len(tbl) {
			t.Fatalf("%d cpus: length %d, have %d", n, l, len(tbl))
		}
		s = 0
		for _, c := range tbl {
			s += c
		}
		if s != 0 {
			t.Errorf("%d cpus: table checksum %d", n, s)
		}
		procs := 0
		for off := 44; off < len(tbl); {
			if tbl[off] == mpEntryProc {
				if int(tbl[off+1]) != procs {
					t.Errorf("cpu %d has APIC ID %d", procs, tbl[off+1])
				}
				procs++
				off += 20
			} else {
				off += 8
			}
		}
		if procs != n {
			t.Errorf("%d processor entries, want %d", procs, n)
		}
		if layout.MPTableAddr+uint64(len(b)) > layout.HighMemStart || n > MPTableMaxCPUs {
			t.Errorf("%d cpus: table overflows the reserved area", n)
		}
	}
}
