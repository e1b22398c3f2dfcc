package virtio

import (
	"encoding/binary"
	"testing"
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
		for _, out := range s.ctrlOut {
			r, err := ParseControl(out)
			if err != nil || r.ID >= uint32(len(c.Ports)) {
				t.Fatalf("reply %v (%v) for %v", r, err, m)
			}
		}
	})
}
