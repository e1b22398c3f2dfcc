package virtio

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"
)

// ram is guest memory for tests: a byte slice at guest address 0.
type ram []byte

func (r ram) Slice(gpa, n uint64) ([]byte, error) {
	if gpa > uint64(len(r)) || n > uint64(len(r))-gpa {
		return nil, fmt.Errorf("[%#x,+%#x) outside guest RAM", gpa, n)
	}
	return r[gpa : gpa+n], nil
}

// Layout of the test queue in ram.
const (
	tDesc  = 0x1000
	tAvail = 0x2000
	tUsed  = 0x3000
	tData  = 0x4000
	tSize  = 16
	tRAM   = 0x10000
)

type desc struct {
	addr  uint64
	len   uint32
	flags uint16
	next  uint16
}

func putDescs(r ram, at uint64, ds []desc) {
	for i, d := range ds {
		b := r[at+16*uint64(i):]
		binary.LittleEndian.PutUint64(b[0:], d.addr)
		binary.LittleEndian.PutUint32(b[8:], d.len)
		binary.LittleEndian.PutUint16(b[12:], d.flags)
		binary.LittleEndian.PutUint16(b[14:], d.next)
	}
}

// offer makes heads available, as a driver would.
func offer(r ram, heads ...uint16) {
	idx := binary.LittleEndian.Uint16(r[tAvail+2:])
	for _, h := range heads {
		binary.LittleEndian.PutUint16(r[tAvail+4+2*uint64(idx%tSize):], h)
		idx++
	}
	// Published with an atomic store (release), as the device reads it.
	flags := atomic.LoadUint32(word(r, tAvail)) & 0xffff
	atomic.StoreUint32(word(r, tAvail), uint32(idx)<<16|flags)
}

func newTestQueue(t testing.TB, r ram, indirect bool) *Queue {
	q := &Queue{Size: tSize, Ready: true, DescAddr: tDesc, AvailAddr: tAvail, UsedAddr: tUsed}
	if err := q.activate(r, indirect); err != nil {
		t.Fatal(err)
	}
	return q
}

