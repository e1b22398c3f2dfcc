package virtio

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/hugelgupf/p9/p9"
	"github.com/microvm-dev/microvm/devices/virtio/p9fs"
)

// The 9P test layout: a bigger RAM than tRAM, the queue where the other
// tests have it, requests at p9Req and replies at p9Rep.
const (
	p9RAM   = 0x40000
	p9ReqAt = 0x10000
	p9RepAt = 0x20000
	p9Buf   = 0x10000
)

// p9Driver is a virtio-9p driver for p9's client: the client's T-messages
// become chains (request readable, reply buffer writable), the replies
// come back as the client's stream. One request at a time.
type p9Driver struct {
	t   testing.TB
	tr  *MMIO
	r   ram
	in  []byte
	out chan []byte
	cur []byte

	closeOnce sync.Once
	closed    atomic.Bool // p9's client finalizers may still send Tclunks
}

func newP9Driver(t testing.TB, dev Device) *p9Driver {
	r := make(ram, p9RAM)
	tr := NewMMIO("virtio-9p test", dev, r, &fakeIRQ{}, func(string, ...any) {}, failOnPanic(t))
	if !driverInit(tr, FeatureVersion1|p9FMountTag) {
		t.Fatal("FEATURES_OK refused")
	}
	return &p9Driver{t: t, tr: tr, r: r, out: make(chan []byte, 64)}
}

// chain offers one chain of a request and a reply buffer of n bytes and
// waits for it to come back, or for NEEDS_RESET; it returns the reply.
func (d *p9Driver) chain(req []byte, n uint32) ([]byte, bool) {
	want := usedIdx(d.r, tUsed) + 1
	copy(d.r[p9ReqAt:], req)
	putDescs(d.r, tDesc, []desc{{p9ReqAt, uint32(len(req)), descFNext, 1}, {p9RepAt, n, descFWrite, 0}})
	offer(d.r, 0)
	d.tr.Notify(0)
	var ok bool
	waitFor(d.t, "the reply or NEEDS_RESET", func() bool {
		ok = usedIdx(d.r, tUsed) == want
		return ok || reg32(d.tr, regStatus)&StatusNeedsReset != 0
	})
	if !ok {
		return nil, false
	}
	e := d.r[tUsed+4+8*uint64((want-1)%tSize):]
	l := binary.LittleEndian.Uint32(e[4:])
	return bytes.Clone(d.r[p9RepAt : p9RepAt+l]), true
}

func (d *p9Driver) Write(p []byte) (int, error) {
	if d.closed.Load() {
		return 0, io.ErrClosedPipe
	}
	d.in = append(d.in, p...)
	for len(d.in) >= 4 {
		size := int(binary.LittleEndian.Uint32(d.in))
		if len(d.in) < size {
			break
		}
		rep, ok := d.chain(d.in[:size], p9Buf)
		if !ok {
			return 0, errors.New("device needs reset")
		}
		d.in = d.in[size:]
		d.out <- rep
	}
	return len(p), nil
}

func (d *p9Driver) Read(p []byte) (int, error) {
	for len(d.cur) == 0 {
		b, ok := <-d.out
		if !ok {
			return 0, io.EOF
		}
		d.cur = b
	}
	n := copy(p, d.cur)
	d.cur = d.cur[n:]
	return n, nil
}

func (d *p9Driver) Close() error {
	d.closed.Store(true)
	d.closeOnce.Do(func() { close(d.out) })
	return nil
}

func (d *p9Driver) needsReset() bool { return reg32(d.tr, regStatus)&StatusNeedsReset != 0 }

func p9Share(t testing.TB, ro bool) (*p9fs.Share, string) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "hello"), []byte("hello over virtio\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := p9fs.Open(dir, ro)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, dir
}

func TestNinePConfig(t *testing.T) {
	d := NewNineP("microvm0", nil)
	b := make([]byte, 12)
	d.ReadConfig(0, b)
	if binary.LittleEndian.Uint16(b) != 8 || string(b[2:10]) != "microvm0" || b[10] != 0 {
		t.Errorf("config space %q", b)
	}
	if d.Type() != 9 || d.Features()&p9FMountTag == 0 {
		t.Error("not a virtio-9p device with a mount tag")
	}
}

