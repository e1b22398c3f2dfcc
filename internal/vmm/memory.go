package vmm

import (
	"fmt"
	"io"
	"os"
	"sync"
	"unsafe"

	"github.com/microvm-dev/microvm/internal/vmm/boot"
	"github.com/microvm-dev/microvm/internal/vmm/layout"
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

	mapped     [][]byte       // ranges Place mapped from files, in order
	populating sync.WaitGroup // the background populate (Populate)
}

// Errors for guest addresses that are not RAM.
type AddrError struct {
	GPA, Len uint64
}

func (e *AddrError) Error() string {
	return fmt.Sprintf("guest address range [%#x, +%#x) is not RAM", e.GPA, e.Len)
}

// ramLayout returns the RAM regions for size bytes of guest memory: below the
// MMIO hole, then above 4 GiB for the rest.
func ramLayout(size uint64) []Region {
	low := layout.LowRAM(size)
	if size == low {
		return []Region{{GPA: 0, Size: size}}
	}
	return []Region{{GPA: 0, Size: low}, {GPA: layout.MMIOHoleEnd, Size: size - low}}
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
	for _, r := range ramLayout(size) {
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
	m.populating.Wait() // never madvise a range after it is unmapped
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

// Ranges returns the RAM regions as the boot code describes them (e820).
func (m *Memory) Ranges() []boot.Range {
	r := make([]boot.Range, len(m.Regions))
	for i, g := range m.Regions {
		r[i] = boot.Range{GPA: g.GPA, Size: g.Size}
	}
	return r
}

// Top is the end of the highest RAM region.
func (m *Memory) Top() uint64 {
	last := m.Regions[len(m.Regions)-1]
	return last.GPA + last.Size
}

// Place puts n bytes of src from offset off at guest address gpa. When src
// is a file and both gpa and off are page aligned, its whole pages are mapped
// over guest RAM (MAP_PRIVATE|MAP_FIXED) instead of being read: the guest
// faults in only the pages it touches, straight from the page cache, which
// all the VMs booting the same kernel and initrd share, and its writes stay
// private (copy-on-write). What is left (a partial last page, or everything
// when the file cannot be mapped) is read in.
//
// Measured in the nested harness: copying 10 MiB of kernel and initrd in was
// most of the VMM's time before the first KVM_RUN (README, Performance).
// A file replaced by rename (how the caches are written) keeps serving the
// running guest from its old inode; one rewritten in place while a guest
// boots from it is the user's race, as with any mmap.
func (m *Memory) Place(gpa uint64, src io.ReaderAt, off int64, n uint64) error {
	dst, err := m.Slice(gpa, n)
	if err != nil {
		return err
	}
	page := uint64(unix.Getpagesize())
	done := uint64(0)
	if f, ok := src.(*os.File); ok && gpa%page == 0 && uint64(off)%page == 0 {
		if whole := n &^ (page - 1); whole > 0 {
			mapped, err := mapOver(dst[:whole], f, off)
			if err != nil {
				return err
			}
			if mapped {
				done = whole
				m.mapped = append(m.mapped, dst[:whole])
			}
		}
	}
	if done < n {
		if _, err := src.ReadAt(dst[done:], off+int64(done)); err != nil {
			return err
		}
	}
	return nil
}

// mapOver maps the file's pages at off over dst, reporting false (dst
// untouched) when the file cannot be mapped. A MAP_FIXED that fails may
// already have unmapped dst (mmap(2)), so mappability is tried first at an
// address of the kernel's choosing, and a failure after that puts fresh
// anonymous memory back.
func mapOver(dst []byte, f *os.File, off int64) (bool, error) {
	const prot = unix.PROT_READ | unix.PROT_WRITE
	probe, err := unix.Mmap(int(f.Fd()), off, len(dst), prot, unix.MAP_PRIVATE)
	if err != nil {
		return false, nil // e.g. a filesystem without mmap: read it in
	}
	_ = unix.Munmap(probe)
	addr := unsafe.Pointer(&dst[0])
	if _, err := unix.MmapPtr(int(f.Fd()), off, addr, uintptr(len(dst)), prot, unix.MAP_PRIVATE|unix.MAP_FIXED); err == nil {
		return true, nil
	}
	if _, err := unix.MmapPtr(-1, 0, addr, uintptr(len(dst)), prot,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE|unix.MAP_FIXED); err != nil {
		return false, fmt.Errorf("restore guest RAM after a failed file mapping: %w", err)
	}
	return false, nil
}

// Populate makes the pages Place mapped from files the guest's own, in the
// background: MADV_POPULATE_WRITE (Linux 5.14) breaks each copy-on-write as a
// write fault would, without changing a byte, so it cannot race with the
// guest, which sees the file's contents either way.
//
// Measured in the nested harness (2026-12-02, 6 alternating boots each in
// one L1, bzImage + 8 MiB initrd): mapping alone cut exec to the first
// KVM_RUN from 1357 to 105 ms (medians) but raised exec to init from 11.7 to
// 14.3 s, because the guest then faulted most of those pages twice, once to
// read them and once, copy-on-write, when the memory the kernel freed after
// unpacking the initramfs was reused, and every fault is a nested exit. With
// the pages populated while the guest boots, the guest faults each once, as
// it did on copied memory, and the VMM still does not wait for the copy.
func (m *Memory) Populate() {
	if len(m.mapped) == 0 {
		return
	}
	ranges := m.mapped
	m.mapped = nil
	m.populating.Add(1)
	go func() {
		defer m.populating.Done()
		for _, r := range ranges {
			// EINVAL before Linux 5.14: the guest's own faults do it.
			_ = unix.Madvise(r, unix.MADV_POPULATE_WRITE)
		}
	}()
}
