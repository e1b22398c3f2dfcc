package devices

import (
	"bytes"
	"slices"
	"testing"

	"github.com/microvm-dev/microvm/internal/guard"
)

type nopDev struct{ last []byte }

func (d *nopDev) Read(off uint64, data []byte)  { data[0] = byte(off) }
func (d *nopDev) Write(off uint64, data []byte) { d.last = append([]byte(nil), data...) }

func TestBusOverlap(t *testing.T) {
	b := NewBus("pio")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(b.Register("a", 0x3f8, 8, &nopDev{}))
	must(b.Register("b", 0x60, 5, &nopDev{}))
	must(b.Register("c", 0x400, 8, &nopDev{})) // adjacent to nothing
	must(b.Register("d", 0x3f0, 8, &nopDev{})) // ends exactly where "a" starts
	for _, tt := range []struct {
		name       string
		base, size uint64
	}{
		{"same", 0x3f8, 8}, {"inside", 0x3fa, 1}, {"covering", 0x300, 0x200},
		{"tail", 0x3ff, 2}, {"head", 0x5f, 2}, {"zero", 0x1000, 0}, {"wrap", ^uint64(0), 2},
	} {
		if err := b.Register(tt.name, tt.base, tt.size, &nopDev{}); err == nil {
			t.Errorf("%s: window %#x+%#x accepted", tt.name, tt.base, tt.size)
		}
	}
	d := make([]byte, 1)
	if ok, _ := b.Read(0x3fd, d); !ok || d[0] != 5 {
		t.Errorf("read 0x3fd: %v %d", ok, d[0])
	}
	if ok, _ := b.Read(0x500, d); ok || d[0] != 0xff {
		t.Errorf("unmapped read = %#x, want 0xff", d[0])
	}
	d4 := make([]byte, 4)
	if ok, _ := b.Read(0x3fe, d4); ok {
		t.Error("access straddling the window end was dispatched")
	}
}

type fakeIRQ struct {
	level bool
	edges int
}

func (f *fakeIRQ) SetLevel(high bool) error {
	if high && !f.level {
		f.edges++
	}
	f.level = high
	return nil
}

func TestSerialRegisters(t *testing.T) {
	var out bytes.Buffer
	irq := &fakeIRQ{}
	s := NewSerial(&out, irq)
	rd := func(off uint64) uint8 { d := []byte{0}; s.Read(off, d); return d[0] }
	wr := func(off uint64, v uint8) { s.Write(off, []byte{v}) }

	if lsr := rd(uartLSR); lsr&(lsrTHRE|lsrTEMT) != lsrTHRE|lsrTEMT || lsr&lsrDR != 0 {
		t.Fatalf("idle LSR %#x", lsr)
	}
	if iir := rd(uartIIR); iir != iirNone {
		t.Fatalf("idle IIR %#x", iir)
	}
	wr(uartMCR, mcrOUT2) // OUT2 gates the IRQ to the PIC on PCs
	// Enabling THRE interrupts with THR empty raises one at once.
	wr(uartIER, ierTHRE)
	if !irq.level {
		t.Fatal("THRE interrupt not raised on enable")
	}
	if iir := rd(uartIIR); iir != iirTHRE {
		t.Fatalf("IIR %#x, want THRE", iir)
	}
	if iir := rd(uartIIR); iir != iirNone || irq.level {
		t.Fatalf("IIR read did not clear THRE: %#x level %v", iir, irq.level)
	}
	wr(uartRBR, 'h')
	wr(uartRBR, 'i')
	if out.String() != "hi" {
		t.Fatalf("output %q", out.String())
	}
	if iir := rd(uartIIR); iir != iirTHRE {
		t.Fatalf("after THR write IIR %#x, want THRE", iir)
	}
	// Receive: RDA outranks THRE, LSR.DR follows the FIFO.
	wr(uartIER, ierRDA|ierTHRE)
	if n := s.Enqueue([]byte("ok")); n != 2 {
		t.Fatalf("enqueued %d", n)
	}
	if iir := rd(uartIIR); iir != iirRDA || rd(uartLSR)&lsrDR == 0 {
		t.Fatalf("IIR %#x, want RDA", iir)
	}
	if a, b := rd(uartRBR), rd(uartRBR); a != 'o' || b != 'k' {
		t.Fatalf("read %q%q", a, b)
	}
	if rd(uartLSR)&lsrDR != 0 {
		t.Fatal("DR still set on empty FIFO")
	}
	// FIFO holds 64 bytes; the rest waits.
	if n := s.Enqueue(make([]byte, 100)); n != fifoSize {
		t.Fatalf("FIFO took %d bytes", n)
	}
	wr(uartIIR, 0x07) // FCR: enable + clear FIFOs
	if rd(uartLSR)&lsrDR != 0 {
		t.Fatal("FCR did not clear RX FIFO")
	}
	// DLAB switches offsets 0 and 1 to the divisor latch.
	wr(uartLCR, lcrDLAB)
	wr(uartRBR, 0x0c)
	wr(uartIER, 0x00)
	if rd(uartRBR) != 0x0c || out.Len() != 2 {
		t.Fatal("DLL write leaked to output or was lost")
	}
	wr(uartLCR, 0x03)
	// Loopback: the MSR mirrors MCR (Linux's 8250 probe checks 0x90).
	wr(uartMCR, mcrLoop|mcrOUT2|mcrRTS)
	if msr := rd(uartMSR); msr&0xf0 != msrCTS|msrDCD {
		t.Fatalf("loopback MSR %#x", msr)
	}
	wr(uartRBR, 'L')
	if rd(uartRBR) != 'L' || out.Len() != 2 {
		t.Fatal("loopback byte not received / leaked")
	}
	wr(uartSCR, 0x5a)
	if rd(uartSCR) != 0x5a {
		t.Fatal("scratch register")
	}
}

