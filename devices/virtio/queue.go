// Package virtio implements virtio 1.x devices over the virtio-mmio transport
// (virtio spec v1.2, sections 2 and 4.2). Devices know only guest memory
// (through Memory) and an interrupt (through Interrupt); the VMM wires the
// transport onto its MMIO bus and connects queue notifications
// (ioeventfd) and interrupts (irqfd).
package virtio

import (
	"context"
	"encoding/binary"
	"fmt"
	"iter"
	"sync/atomic"
	"unsafe"
)

// Memory is guest RAM as the devices see it: a bounds-checked view.
type Memory interface {
	// Slice returns the host bytes backing guest-physical [gpa, gpa+n), or an
	// error if any part lies outside guest RAM.
	Slice(gpa, n uint64) ([]byte, error)
}

// Descriptor flags (spec 2.7.5).
const (
	descFNext     = 1
	descFWrite    = 2
	descFIndirect = 4
)

// MaxQueueSize is the largest split virtqueue the devices offer.
const MaxQueueSize = 256

// Queue is one split virtqueue (spec 2.7). The transport keeps the
// configuration the driver writes in one Queue and activates a copy of it,
// which only the device goroutine uses: the geometry a device runs on never
// changes under it.
type Queue struct {
	// Configuration written by the driver through the transport.
	Size      uint16
	Ready     bool
	DescAddr  uint64
	AvailAddr uint64
	UsedAddr  uint64

	indirect bool // VIRTIO_F_INDIRECT_DESC negotiated

	desc, avail, used []byte
	lastAvail         uint16
	usedIdx           uint16
	noNotify          uint32 // VIRTQ_USED_F_NO_NOTIFY as written to used->flags
}

// QueueError is a driver error in a virtqueue: the device must enter
// DEVICE_NEEDS_RESET (spec 2.1.2).
type QueueError struct{ Msg string }

func (e *QueueError) Error() string { return e.Msg }

func qerr(format string, a ...any) error { return &QueueError{Msg: fmt.Sprintf(format, a...)} }

// activate validates the queue's layout against guest RAM (spec 2.7:
// alignment 16/2/4 for descriptor table, available and used ring) and caches
// the host views.
func (q *Queue) activate(mem Memory, indirect bool) error {
	n := uint64(q.Size)
	if n == 0 || n > MaxQueueSize || n&(n-1) != 0 {
		return qerr("queue size %d: must be a power of 2 up to %d", n, MaxQueueSize)
	}
	if q.DescAddr%16 != 0 || q.AvailAddr%2 != 0 || q.UsedAddr%4 != 0 {
		return qerr("misaligned rings: desc %#x avail %#x used %#x", q.DescAddr, q.AvailAddr, q.UsedAddr)
	}
	var err error
	if q.desc, err = mem.Slice(q.DescAddr, 16*n); err != nil {
		return qerr("descriptor table at %#x: %v", q.DescAddr, err)
	}
	// flags, idx, ring[n], used_event
	if q.avail, err = mem.Slice(q.AvailAddr, 6+2*n); err != nil {
		return qerr("available ring at %#x: %v", q.AvailAddr, err)
	}
	// flags, idx, ring[n] of {id, len}, avail_event
	if q.used, err = mem.Slice(q.UsedAddr, 6+8*n); err != nil {
		return qerr("used ring at %#x: %v", q.UsedAddr, err)
	}
	q.indirect = indirect
	q.lastAvail, q.usedIdx = 0, 0
	return nil
}

// budget is how many chains a device serves per notification: q.Size (see
// serveQueue). An unready queue (Size 0) gets one Pop, which fails.
func (q *Queue) budget() int { return max(int(q.Size), 1) }

// reset returns the queue to its state after a device reset.
func (q *Queue) reset() {
	*q = Queue{}
}

// availIdx reads the driver's avail->idx with an atomic 32-bit load of the
// aligned word that contains it (Go has no 16-bit atomics). The load orders
// the reads of ring entries and descriptors that follow (acquire).
func (q *Queue) availIdx() uint16 {
	if uintptr(unsafe.Pointer(&q.avail[0]))%4 == 0 {
		return uint16(atomic.LoadUint32((*uint32)(unsafe.Pointer(&q.avail[0]))) >> 16)
	}
	// avail is 2 mod 4: idx starts an aligned word (idx, ring[0]).
	return uint16(atomic.LoadUint32((*uint32)(unsafe.Pointer(&q.avail[2]))))
}

