package virtio

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"sync/atomic"
	"testing"
	"time"
)

// Fuzz targets for the parsers that read guest-controlled bytes. The seeds
// run as ordinary tests; `go test -fuzz=FuzzX ./devices/virtio` explores.

// FuzzWalkChain: any descriptor table, any head, with or without indirect
// descriptors, gives a chain inside guest RAM or a QueueError: never a
// panic, a hang, or a buffer outside memory.
func FuzzWalkChain(f *testing.F) {
	seed := func(ds []desc, head uint16, indirect bool) {
		b := make([]byte, 16*len(ds))
		putDescs(b, 0, ds)
		f.Add(b, head, indirect)
	}
	seed([]desc{{tData, 16, descFNext, 1}, {tData, 8, descFWrite, 0}}, 0, false)
	seed([]desc{{tData, 1, descFNext, 0}}, 0, false)
	seed([]desc{{tData + 0x800, 32, descFIndirect, 0}}, 0, true)
	seed([]desc{{tRAM - 4, 16, 0, 0}}, 0, false)
	seed([]desc{{tDesc, 16 * tSize, descFIndirect, 0}}, 0, true) // indirect table is the main table
	f.Fuzz(func(t *testing.T, table []byte, head uint16, indirect bool) {
		r := make(ram, tRAM)
		copy(r[tDesc:tDesc+16*tSize], table)
		copy(r[tData:], table) // lets indirect tables point at fuzz data too
		c, err := walkChain(r, r[tDesc:tDesc+16*tSize], head%(2*tSize), tSize, indirect)
		if err != nil {
			return
		}
		if len(c.R)+len(c.W) > MaxQueueSize {
			t.Fatalf("chain of %d buffers", len(c.R)+len(c.W))
		}
		for _, b := range append(c.R, c.W...) {
			if len(b) > 0 && !inside(r, b) {
				t.Fatal("buffer outside guest RAM")
			}
		}
	})
}

func inside(r ram, b []byte) bool {
	return cap(b) <= cap(r) && &r[:cap(r)][cap(r)-1] == &b[:cap(b)][cap(b)-1]
}

// FuzzBlkRequest: any split of header, data and status across buffers
// parses to a request or a QueueError, and serving it never panics.
func FuzzBlkRequest(f *testing.F) {
	hdr := func(typ uint32, sector uint64) []byte {
		h := make([]byte, blkHdrLen)
		binary.LittleEndian.PutUint32(h, typ)
		binary.LittleEndian.PutUint64(h[8:], sector)
		return h
	}
	f.Add(hdr(blkTIn, 0), []byte{}, uint16(513), uint8(1))
	f.Add(hdr(blkTOut, 3), make([]byte, 512), uint16(1), uint8(2))
	f.Add(hdr(blkTGetID, 0), []byte{}, uint16(21), uint8(3))
	f.Add(hdr(blkTFlush, 0), []byte{}, uint16(1), uint8(1))
	f.Add([]byte{1, 2}, []byte{}, uint16(0), uint8(1))
	f.Fuzz(func(t *testing.T, readable, extra []byte, writable uint16, splits uint8) {
		in := append(append([]byte(nil), readable...), extra...)
		c := &Chain{R: split(in, int(splits%5)+1), W: split(make([]byte, int(writable)%4096), int(splits/5%5)+1)}
		req, err := parseBlkRequest(c)
		if err != nil {
			if c.WritableLen() != 0 {
				t.Fatalf("request with a status byte refused: %v", err)
			}
			return
		}
		dev := NewBlock(errFile{nil}, 16*SectorSize, splits%2 == 0, "fuzz")
		if st, n := dev.do(&req); n > c.WritableLen() || st > blkSUnsupp {
			t.Fatalf("status %d, %d bytes for %d writable", st, n, c.WritableLen())
		}
	})
}

// split cuts b into up to n pieces.
func split(b []byte, n int) [][]byte {
	var out [][]byte
	for i := 0; i < n-1 && len(b) > 1; i++ {
		k := len(b) / 2
		out = append(out, b[:k])
		b = b[k:]
	}
	return append(out, b)
}

