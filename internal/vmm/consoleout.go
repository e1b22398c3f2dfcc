package vmm

import (
	"io"
	"sync"
	"time"

	"github.com/microvm-dev/microvm/internal/guard"
	"github.com/microvm-dev/microvm/internal/vmm/layout"
)

// Console output goes from the devices (the UART on a vCPU thread,
// virtio-console on its device goroutine) into a bounded buffer that one
// goroutine drains to Config.Console. A consumer that stops reading
// (stdout a pipe nobody reads) then back-pressures the guest, by design:
// its writer waits for room, as a UART waits for a slow line. It never
// keeps the machine from stopping: once the machine stops, writers no longer
// wait, and what does not fit is dropped and counted.
const (
	// consoleBufMax bounds the console output held for a slow consumer:
	// a Linux boot log (~60 KiB) fits, and it is small next to the VMM's
	// few MiB of RSS.
	consoleBufMax = 256 * layout.KiB
	// consoleChunk is the most the drainer writes at once, so a slow
	// consumer shows progress (a pipe takes 64 KiB).
	consoleChunk = 16 * layout.KiB
	// consoleFlushStall is how long Close waits for the consumer to take
	// more of the remaining output before it gives up on it: a stalled
	// stdout must not hold up --timeout.
	consoleFlushStall = 500 * time.Millisecond
)

type consoleOut struct {
	w io.Writer

	mu       sync.Mutex
	buf      []byte
	busy     bool          // the drainer holds a chunk it is writing
	released bool          // the machine stopped: writers never wait
	closed   bool          // no more output: the drainer exits when empty
	dropped  uint64        // bytes never handed to w
	failed   bool          // w returned an error: the rest is dropped
	kick     chan struct{} // wakes the drainer
	progress chan struct{} // closed and replaced when the buffer shrinks
	// queued and written count the bytes taken into buf and handed to w
	// (or dropped); marks run, in order, once written reaches their at.
	queued, written uint64
	marks           []outMark
	droppedMarks    uint64 // marks refused at maxMarks
	// markMu is held while marks are taken and run, so that they run in
	// order whichever goroutine finds them due.
	markMu sync.Mutex
}

// outMark is a function to run once the output before it is written.
type outMark struct {
	at uint64
	f  func()
}

// newConsoleOut starts the drainer; a panic there (in w, or a bug here) is
// passed to report as an internal error.
func newConsoleOut(w io.Writer, report func(error)) *consoleOut {
	c := &consoleOut{w: w, kick: make(chan struct{}, 1), progress: make(chan struct{})}
	guard.Go("console output", report, c.drain)
	return c
}

// Write buffers b, waiting for room while the machine runs. It never fails:
// console errors must not stop the guest.
func (c *consoleOut) Write(b []byte) (int, error) {
	n := len(b)
	for len(b) > 0 {
		c.mu.Lock()
		if c.closed || c.failed {
			c.dropped += uint64(len(b))
			c.mu.Unlock()
			break
		}
		room := consoleBufMax - len(c.buf)
		if room == 0 {
			if c.released {
				c.dropped += uint64(len(b))
				c.mu.Unlock()
				break
			}
			wait := c.progress
			c.mu.Unlock()
			<-wait
			continue
		}
		k := min(room, len(b))
		c.buf = append(c.buf, b[:k]...)
		c.queued += uint64(k)
		b = b[k:]
		c.mu.Unlock()
		select {
		case c.kick <- struct{}{}:
		default:
		}
	}
	return n, nil
}

func (c *consoleOut) drain() {
	chunk := make([]byte, consoleChunk)
	for {
		c.mu.Lock()
		for len(c.buf) == 0 {
			if c.closed {
				c.mu.Unlock()
				return
			}
			c.mu.Unlock()
			<-c.kick
			c.mu.Lock()
		}
		n := copy(chunk, c.buf)
		// A chunk ends at the next mark: the bytes after it must reach
		// the consumer after the mark has run (the gate opens there).
		if len(c.marks) > 0 && c.marks[0].at > c.written && c.marks[0].at-c.written < uint64(n) {
			n = int(c.marks[0].at - c.written)
		}
		c.buf = append(c.buf[:0], c.buf[n:]...)
		c.busy = true
		c.mu.Unlock()
		_, err := c.w.Write(chunk[:n])
		c.mu.Lock()
		c.busy = false
		c.written += uint64(n)
		if err != nil && !c.failed {
			c.failed = true
			c.dropped += uint64(len(c.buf))
			c.written += uint64(len(c.buf))
			c.buf = nil
		}
		close(c.progress)
		c.progress = make(chan struct{})
		c.mu.Unlock()
		c.runDue(false)
	}
}

// after runs f once every byte written to c before this call has been
// handed to the consumer (or dropped): at once if none is pending, else on
// the drainer's goroutine. The agent's milestones go through it, so that
// the gate in front of `run`'s stdout closes after the command's last
// byte, not while that byte still waits here (the agent drains the
// guest's tty before it reports the exit, so all of it is here by then).
//
// The guest decides how many milestones it sends: while a stalled consumer
// holds output back, at most maxMarks wait, and the ones past that are
// dropped (and counted), so it cannot grow the host without bound.
func (c *consoleOut) after(f func()) {
	c.mu.Lock()
	if len(c.marks) < maxMarks {
		c.marks = append(c.marks, outMark{at: c.queued, f: f})
	} else {
		c.droppedMarks++
	}
	c.mu.Unlock()
	c.runDue(false)
}

// maxMarks bounds the marks waiting for output: a well-behaved guest sends
// three milestones in all.
const maxMarks = 64

// runDue runs, in order, the marks whose output is written, or all of them
// (close: the rest of the output is given up).
func (c *consoleOut) runDue(all bool) {
	c.markMu.Lock()
	defer c.markMu.Unlock()
	c.mu.Lock()
	i := 0
	for i < len(c.marks) && (all || c.marks[i].at <= c.written) {
		i++
	}
	due := c.marks[:i:i]
	c.marks = c.marks[i:]
	c.mu.Unlock()
	for _, m := range due {
		m.f()
	}
}

// release stops writers from waiting: called when the machine stops, so
// that a vCPU or device goroutine blocked on a stalled consumer returns.
func (c *consoleOut) release() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.released {
		c.released = true
		close(c.progress)
		c.progress = make(chan struct{})
	}
}

// close ends the output: it waits while the consumer keeps taking what is
// buffered, gives up after consoleFlushStall without progress or at by (if
// not zero), and returns the bytes that were dropped (by a stalled, failed
// or too slow consumer).
func (c *consoleOut) close(by time.Time) uint64 {
	var late <-chan time.Time
	if !by.IsZero() {
		t := time.NewTimer(time.Until(by))
		defer t.Stop()
		late = t.C
	}
	c.release()
	c.mu.Lock()
	c.closed = true
	select {
	case c.kick <- struct{}{}:
	default:
	}
	for len(c.buf) > 0 || c.busy {
		wait := c.progress
		c.mu.Unlock()
		select {
		case <-wait:
			c.mu.Lock()
			continue
		case <-time.After(consoleFlushStall):
		case <-late:
		}
		c.mu.Lock()
		c.dropped += uint64(len(c.buf))
		c.written += uint64(len(c.buf))
		c.buf = nil
		break
	}
	d := c.dropped
	c.mu.Unlock()
	// Marks whose output was dropped (or is stuck in a stalled
	// consumer's write) still run, in order.
	c.runDue(true)
	return d
}
