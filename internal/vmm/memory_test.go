package vmm

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"unsafe"

	"github.com/microvm-dev/microvm/internal/snapshot"
	"github.com/microvm-dev/microvm/internal/testimg"
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

// TestMapFile: a file put behind guest RAM reads as the file, then zeros to
// the page's end; the guest's writes stay its own; a snapshot counts every
// mapped page; what cannot be mapped (unaligned) is left to a copy.
func TestMapFile(t *testing.T) {
	content := make([]byte, 3*4096+100)
	for i := range content {
		content[i] = byte(i*7 + 1)
	}
	path := t.TempDir() + "/initrd"
	if err := os.WriteFile(path, content, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		gpa     uint64
		off, n  uint64
		mapped  bool
		wantLen int // bytes of the file expected at gpa
	}{
		{"whole file", 16 * layout.MiB, 0, uint64(len(content)), true, len(content)},
		{"from a page offset", 16 * layout.MiB, 4096, 4096, true, 4096},
		{"unaligned address", 16*layout.MiB + 512, 0, 4096, false, 0},
		{"unaligned offset", 16 * layout.MiB, 100, 4096, false, 0},
		{"beyond RAM", 64 * layout.MiB, 0, 4096, false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := NewMemory(64 * layout.MiB)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			ok, err := m.MapFile(tt.gpa, f, tt.off, tt.n)
			if err != nil || ok != tt.mapped {
				t.Fatalf("MapFile = %v, %v; want %v, nil", ok, err, tt.mapped)
			}
			if !ok {
				if len(m.fileRuns) != 0 {
					t.Fatalf("fileRuns %v after a refused map", m.fileRuns)
				}
				return
			}
			pages := (tt.n + 4095) / 4096
			g, err := m.Slice(tt.gpa, pages*4096)
			if err != nil {
				t.Fatal(err)
			}
			want := append([]byte(nil), content[tt.off:tt.off+uint64(tt.wantLen)]...)
			want = append(want, make([]byte, len(g)-len(want))...)
			if !slices.Equal(g, want) {
				t.Fatal("guest RAM does not read as the file, then zeros")
			}
			g[0] ^= 0xff // the guest writes: its own copy
			if b, _ := os.ReadFile(path); !slices.Equal(b, content) {
				t.Fatal("a guest write reached the file")
			}
			runs, err := m.touched()
			if err != nil {
				t.Fatal(err)
			}
			first := tt.gpa / 4096
			covered := uint64(0)
			for _, r := range runs {
				lo, hi := max(r.First, first), min(r.First+r.N, first+pages)
				if hi > lo {
					covered += hi - lo
				}
			}
			if covered != pages {
				t.Fatalf("a snapshot would save %d of the %d mapped pages (runs %v)", covered, pages, runs)
			}
		})
	}
}

// TestLoadMapsELFPages: an ELF kernel's page-aligned segment is mapped from
// its file and its partial last page copied; the bytes in guest RAM are the
// segment's, then its zeroed bss.
func TestLoadMapsELFPages(t *testing.T) {
	data := make([]byte, 2*4096+300)
	for i := range data {
		data[i] = byte(i%251 + 1)
	}
	const paddr = 2 * layout.MiB
	img := testimg.PagedELF(paddr, testimg.Seg{Paddr: paddr, Memsz: 4 * 4096, Data: data})
	path := t.TempDir() + "/vmlinux"
	if err := os.WriteFile(path, img, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	k, err := boot.ParseKernelAt(path, img, f, int64(len(img)))
	if err != nil {
		t.Fatal(err)
	}
	m, err := NewMemory(64 * layout.MiB)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := k.Load(m); err != nil {
		t.Fatal(err)
	}
	if want := []snapshot.Run{{First: paddr / 4096, N: 2}}; !slices.Equal(m.fileRuns, want) {
		t.Fatalf("mapped pages %v, want %v (the two whole pages)", m.fileRuns, want)
	}
	g, _ := m.Slice(paddr, 4*4096)
	want := append(append([]byte(nil), data...), make([]byte, 4*4096-len(data))...)
	if !slices.Equal(g, want) {
		t.Fatal("guest RAM does not hold the segment, then zeros")
	}
}