// FuzzConsoleControl: any control message from the driver is parsed and
// handled without a panic, and replies only name existing ports.
func FuzzConsoleControl(f *testing.F) {
	msg := func(id uint32, ev, val uint16) []byte { return ControlMsg{ID: id, Event: ev, Value: val}.bytes() }
	f.Add(msg(0, conDeviceReady, 1))
	f.Add(msg(0, conPortReady, 1))
	f.Add(msg(0, conPortOpen, 1))
	f.Add(msg(^uint32(0), conPortReady, 1))
	f.Add(append(msg(0, conPortName, 0), "name"...))
	f.Add([]byte{1})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseControl(b)
		if err != nil {
			return
		}
		c := NewChannels("microvm.agent")
		s := &conState{c: c}
		s.handle(m)
		for _, out := range s.c.ctrlOut {
			r, err := ParseControl(out)
			if err != nil || r.ID >= uint32(len(c.Ports)) {
				t.Fatalf("reply %v (%v) for %v", r, err, m)
			}
		}
	})
}

// countingWrap counts the Run goroutines of any device, to check that an
// activation never runs more than one.
type countingWrap struct {
	Device
	running, max atomic.Int32
}

func (d *countingWrap) Run(ctx context.Context, qs *Queues) error {
	n := d.running.Add(1)
	defer d.running.Add(-1)
	for m := d.max.Load(); n > m && !d.max.CompareAndSwap(m, n); m = d.max.Load() {
	}
	return d.Device.Run(ctx, qs)
}

// fuzzRegs are the registers FuzzTransport writes and reads.
var fuzzRegs = []uint64{
	regDeviceFeatSel, regDriverFeatures, regDriverFeatSel, regQueueSel, regQueueNum,
	regQueueReady, regQueueNotify, regInterruptACK, regStatus, regQueueDescLow, regQueueDescHigh,
	regQueueDriverLow, regQueueDriverHigh, regQueueDeviceLow, regQueueDeviceHigh,
	regMagic, regQueueNumMax, regInterruptStatus, regConfigGeneration, regConfig, regConfig + 4,
}

// fuzzStatus are status values worth trying far more often than chance
// would: the spec's sequence, each bit cleared, and reset.
var fuzzStatus = []uint32{
	0, StatusAcknowledge, StatusAcknowledge | StatusDriver,
	StatusAcknowledge | StatusDriver | StatusFeaturesOK,
	StatusAcknowledge | StatusDriver | StatusFeaturesOK | StatusDriverOK,
	StatusDriverOK, StatusFeaturesOK | StatusDriverOK, StatusFailed,
}

