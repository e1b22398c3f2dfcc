package virtio

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
)

// virtio-console with VIRTIO_CONSOLE_F_MULTIPORT (spec 5.3): port 0 is the
// guest console (hvc0), port 1 a named channel (the guest agent's).
const (
	consoleFMultiport = 1 << 1

	// Control events (spec 5.3.6.2).
	conDeviceReady = 0
	conDeviceAdd   = 1
	conPortReady   = 3
	conConsolePort = 4
	conPortOpen    = 6
	conPortName    = 7

	conCtrlLen    = 8 // struct virtio_console_control: le32 id, le16 event, le16 value
	conQueueSize  = 128
	conMaxPending = 1 << 20 // host bytes queued for one port before writers wait
	// conMaxCtrlOut bounds the control replies waiting for a driver buffer
	// on the control receive queue. An honest driver causes at most three
	// per port (DEVICE_ADD, PORT_NAME or CONSOLE_PORT, PORT_OPEN); one that
	// sends requests without ever giving receive buffers gets the rest
	// dropped (and counted) instead of the host keeping them all.
	conMaxCtrlOut = 64
)

// Queue indices (spec 5.3.2): port 0 uses 0 and 1; with MULTIPORT the
// control queues are 2 and 3 and port N uses 2N+2 and 2N+3.
const (
	qCtrlRX = 2 // device to driver
	qCtrlTX = 3 // driver to device
)

func portQueues(port int) (rx, tx int) {
	if port == 0 {
		return 0, 1
	}
	return 2 * (port + 1), 2*(port+1) + 1
}

// ControlMsg is one virtio-console control message.
type ControlMsg struct {
	ID    uint32
	Event uint16
	Value uint16
	Name  string // PORT_NAME only
}

// ParseControl decodes a control message the driver sent.
func ParseControl(b []byte) (ControlMsg, error) {
	if len(b) < conCtrlLen {
		return ControlMsg{}, qerr("control message of %d bytes; need %d", len(b), conCtrlLen)
	}
	m := ControlMsg{
		ID:    binary.LittleEndian.Uint32(b[0:]),
		Event: binary.LittleEndian.Uint16(b[4:]),
		Value: binary.LittleEndian.Uint16(b[6:]),
	}
	if m.Event == conPortName {
		m.Name = string(b[conCtrlLen:])
	}
	return m, nil
}

func (m ControlMsg) bytes() []byte {
	b := make([]byte, conCtrlLen, conCtrlLen+len(m.Name))
	binary.LittleEndian.PutUint32(b[0:], m.ID)
	binary.LittleEndian.PutUint16(b[4:], m.Event)
	binary.LittleEndian.PutUint16(b[6:], m.Value)
	return append(b, m.Name...)
}

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

// Console is a virtio-console device. Without MULTIPORT it has one port,
// the console (hvc0), which the guest driver sets up while probing. With
// MULTIPORT its ports are named channels, which the driver adds later,
// after the control-queue exchange: so the guest console lives on its own
// device and is there before /init opens /dev/console.
type Console struct {
	Ports     []*Port
	multiport bool
	// OnFirstByte, if set, runs once at the guest's first byte on port 0
	// of a console device.
	OnFirstByte func()
	first       sync.Once
	ctrlDropped atomic.Uint64
}

// CtrlDropped is how many control replies were dropped because the driver
// left more than conMaxCtrlOut unread.
func (c *Console) CtrlDropped() uint64 { return c.ctrlDropped.Load() }

// NewConsole returns the guest console device (hvc0), writing to out.
func NewConsole(out io.Writer) *Console {
	return &Console{Ports: []*Port{newPort("", out)}}
}

// NewChannels returns a MULTIPORT device with one named port per name
// (/dev/vportNpM, /sys/class/virtio-ports/vportNpM/name). Outputs are set
// on c.Ports[i].Out.
func NewChannels(names ...string) *Console {
	c := &Console{multiport: true}
	for _, n := range names {
		c.Ports = append(c.Ports, newPort(n, nil))
	}
	return c
}

func (c *Console) Type() uint32 { return 3 }

func (c *Console) Features() uint64 {
	if c.multiport {
		return consoleFMultiport
	}
	return 0
}

