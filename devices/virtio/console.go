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
	conQueueSize      = 128
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
	// ctrlOut are control messages waiting for a driver buffer. They are
	// the device goroutine's, or SaveState's and RestoreState's while none
	// runs; they outlive an activation that a snapshot pauses.
	ctrlOut [][]byte
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
	if !qs.Resumed {
		c.ctrlOut = nil
		for i, p := range c.Ports {
			// Without MULTIPORT the port is open from the start (spec
			// 5.3.6); with it, the driver opens ports through the control
			// queue.
			p.setOpen(i == 0 && !c.multiport)
		}
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
	ctx  context.Context
	c    *Console
	qs   *Queues
	used []bool // queues with new used buffers since the last signal
	left []int  // chains each queue may still serve in this step
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
