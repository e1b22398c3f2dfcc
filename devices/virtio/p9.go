package virtio

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/hugelgupf/p9/p9"
	"github.com/microvm-dev/microvm/internal/snapshot"
)

// virtio-9p, the 9P transport (virtio device ID 9, spec 5 table; its layout
// is Linux's include/uapi/linux/virtio_9p.h and QEMU's virtio-9p-device):
// one request queue; each descriptor chain carries one whole 9P2000.L
// T-message in its readable part and gets the R-message with the same tag
// in its writable part. The config space is struct virtio_9p_config
// { le16 tag_len; u8 tag[tag_len]; }, present when VIRTIO_9P_MOUNT_TAG is
// offered: the guest mounts the share by that tag
// (mount -t 9p -o trans=virtio TAG DIR).
//
// The 9P codec and the fid bookkeeping are github.com/hugelgupf/p9's
// server, which reads T-messages from a stream and writes R-messages to
// one. This file is only the framing between chains and that stream, and
// it does the checks that keep a hostile driver from desynchronising the
// stream, deadlocking the server or making the host buffer without bound.
const (
	p9FMountTag = 1 << 0
	p9QueueSize = MaxQueueSize

	// P9MaxMsg is the largest 9P message the device takes: Tversion's
	// msize is lowered to it. Linux's virtio transport cannot use more
	// than about 500 KiB anyway (VIRTQUEUE_NUM pages).
	P9MaxMsg = 512 << 10
	// p9MaxInFlight bounds the requests the server works on at once (each
	// is a goroutine and up to two P9MaxMsg buffers); further chains wait
	// in the ring until a reply frees a slot.
	p9MaxInFlight = 16
	// P9MaxTag is the longest mount tag (QEMU's limit is the same).
	P9MaxTag = 255

	p9HdrLen       = 7 // size[4] type[1] tag[2] (9P2000 intro(5))
	p9MinReply     = 11
	p9Tversion     = 100
	p9Tflush       = 108
	p9Txattrcreate = 32
	// p9MaxXattr is Linux's XATTR_SIZE_MAX: no honest driver announces a
	// larger value, and the server buffers what is announced.
	p9MaxXattr = 64 << 10
	p9NoTag    = 0xffff
)

// NineP is a virtio-9p device serving the file tree attacher gives.
type NineP struct {
	tag      string
	attacher p9.Attacher
	// Trace, if set, gets every 9P message in and out (p9's server log):
	// for debugging a guest's use of a share, never on by default.
	Trace func(format string, a ...any)

	// session is set once the driver sends a request to this activation's
	// server (Linux does at mount: Tversion, then Tattach), and cleared
	// only by a reset, which gives the next activation a fresh server. The
	// server's fids are the guest's open files and cwd on the share, and
	// the server keeps them in memory a snapshot cannot carry: a machine
	// whose 9P device has a session is refused (CanSnapshot). An unmount
	// does not clear it: it clunks the fids but leaves no sign a device
	// sees, so the refusal errs on the side of the guest's files.
	session atomic.Bool
}

// traceLog is p9's logger interface over a Trace func.
type traceLog func(format string, a ...any)

func (l traceLog) Printf(format string, a ...any) { l(format, a...) }

// NewNineP returns a 9P device whose mount tag is tag (1 to P9MaxTag
// bytes; the caller checks it).
func NewNineP(tag string, attacher p9.Attacher) *NineP {
	return &NineP{tag: tag, attacher: attacher}
}

func (d *NineP) Type() uint32               { return 9 }
func (d *NineP) Features() uint64           { return p9FMountTag }
func (d *NineP) QueueSizes() []uint16       { return []uint16{p9QueueSize} }
func (d *NineP) WriteConfig(uint64, []byte) {}

func (d *NineP) ReadConfig(off uint64, data []byte) {
	cfg := make([]byte, 2+len(d.tag))
	binary.LittleEndian.PutUint16(cfg, uint16(len(d.tag)))
	copy(cfg[2:], d.tag)
	readConfig(cfg, off, data)
}