func (c *Console) QueueSizes() []uint16 {
	n := 2
	if c.multiport {
		n = 2 * (len(c.Ports) + 1)
	}
	s := make([]uint16, n)
	for i := range s {
		s[i] = conQueueSize
	}
	return s
}

// ReadConfig serves struct virtio_console_config: cols, rows (0: unknown),
// max_nr_ports, emerg_wr.
func (c *Console) ReadConfig(off uint64, d []byte) {
	var cfg [12]byte
	binary.LittleEndian.PutUint32(cfg[4:], uint32(len(c.Ports)))
	readConfig(cfg[:], off, d)
}

func (c *Console) WriteConfig(uint64, []byte) {}

// Close fails pending and future host writes to the ports.
func (c *Console) Close() {
	for _, p := range c.Ports {
		p.close()
	}
}

// Run serves the ports and the control queues until ctx ends.
func (c *Console) Run(ctx context.Context, qs *Queues) error {
	// The helpers below end only when ctx does: runAll cancels it when any
	// of them, or the serving loop, fails or panics.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s := &conState{ctx: ctx, c: c, qs: qs, used: make([]bool, len(qs.Q)), left: make([]int, len(qs.Q))}
	for _, p := range c.Ports {
		p.mu.Lock()
		p.open = false
		p.mu.Unlock()
	}
	if !c.multiport {
		// Without MULTIPORT the port is open from the start (spec 5.3.6).
		c.Ports[0].mu.Lock()
		c.Ports[0].open = true
		c.Ports[0].mu.Unlock()
	}
	// One wake-up channel for every queue and port, merged so that a
	// single goroutine owns all queues.
	wake := make(chan struct{}, 1)
	var srcs []<-chan struct{}
	for i := range qs.Q {
		srcs = append(srcs, qs.Notify(i))
	}
	for _, p := range c.Ports {
		srcs = append(srcs, p.wake)
	}
	serve := func() error {
		for {
			if err := s.step(); err != nil {
				return err
			}
			select {
			case <-ctx.Done():
				return nil
			case <-wake:
			}
		}
	}
	// The helpers are waited for (runAll returns when all have): they read
	// notification channels the next activation will use, and must not take
	// a notification meant for it.
	fs := []func() error{serve}
	for _, src := range srcs {
		fs = append(fs, func() error {
			for {
				select {
				case <-ctx.Done():
					return nil
				case <-src:
					select {
					case wake <- struct{}{}:
					default:
					}
				}
			}
		})
	}
	return runAll(cancel, fs...)
}

type conState struct {
	// ctx is the activation's: every loop that pops chains stops when it
	// ends, because a driver can make a ring look endless (a used ring laid
	// over its own available index) and a reset must never wait on that.
	ctx     context.Context
	c       *Console
	qs      *Queues
	ctrlOut [][]byte // control messages waiting for a driver buffer
	used    []bool   // queues with new used buffers since the last signal
	left    []int    // chains each queue may still serve in this step
}

// pop takes the next chain of queue i, at most Q[i].budget() per step (one
// step per wake-up): see serveQueue for why.
func (s *conState) pop(i int) (Chain, bool, error) {
	if s.left[i] == 0 {
		return Chain{}, false, nil
	}
	c, ok, err := s.qs.Q[i].Pop(s.qs.Mem)
	if ok {
		s.left[i]--
	}
	return c, ok, err
}

// step does all the work currently possible, then signals the driver.
func (s *conState) step() error {
	for i, q := range s.qs.Q {
		s.left[i] = q.budget()
	}
	for progress := true; progress && s.ctx.Err() == nil; {
		progress = false
		for _, f := range []func() (bool, error){s.control, s.transmit, s.receive, s.flushControl} {
			p, err := f()
			if err != nil {
				return err
			}
			progress = progress || p
		}
	}
	for i, u := range s.used {
		if u {
			s.qs.Signal(i)
			s.used[i] = false
		}
	}
	return nil
}

func (s *conState) ready(i int) bool { return s.qs.Q[i].avail != nil }

