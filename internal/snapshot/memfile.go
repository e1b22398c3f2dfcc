package snapshot

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// PageSize is the host page size, the unit of the memory file's holes.
var PageSize = uint64(unix.Getpagesize())

// Run is a range of pages [First, First+N) of a mapping.
type Run struct{ First, N uint64 }

// WriteMemory writes guest RAM (mem, one mapping) into f as a sparse file
// of exactly len(mem) bytes: only pages in runs that hold a non-zero byte
// are written, everything else is a hole that reads as zero. runs are the
// pages the guest may have written (see PresentPages and DataRuns); pages
// outside them are known to be zero. It returns the bytes written.
func WriteMemory(f *os.File, mem []byte, runs []Run) (uint64, error) {
	if err := f.Truncate(int64(len(mem))); err != nil {
		return 0, err
	}
	zero := make([]byte, PageSize)
	var written uint64
	flush := func(from, to uint64) error {
		if from == to {
			return nil
		}
		n, err := f.WriteAt(mem[from:to], int64(from))
		written += uint64(n)
		return err
	}
	for _, r := range runs {
		start := r.First * PageSize
		end := min((r.First+r.N)*PageSize, uint64(len(mem)))
		// Coalesce neighbouring non-zero pages into one write.
		pending := start
		for off := start; off < end; off += PageSize {
			if bytes.Equal(mem[off:min(off+PageSize, end)], zero[:min(PageSize, end-off)]) {
				if err := flush(pending, off); err != nil {
					return written, err
				}
				pending = off + PageSize
			}
		}
		if err := flush(min(pending, end), end); err != nil {
			return written, err
		}
	}
	return written, nil
}

// pagemap entry bits (Documentation/admin-guide/mm/pagemap.rst).
const (
	pmPresent = 1 << 63
	pmSwapped = 1 << 62
)

// PageProbe finds the pages of a mapping of this process that the guest
// touched. It opens what it reads once, when made: a sandboxed process
// (internal/sandbox) can no longer open files by the time it snapshots a
// guest or reports what the guest touched.
type PageProbe struct {
	pagemap *os.File // nil: no /proc/self/pagemap (no CONFIG_PROC_PAGE_MONITOR)
	// swap: swap is in use (or unknown), so mincore would miss
	// swapped-out pages.
	swap bool
}

// OpenPageProbe opens /proc/self/pagemap and looks at /proc/swaps.
func OpenPageProbe() *PageProbe {
	p := &PageProbe{}
	if f, err := os.Open("/proc/self/pagemap"); err == nil {
		p.pagemap = f
	}
	b, err := os.ReadFile("/proc/swaps")
	p.swap = err == nil && bytes.Count(b, []byte("\n")) > 1
	return p
}

// Close releases what OpenPageProbe opened.
func (p *PageProbe) Close() {
	if p != nil && p.pagemap != nil {
		p.pagemap.Close()
		p.pagemap = nil
	}
}

// PresentPages returns the pages of mem (a mapping of this process) that
// have a page behind them, in RAM or in swap, from /proc/self/pagemap: the
// pages the guest touched. Unlike mincore(2) it counts swapped-out pages,
// and for a file mapping it counts only this process's pages, not the page
// cache.
func PresentPages(mem []byte) ([]Run, error) {
	p := OpenPageProbe()
	defer p.Close()
	return p.Present(mem)
}

// Present is PresentPages with the probe's pagemap.
func (p *PageProbe) Present(mem []byte) ([]Run, error) {
	if len(mem) == 0 {
		return nil, nil
	}
	if p == nil || p.pagemap == nil {
		return nil, errors.New("/proc/self/pagemap cannot be read")
	}
	f := p.pagemap
	first := uint64(uintptr(unsafe.Pointer(&mem[0]))) / PageSize
	pages := (uint64(len(mem)) + PageSize - 1) / PageSize
	const chunk = 1 << 16 // entries per read: 512 KiB
	buf := make([]byte, 8*chunk)
	var runs []Run
	for p := uint64(0); p < pages; {
		n := min(chunk, pages-p)
		b := buf[:8*n]
		if _, err := f.ReadAt(b, int64((first+p)*8)); err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("/proc/self/pagemap: %w", err)
		}
		for i := uint64(0); i < n; i++ {
			if binary.LittleEndian.Uint64(b[8*i:])&(pmPresent|pmSwapped) != 0 {
				runs = addPage(runs, p+i)
			}
		}
		p += n
	}
	return runs, nil
}