func TestPopChains(t *testing.T) {
	const W, N, I = descFWrite, descFNext, descFIndirect
	cases := []struct {
		name      string
		descs     []desc
		indirect  []desc // placed at tData+0x800
		head      uint16
		feature   bool
		wantErr   string
		wantR     int
		wantW     int
		availJump uint16
	}{
		{name: "one readable", descs: []desc{{tData, 16, 0, 0}}, wantR: 16},
		{name: "readable then writable", descs: []desc{{tData, 16, N, 1}, {tData + 16, 100, W, 0}}, wantR: 16, wantW: 100},
		{name: "zero-length buffer", descs: []desc{{tData, 0, 0, 0}}},
		{name: "head beyond size", descs: []desc{{tData, 1, 0, 0}}, head: tSize, wantErr: "head descriptor"},
		{name: "loop", descs: []desc{{tData, 1, N, 1}, {tData, 1, N, 0}}, wantErr: "a loop"},
		{name: "self loop", descs: []desc{{tData, 1, N, 0}}, wantErr: "a loop"},
		{name: "next beyond size", descs: []desc{{tData, 1, N, 99}}, wantErr: "beyond its table"},
		{name: "address outside RAM", descs: []desc{{tRAM - 8, 16, 0, 0}}, wantErr: "outside guest RAM"},
		{name: "length wraps", descs: []desc{{tData, 0xffffffff, 0, 0}}, wantErr: "outside guest RAM"},
		{name: "huge address", descs: []desc{{^uint64(0) - 4, 16, 0, 0}}, wantErr: "outside guest RAM"},
		{name: "readable after writable", descs: []desc{{tData, 1, W | N, 1}, {tData, 1, 0, 0}}, wantErr: "readable buffer after"},
		{name: "indirect not negotiated", descs: []desc{{tData + 0x800, 32, I, 0}}, indirect: []desc{{tData, 4, 0, 0}}, wantErr: "without VIRTIO_F_INDIRECT_DESC"},
		{name: "indirect", descs: []desc{{tData + 0x800, 32, I, 0}}, indirect: []desc{{tData, 4, N, 1}, {tData, 8, W, 0}}, feature: true, wantR: 4, wantW: 8},
		{name: "indirect with next", descs: []desc{{tData + 0x800, 32, I | N, 1}, {tData, 1, 0, 0}}, indirect: []desc{{tData, 4, 0, 0}}, feature: true, wantErr: "also has NEXT"},
		{name: "nested indirect", descs: []desc{{tData + 0x800, 16, I, 0}}, indirect: []desc{{tData + 0x800, 16, I, 0}}, feature: true, wantErr: "nested indirect"},
		{name: "indirect odd length", descs: []desc{{tData + 0x800, 17, I, 0}}, indirect: []desc{{tData, 4, 0, 0}}, feature: true, wantErr: "multiple of 16"},
		{name: "indirect loop", descs: []desc{{tData + 0x800, 32, I, 0}}, indirect: []desc{{tData, 4, N, 1}, {tData, 4, N, 0}}, feature: true, wantErr: "a loop"},
		{name: "indirect table outside RAM", descs: []desc{{tRAM - 16, 32, I, 0}}, feature: true, wantErr: "outside guest RAM"},
		{name: "avail index jump", descs: []desc{{tData, 1, 0, 0}}, availJump: tSize + 1, wantErr: "more than the queue size"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := make(ram, tRAM)
			putDescs(r, tDesc, c.descs)
			putDescs(r, tData+0x800, c.indirect)
			q := newTestQueue(t, r, c.feature)
			offer(r, c.head)
			if c.availJump > 0 {
				binary.LittleEndian.PutUint16(r[tAvail+2:], c.availJump)
			}
			ch, ok, err := q.Pop(r)
			if c.wantErr != "" {
				var qe *QueueError
				if !errors.As(err, &qe) || !contains(err.Error(), c.wantErr) {
					t.Fatalf("err = %v, want a QueueError containing %q", err, c.wantErr)
				}
				return
			}
			if err != nil || !ok {
				t.Fatalf("Pop: ok=%v err=%v", ok, err)
			}
			if ch.ReadableLen() != c.wantR || ch.WritableLen() != c.wantW {
				t.Errorf("readable %d writable %d, want %d and %d", ch.ReadableLen(), ch.WritableLen(), c.wantR, c.wantW)
			}
			if _, ok, _ := q.Pop(r); ok {
				t.Error("second Pop found a chain that was not offered")
			}
		})
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

func TestPushPublishesUsed(t *testing.T) {
	r := make(ram, tRAM)
	q := newTestQueue(t, r, false)
	for i := 0; i < tSize+3; i++ { // wraps around the ring
		q.Push(uint16(i%tSize), uint32(100+i))
	}
	if idx := binary.LittleEndian.Uint16(r[tUsed+2:]); idx != tSize+3 {
		t.Fatalf("used idx %d, want %d", idx, tSize+3)
	}
	e := r[tUsed+4+8*2:] // slot 2 was last written by push number tSize+2
	if id, n := binary.LittleEndian.Uint32(e), binary.LittleEndian.Uint32(e[4:]); id != 2 || n != 100+tSize+2 {
		t.Errorf("used[2] = {%d, %d}, want {2, %d}", id, n, 100+tSize+2)
	}
}

func TestActivateRejectsBadLayouts(t *testing.T) {
	r := make(ram, tRAM)
	for _, q := range []Queue{
		{Size: 0, DescAddr: tDesc, AvailAddr: tAvail, UsedAddr: tUsed},
		{Size: 3, DescAddr: tDesc, AvailAddr: tAvail, UsedAddr: tUsed},
		{Size: 512, DescAddr: tDesc, AvailAddr: tAvail, UsedAddr: tUsed},
		{Size: 16, DescAddr: tDesc + 8, AvailAddr: tAvail, UsedAddr: tUsed},
		{Size: 16, DescAddr: tDesc, AvailAddr: tAvail + 1, UsedAddr: tUsed},
		{Size: 16, DescAddr: tDesc, AvailAddr: tAvail, UsedAddr: tUsed + 2},
		{Size: 16, DescAddr: tRAM - 16, AvailAddr: tAvail, UsedAddr: tUsed},
		{Size: 16, DescAddr: tDesc, AvailAddr: tAvail, UsedAddr: ^uint64(0) - 3},
	} {
		if err := q.activate(r, false); err == nil {
			t.Errorf("activate(%+v) accepted a bad layout", q)
		}
	}
}

// fakeIRQ counts interrupts.
type fakeIRQ struct{ n atomic.Int32 }

func (f *fakeIRQ) Trigger() error { f.n.Add(1); return nil }

func reg32(t *MMIO, off uint64) uint32 {
	var b [4]byte
	t.Read(off, b[:])
	return binary.LittleEndian.Uint32(b[:])
}

func set32(t *MMIO, off uint64, v uint32) {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], v)
	t.Write(off, b[:])
}