// NoInterrupt reports the driver's VIRTQ_AVAIL_F_NO_INTERRUPT hint.
func (q *Queue) NoInterrupt() bool {
	return binary.LittleEndian.Uint16(q.avail[0:])&1 != 0
}

// Chain is one descriptor chain: the buffers the driver made available,
// readable (driver to device) first, then writable (device to driver).
type Chain struct {
	Head uint16
	R    [][]byte // device-readable buffers, in order
	W    [][]byte // device-writable buffers, in order
}

// ReadableLen and WritableLen sum the buffer lengths.
func (c *Chain) ReadableLen() int { return totalLen(c.R) }
func (c *Chain) WritableLen() int { return totalLen(c.W) }

func totalLen(bufs [][]byte) int {
	n := 0
	for _, b := range bufs {
		n += len(b)
	}
	return n
}

// Pop takes the next available chain. It returns ok=false when the driver
// has made nothing new available, and a *QueueError for a malformed chain
// or ring.
func (q *Queue) Pop(mem Memory) (c Chain, ok bool, err error) {
	if q.avail == nil {
		return c, false, qerr("queue used before it was activated")
	}
	n := q.Size
	avail := q.availIdx()
	if avail == q.lastAvail {
		return c, false, nil
	}
	if pending := avail - q.lastAvail; pending > n {
		return c, false, qerr("available index moved by %d, more than the queue size %d", pending, n)
	}
	slot := 4 + 2*uint64(q.lastAvail%n)
	head := binary.LittleEndian.Uint16(q.avail[slot:])
	c, err = walkChain(mem, q.desc, head, n, q.indirect)
	if err != nil {
		return Chain{}, false, err
	}
	q.lastAvail++
	return c, true, nil
}

// walkChain follows a descriptor chain from head in table (n entries),
// checking every address against guest RAM and bounding the walk: a chain
// has at most n descriptors (spec 2.7.5.3.1), an indirect table at most
// MaxQueueSize, and indirect tables do not nest.
func walkChain(mem Memory, table []byte, head, n uint16, indirectOK bool) (Chain, error) {
	c := Chain{Head: head}
	if head >= n {
		return c, qerr("head descriptor %d is beyond the queue size %d", head, n)
	}
	le := binary.LittleEndian
	i, size := head, n
	inIndirect := false
	for count := 0; ; count++ {
		if count >= int(size) {
			return c, qerr("descriptor chain from %d is longer than its table (%d): a loop?", head, size)
		}
		d := table[16*uint64(i):]
		addr, ln, flags, next := le.Uint64(d[0:]), le.Uint32(d[8:]), le.Uint16(d[12:]), le.Uint16(d[14:])
		if flags&descFIndirect != 0 {
			switch {
			case !indirectOK:
				return c, qerr("indirect descriptor %d without VIRTIO_F_INDIRECT_DESC", i)
			case inIndirect:
				return c, qerr("nested indirect descriptor %d", i)
			case flags&descFNext != 0:
				return c, qerr("indirect descriptor %d also has NEXT", i)
			case ln == 0 || ln%16 != 0 || ln/16 > MaxQueueSize:
				return c, qerr("indirect table length %d: must be a multiple of 16, at most %d entries", ln, MaxQueueSize)
			}
			t, err := mem.Slice(addr, uint64(ln))
			if err != nil {
				return c, qerr("indirect table %d at %#x+%#x: %v", i, addr, ln, err)
			}
			table, size, i, count, inIndirect = t, uint16(ln/16), 0, -1, true
			continue
		}
		buf, err := mem.Slice(addr, uint64(ln))
		if err != nil {
			return c, qerr("descriptor %d at %#x+%#x: %v", i, addr, ln, err)
		}
		if flags&descFWrite != 0 {
			c.W = append(c.W, buf)
		} else {
			if len(c.W) > 0 {
				return c, qerr("descriptor %d: readable buffer after a writable one", i)
			}
			c.R = append(c.R, buf)
		}
		if flags&descFNext == 0 {
			return c, nil
		}
		if next >= size {
			return c, qerr("descriptor %d: next %d is beyond its table (%d)", i, next, size)
		}
		i = next
	}
}