// Run serves the request queue with a fresh 9P server: a reset drops every
// fid, as the driver expects after re-initialising the device.
func (d *NineP) Run(ctx context.Context, qs *Queues) error {
	if !qs.Resumed {
		d.session.Store(false)
	}
	c := newP9Conn()
	ended := make(chan struct{})
	var opts []p9.ServerOpt
	if d.Trace != nil {
		opts = append(opts, p9.WithServerLogger(traceLog(d.Trace)))
	}
	srv := p9.NewServer(d.attacher, opts...)
	go func() {
		defer close(ended)
		_ = srv.Handle(p9Reader{c}, p9Writer{c})
	}()
	// The server returns once its handlers are done; they touch host files
	// only (no FIFO, device or socket is ever opened), so this is bounded.
	defer func() { c.shutdown(); <-ended }()

	q := qs.Q[0]
	budget := q.budget()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-ended:
			if err := c.failure(); err != nil {
				return err
			}
			return qerr("9p: the driver's messages ended the 9P connection")
		case <-qs.Notify(0):
		case <-c.replied:
		}
		if err := c.failure(); err != nil {
			return err
		}
		if c.complete(q) {
			qs.Signal(0)
		}
		// As in serveQueue: at most budget chains per wake-up, and ctx
		// checked for each.
		for n := 0; n < budget && ctx.Err() == nil && c.room(); n++ {
			ch, ok, err := q.Pop(qs.Mem)
			if err != nil {
				return err
			}
			if !ok {
				break
			}
			d.session.Store(true) // before the server sees it: CanSnapshot may look any time
			if err := c.submit(ch); err != nil {
				return err
			}
		}
	}
}

// CanSnapshot refuses while the driver has a 9P session with the device
// (see session): restored, the guest would hold fids no server knows.
func (d *NineP) CanSnapshot() error {
	if d.session.Load() {
		return fmt.Errorf("virtio-9p share %q is in use by the guest (a 9P session with attached fids): a machine with a 9p share can be snapshotted only before the guest mounts it", d.tag)
	}
	return nil
}

const p9StateVersion = 1

// SaveState records the mount tag: with no session there is nothing else
// (the fids, the negotiated msize and the open files all belong to a
// session).
func (d *NineP) SaveState() (snapshot.DeviceState, error) {
	if err := d.CanSnapshot(); err != nil {
		return snapshot.DeviceState{}, err
	}
	var e snapshot.Encoder
	e.String(d.tag)
	return snapshot.DeviceState{Version: p9StateVersion, Data: e.Bytes()}, nil
}

func (d *NineP) RestoreState(st snapshot.DeviceState) error {
	dec, err := st.Decoder(p9StateVersion, "virtio-9p")
	if err != nil {
		return err
	}
	tag := dec.String(P9MaxTag)
	if err := dec.Finish(); err != nil {
		return fmt.Errorf("virtio-9p: %w", err)
	}
	if tag != d.tag {
		return fmt.Errorf("virtio-9p: the snapshot's share has tag %q, this one %q", tag, d.tag)
	}
	return nil
}

// p9Req is a chain whose request is with the server.
type p9Req struct {
	chain Chain
	typ   byte
	off   int // reply bytes written so far (header included)
}

// p9Conn is the stream pair the server sees, and the tag → chain table.
type p9Conn struct {
	in      chan []byte   // requests for the server, in order
	quit    chan struct{} // closed by shutdown: the reader sees EOF
	replied chan struct{} // a reply completed (or the writer failed)
	cur     []byte        // reader: the rest of the request being read

	mu       sync.Mutex
	closed   bool
	fail     error
	pending  map[uint16]*p9Req // by tag: sent to the server, no reply yet
	inFlight int               // pending + being written + done
	hdr      [p9HdrLen]byte    // writer: the reply header so far
	hdrN     int
	wr       *p9Req // writer: the reply being written
	left     int    // its bytes still to come
	done     []*p9Req
}