// TestNinePOverVirtqueue runs p9's client through the transport and the
// backend: read a host file, write one the host then sees.
func TestNinePOverVirtqueue(t *testing.T) {
	s, dir := p9Share(t, false)
	drv := newP9Driver(t, NewNineP("t", s))
	defer drv.tr.Close()
	c, err := p9.NewClient(drv, p9.WithMessageSize(p9Buf))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	root, err := c.Attach("")
	if err != nil {
		t.Fatal(err)
	}
	_, f, err := root.Walk([]string{"hello"})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.Open(p9.ReadOnly); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 100)
	n, _ := f.ReadAt(buf, 0)
	if string(buf[:n]) != "hello over virtio\n" {
		t.Errorf("read %q", buf[:n])
	}
	_, nd, _ := root.Walk(nil)
	nf, _, _, err := nd.Create("new", p9.WriteOnly, 0o644, p9.NoUID, p9.NoGID)
	if err != nil {
		t.Fatal(err)
	}
	big := bytes.Repeat([]byte("0123456789abcdef"), 8192) // 128 KiB: several Twrites
	for off := 0; off < len(big); {
		n, err := nf.WriteAt(big[off:], int64(off))
		if err != nil {
			t.Fatal(err)
		}
		off += n
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "new")); !bytes.Equal(b, big) {
		t.Errorf("host sees %d bytes, want %d", len(b), len(big))
	}
	if drv.needsReset() {
		t.Error("an honest client put the device into NEEDS_RESET")
	}
}

// msg builds a raw 9P message: size[4] type[1] tag[2] body.
func msg(typ byte, tag uint16, body ...byte) []byte {
	b := binary.LittleEndian.AppendUint32(nil, uint32(7+len(body)))
	b = append(b, typ)
	b = binary.LittleEndian.AppendUint16(b, tag)
	return append(b, body...)
}

// tversion is Linux's first message: Tversion, NOTAG, msize, "9P2000.L".
func tversion(msize uint32) []byte {
	body := binary.LittleEndian.AppendUint32(nil, msize)
	body = binary.LittleEndian.AppendUint16(body, 8)
	return msg(p9Tversion, p9NoTag, append(body, "9P2000.L"...)...)
}

// TestNinePHostileFraming: each framing violation puts the device into
// NEEDS_RESET, promptly, without a panic; a reset brings it back.
func TestNinePHostileFraming(t *testing.T) {
	s, _ := p9Share(t, true)
	xattr := binary.LittleEndian.AppendUint32(nil, 1)
	xattr = binary.LittleEndian.AppendUint16(xattr, 6)
	xattr = append(xattr, "user.x"...)
	xattr = binary.LittleEndian.AppendUint64(xattr, 1<<40)
	xattr = binary.LittleEndian.AppendUint32(xattr, 0)
	lie := msg(p9Tversion, 1, 0, 0, 1, 0)
	binary.LittleEndian.PutUint32(lie, 4096) // says 4096 bytes, has 11
	for _, c := range []struct {
		name string
		req  []byte
		w    uint32
		why  string
	}{
		{"short header", []byte{1, 2, 3}, 64, "less than a 9P header"},
		{"size over the chain", lie, 64, "says 4096"},
		{"size under a header", []byte{3, 0, 0, 0, 100, 0, 0}, 64, "says 3"},
		{"no room for a reply", tversion(8192), 4, "no room"},
		{"flush of itself", msg(p9Tflush, 5, 5, 0), 64, "flushes tag 5"},
		{"huge xattr", msg(p9Txattrcreate, 2, xattr...), 64, "xattr over"},
		{"undecodable", msg(110, 3, 1), 64, "could not be decoded"}, // Twalk cut short
		{"reply does not fit", tversion(8192), 12, "does not fit"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var logged strings.Builder
			var mu sync.Mutex
			r := make(ram, p9RAM)
			tr := NewMMIO("virtio-9p test", NewNineP("t", s), r, &fakeIRQ{}, func(f string, a ...any) {
				mu.Lock()
				fmt.Fprintf(&logged, f, a...)
				mu.Unlock()
			}, failOnPanic(t))
			defer returns(t, "Close", tr.Close)
			d := &p9Driver{t: t, tr: tr, r: r}
			if !driverInit(tr, FeatureVersion1) {
				t.Fatal("init")
			}
			if _, ok := d.chain(c.req, c.w); ok {
				t.Fatal("served")
			}
			mu.Lock()
			line := logged.String()
			mu.Unlock()
			if !strings.Contains(line, c.why) {
				t.Errorf("log %q does not say %q", line, c.why)
			}
			returns(t, "reset", func() { set32(tr, regStatus, 0) })
			clear(r)
			if !driverInit(tr, FeatureVersion1) {
				t.Fatal("re-init")
			}
			if rep, ok := d.chain(tversion(8192), 64); !ok || len(rep) < 7 || rep[4] != p9Tversion+1 {
				t.Errorf("after the reset Tversion got %v %v", rep, ok)
			}
		})
	}
}

// TestNinePMsizeLowered: a Tversion asking for more than P9MaxMsg gets it.
func TestNinePMsizeLowered(t *testing.T) {
	s, _ := p9Share(t, true)
	d := newP9Driver(t, NewNineP("t", s))
	defer d.tr.Close()
	rep, ok := d.chain(tversion(64<<20), 64)
	if !ok || len(rep) < 11 {
		t.Fatalf("Rversion %v %v", rep, ok)
	}
	if m := binary.LittleEndian.Uint32(rep[7:]); m != P9MaxMsg {
		t.Errorf("msize %d, want %d", m, P9MaxMsg)
	}
}