// driverInit runs the virtio 1.x initialization (spec 3.1.1) for queue 0 at
// the test layout and returns whether FEATURES_OK stuck.
func driverInit(tr *MMIO, features uint64) bool {
	set32(tr, regStatus, StatusAcknowledge|StatusDriver)
	set32(tr, regDriverFeatSel, 0)
	set32(tr, regDriverFeatures, uint32(features))
	set32(tr, regDriverFeatSel, 1)
	set32(tr, regDriverFeatures, uint32(features>>32))
	set32(tr, regStatus, StatusAcknowledge|StatusDriver|StatusFeaturesOK)
	if reg32(tr, regStatus)&StatusFeaturesOK == 0 {
		return false
	}
	setupQueue0(tr)
	set32(tr, regStatus, StatusAcknowledge|StatusDriver|StatusFeaturesOK|StatusDriverOK)
	return true
}

// setupQueue0 writes queue 0's registers for the test layout.
func setupQueue0(tr *MMIO) {
	set32(tr, regQueueSel, 0)
	set32(tr, regQueueNum, tSize)
	set32(tr, regQueueDescLow, tDesc)
	set32(tr, regQueueDriverLow, tAvail)
	set32(tr, regQueueDeviceLow, tUsed)
	set32(tr, regQueueReady, 1)
}

