package vmm

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"unsafe"

	"github.com/microvm-dev/microvm/internal/vmm/boot"
	"github.com/microvm-dev/microvm/internal/vmm/layout"
)

func TestMemorySlice(t *testing.T) {
	m, err := NewMemory(3*layout.GiB + 64*layout.MiB) // crosses the hole: 64 MiB at 4 GiB
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if len(m.Regions) != 2 || m.Regions[1].GPA != 4*layout.GiB || m.Regions[1].Size != 64*layout.MiB {
		t.Fatalf("regions %+v", m.Regions)
	}
	if err := m.Write(4*layout.GiB+10, []byte("high")); err != nil {
		t.Fatal(err)
	}
	// The high region is backed right after the low one in the mapping.
	if got := string(m.mapping[3*layout.GiB+10 : 3*layout.GiB+14]); got != "high" {
		t.Fatalf("backing bytes %q", got)
	}
	for _, bad := range []struct{ gpa, n uint64 }{
		{3*layout.GiB - 2, 4},                 // runs into the hole
		{3 * layout.GiB, 1},                   // in the hole
		{4*layout.GiB + 64*layout.MiB, 1},     // past the end
		{4*layout.GiB + 64*layout.MiB - 1, 2}, // straddles the end
		{^uint64(0) - 1, 4},                   // wraps
		{0, ^uint64(0)},                       // absurd length
	} {
		if _, err := m.Slice(bad.gpa, bad.n); err == nil {
			t.Errorf("Slice(%#x, %#x) succeeded", bad.gpa, bad.n)
		}
	}
	if _, err := m.Slice(3*layout.GiB-4, 4); err != nil {
		t.Errorf("last low bytes: %v", err)
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

func TestSegmentFromGDT(t *testing.T) {
	cs := segmentFromGDT(boot.CS)
	if cs.L != 1 || cs.DB != 0 || cs.Type != 0xb || cs.Present != 1 || cs.S != 1 || cs.G != 1 || cs.Limit != 0xffffffff || cs.Selector != 0x10 {
		t.Errorf("CS = %+v", cs)
	}
	ds := segmentFromGDT(boot.DS)
	if ds.L != 0 || ds.DB != 1 || ds.Type != 3 || ds.Selector != 0x18 {
		t.Errorf("DS = %+v", ds)
	}
}

func TestResident(t *testing.T) {
	m, err := NewMemory(64 * layout.MiB)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	before := m.Resident()
	b, err := m.Slice(8*layout.MiB, 4*layout.MiB)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < len(b); i += 4096 {
		b[i] = 1
	}
	if got := m.Resident() - before; got < 4*layout.MiB || got > 5*layout.MiB {
		t.Fatalf("touching 4 MiB made %d bytes resident", got)
	}
}

// TestDontDump: guest RAM carries MADV_DONTDUMP, which smaps shows as the
// "dd" VmFlag (proc(5)), so no core dump of the VMM holds guest memory.
func TestDontDump(t *testing.T) {
	m, err := NewMemory(64 * layout.MiB)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if !m.DontDump() {
		t.Fatal("MADV_DONTDUMP failed")
	}
	smaps, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	start := fmt.Sprintf("%x-", uintptr(unsafe.Pointer(&m.mapping[0])))
	_, rest, found := strings.Cut("\n"+string(smaps), "\n"+start)
	if !found {
		t.Fatalf("no mapping at %s in smaps", start)
	}
	_, flags, _ := strings.Cut(rest, "VmFlags:")
	flags, _, _ = strings.Cut(flags, "\n")
	if !slices.Contains(strings.Fields(flags), "dd") {
		t.Errorf("guest RAM's VmFlags %q lack dd", flags)
	}
}

// TestMemoryHugeAligned: fresh RAM starts on a 2 MiB boundary (so KVM can
// map it with 2 MiB stage-2 entries), and Close unmaps all of it, also for
// a size that is not whole pages: nothing of it is left in the maps.
func TestMemoryHugeAligned(t *testing.T) {
	for _, size := range []uint64{64 * layout.MiB, 32*layout.MiB + 1} {
		m, err := NewMemory(size)
		if err != nil {
			t.Fatal(err)
		}
		base := uintptr(unsafe.Pointer(&m.mapping[0]))
		if base%(2*layout.MiB) != 0 {
			t.Errorf("size %d: guest RAM at %#x, not on a 2 MiB boundary", size, base)
		}
		m.mapping[size-1] = 1 // the last byte is there
		if err := m.Close(); err != nil {
			t.Fatalf("size %d: Close: %v", size, err)
		}
		maps, err := os.ReadFile("/proc/self/maps")
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(string(maps), "\n") {
			var lo, hi uintptr
			if _, err := fmt.Sscanf(l, "%x-%x", &lo, &hi); err == nil && lo < base+uintptr(size) && hi > base {
				t.Errorf("size %d: %#x+%#x still mapped after Close: %s", size, base, size, l)
			}
		}
	}
}
