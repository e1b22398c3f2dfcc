package vmm

import (
	"encoding/binary"
	"reflect"
	"testing"
)

func TestE820(t *testing.T) {
	tests := []struct {
		mem  uint64
		want []E820Entry
	}{
		{256 * MiB, []E820Entry{
			{0, 0x9fc00, E820RAM}, {0x9fc00, 0x60400, E820Reserved}, {0x100000, 255 * MiB, E820RAM},
		}},
		{3 * GiB, []E820Entry{
			{0, 0x9fc00, E820RAM}, {0x9fc00, 0x60400, E820Reserved}, {0x100000, 3*GiB - MiB, E820RAM},
		}},
		{6 * GiB, []E820Entry{
			{0, 0x9fc00, E820RAM}, {0x9fc00, 0x60400, E820Reserved}, {0x100000, 3*GiB - MiB, E820RAM},
			{4 * GiB, 3 * GiB, E820RAM},
		}},
	}
	for _, tt := range tests {
		if got := E820(RAMLayout(tt.mem)); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("E820(%d MiB) = %+v, want %+v", tt.mem/MiB, got, tt.want)
		}
	}
}

func TestMemorySlice(t *testing.T) {
	m, err := NewMemory(3*GiB + 64*MiB) // crosses the hole: 64 MiB at 4 GiB
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if len(m.Regions) != 2 || m.Regions[1].GPA != 4*GiB || m.Regions[1].Size != 64*MiB {
		t.Fatalf("regions %+v", m.Regions)
	}
	if err := m.Write(4*GiB+10, []byte("high")); err != nil {
		t.Fatal(err)
	}
	// The high region is backed right after the low one in the mapping.
	if got := string(m.mapping[3*GiB+10 : 3*GiB+14]); got != "high" {
		t.Fatalf("backing bytes %q", got)
	}
	for _, bad := range []struct{ gpa, n uint64 }{
		{3*GiB - 2, 4},          // runs into the hole
		{3 * GiB, 1},            // in the hole
		{4*GiB + 64*MiB, 1},     // past the end
		{4*GiB + 64*MiB - 1, 2}, // straddles the end
		{^uint64(0) - 1, 4},     // wraps
		{0, ^uint64(0)},         // absurd length
	} {
		if _, err := m.Slice(bad.gpa, bad.n); err == nil {
			t.Errorf("Slice(%#x, %#x) succeeded", bad.gpa, bad.n)
		}
	}
	if _, err := m.Slice(3*GiB-4, 4); err != nil {
		t.Errorf("last low bytes: %v", err)
	}
}

func TestPageTables(t *testing.T) {
	for _, tt := range []struct {
		mem  uint64
		gibs uint64
	}{{256 * MiB, 4}, {6 * GiB, 7}, {64 * GiB, 16}} {
		m, err := NewMemory(tt.mem)
		if err != nil {
			t.Fatal(err)
		}
		if err := writePageTables(m); err != nil {
			t.Fatal(err)
		}
		rd := func(a uint64) uint64 { b, _ := m.Slice(a, 8); return binary.LittleEndian.Uint64(b) }
		if got := rd(PML4Addr); got != PDPTAddr|3 {
			t.Errorf("%d MiB: PML4[0] = %#x", tt.mem/MiB, got)
		}
		for i := uint64(0); i < tt.gibs; i++ {
			if got := rd(PDPTAddr + i*8); got != (PDAddr+i*4096)|3 {
				t.Errorf("%d MiB: PDPT[%d] = %#x", tt.mem/MiB, i, got)
			}
			if got, want := rd(PDAddr+i*4096+511*8), (i<<30|511<<21)|0x83; got != want {
				t.Errorf("%d MiB: PD%d[511] = %#x, want %#x", tt.mem/MiB, i, got, want)
			}
		}
		if got := rd(PDPTAddr + tt.gibs*8); got != 0 {
			t.Errorf("%d MiB: PDPT[%d] = %#x, want unmapped", tt.mem/MiB, tt.gibs, got)
		}
		m.Close()
	}
}

func TestMPTable(t *testing.T) {
	for _, n := range []int{1, 2, 8, 64} {
		b := buildMPTable(MPTableAddr, n)
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
		if MPTableAddr+uint64(len(b)) > HighMemStart || n > mpTableMaxCPUs {
			t.Errorf("%d cpus: table overflows the reserved area", n)
		}
	}
}

func TestCPUIDFilter(t *testing.T) {
	in := []cpuidEntry{
		{Function: 1, Ebx: 0xff00aaaa},
		{Function: 0xa, Eax: 7, Ebx: 7, Ecx: 7, Edx: 7},
		{Function: 0xb, Index: 1},
	}
	out := filterCPUID(in, 3, 4, true)
	for _, e := range out {
		switch e.Function {
		case 1:
			if e.Ebx>>24 != 3 || (e.Ebx>>16)&0xff != 4 || e.Ebx&0xffff != 0xaaaa || e.Ecx>>31 != 1 || e.Edx&(1<<28) == 0 || e.Ecx&(1<<24) == 0 {
				t.Errorf("leaf 1 = %+v", e)
			}
		case 0xa:
			if e.Eax|e.Ebx|e.Ecx|e.Edx != 0 {
				t.Errorf("PMU leaf not cleared: %+v", e)
			}
		case 0xb:
			if e.Edx != 3 || e.Ebx != 4 || e.Eax != 2 {
				t.Errorf("leaf 0xb = %+v", e)
			}
		case 0x40000000:
			if e.Ebx != 0x4b4d564b {
				t.Errorf("KVM signature %+v", e)
			}
		}
	}
	if out[len(out)-1].Function != 0x40000000 {
		t.Error("KVM signature leaf not added")
	}
}

func TestParseSize(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want uint64
		ok   bool
	}{
		{"256M", 256 * MiB, true}, {"6G", 6 * GiB, true}, {"512", 512 * MiB, true},
		{"1024K", MiB, true}, {"2GiB", 2 * GiB, true}, {"64mb", 64 * MiB, true}, {"1T", 1024 * GiB, true},
		{"", 0, false}, {"abc", 0, false}, {"-5M", 0, false}, {"1.5G", 0, false}, {"99999999999999999999T", 0, false},
	} {
		got, err := ParseSize(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseSize(%q) = %d, %v", tt.in, got, err)
		}
	}
}

func TestSegmentFromGDT(t *testing.T) {
	cs := segmentFromGDT(bootCS)
	if cs.L != 1 || cs.DB != 0 || cs.Type != 0xb || cs.Present != 1 || cs.S != 1 || cs.G != 1 || cs.Limit != 0xffffffff || cs.Selector != 0x10 {
		t.Errorf("CS = %+v", cs)
	}
	ds := segmentFromGDT(bootDS)
	if ds.L != 0 || ds.DB != 1 || ds.Type != 3 || ds.Selector != 0x18 {
		t.Errorf("DS = %+v", ds)
	}
}

func TestResident(t *testing.T) {
	m, err := NewMemory(64 * MiB)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	before := m.Resident()
	b, err := m.Slice(8*MiB, 4*MiB)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < len(b); i += 4096 {
		b[i] = 1
	}
	if got := m.Resident() - before; got < 4*MiB || got > 5*MiB {
		t.Fatalf("touching 4 MiB made %d bytes resident", got)
	}
}