// request has the driver offer one chain on queue 0 at the test layout, a
// writable buffer of n bytes at tData, and waits for the device to return
// it through the used ring.
func request(t *testing.T, tr *MMIO, r ram, n uint32, what string) {
	t.Helper()
	want := usedIdx(r, tUsed) + 1
	putDescs(r, tDesc, []desc{{tData, n, descFWrite, 0}})
	offer(r, 0)
	tr.Notify(0)
	waitFor(t, what, func() bool { return usedIdx(r, tUsed) == want })
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestTransport(t *testing.T) {
	r := make(ram, tRAM)
	irq := &fakeIRQ{}
	var logged atomic.Value
	tr := NewMMIO("virtio-rng test", RNG{}, r, irq, func(f string, a ...any) { logged.Store(fmt.Sprintf(f, a...)) }, failOnPanic(t))
	defer tr.Close()
	if reg32(tr, regMagic) != mmioMagic || reg32(tr, regVersion) != 2 || reg32(tr, regDeviceID) != 4 {
		t.Fatal("identification registers are wrong")
	}
	if reg32(tr, regQueueNumMax) != MaxQueueSize {
		t.Errorf("QueueNumMax %d", reg32(tr, regQueueNumMax))
	}
	// A legacy driver (no VERSION_1) is refused.
	if driverInit(tr, 0) {
		t.Fatal("FEATURES_OK accepted without VERSION_1")
	}
	set32(tr, regStatus, 0)
	// So are features that were not offered.
	if driverInit(tr, FeatureVersion1|1<<40) {
		t.Fatal("FEATURES_OK accepted with a feature that was not offered")
	}
	set32(tr, regStatus, 0)
	if !driverInit(tr, FeatureVersion1) {
		t.Fatal("FEATURES_OK refused for VERSION_1")
	}

	// A good request is served through the notify path.
	request(t, tr, r, 64, "the used ring")
	if n := binary.LittleEndian.Uint32(r[tUsed+8:]); n != 64 {
		t.Errorf("used length %d, want 64", n)
	}
	waitFor(t, "an interrupt", func() bool { return irq.n.Load() >= 1 && reg32(tr, regInterruptStatus)&intUsedBuffer != 0 })
	set32(tr, regInterruptACK, intUsedBuffer)
	if reg32(tr, regInterruptStatus) != 0 {
		t.Error("InterruptACK did not clear the status")
	}

	// A malformed chain: DEVICE_NEEDS_RESET, a config interrupt, a log line.
	putDescs(r, 0x1000+16, []desc{{tRAM + 0x1000, 64, descFWrite, 0}})
	offer(r, 1)
	tr.Notify(0)
	waitFor(t, "NEEDS_RESET", func() bool { return reg32(tr, regStatus)&StatusNeedsReset != 0 })
	if reg32(tr, regInterruptStatus)&intConfigChange == 0 {
		t.Error("no configuration-change interrupt with NEEDS_RESET")
	}
	if s, _ := logged.Load().(string); !contains(s, "needs reset") || !contains(s, "outside guest RAM") {
		t.Errorf("log line %q does not give the reason", s)
	}

	// Reset recovers the device completely.
	set32(tr, regStatus, 0)
	if reg32(tr, regStatus) != 0 || reg32(tr, regInterruptStatus) != 0 || reg32(tr, regQueueReady) != 0 {
		t.Fatal("reset left state behind")
	}
	clear(r)
	if !driverInit(tr, FeatureVersion1) {
		t.Fatal("re-initialization failed")
	}
	request(t, tr, r, 8, "service after reset")
}

// errFile fails every operation with err.
type errFile struct{ err error }

func (f errFile) ReadAt([]byte, int64) (int, error)  { return 0, f.err }
func (f errFile) WriteAt([]byte, int64) (int, error) { return 0, f.err }
func (f errFile) Sync() error                        { return f.err }

func blkChain(typ uint32, sector uint64, data []byte, dataWritable bool) (*Chain, []byte) {
	hdr := make([]byte, blkHdrLen)
	binary.LittleEndian.PutUint32(hdr[0:], typ)
	binary.LittleEndian.PutUint64(hdr[8:], sector)
	status := []byte{0xff}
	c := &Chain{R: [][]byte{hdr}}
	if dataWritable {
		c.W = append(c.W, data)
	} else if data != nil {
		c.R = append(c.R, data)
	}
	c.W = append(c.W, status)
	return c, status
}

func TestBlockRequests(t *testing.T) {
	p := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(p, make([]byte, 8*SectorSize), 0o644); err != nil {
		t.Fatal(err)
	}
	df, err := OpenDisk(p, false)
	if err != nil {
		t.Fatal(err)
	}
	defer df.Close()
	rw := NewBlock(df, df.Size, false, "disk-id-that-is-longer-than-20")
	ro := NewBlock(df, df.Size, true, "ro")
	sector := func(b byte) []byte {
		s := make([]byte, SectorSize)
		for i := range s {
			s[i] = b
		}
		return s
	}
	cases := []struct {
		name   string
		dev    *Block
		typ    uint32
		sector uint64
		data   []byte
		write  bool // data is device-writable
		status byte
		n      int
	}{
		{"write sector 7", rw, blkTOut, 7, sector(0xab), false, blkSOK, 0},
		{"read sector 7", rw, blkTIn, 7, make([]byte, SectorSize), true, blkSOK, SectorSize},
		{"read past the end", rw, blkTIn, 8, make([]byte, SectorSize), true, blkSIOErr, 0},
		{"read straddling the end", rw, blkTIn, 7, make([]byte, 2*SectorSize), true, blkSIOErr, 0},
		{"huge sector", rw, blkTIn, ^uint64(0), make([]byte, SectorSize), true, blkSIOErr, 0},
		{"partial sector", rw, blkTIn, 0, make([]byte, 100), true, blkSIOErr, 0},
		{"flush", rw, blkTFlush, 0, nil, false, blkSOK, 0},
		{"get id", rw, blkTGetID, 0, make([]byte, blkIDLen), true, blkSOK, blkIDLen},
		{"unsupported", rw, 99, 0, nil, false, blkSUnsupp, 0},
		{"write to read-only", ro, blkTOut, 0, sector(1), false, blkSIOErr, 0},
		{"read from read-only", ro, blkTIn, 7, make([]byte, SectorSize), true, blkSOK, SectorSize},
		{"host EIO", NewBlock(errFile{errors.New("EIO")}, 4096, false, ""), blkTIn, 0, make([]byte, SectorSize), true, blkSIOErr, 0},
		{"host ENOSPC", NewBlock(errFile{errors.New("ENOSPC")}, 4096, false, ""), blkTOut, 0, sector(1), false, blkSIOErr, 0},
		{"host flush error", NewBlock(errFile{errors.New("EIO")}, 4096, false, ""), blkTFlush, 0, nil, false, blkSIOErr, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ch, status := blkChain(c.typ, c.sector, c.data, c.write)
			defer func() {
				if status[0] != 0xff {
					t.Error("do() wrote the status byte itself; Run owns it")
				}
			}()
			req, err := parseBlkRequest(ch)
			if err != nil {
				t.Fatal(err)
			}
			st, n := c.dev.do(&req)
			if st != c.status || n != c.n {
				t.Fatalf("status %d n %d, want %d and %d", st, n, c.status, c.n)
			}
			if c.name == "read sector 7" && c.data[0] != 0xab {
				t.Errorf("read back %#x, want 0xab", c.data[0])
			}
			if c.name == "get id" && string(c.data) != "disk-id-that-is-long" {
				t.Errorf("id %q", c.data)
			}
		})
	}
	// No status byte: a driver error, not a crash.
	if _, err := parseBlkRequest(&Chain{R: [][]byte{make([]byte, 16)}}); err == nil {
		t.Error("request without a status byte accepted")
	}
	// A short header is answered with UNSUPP.
	req, err := parseBlkRequest(&Chain{R: [][]byte{make([]byte, 3)}, W: [][]byte{{0}}})
	if err != nil || func() byte { s, _ := rw.do(&req); return s }() != blkSUnsupp {
		t.Errorf("short header: err %v", err)
	}
}

