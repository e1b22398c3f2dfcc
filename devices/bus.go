// Package devices holds the emulated devices. Each knows only the bus it sits
// on (through the Device interface) and, where it needs it, guest memory.
package devices

import (
	"fmt"
	"sort"
	"sync/atomic"

	"github.com/microvm-dev/microvm/internal/guard"
)

// Device handles accesses to its window on a bus. off is relative to the
// window's base; len(data) is the access size (1, 2, 4 or 8).
type Device interface {
	Read(off uint64, data []byte)
	Write(off uint64, data []byte)
}

// IRQLine raises or lowers one interrupt line of the guest's interrupt
// controller.
type IRQLine interface {
	SetLevel(high bool) error
}

type window struct {
	base, size uint64
	name       string
	dev        Device
	n          *counts
}

// counts is how often the guest read and wrote a window: each access is an
// exit to the VMM (the elements of one string I/O exit count one each), so
// these say which device costs the guest its exits (the console's bytes, a
// driver polling a status register). An atomic add is nothing beside the
// exit it counts.
type counts struct{ reads, writes atomic.Uint64 }

// Accesses is one device's share of a bus's exits.
type Accesses struct {
	Name          string
	Base          uint64
	Reads, Writes uint64
}

// Bus dispatches port I/O or MMIO accesses to devices. It is filled in before
// the vCPUs start and read-only afterwards, so lookups need no lock.
type Bus struct {
	name    string
	windows []window // sorted by base, non-overlapping
	missed  counts   // accesses that hit no device
}

// NewBus returns an empty bus; name ("pio", "mmio") is used in errors.
func NewBus(name string) *Bus { return &Bus{name: name} }

// Register attaches dev at [base, base+size). Overlapping windows are refused.
func (b *Bus) Register(name string, base, size uint64, dev Device) error {
	if size == 0 || base+size < base {
		return fmt.Errorf("%s bus: %s: invalid window %#x+%#x", b.name, name, base, size)
	}
	i := sort.Search(len(b.windows), func(i int) bool { return b.windows[i].base >= base })
	if i > 0 {
		if p := b.windows[i-1]; p.base+p.size > base {
			return fmt.Errorf("%s bus: %s at %#x+%#x overlaps %s at %#x+%#x", b.name, name, base, size, p.name, p.base, p.size)
		}
	}
	if i < len(b.windows) {
		if n := b.windows[i]; base+size > n.base {
			return fmt.Errorf("%s bus: %s at %#x+%#x overlaps %s at %#x+%#x", b.name, name, base, size, n.name, n.base, n.size)
		}
	}
	b.windows = append(b.windows, window{})
	copy(b.windows[i+1:], b.windows[i:])
	b.windows[i] = window{base: base, size: size, name: name, dev: dev, n: new(counts)}
	return nil
}

// Accesses lists the devices the guest accessed, in address order, and last
// (Name "no device", Base 0) the accesses that hit none.
func (b *Bus) Accesses() []Accesses {
	var out []Accesses
	for _, w := range b.windows {
		if r, wr := w.n.reads.Load(), w.n.writes.Load(); r+wr > 0 {
			out = append(out, Accesses{Name: w.name, Base: w.base, Reads: r, Writes: wr})
		}
	}
	if r, wr := b.missed.reads.Load(), b.missed.writes.Load(); r+wr > 0 {
		out = append(out, Accesses{Name: "no device", Reads: r, Writes: wr})
	}
	return out
}

func (b *Bus) find(addr uint64, n int) (*window, uint64, bool) {
	i := sort.Search(len(b.windows), func(i int) bool { return b.windows[i].base+b.windows[i].size > addr })
	if i == len(b.windows) {
		return nil, 0, false
	}
	w := &b.windows[i]
	off := addr - w.base
	if addr < w.base || off+uint64(n) > w.size {
		return nil, 0, false
	}
	return w, off, true
}

// Read dispatches a read. Accesses that hit no device read as all ones, like
// an unpopulated ISA bus; ok reports whether a device answered. A panic in
// the device's handler is returned as the internal error of that device.
func (b *Bus) Read(addr uint64, data []byte) (ok bool, err error) {
	w, off, ok := b.find(addr, len(data))
	if !ok {
		b.missed.reads.Add(1)
		for i := range data {
			data[i] = 0xff
		}
		return false, nil
	}
	w.n.reads.Add(1)
	defer w.recoverAccess(addr, &err)
	w.dev.Read(off, data)
	return true, nil
}

// Write dispatches a write; writes that hit no device are dropped. A panic
// in the device's handler is returned as the internal error of that device.
func (b *Bus) Write(addr uint64, data []byte) (ok bool, err error) {
	w, off, ok := b.find(addr, len(data))
	if !ok {
		b.missed.writes.Add(1)
		return false, nil
	}
	w.n.writes.Add(1)
	defer w.recoverAccess(addr, &err)
	w.dev.Write(off, data)
	return true, nil
}

// recoverAccess, deferred by Read and Write, names the device whose handler
// panicked: the handler runs on a vCPU thread, which alone does not say
// which device has the bug. A direct defer costs no allocation; the name is
// formatted only on a panic.
func (w *window) recoverAccess(addr uint64, err *error) {
	if r := recover(); r != nil {
		*err = guard.Internal(fmt.Sprintf("device %s at %#x", w.name, addr), guard.Recovered(r))
	}
}
