package virtio

import (
	"io"
	"sync"
)

// conMaxPending is how many host bytes are queued for one port before
// writers wait.
const conMaxPending = 1 << 20

// Port is the host end of one console port.
type Port struct {
	// Name is announced to the guest (PORT_NAME); empty for the console.
	Name string
	// Out receives what the guest writes. Writes happen on the device
	// goroutine; a slow writer slows the guest, nothing is dropped.
	Out io.Writer

	mu     sync.Mutex
	in     []byte        // host bytes not yet given to the guest
	wake   chan struct{} // kicks the device when in grows
	space  chan struct{} // closed and replaced when in shrinks
	open   bool          // guest has the port open
	closed bool
}

func newPort(name string, out io.Writer) *Port {
	if out == nil {
		out = io.Discard
	}
	return &Port{Name: name, Out: out, wake: make(chan struct{}, 1), space: make(chan struct{})}
}

// Write queues host bytes for the guest. It blocks while more than
// conMaxPending bytes wait, and fails once the device is closed.
func (p *Port) Write(b []byte) (int, error) {
	n := 0
	for len(b) > 0 {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return n, io.ErrClosedPipe
		}
		room := conMaxPending - len(p.in)
		if room <= 0 {
			sp := p.space
			p.mu.Unlock()
			<-sp
			continue
		}
		k := min(room, len(b))
		p.in = append(p.in, b[:k]...)
		p.mu.Unlock()
		b, n = b[k:], n+k
		select {
		case p.wake <- struct{}{}:
		default:
		}
	}
	return n, nil
}

// Unread is how many host bytes wait for the guest to take them.
func (p *Port) Unread() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.in)
}

// GuestOpen reports whether the guest has the port open.
func (p *Port) GuestOpen() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.open
}

// setOpen records whether the guest has the port open.
func (p *Port) setOpen(open bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.open = open
}

// take moves up to the writable length of bufs from in into bufs.
func (p *Port) take(bufs [][]byte) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := scatter(bufs, 0, p.in)
	if n > 0 {
		p.in = p.in[n:]
		close(p.space)
		p.space = make(chan struct{})
	}
	return n
}

func (p *Port) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.closed {
		p.closed = true
		close(p.space)
	}
}
