package virtio

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// virtio-net (spec 5.1) over a host TAP device. No offloads are offered, so
// frames are at most MTU-sized and need no merging; the 12-byte
// virtio_net_hdr (VERSION_1) is exchanged with the TAP as is
// (IFF_VNET_HDR, TUNSETVNETHDRSZ).
const (
	netFMAC = 1 << 5

	netHdrLen    = 12
	netQueueSize = 256
	netMaxFrame  = 65536 + netHdrLen
	qNetRX       = 0
	qNetTX       = 1
	// netTXRetry is the pause after a full queue's worth of frames in one
	// pass (see transmit).
	netTXRetry = 100 * time.Microsecond
)

// Net is a virtio-net device.
type Net struct {
	tap *os.File
	mac net.HardwareAddr
}

// NewNet returns a virtio-net device on an open TAP (see OpenTap).
func NewNet(tap *os.File, mac net.HardwareAddr) *Net { return &Net{tap: tap, mac: mac} }

func (d *Net) Type() uint32         { return 1 }
func (d *Net) Features() uint64     { return netFMAC }
func (d *Net) QueueSizes() []uint16 { return []uint16{netQueueSize, netQueueSize} }

// ReadConfig serves struct virtio_net_config: mac[6], then status and the
// rest (not offered) as zero.
func (d *Net) ReadConfig(off uint64, b []byte) {
	var cfg [12]byte
	copy(cfg[:], d.mac)
	readConfig(cfg[:], off, b)
}

func (d *Net) WriteConfig(uint64, []byte) {}

// Run moves frames between the TAP and the queues: receive and transmit
// each on their own goroutine, off the vCPU threads.
func (d *Net) Run(ctx context.Context, qs *Queues) error {
	_ = d.tap.SetReadDeadline(time.Time{})
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { _ = d.tap.SetReadDeadline(time.Now()) })
	defer stop()
	return runAll(cancel,
		func() error { return d.receive(ctx, qs) },
		func() error { return d.transmit(ctx, qs) })
}

func (d *Net) receive(ctx context.Context, qs *Queues) error {
	q := qs.Q[qNetRX]
	if q.avail == nil {
		<-ctx.Done()
		return nil
	}
	buf := make([]byte, netMaxFrame)
	for {
		n, err := d.tap.Read(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, unix.EINTR) || errors.Is(err, unix.EAGAIN) {
				continue
			}
			return fmt.Errorf("tap read: %w", err)
		}
		if n < netHdrLen {
			continue
		}
		binary.LittleEndian.PutUint16(buf[10:], 1) // num_buffers
		for {
			c, ok, err := q.Pop(qs.Mem)
			if err != nil {
				return err
			}
			if ok {
				if c.WritableLen() < n {
					q.Push(c.Head, 0) // too small: the frame is dropped
				} else {
					q.Push(c.Head, uint32(scatter(c.W, 0, buf[:n])))
				}
				qs.Signal(qNetRX)
				break
			}
			// No receive buffers: hold the frame until the driver adds some.
			select {
			case <-ctx.Done():
				return nil
			case <-qs.Notify(qNetRX):
			}
		}
	}
}

func (d *Net) transmit(ctx context.Context, qs *Queues) error {
	q := qs.Q[qNetTX]
	buf := make([]byte, netMaxFrame)
	var retry <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-qs.Notify(qNetTX):
		case <-retry:
		}
		retry = nil
		if q.avail == nil {
			continue
		}
		sent := false
		// Drain with notifications off; re-check after turning them back on.
		q.SetNotify(false)
		for n := 0; ctx.Err() == nil; n++ { // see serveQueue
			if n == q.budget() {
				// Frames made available while notifications were off came
				// without one: they are sent after a pause, so that another
				// device writing this ring cannot keep the host busy.
				q.SetNotify(true)
				retry = time.After(netTXRetry)
				break
			}
			c, ok, err := q.Pop(qs.Mem)
			if err != nil {
				return err
			}
			if !ok {
				q.SetNotify(true)
				if !q.Pending() {
					break
				}
				q.SetNotify(false)
				continue
			}
			n := gather(buf, c.R, 0)
			if n > netHdrLen && c.ReadableLen() <= len(buf) {
				// A TAP write error (link down, no buffer space) drops the
				// frame, as a real NIC would.
				_, _ = d.tap.Write(buf[:n])
			}
			q.Push(c.Head, 0)
			sent = true
		}
		if sent {
			qs.Signal(qNetTX)
		}
	}
}

// IFNAMSIZ-1: the longest interface name Linux accepts.
const MaxTapName = unix.IFNAMSIZ - 1

// OpenTap attaches to (or creates) the TAP interface name, set up for
// virtio-net headers. The caller closes it.
func OpenTap(name string) (*os.File, error) {
	if name == "" || len(name) > MaxTapName {
		return nil, fmt.Errorf("tap name %q must be 1 to %d bytes", name, MaxTapName)
	}
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/net/tun: %w", err)
	}
	var ifr struct {
		name  [unix.IFNAMSIZ]byte
		flags uint16
		_     [22]byte
	}
	copy(ifr.name[:], name)
	ifr.flags = unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.TUNSETIFF, uintptr(unsafe.Pointer(&ifr))); e != 0 {
		unix.Close(fd)
		return nil, fmt.Errorf("tap %s: TUNSETIFF: %w", name, e)
	}
	hdr := int32(netHdrLen)
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.TUNSETVNETHDRSZ, uintptr(unsafe.Pointer(&hdr))); e != 0 {
		unix.Close(fd)
		return nil, fmt.Errorf("tap %s: TUNSETVNETHDRSZ: %w", name, e)
	}
	return os.NewFile(uintptr(fd), "tap-"+name), nil
}