// control handles the driver's control messages (spec 5.3.6.2).
func (s *conState) control() (bool, error) {
	if !s.c.multiport || !s.ready(qCtrlTX) {
		return false, nil
	}
	q := s.qs.Q[qCtrlTX]
	did := false
	for s.ctx.Err() == nil {
		ch, ok, err := s.pop(qCtrlTX)
		if err != nil || !ok {
			return did, err
		}
		var b [conCtrlLen]byte
		n := gather(b[:], ch.R, 0)
		m, err := ParseControl(b[:n])
		if err != nil {
			return did, err
		}
		s.handle(m)
		q.Push(ch.Head, 0)
		s.used[qCtrlTX], did = true, true
	}
	return did, nil
}

func (s *conState) handle(m ControlMsg) {
	send := func(id uint32, ev uint16, val uint16, name string) {
		if len(s.ctrlOut) >= conMaxCtrlOut {
			s.c.ctrlDropped.Add(1)
			return
		}
		s.ctrlOut = append(s.ctrlOut, ControlMsg{ID: id, Event: ev, Value: val, Name: name}.bytes())
	}
	switch m.Event {
	case conDeviceReady:
		if m.Value == 1 {
			for id := range s.c.Ports {
				send(uint32(id), conDeviceAdd, 0, "")
			}
		}
	case conPortReady:
		if m.ID >= uint32(len(s.c.Ports)) || m.Value != 1 {
			return
		}
		if name := s.c.Ports[m.ID].Name; name != "" {
			send(m.ID, conPortName, 0, name)
		} else {
			send(m.ID, conConsolePort, 1, "")
		}
		// The host end is always connected.
		send(m.ID, conPortOpen, 1, "")
	case conPortOpen:
		if m.ID < uint32(len(s.c.Ports)) {
			p := s.c.Ports[m.ID]
			p.mu.Lock()
			p.open = m.Value == 1
			p.mu.Unlock()
		}
	}
}

// flushControl gives queued control messages to the driver.
func (s *conState) flushControl() (bool, error) {
	if len(s.ctrlOut) == 0 || !s.ready(qCtrlRX) {
		return false, nil
	}
	q := s.qs.Q[qCtrlRX]
	did := false
	for len(s.ctrlOut) > 0 && s.ctx.Err() == nil {
		ch, ok, err := s.pop(qCtrlRX)
		if err != nil || !ok {
			return did, err
		}
		msg := s.ctrlOut[0]
		if ch.WritableLen() < len(msg) {
			return did, qerr("control receive buffer of %d bytes is too small for %d", ch.WritableLen(), len(msg))
		}
		q.Push(ch.Head, uint32(scatter(ch.W, 0, msg)))
		s.ctrlOut = s.ctrlOut[1:]
		s.used[qCtrlRX], did = true, true
	}
	return did, nil
}

// transmit passes what the guest wrote on each port to the host.
func (s *conState) transmit() (bool, error) {
	did := false
	for port := range s.c.Ports {
		_, qi := portQueues(port)
		if !s.ready(qi) {
			continue
		}
		q := s.qs.Q[qi]
		for s.ctx.Err() == nil {
			ch, ok, err := s.pop(qi)
			if err != nil {
				return did, err
			}
			if !ok {
				break
			}
			if port == 0 && !s.c.multiport && s.c.OnFirstByte != nil && ch.ReadableLen() > 0 {
				s.c.first.Do(s.c.OnFirstByte)
			}
			for _, b := range ch.R {
				if _, err := s.c.Ports[port].Out.Write(b); err != nil {
					return did, fmt.Errorf("console port %d output: %w", port, err)
				}
			}
			q.Push(ch.Head, 0)
			s.used[qi], did = true, true
		}
	}
	return did, nil
}

// receive gives pending host bytes to the guest.
func (s *conState) receive() (bool, error) {
	did := false
	for port, p := range s.c.Ports {
		qi, _ := portQueues(port)
		if !s.ready(qi) {
			continue
		}
		q := s.qs.Q[qi]
		for p.Unread() > 0 && s.ctx.Err() == nil {
			ch, ok, err := s.pop(qi)
			if err != nil {
				return did, err
			}
			if !ok {
				break
			}
			q.Push(ch.Head, uint32(p.take(ch.W)))
			s.used[qi], did = true, true
		}
	}
	return did, nil
}