func TestConsoleControl(t *testing.T) {
	c := NewChannels("microvm.agent")
	s := &conState{c: c}
	s.handle(ControlMsg{Event: conDeviceReady, Value: 1})
	s.handle(ControlMsg{ID: 0, Event: conPortReady, Value: 1})
	s.handle(ControlMsg{ID: 7, Event: conPortReady, Value: 1}) // no such port: ignored
	s.handle(ControlMsg{ID: 0, Event: conPortOpen, Value: 1})
	var got []ControlMsg
	for _, b := range s.c.ctrlOut {
		m, err := ParseControl(b)
		if err != nil {
			t.Fatal(err)
		}
		if m.Event == conPortName {
			m.Name = string(b[conCtrlLen:])
		}
		got = append(got, m)
	}
	want := []ControlMsg{
		{ID: 0, Event: conDeviceAdd},
		{ID: 0, Event: conPortName, Name: "microvm.agent"},
		{ID: 0, Event: conPortOpen, Value: 1},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("control messages %v, want %v", got, want)
	}
	if !c.Ports[0].GuestOpen() {
		t.Error("PORT_OPEN from the guest not recorded")
	}
	if _, err := ParseControl([]byte{1, 2, 3}); err == nil {
		t.Error("short control message accepted")
	}
}

// TestConsoleRun drives a console device through its queues: output on
// port 0 reaches the host writer, host input reaches the guest.
func TestConsoleRun(t *testing.T) {
	r := make(ram, tRAM)
	var out safeBuf
	c := NewConsole(&out)
	tr := startConsole(r, c, t.Logf, failOnPanic(t))
	defer tr.Close()
	sendConsole(tr, r, "hello, host")
	waitFor(t, "console output", func() bool { return out.String() == "hello, host" })

	putDescs(r, 0x8000, []desc{{tData + 0x100, 32, descFWrite, 0}})
	binary.LittleEndian.PutUint16(r[0x9000+4:], 0)
	atomic.StoreUint32(word(r, 0x9000), 1<<16) // avail->idx = 1
	if _, err := c.Ports[0].Write([]byte("hi, guest")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "console input", func() bool { return usedIdx(r, 0xa000) == 1 })
	if got := string(r[tData+0x100 : tData+0x100+9]); got != "hi, guest" {
		t.Errorf("guest received %q", got)
	}
}

// startConsole activates console c with queue 1 (transmit) at the test
// layout and queue 0 (receive) at 0x8000.
func startConsole(r ram, c *Console, logf func(string, ...any), fatal func(error)) *MMIO {
	tr := NewMMIO("virtio-console test", c, r, &fakeIRQ{}, logf, fatal)
	set32(tr, regStatus, StatusAcknowledge|StatusDriver)
	set32(tr, regDriverFeatSel, 1)
	set32(tr, regDriverFeatures, 1)
	set32(tr, regStatus, StatusAcknowledge|StatusDriver|StatusFeaturesOK)
	for q, base := range []uint64{0x8000, tDesc} {
		set32(tr, regQueueSel, uint32(q))
		set32(tr, regQueueNum, tSize)
		set32(tr, regQueueDescLow, uint32(base))
		set32(tr, regQueueDriverLow, uint32(base+0x1000))
		set32(tr, regQueueDeviceLow, uint32(base+0x2000))
		set32(tr, regQueueReady, 1)
	}
	set32(tr, regStatus, StatusAcknowledge|StatusDriver|StatusFeaturesOK|StatusDriverOK)
	return tr
}