func newP9Conn() *p9Conn {
	return &p9Conn{
		in:      make(chan []byte, p9MaxInFlight),
		quit:    make(chan struct{}),
		replied: make(chan struct{}, 1),
		pending: map[uint16]*p9Req{},
	}
}

func (c *p9Conn) wake() {
	select {
	case c.replied <- struct{}{}:
	default:
	}
}

func (c *p9Conn) room() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.inFlight < p9MaxInFlight
}

func (c *p9Conn) failure() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.fail
}

// failLocked records a driver error; later replies are dropped.
func (c *p9Conn) failLocked(err error) {
	if c.fail == nil {
		c.fail = err
	}
	c.closed = true
	c.wake()
}

func (c *p9Conn) shutdown() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	close(c.quit)
}

// submit checks one chain's request and hands a copy of it to the server.
// The copy is taken once, so the driver cannot change the bytes between the
// checks and the decoding.
func (c *p9Conn) submit(ch Chain) error {
	var hdr [p9HdrLen]byte
	rl := ch.ReadableLen()
	if gather(hdr[:], ch.R, 0) < p9HdrLen {
		return qerr("9p: request %d has %d readable bytes, less than a 9P header", ch.Head, rl)
	}
	size := binary.LittleEndian.Uint32(hdr[:])
	switch {
	case size < p9HdrLen || uint64(size) > uint64(rl):
		return qerr("9p: request %d says %d bytes in %d readable", ch.Head, size, rl)
	case size > P9MaxMsg:
		return qerr("9p: request %d of %d bytes is over the %d-byte msize", ch.Head, size, P9MaxMsg)
	case ch.WritableLen() < p9MinReply:
		return qerr("9p: request %d has %d writable bytes, no room for a reply", ch.Head, ch.WritableLen())
	}
	msg := make([]byte, size)
	gather(msg, ch.R, 0)
	binary.LittleEndian.PutUint32(msg, size) // what was checked, whatever the driver wrote since
	typ, tag := msg[4], binary.LittleEndian.Uint16(msg[5:])

	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.checkLocked(ch.Head, msg, typ, tag); err != nil {
		return err
	}
	c.pending[tag] = &p9Req{chain: ch, typ: typ}
	c.inFlight++
	c.in <- msg // room() kept inFlight below the channel's capacity
	return nil
}

// checkLocked refuses what the server would handle by hanging or racing:
//   - a tag already in flight: the server drops the second request unanswered;
//   - a Tflush of itself or of another Tflush: the server's Tflush waits for
//     the old tag, so these wait forever (Linux never flushes a flush);
//   - a Tversion beside any other request: the server renegotiates without
//     locks (Linux sends it alone, first, and waits for Rversion);
//   - a Txattrcreate announcing more than XATTR_SIZE_MAX: the server
//     collects that many bytes from the Twrites that follow.
//
// Tversion's msize is lowered to P9MaxMsg (9P2000 version(5): the server
// answers with at most the client's msize).
func (c *p9Conn) checkLocked(head uint16, msg []byte, typ byte, tag uint16) error {
	if _, dup := c.pending[tag]; dup {
		return qerr("9p: request %d reuses tag %d, which is in flight", head, tag)
	}
	if typ == p9Tversion && c.inFlight > 0 {
		return qerr("9p: request %d: Tversion while %d requests are in flight", head, c.inFlight)
	}
	for _, r := range c.pending {
		if r.typ == p9Tversion {
			return qerr("9p: request %d sent before the Rversion", head)
		}
	}
	switch typ {
	case p9Tflush:
		if len(msg) >= p9HdrLen+2 {
			old := binary.LittleEndian.Uint16(msg[p9HdrLen:])
			if r := c.pending[old]; old == tag || (r != nil && r.typ == p9Tflush) {
				return qerr("9p: request %d flushes tag %d, a flush", head, old)
			}
		}
	case p9Txattrcreate:
		// fid[4] name[s] attr_size[8] flags[4] (9P2000.L xattrcreate)
		if b := msg[p9HdrLen:]; len(b) >= 6 {
			if n := 6 + int(binary.LittleEndian.Uint16(b[4:])); len(b) >= n+8 && binary.LittleEndian.Uint64(b[n:]) > p9MaxXattr {
				return qerr("9p: request %d announces an xattr over %d bytes", head, p9MaxXattr)
			}
		}
	case p9Tversion:
		if len(msg) >= p9HdrLen+4 && binary.LittleEndian.Uint32(msg[p9HdrLen:]) > P9MaxMsg {
			binary.LittleEndian.PutUint32(msg[p9HdrLen:], P9MaxMsg)
		}
	}
	return nil
}