// str is a 9P string: size[2] then the bytes.
func str(s string) []byte { return append(binary.LittleEndian.AppendUint16(nil, uint16(len(s))), s...) }

func le32(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }

// TestNinePXattrWalk: Txattrwalk answers a missing attribute with ENODATA
// (overlayfs needs it of a lower layer) and clunking the xattr fid leaves
// the walked fid working (third_party/p9's patches).
func TestNinePXattrWalk(t *testing.T) {
	s, _ := p9Share(t, true)
	d := newP9Driver(t, NewNineP("t", s))
	defer d.tr.Close()
	rpc := func(req []byte, want byte) []byte {
		t.Helper()
		rep, ok := d.chain(req, p9Buf)
		if !ok || len(rep) < 7 || rep[4] != want {
			t.Fatalf("request type %d: reply %v (ok %v), want type %d", req[4], rep, ok, want)
		}
		return rep
	}
	rpc(tversion(8192), p9Tversion+1)
	attach := append(append(append(append(le32(1), le32(^uint32(0))...), str("root")...), str("")...), le32(0)...)
	rpc(msg(104, 1, attach...), 105)
	walk := append(append(le32(1), le32(2)...), append([]byte{1, 0}, str("hello")...)...)
	rpc(msg(110, 1, walk...), 111)
	xw := append(append(le32(2), le32(3)...), str("trusted.overlay.metacopy")...)
	if rep := rpc(msg(30, 1, xw...), 7); binary.LittleEndian.Uint32(rep[7:]) != 61 {
		t.Errorf("missing xattr: errno %d, want ENODATA (61)", binary.LittleEndian.Uint32(rep[7:]))
	}
	xl := append(append(le32(2), le32(3)...), str("")...) // list: empty, 0 bytes
	if rep := rpc(msg(30, 1, xl...), 31); len(rep) < 15 || binary.LittleEndian.Uint64(rep[7:]) != 0 {
		t.Errorf("xattr list of a file without any: %v, want size 0", rep)
	}
	rpc(msg(120, 1, le32(3)...), 121) // clunk the xattr fid
	getattr := append(le32(2), binary.LittleEndian.AppendUint64(nil, 0x3fff)...)
	rpc(msg(24, 1, getattr...), 25) // the walked fid still works
}

// TestNinePSnapshot: a 9P device the guest has not used yet is saved and
// restored (its tag checked); once the driver has a session (Tversion,
// Tattach: a mount), the device refuses, naming 9p and the share, both
// before the pause (CanSnapshot) and in SaveState; a reset ends the
// session, and with it the refusal.
func TestNinePSnapshot(t *testing.T) {
	s, _ := p9Share(t, false)
	drv := newP9Driver(t, NewNineP("share0", s))
	defer drv.tr.Close()
	if err := drv.tr.CanSnapshot(); err != nil {
		t.Fatalf("an unused 9p device refuses a snapshot: %v", err)
	}
	drv.tr.Pause()
	st, err := drv.tr.SaveState()
	drv.tr.Resume()
	if err != nil {
		t.Fatalf("save an unused 9p device: %v", err)
	}
	for _, c := range []struct {
		tag string
		ok  bool
	}{{"share0", true}, {"other", false}} {
		tr := NewMMIO("virtio-9p restored", NewNineP(c.tag, s), make(ram, p9RAM), &fakeIRQ{}, t.Logf, failOnPanic(t))
		err := tr.RestoreState(st)
		tr.Close()
		if (err == nil) != c.ok {
			t.Errorf("restore into tag %q: %v", c.tag, err)
		}
	}

	c, err := p9.NewClient(drv, p9.WithMessageSize(p9Buf))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Attach(""); err != nil {
		t.Fatal(err)
	}
	err = drv.tr.CanSnapshot()
	if err == nil || !strings.Contains(err.Error(), "virtio-9p") || !strings.Contains(err.Error(), `"share0"`) {
		t.Fatalf("CanSnapshot with an attached fid: %v, want a refusal naming virtio-9p and the share", err)
	}
	drv.tr.Pause()
	_, err = drv.tr.SaveState()
	drv.tr.Resume()
	if err == nil || !strings.Contains(err.Error(), "9p") {
		t.Fatalf("SaveState with an attached fid: %v, want a refusal", err)
	}

	set32(drv.tr, regStatus, 0) // reset: the next activation has a fresh server
	if !driverInit(drv.tr, FeatureVersion1|p9FMountTag) {
		t.Fatal("re-initialise after the reset")
	}
	// The new activation's goroutine clears the session when it starts;
	// until then the device errs on the side of refusing.
	waitFor(t, "the refusal to end after a reset", func() bool { return drv.tr.CanSnapshot() == nil })
}
