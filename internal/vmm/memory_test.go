package vmm

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"

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
		{Function: 1, Ebx: 0xff00aaaa, Ecx: 1 << 5},
		{Function: 0xa, Eax: 7, Ebx: 7, Ecx: 7, Edx: 7},
		{Function: 0x80000001, Ecx: 1<<2 | 1},
		{Function: 0xb, Index: 1},
	}
	out := filterCPUID(in, 3, 4, true)
	for _, e := range out {
		switch e.Function {
		case 1:
			if e.Ebx>>24 != 3 || (e.Ebx>>16)&0xff != 4 || e.Ebx&0xffff != 0xaaaa || e.Ecx>>31 != 1 || e.Edx&(1<<28) == 0 || e.Ecx&(1<<24) == 0 || e.Ecx&(1<<5) != 0 {
				t.Errorf("leaf 1 = %+v (want VMX hidden)", e)
			}
		case 0x80000001:
			if e.Ecx != 1 {
				t.Errorf("leaf 0x80000001 ECX = %#x, want SVM hidden, LAHF kept", e.Ecx)
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

// TestPlace: a file's whole pages are mapped, the rest read in, from any
// offset; guest writes never reach the file; a reader that is not a file is
// copied.
func TestPlace(t *testing.T) {
	page := uint64(os.Getpagesize())
	data := make([]byte, 5*page+123)
	for i := range data {
		data[i] = byte(i*7 + i/4096)
	}
	path := filepath.Join(t.TempDir(), "img")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := NewMemory(64 * layout.MiB)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	tests := []struct {
		name string
		gpa  uint64
		src  io.ReaderAt
		off  int64
		n    uint64
	}{
		{"aligned, partial last page", 1 * layout.MiB, f, 0, uint64(len(data))},
		{"aligned offset into the file", 2 * layout.MiB, f, int64(page), 3 * page},
		{"unaligned guest address", 3*layout.MiB + 100, f, 0, 2 * page},
		{"unaligned file offset", 4 * layout.MiB, f, 512, 2 * page},
		{"not a file", 5 * layout.MiB, bytes.NewReader(data), 0, uint64(len(data))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := m.Place(tt.gpa, tt.src, tt.off, tt.n); err != nil {
				t.Fatal(err)
			}
			got, _ := m.Slice(tt.gpa, tt.n)
			if !bytes.Equal(got, data[tt.off:tt.off+int64(tt.n)]) {
				t.Fatal("guest memory differs from the image")
			}
			got[0] ^= 0xff // the guest writes: copy-on-write, never the file
		})
	}
	// Populating breaks the copy-on-write of every mapped page without
	// changing a byte.
	m.Populate()
	m.populating.Wait()
	for _, tt := range tests[:2] {
		got, _ := m.Slice(tt.gpa, tt.n)
		if !bytes.Equal(got[1:], data[tt.off+1:tt.off+int64(tt.n)]) {
			t.Fatalf("%s: contents changed by Populate", tt.name)
		}
	}
	// The aligned cases were mapped, not copied: the file shows in our maps.
	if maps, _ := os.ReadFile("/proc/self/maps"); bytes.Count(maps, []byte(path)) < 2 {
		t.Errorf("%s is not mapped into guest RAM:\n%s", path, maps)
	}
	if onDisk, _ := os.ReadFile(path); !bytes.Equal(onDisk, data) {
		t.Error("a guest write reached the image file")
	}
	if err := m.Place(64*layout.MiB-100, f, 0, uint64(len(data))); err == nil {
		t.Error("Place past the end of RAM succeeded")
	}
	// The guest RAM around a placed image is still zero, still writable.
	if b, _ := m.Slice(1*layout.MiB+uint64(len(data)), 16); !bytes.Equal(b, make([]byte, 16)) {
		t.Errorf("bytes after the image: %x", b)
	}
}