// FuzzTransport drives a transport's register interface with any sequence
// of register accesses, notifications and guest-memory writes, for the rng,
// a console and a multiport console, and checks the invariants of issue
// 11: no panic on any goroutine, at most one device goroutine, queue
// configuration frozen from DRIVER_OK until a reset, and a reset that
// leaves no goroutine running and every register at its initial value.
func FuzzTransport(f *testing.F) {
	op := func(kind, sel byte, v uint32) []byte {
		return binary.LittleEndian.AppendUint32([]byte{kind, sel}, v)
	}
	// Indices into fuzzRegs and fuzzStatus.
	const (
		rFeatSel, rFeat, rQNum, rQReady, rDesc, rAvail, rUsed = 2, 1, 4, 5, 9, 11, 13
		sAck, sDriver, sFeaturesOK, sDriverOK, sReset         = 1, 2, 3, 4, 0
	)
	mem16 := func(addr, v uint32) []byte { return op(3, 0, addr<<16|v) }
	init := bytes.Join([][]byte{
		op(4, sAck, 0), op(4, sDriver, 0),
		op(0, rFeatSel, 1), op(0, rFeat, 1), // VERSION_1
		op(4, sFeaturesOK, 0),
		op(0, rQNum, tSize), op(0, rDesc, tDesc), op(0, rAvail, tAvail), op(0, rUsed, tUsed), op(0, rQReady, 1),
		op(4, sDriverOK, 0),
		mem16(tDesc, tData), mem16(tDesc+8, 64), mem16(tDesc+12, descFWrite), // one writable buffer
		op(5, 0, 0), op(2, 0, 0), // offer it, notify
	}, nil)
	f.Add(append([]byte{0}, init...))
	f.Add(append([]byte{1}, init...))
	// Defect 1: clear DRIVER_OK, grow the queue, post, set DRIVER_OK again.
	f.Add(bytes.Join([][]byte{{0}, init, op(4, sFeaturesOK, 0), op(0, rQNum, 256), op(5, 0, 9), op(2, 0, 0), op(4, sDriverOK, 0), op(4, sReset, 0)}, nil))
	f.Add(bytes.Join([][]byte{{2}, init, op(4, sReset, 0), init}, nil))
	f.Fuzz(func(t *testing.T, ops []byte) {
		if len(ops) == 0 {
			return
		}
		var dev *countingWrap
		switch ops[0] % 3 {
		case 0:
			dev = &countingWrap{Device: RNG{}}
		case 1:
			dev = &countingWrap{Device: NewConsole(io.Discard)}
		default:
			c := NewChannels("microvm.agent")
			c.Ports[0].Out = io.Discard
			dev = &countingWrap{Device: c}
		}
		r := make(ram, tRAM)
		tr := NewMMIO("fuzz", dev, r, &fakeIRQ{}, func(string, ...any) {}, failOnPanic(t))
		var frozen []Queue // queue configuration when the device went live
		for ops = ops[1:]; len(ops) >= 6; ops = ops[6:] {
			kind, sel, v := ops[0]%6, ops[1], binary.LittleEndian.Uint32(ops[2:])
			switch kind {
			case 0:
				off := fuzzRegs[int(sel)%len(fuzzRegs)]
				if off >= regQueueDescLow && off <= regQueueDeviceHigh && off%8 == 0 {
					v %= tRAM // mostly addresses inside RAM
				}
				returns(t, "register write", func() { set32(tr, off, v) })
			case 1:
				reg32(tr, fuzzRegs[int(sel)%len(fuzzRegs)])
			case 2:
				tr.Notify(int(sel) % (tr.NumQueues() + 1))
			case 3: // the guest writes memory under the running device
				binary.LittleEndian.PutUint16(r[(v>>16)%tRAM&^1:], uint16(v))
			case 4:
				returns(t, "status write", func() { set32(tr, regStatus, fuzzStatus[int(sel)%len(fuzzStatus)]) })
				if int(sel)%len(fuzzStatus) == 0 { // a reset
					if n := dev.running.Load(); n != 0 {
						t.Fatalf("%d device goroutines after a reset", n)
					}
					if reg32(tr, regStatus) != 0 || reg32(tr, regInterruptStatus) != 0 || reg32(tr, regQueueReady) != 0 {
						t.Fatal("reset left state behind")
					}
				}
			case 5: // offer a chain on queue sel at the layout of the seed
				idx := binary.LittleEndian.Uint16(r[tAvail+2:])
				binary.LittleEndian.PutUint16(r[tAvail+4+2*uint64(idx%tSize):], uint16(v))
				binary.LittleEndian.PutUint16(r[tAvail+2:], idx+1)
			}
			switch {
			case !tr.live:
				frozen = nil
			case frozen == nil:
				for _, q := range tr.queues {
					frozen = append(frozen, *q)
				}
			default:
				for i, q := range tr.queues {
					if q.Size != frozen[i].Size || q.Ready != frozen[i].Ready || q.DescAddr != frozen[i].DescAddr ||
						q.AvailAddr != frozen[i].AvailAddr || q.UsedAddr != frozen[i].UsedAddr {
						t.Fatalf("queue %d changed while live: %+v, was %+v", i, *q, frozen[i])
					}
				}
			}
			if m := dev.max.Load(); m > 1 {
				t.Fatalf("%d device goroutines at once", m)
			}
		}
		returns(t, "Close", tr.Close)
		if n := dev.running.Load(); n != 0 {
			t.Fatalf("%d device goroutines after Close", n)
		}
	})
}

// returns fails the test if f (a register write, which may reset the
// device, or Close) does not return promptly: a vCPU stuck in a reset is a
// VMM that cannot be stopped.
func returns(t *testing.T, what string, f func()) {
	done := make(chan struct{})
	go func() { defer close(done); f() }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatalf("%s did not return within 5s", what)
	}
}
