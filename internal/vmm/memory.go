package vmm

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Region is one contiguous stretch of guest RAM.
type Region struct {
	GPA  uint64 // guest-physical start
	Size uint64
	host []byte // backing bytes, len == Size
}

// Memory is guest RAM: one anonymous mapping split around the 32-bit MMIO hole.
// All guest-supplied addresses go through Slice, which bounds-checks them.
type Memory struct {
	mapping []byte
	Regions []Region
}

// Errors for guest addresses that are not RAM.
type AddrError struct {
	GPA, Len uint64
}

func (e *AddrError) Error() string {
	return fmt.Sprintf("guest address range [%#x, +%#x) is not RAM", e.GPA, e.Len)
}

// RAMLayout returns the RAM regions for size bytes of guest memory: below the
// MMIO hole, then above 4 GiB for the rest.
func RAMLayout(size uint64) []Region {
	if size <= MMIOHoleStart {
		return []Region{{GPA: 0, Size: size}}
	}
	return []Region{
		{GPA: 0, Size: MMIOHoleStart},
		{GPA: MMIOHoleEnd, Size: size - MMIOHoleStart},
	}
}

// NewMemory maps size bytes of guest RAM. MAP_NORESERVE: a large guest costs
// only the pages it touches.
func NewMemory(size uint64) (*Memory, error) {
	b, err := unix.Mmap(-1, 0, int(size), unix.PROT_READ|unix.PROT_WRITE,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	if err != nil {
		return nil, fmt.Errorf("mmap %d bytes of guest memory: %w", size, err)
	}
	m := &Memory{mapping: b}
	off := uint64(0)
	for _, r := range RAMLayout(size) {
		r.host = b[off : off+r.Size : off+r.Size]
		off += r.Size
		m.Regions = append(m.Regions, r)
	}
	return m, nil
}

// Close unmaps guest memory.
func (m *Memory) Close() error {
	if m.mapping == nil {
		return nil
	}
	err := unix.Munmap(m.mapping)
	m.mapping = nil
	return err
}

// Size is the total RAM in bytes.
func (m *Memory) Size() uint64 { return uint64(len(m.mapping)) }

// LowEnd is the end of RAM below the MMIO hole.
func (m *Memory) LowEnd() uint64 { return m.Regions[0].Size }

// Slice returns the host bytes for [gpa, gpa+n). The range must lie inside a
// single RAM region; anything else (overflow, hole, beyond RAM) is an error.
func (m *Memory) Slice(gpa, n uint64) ([]byte, error) {
	for _, r := range m.Regions {
		if gpa >= r.GPA && gpa-r.GPA <= r.Size && n <= r.Size-(gpa-r.GPA) {
			off := gpa - r.GPA
			return r.host[off : off+n : off+n], nil
		}
	}
	return nil, &AddrError{GPA: gpa, Len: n}
}

// Write copies b into guest memory at gpa.
func (m *Memory) Write(gpa uint64, b []byte) error {
	s, err := m.Slice(gpa, uint64(len(b)))
	if err != nil {
		return err
	}
	copy(s, b)
	return nil
}

// Read copies guest memory at gpa into b.
func (m *Memory) Read(gpa uint64, b []byte) error {
	s, err := m.Slice(gpa, uint64(len(b)))
	if err != nil {
		return err
	}
	copy(b, s)
	return nil
}

// TouchedBytes reports how much guest RAM is resident (mincore), for the
// VMM-overhead measurement: process RSS minus this is the VMM's own cost.
func (m *Memory) TouchedBytes() uint64 {
	if len(m.mapping) == 0 {
		return 0
	}
	page := uint64(unix.Getpagesize())
	vec := make([]byte, (uint64(len(m.mapping))+page-1)/page)
	_, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m.mapping[0])), uintptr(len(m.mapping)), uintptr(unsafe.Pointer(&vec[0])))
	if errno != 0 {
		return 0
	}
	var n uint64
	for _, v := range vec {
		if v&1 != 0 {
			n++
		}
	}
	return n * page
}

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
func E820(regions []Region) []E820Entry {
	low := regions[0]
	e := []E820Entry{
		{0, EBDAStart, E820RAM},
		{EBDAStart, HighMemStart - EBDAStart, E820Reserved},
	}
	if low.Size > HighMemStart {
		e = append(e, E820Entry{HighMemStart, low.Size - HighMemStart, E820RAM})
	}
	for _, r := range regions[1:] {
		e = append(e, E820Entry{r.GPA, r.Size, E820RAM})
	}
	return e
}

// Resident returns how many bytes of guest RAM the host has backed with
// pages (mincore(2)): with MAP_NORESERVE that is what the guest touched.
func (m *Memory) Resident() uint64 {
	if m == nil || m.mapping == nil {
		return 0
	}
	page := uint64(unix.Getpagesize())
	vec := make([]byte, (uint64(len(m.mapping))+page-1)/page)
	// x/sys/unix has no Mincore wrapper on Linux.
	_, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m.mapping[0])),
		uintptr(len(m.mapping)), uintptr(unsafe.Pointer(&vec[0])))
	if errno != 0 {
		return 0
	}
	n := uint64(0)
	for _, v := range vec {
		n += uint64(v & 1)
	}
	return n * page
}