// SetNotify sets or clears VIRTQ_USED_F_NO_NOTIFY (spec 2.7.10): while a
// device is draining a queue it asks the driver not to notify it. The flag
// shares an aligned word with the used index, which only the device writes.
func (q *Queue) SetNotify(on bool) {
	var flags uint32
	if !on {
		flags = 1
	}
	q.noNotify = flags
	atomic.StoreUint32((*uint32)(unsafe.Pointer(&q.used[0])), uint32(q.usedIdx)<<16|flags)
}

// Pending reports whether the driver has made chains available that were
// not popped yet. After SetNotify(true) the device must check it once more:
// the driver may have added a chain while notifications were off.
func (q *Queue) Pending() bool { return q.availIdx() != q.lastAvail }

// Push returns a chain to the driver with written bytes in its writable
// buffers. The used element is written before the index is published with
// an atomic store (release), as spec 2.7.8 requires.
func (q *Queue) Push(head uint16, written uint32) {
	n := q.Size
	e := q.used[4+8*uint64(q.usedIdx%n):]
	binary.LittleEndian.PutUint32(e[0:], uint32(head))
	binary.LittleEndian.PutUint32(e[4:], written)
	q.usedIdx++
	// used is 4-aligned (checked in activate).
	atomic.StoreUint32((*uint32)(unsafe.Pointer(&q.used[0])), uint32(q.usedIdx)<<16|q.noNotify)
}

// spans yields the views of bufs that cover bytes [off, off+n), in order:
// the walk over a chain's buffers that gather, scatter and sub share.
func spans(bufs [][]byte, off, n int) iter.Seq[[]byte] {
	return func(yield func([]byte) bool) {
		off, n := off, n
		for _, b := range bufs {
			if n == 0 {
				return
			}
			if off >= len(b) {
				off -= len(b)
				continue
			}
			b = b[off:]
			off = 0
			if len(b) > n {
				b = b[:n]
			}
			n -= len(b)
			if !yield(b) {
				return
			}
		}
	}
}

// gather copies up to len(dst) bytes from bufs starting at byte offset off.
func gather(dst []byte, bufs [][]byte, off int) int {
	n := 0
	for b := range spans(bufs, off, len(dst)) {
		n += copy(dst[n:], b)
	}
	return n
}

// scatter copies src into bufs starting at byte offset off; it returns the
// number of bytes copied.
func scatter(bufs [][]byte, off int, src []byte) int {
	n := 0
	for b := range spans(bufs, off, len(src)) {
		n += copy(b, src[n:])
	}
	return n
}

// sub returns the views of bufs covering bytes [off, off+n).
func sub(bufs [][]byte, off, n int) [][]byte {
	var out [][]byte
	for b := range spans(bufs, off, n) {
		out = append(out, b)
	}
	return out
}

// serveQueue is the loop of a device with one request queue: on each
// notification it answers the available chains with handle (which returns
// the bytes written to the chain) and then signals the driver once.
//
// It serves at most q.Size chains per notification. A driver can lay one
// device's rings over another's (the transport checks overlap only within
// a device), so that what one device writes makes chains available to the
// other: unbounded, device goroutines could keep each other busy while the
// guest does nothing. The bound costs an honest driver nothing:
// at most q.Size chains are outstanding when a notification is taken (spec
// 2.7.6: the available ring has Size entries), and every chain made
// available after that comes with a notification of its own, as this loop
// never suppresses them.
func serveQueue(ctx context.Context, qs *Queues, i int, handle func(*Chain) (uint32, error)) error {
	q := qs.Q[i]
	budget := q.budget()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-qs.Notify(i):
		}
		served := false
		// ctx is checked per chain: a driver can make the ring look
		// endless (a used ring laid over its own available index), and a
		// reset must never wait on that.
		for n := 0; n < budget && ctx.Err() == nil; n++ {
			c, ok, err := q.Pop(qs.Mem)
			if err != nil {
				return err
			}
			if !ok {
				break
			}
			n, err := handle(&c)
			if err != nil {
				return err
			}
			q.Push(c.Head, n)
			served = true
		}
		if served {
			qs.Signal(i)
		}
	}
}