func TestI8042AndDebugPort(t *testing.T) {
	resets := 0
	k := &I8042{OnReset: func() { resets++ }}
	k.Write(i8042CmdPort, []byte{0xd1})
	k.Write(i8042DataPort, []byte{0xfe})
	if resets != 0 {
		t.Fatal("reset on the wrong command")
	}
	k.Write(i8042CmdPort, []byte{0xfe})
	if resets != 1 {
		t.Fatal("0xfe on port 0x64 did not reset")
	}
	var got [][2]uint32
	d := &DebugPort{OnMilestone: func(c uint8, v uint32) { got = append(got, [2]uint32{uint32(c), v}) }}
	d.Write(0, []byte{0x01})
	d.Write(0, []byte{0x03, 7, 0, 0})
	d.Write(DebugPortNoop, []byte{1, 2, 3, 4})
	if len(got) != 2 || got[0] != [2]uint32{1, 0} || got[1] != [2]uint32{3, 7} {
		t.Fatalf("milestones %v", got)
	}
}

type panicDev struct{}

func (panicDev) Read(uint64, []byte)  { panic("boom") }
func (panicDev) Write(uint64, []byte) { panic("boom") }

// TestBusHandlerPanic: a panic in a register handler (on a vCPU thread)
// comes back from the bus as the internal error of the device, named with
// the address accessed, its stack kept; the machine ends with it.
func TestBusHandlerPanic(t *testing.T) {
	pio, mmio := NewBus("pio"), NewBus("mmio")
	if err := pio.Register("serial", 0x3f8, 8, panicDev{}); err != nil {
		t.Fatal(err)
	}
	if err := mmio.Register("virtio-blk vda", 0xd0001000, 0x1000, panicDev{}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		access func([]byte) (bool, error)
		want   string
	}{
		{"pio read", func(d []byte) (bool, error) { return pio.Read(0x3fd, d) }, "internal error: device serial at 0x3fd: panic: boom"},
		{"pio write", func(d []byte) (bool, error) { return pio.Write(0x3f8, d) }, "internal error: device serial at 0x3f8: panic: boom"},
		{"mmio read", func(d []byte) (bool, error) { return mmio.Read(0xd0001070, d) }, "internal error: device virtio-blk vda at 0xd0001070: panic: boom"},
		{"mmio write", func(d []byte) (bool, error) { return mmio.Write(0xd0001050, d) }, "internal error: device virtio-blk vda at 0xd0001050: panic: boom"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := c.access(make([]byte, 1))
			if err == nil || err.Error() != c.want {
				t.Fatalf("error %v, want %q", err, c.want)
			}
			if p := guard.Of(err); p == nil || len(p.Stack) == 0 {
				t.Error("the error does not carry the panic's stack")
			}
		})
	}
}

// TestBusDispatchAllocs: the recover on the dispatch path costs no
// allocation when nothing panics (it runs on every guest exit to a device).
func TestBusDispatchAllocs(t *testing.T) {
	b := NewBus("pio")
	if err := b.Register("a", 0x3f8, 8, &nopDev{}); err != nil {
		t.Fatal(err)
	}
	d := make([]byte, 1)
	if n := testing.AllocsPerRun(1000, func() { _, _ = b.Read(0x3f9, d) }); n != 0 {
		t.Errorf("%v allocations per read", n)
	}
}

func TestSerialState(t *testing.T) {
	irq := &fakeIRQ{}
	s := NewSerial(nil, irq)
	s.Write(uartLCR, []byte{0x03})
	s.Write(uartIER, []byte{ierRDA})
	s.Write(uartMCR, []byte{mcrOUT2})
	s.Enqueue([]byte("abc"))
	st, err := s.SaveState()
	if err != nil {
		t.Fatal(err)
	}
	irq2 := &fakeIRQ{}
	s2 := NewSerial(nil, irq2)
	if err := s2.RestoreState(st); err != nil {
		t.Fatal(err)
	}
	var b [1]byte
	s2.Read(uartLCR, b[:])
	if b[0] != 0x03 {
		t.Errorf("LCR %#x after restore", b[0])
	}
	if !irq2.level {
		t.Error("the restored UART with data and RDA enabled does not raise its line")
	}
	for _, want := range "abc" {
		s2.Read(uartRBR, b[:])
		if b[0] != byte(want) {
			t.Errorf("FIFO gave %q, want %q", b[0], want)
		}
	}
	st.Data = st.Data[:3]
	if err := NewSerial(nil, nil).RestoreState(st); err == nil {
		t.Error("a truncated UART state restored")
	}
}

// Accesses counts each device's reads and writes, and those that hit none.
func TestBusAccesses(t *testing.T) {
	b := NewBus("pio")
	for _, w := range []struct {
		name string
		base uint64
	}{{"serial", 0x3f8}, {"i8042", 0x60}, {"idle", 0x400}} {
		if err := b.Register(w.name, w.base, 8, &nopDev{}); err != nil {
			t.Fatal(err)
		}
	}
	d := make([]byte, 1)
	for range 3 {
		_, _ = b.Write(0x3f8, d)
	}
	_, _ = b.Read(0x3fd, d)
	_, _ = b.Read(0x64, d)
	_, _ = b.Write(0x80, d) // no device
	got := b.Accesses()
	want := []Accesses{{"i8042", 0x60, 1, 0}, {"serial", 0x3f8, 1, 3}, {"no device", 0, 0, 1}}
	if !slices.Equal(got, want) {
		t.Errorf("Accesses() = %+v, want %+v", got, want)
	}
}