// complete returns the answered chains to the driver (device goroutine
// only, like Pop). It reports whether there were any.
func (c *p9Conn) complete(q *Queue) bool {
	c.mu.Lock()
	done := c.done
	c.done = nil
	c.inFlight -= len(done)
	c.mu.Unlock()
	for _, r := range done {
		q.Push(r.chain.Head, uint32(r.off))
	}
	return len(done) > 0
}

// write takes the server's reply stream: a 7-byte header naming the size
// and the tag, then the rest, scattered straight into that tag's chain.
// The server writes one reply at a time (its send lock).
func (c *p9Conn) write(p []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for len(p) > 0 && !c.closed {
		if c.wr == nil {
			k := copy(c.hdr[c.hdrN:], p)
			c.hdrN, p = c.hdrN+k, p[k:]
			if c.hdrN < p9HdrLen {
				return
			}
			c.hdrN = 0
			size := int(binary.LittleEndian.Uint32(c.hdr[:]))
			tag := binary.LittleEndian.Uint16(c.hdr[5:])
			r := c.pending[tag]
			if r == nil || size < p9HdrLen {
				// Only a request the server could not decode is answered
				// without its tag (with NOTAG).
				c.failLocked(qerr("9p: a request could not be decoded (reply type %d, tag %d)", c.hdr[4], tag))
				return
			}
			delete(c.pending, tag)
			if size > r.chain.WritableLen() {
				c.failLocked(qerr("9p: a %d-byte reply does not fit the %d writable bytes of request %d", size, r.chain.WritableLen(), r.chain.Head))
				return
			}
			c.wr, c.left = r, size-p9HdrLen
			r.off = scatter(r.chain.W, 0, c.hdr[:])
		} else {
			k := min(len(p), c.left)
			c.wr.off += scatter(c.wr.chain.W, c.wr.off, p[:k])
			c.left, p = c.left-k, p[k:]
		}
		if c.wr != nil && c.left == 0 {
			c.done = append(c.done, c.wr)
			c.wr = nil
			c.wake()
		}
	}
}

// read gives the server the next request's bytes; EOF once shut down.
func (c *p9Conn) read(p []byte) (int, error) {
	for len(c.cur) == 0 {
		select {
		case c.cur = <-c.in:
		case <-c.quit:
			return 0, io.EOF
		}
	}
	n := copy(p, c.cur)
	c.cur = c.cur[n:]
	return n, nil
}

// p9Reader and p9Writer are the server's ends; closing them is the
// device's business (shutdown), so Close does nothing.
type (
	p9Reader struct{ c *p9Conn }
	p9Writer struct{ c *p9Conn }
)

func (r p9Reader) Read(p []byte) (int, error)  { return r.c.read(p) }
func (r p9Reader) Close() error                { return nil }
func (w p9Writer) Write(p []byte) (int, error) { w.c.write(p); return len(p), nil }
func (w p9Writer) Close() error                { return nil }