// sendConsole has the guest write msg on port 0 of a started console.
func sendConsole(tr *MMIO, r ram, msg string) {
	copy(r[tData:], msg)
	putDescs(r, tDesc, []desc{{tData, uint32(len(msg)), 0, 0}})
	offer(r, 0)
	tr.Notify(1)
}

type panicWriter struct{}

func (panicWriter) Write([]byte) (int, error) { panic("port writer boom") }

// TestConsolePanicIsFatal: a panic in a port's writer, on the console's
// device goroutine, reaches the fatal hook while the machine runs, not only
// (or never) at Close: the console's helper goroutines must not hold it up.
func TestConsolePanicIsFatal(t *testing.T) {
	r := make(ram, tRAM)
	got := make(chan error, 1)
	tr := startConsole(r, NewConsole(panicWriter{}), t.Logf, func(err error) { got <- err })
	defer tr.Close()
	sendConsole(tr, r, "x")
	expectFatal(t, got, "virtio-console test", "port writer boom")
}

// expectFatal waits for the fatal hook to report a panic naming the device
// and the panic value; Close must not be what delivers it.
func expectFatal(t *testing.T, got <-chan error, device, value string) {
	t.Helper()
	select {
	case err := <-got:
		if !contains(err.Error(), device) || !contains(err.Error(), value) {
			t.Errorf("fatal error %q does not name the device and the panic", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the panic did not reach the fatal hook while the device ran")
	}
}

type safeBuf struct {
	buf []byte
	v   atomic.Value
}

func (b *safeBuf) Write(p []byte) (int, error) {
	b.buf = append(b.buf, p...) // only the device goroutine writes
	b.v.Store(string(b.buf))
	return len(p), nil
}

func (b *safeBuf) String() string { s, _ := b.v.Load().(string); return s }

// failOnPanic is the fatal hook of test transports: a device goroutine's
// panic fails the test (from any goroutine, hence Errorf).
func failOnPanic(t testing.TB) func(error) {
	return func(err error) { t.Errorf("device goroutine: %v", err) }
}

// TestTransportStatusMachine drives the status register through orderings a
// driver may (or must not) use (spec 2.1, 3.1.1) and checks the state the
// device ends in, that queue registers freeze once DRIVER_OK is set, and
// that at most one device goroutine runs.
func TestTransportStatusMachine(t *testing.T) {
	const (
		A, D, F, OK, NR, FL = StatusAcknowledge, StatusDriver, StatusFeaturesOK, StatusDriverOK, StatusNeedsReset, StatusFailed
	)
	cases := []struct {
		name    string
		seq     []uint32 // status writes; queue 0 is set up while the device is not live
		want    uint32   // status read back at the end
		running int32    // device goroutines running at the end
		logs    int      // "needs reset" lines
	}{
		{name: "spec order", seq: []uint32{A, A | D, A | D | F, A | D | F | OK}, want: A | D | F | OK, running: 1},
		{name: "all at once", seq: []uint32{A | D | F | OK}, want: A | D | F | OK, running: 1},
		{name: "DRIVER_OK rewritten (FAILED added)", seq: []uint32{A | D | F, A | D | F | OK, A | D | F | OK | FL}, want: A | D | F | OK | FL, running: 1},
		{name: "DRIVER_OK cleared", seq: []uint32{A | D | F, A | D | F | OK, A | D | F}, want: A | D | F | OK | NR, logs: 1},
		{name: "DRIVER_OK cleared and set again", seq: []uint32{A | D | F, A | D | F | OK, A | D | F, A | D | F | OK}, want: A | D | F | OK | NR, logs: 1},
		{name: "FEATURES_OK cleared", seq: []uint32{A | D | F, A | D}, want: A | D | F | NR, logs: 1},
		{name: "ACKNOWLEDGE cleared", seq: []uint32{A, D}, want: A | NR, logs: 1},
		{name: "DRIVER_OK without FEATURES_OK", seq: []uint32{A | D, A | D | OK}, want: A | D | OK | NR, logs: 1},
		{name: "FEATURES_OK before DRIVER", seq: []uint32{A | F}, want: A},
		{name: "driver writes NEEDS_RESET", seq: []uint32{A | NR}, want: A},
		{name: "reset", seq: []uint32{A | D | F, A | D | F | OK, 0}, want: 0},
		{name: "reset after driver error", seq: []uint32{A | D | F, A | D | F | OK, A, 0}, want: 0, logs: 1},
		{name: "reactivation after reset", seq: []uint32{A | D | F, A | D | F | OK, 0, A | D | F, A | D | F | OK}, want: A | D | F | OK, running: 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := make(ram, tRAM)
			dev := &countingWrap{Device: RNG{}}
			var logs atomic.Int32
			tr := NewMMIO("test", dev, r, &fakeIRQ{}, func(f string, a ...any) {
				if contains(fmt.Sprintf(f, a...), "needs reset") {
					logs.Add(1)
				}
			}, failOnPanic(t))
			defer tr.Close()
			set32(tr, regDriverFeatSel, 1)
			set32(tr, regDriverFeatures, 1) // VERSION_1
			for _, v := range c.seq {
				if v&F != 0 && reg32(tr, regStatus)&F == 0 || v == 0 {
					set32(tr, regDriverFeatSel, 1)
					set32(tr, regDriverFeatures, 1)
				}
				if !tr.live {
					setupQueue0(tr) // writable in any state before DRIVER_OK
				}
				set32(tr, regStatus, v)
				// Once live, queue registers are frozen whatever the status.
				if reg32(tr, regStatus)&OK != 0 {
					set32(tr, regQueueNum, 256)
					set32(tr, regQueueDescLow, tDesc+0x100)
					set32(tr, regQueueReady, 0)
					if q := tr.queues[0]; q.Size != tSize || q.DescAddr != tDesc || !q.Ready {
						t.Fatalf("queue registers changed after DRIVER_OK: %+v", q)
					}
				}
			}
			if got := reg32(tr, regStatus); got != c.want {
				t.Errorf("status %#x, want %#x", got, c.want)
			}
			waitFor(t, "the device goroutines to settle", func() bool { return dev.running.Load() == c.running })
			if dev.max.Load() > 1 {
				t.Errorf("%d device goroutines ran at once", dev.max.Load())
			}
			if int(logs.Load()) != c.logs {
				t.Errorf("%d needs-reset lines, want %d", logs.Load(), c.logs)
			}
			if c.running == 1 {
				// The device serves requests on the geometry it was started with.
				request(t, tr, r, 64, "the used ring")
			}
		})
	}
}

// TestTransportLiveResize is defect 1 of issue 11: clearing DRIVER_OK, then
// growing the queue and posting a buffer must not reach the device.
func TestTransportLiveResize(t *testing.T) {
	r := make(ram, 0x100000)
	dev := &countingWrap{Device: RNG{}}
	tr := NewMMIO("test", dev, r, &fakeIRQ{}, func(string, ...any) {}, failOnPanic(t))
	defer tr.Close()
	for i := 0; i < 200; i++ {
		if !driverInit(tr, FeatureVersion1) {
			t.Fatal("FEATURES_OK refused")
		}
		set32(tr, regStatus, StatusAcknowledge|StatusDriver|StatusFeaturesOK)
		set32(tr, regQueueNum, 256)
		putDescs(r, tDesc, []desc{{tData, 64, descFWrite, 0}})
		binary.LittleEndian.PutUint16(r[tAvail+2:], uint16(i+1))
		tr.Notify(0)
		set32(tr, regStatus, StatusAcknowledge|StatusDriver|StatusFeaturesOK|StatusDriverOK)
		if reg32(tr, regStatus)&StatusNeedsReset == 0 {
			t.Fatalf("round %d: no NEEDS_RESET after DRIVER_OK was cleared", i)
		}
		set32(tr, regStatus, 0)
		if n := dev.running.Load(); n != 0 {
			t.Fatalf("round %d: %d device goroutines after reset", i, n)
		}
	}
	if dev.max.Load() > 1 {
		t.Errorf("%d device goroutines ran at once", dev.max.Load())
	}
}

type panicDev struct{ RNG }

func (panicDev) Run(context.Context, *Queues) error { panic("boom") }

// TestTransportPanicIsFatal: a panic on the device goroutine reaches the
// fatal hook, naming the device, instead of killing the process.
func TestTransportPanicIsFatal(t *testing.T) {
	r := make(ram, tRAM)
	got := make(chan error, 1)
	tr := NewMMIO("virtio-test vdz", panicDev{}, r, &fakeIRQ{}, t.Logf, func(err error) { got <- err })
	defer tr.Close()
	driverInit(tr, FeatureVersion1)
	expectFatal(t, got, "virtio-test vdz", "panic: boom")
}

// TestConsoleControlBounded is defect 3 of issue 11: PORT_READY without a
// control receive queue must not make the host keep every reply.
func TestConsoleControlBounded(t *testing.T) {
	c := NewChannels("microvm.agent")
	s := &conState{c: c}
	const n = 100000
	for i := 0; i < n; i++ {
		s.handle(ControlMsg{ID: 0, Event: conPortReady, Value: 1})
	}
	if len(s.c.ctrlOut) != conMaxCtrlOut {
		t.Errorf("%d control replies kept, want the bound %d", len(s.c.ctrlOut), conMaxCtrlOut)
	}
	if got := c.CtrlDropped(); got != 2*n-conMaxCtrlOut {
		t.Errorf("%d replies counted as dropped, want %d", got, 2*n-conMaxCtrlOut)
	}
}

// TestTransportOverlappingRings: a used ring over an available ring (the
// device would drive the driver's index and never drain) is refused.
func TestTransportOverlappingRings(t *testing.T) {
	r := make(ram, tRAM)
	var logged atomic.Value
	tr := NewMMIO("test", RNG{}, r, &fakeIRQ{}, func(f string, a ...any) { logged.Store(fmt.Sprintf(f, a...)) }, failOnPanic(t))
	defer tr.Close()
	set32(tr, regStatus, StatusAcknowledge|StatusDriver)
	set32(tr, regDriverFeatSel, 1)
	set32(tr, regDriverFeatures, 1)
	set32(tr, regStatus, StatusAcknowledge|StatusDriver|StatusFeaturesOK)
	setupQueue0(tr)
	set32(tr, regQueueDeviceLow, tAvail) // the used ring over the available ring
	set32(tr, regStatus, StatusAcknowledge|StatusDriver|StatusFeaturesOK|StatusDriverOK)
	if reg32(tr, regStatus)&StatusNeedsReset == 0 {
		t.Fatal("overlapping rings accepted")
	}
	if s, _ := logged.Load().(string); !contains(s, "overlaps") {
		t.Errorf("log line %q does not say why", s)
	}
}

// word is the aligned 32-bit word at off in r: the test's side of fields the
// device writes concurrently (it publishes them with atomic stores).
func word(r ram, off uint64) *uint32 { return (*uint32)(unsafe.Pointer(&r[off])) }

// usedIdx reads used->idx of the used ring at at.
func usedIdx(r ram, at uint64) uint16 { return uint16(atomic.LoadUint32(word(r, at)) >> 16) }

// feedDev serves queue 0 with serveQueue (as virtio-rng and virtio-blk do),
// calling feed for each chain.
type feedDev struct {
	RNG
	feed func()
}

func (d feedDev) Run(ctx context.Context, qs *Queues) error {
	return serveQueue(ctx, qs, 0, func(*Chain) (uint32, error) { d.feed(); return 0, nil })
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }

// TestChainsPerNotification: a driver can lay another device's used ring
// over a queue's available ring (the transport cannot see that), so that
// every chain the other device completes makes one available here, with no
// guest CPU involved. feed plays that other device, in step with this one.
// One wake-up must then serve at most a queue's worth of chains, not
// spin until the machine stops.
func TestChainsPerNotification(t *testing.T) {
	// start activates the device and gives it one wake-up.
	cases := []struct {
		name  string
		start func(r ram, feed func()) *MMIO
	}{
		{"serveQueue (virtio-rng, virtio-blk)", func(r ram, feed func()) *MMIO {
			tr := NewMMIO("test", feedDev{feed: feed}, r, &fakeIRQ{}, t.Logf, failOnPanic(t))
			driverInit(tr, FeatureVersion1)
			tr.Notify(0)
			return tr
		}},
		{"virtio-console transmit", func(r ram, feed func()) *MMIO {
			out := writerFunc(func(b []byte) (int, error) { feed(); return len(b), nil })
			return startConsole(r, NewConsole(out), t.Logf, failOnPanic(t)) // the console's first step
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := make(ram, tRAM)
			putDescs(r, tDesc, []desc{{tData, 8, 0, 0}}) // every ring entry is head 0
			var served atomic.Int64
			feed := func() {
				served.Add(1)
				atomic.AddUint32(word(r, tAvail), 1<<16) // avail->idx++
			}
			offer(r, 0)
			tr := c.start(r, feed)
			defer tr.Close()
			time.Sleep(200 * time.Millisecond)
			if got := served.Load(); got != tSize {
				t.Errorf("one wake-up served %d chains, want the queue size %d", got, tSize)
			}
		})
	}
}