// MincorePages returns the pages of mem in core (mincore(2)): for
// anonymous memory those the guest touched, unless swapped out; for a file
// mapping those in the page cache, whoever read them.
func MincorePages(mem []byte) ([]Run, error) {
	if len(mem) == 0 {
		return nil, nil
	}
	vec := make([]byte, (uint64(len(mem))+PageSize-1)/PageSize)
	// x/sys/unix has no Mincore wrapper on Linux.
	if _, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&mem[0])), uintptr(len(mem)), uintptr(unsafe.Pointer(&vec[0]))); e != 0 {
		return nil, fmt.Errorf("mincore: %w", e)
	}
	var runs []Run
	for i, v := range vec {
		if v&1 != 0 {
			runs = addPage(runs, uint64(i))
		}
	}
	return runs, nil
}

// Touched returns the pages of mem the guest may have written: Present;
// without /proc/self/pagemap (a kernel without CONFIG_PROC_PAGE_MONITOR,
// like the nested harness's L1) MincorePages if no swap is in use (no
// /proc/swaps at all, or only its header), as mincore misses swapped-out
// pages; else every page.
func (p *PageProbe) Touched(mem []byte) ([]Run, error) {
	runs, err := p.Present(mem)
	if err == nil {
		return runs, nil
	}
	if p != nil && !p.swap {
		return MincorePages(mem)
	}
	return []Run{{First: 0, N: (uint64(len(mem)) + PageSize - 1) / PageSize}}, nil
}

func addPage(runs []Run, p uint64) []Run {
	if k := len(runs); k > 0 && runs[k-1].First+runs[k-1].N == p {
		runs[k-1].N++
		return runs
	}
	return append(runs, Run{First: p, N: 1})
}

// DataRuns returns the pages of file f that hold data (SEEK_DATA and
// SEEK_HOLE): for a guest restored from a memory file, what it has not
// touched is still in that file.
func DataRuns(f *os.File) ([]Run, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	size := st.Size()
	var runs []Run
	fd := int(f.Fd())
	for off := int64(0); off < size; {
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // no data after off
		}
		if err != nil {
			return nil, err
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			return nil, err
		}
		ps := int64(PageSize)
		runs = append(runs, Run{First: uint64(data / ps), N: uint64((hole+ps-1)/ps - data/ps)})
		off = hole
	}
	return runs, nil
}

// MergeRuns returns the union of two sorted run lists, sorted.
func MergeRuns(a, b []Run) []Run {
	var out []Run
	add := func(r Run) {
		if k := len(out); k > 0 && out[k-1].First+out[k-1].N >= r.First {
			out[k-1].N = max(out[k-1].First+out[k-1].N, r.First+r.N) - out[k-1].First
			return
		}
		out = append(out, r)
	}
	for len(a) > 0 || len(b) > 0 {
		if len(b) == 0 || (len(a) > 0 && a[0].First <= b[0].First) {
			add(a[0])
			a = a[1:]
		} else {
			add(b[0])
			b = b[1:]
		}
	}
	return out
}

// Allocated is the disk space f's blocks take (st_blocks), which for a
// sparse file is far less than its size.
func Allocated(f *os.File) uint64 {
	var st unix.Stat_t
	if unix.Fstat(int(f.Fd()), &st) != nil {
		return 0
	}
	return uint64(st.Blocks) * 512
}

// MapPrivate maps a memory file copy-on-write: pages load on demand from
// the page cache, and every guest restored from the same file shares the
// pages none of them has written. MAP_NORESERVE: like fresh guest RAM, a
// restored guest is charged only for what it dirties.
func MapPrivate(f *os.File, size uint64) ([]byte, error) {
	b, err := unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_NORESERVE)
	if err != nil {
		return nil, fmt.Errorf("mmap the memory file: %w", err)
	}
	return b, nil
}
