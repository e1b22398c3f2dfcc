package virtio

import (
	"encoding/binary"
	"io"
	"testing"
	"time"

	"github.com/hugelgupf/p9/p9"
)

// recorder keeps what p9's client writes: seeds of real 9P traffic.
type recorder struct {
	*p9Driver
	msgs [][]byte
}

func (r *recorder) Write(p []byte) (int, error) {
	if r.closed.Load() {
		return 0, io.ErrClosedPipe
	}
	// The client writes one message per send, header first.
	if len(r.msgs) > 0 && len(r.msgs[len(r.msgs)-1]) < int(binary.LittleEndian.Uint32(r.msgs[len(r.msgs)-1])) {
		r.msgs[len(r.msgs)-1] = append(r.msgs[len(r.msgs)-1], p...)
	} else {
		r.msgs = append(r.msgs, append([]byte(nil), p...))
	}
	return r.p9Driver.Write(p)
}

// p9Session returns the T-messages of a short honest session.
func p9Session(t testing.TB) [][]byte {
	s, _ := p9Share(t, false)
	rec := &recorder{p9Driver: newP9Driver(t, NewNineP("t", s))}
	defer rec.tr.Close()
	c, err := p9.NewClient(rec, p9.WithMessageSize(8192))
	if err != nil {
		t.Fatal(err)
	}
	root, err := c.Attach("")
	if err != nil {
		t.Fatal(err)
	}
	_, f, _ := root.Walk([]string{"hello"})
	f.Open(p9.ReadOnly)
	f.ReadAt(make([]byte, 64), 0)
	f.GetAttr(p9.AttrMaskAll)
	_, d, _ := root.Walk(nil)
	d.Open(p9.ReadOnly)
	d.Readdir(0, 4096)
	_, d2, _ := root.Walk(nil)
	nf, _, _, _ := d2.Create("x", p9.ReadWrite, 0o644, p9.NoUID, p9.NoGID)
	if nf != nil {
		nf.WriteAt([]byte("data"), 0)
	}
	root.Mkdir("dir", 0o755, p9.NoUID, p9.NoGID)
	root.Symlink("hello", "link", p9.NoUID, p9.NoGID)
	root.UnlinkAt("link", 0)
	root.StatFS()
	c.Close()
	rec.Close()
	return rec.msgs
}

// FuzzNinePFraming feeds the transport any chains: records of
// [writable/64][len le16][readable bytes], eight chains at a time. It
// checks that nothing panics, every returned chain was offered and says no
// more than its writable length, the device either answers or goes to
// NEEDS_RESET, and Close returns.
func FuzzNinePFraming(f *testing.F) {
	f.Add([]byte{})
	seed := func(msgs [][]byte) []byte {
		var b []byte
		for _, m := range msgs {
			b = append(b, 255)
			b = binary.LittleEndian.AppendUint16(b, uint16(len(m)))
			b = append(b, m...)
		}
		return b
	}
	f.Add(seed([][]byte{tversion(8192)}))
	f.Add(seed([][]byte{tversion(8192), msg(p9Tflush, 1, 2, 0), msg(110, 3, 1)}))
	sess := p9Session(f)
	f.Add(seed(sess))
	f.Add(seed(sess[:2]))
	f.Fuzz(func(t *testing.T, data []byte) {
		const ram9 = 1 << 20
		r := make(ram, ram9)
		s, _ := p9Share(t, true)
		tr := NewMMIO("virtio-9p fuzz", NewNineP("t", s), r, &fakeIRQ{}, func(string, ...any) {}, failOnPanic(t))
		defer returns(t, "Close", tr.Close)
		if !driverInit(tr, FeatureVersion1|p9FMountTag) {
			t.Fatal("init")
		}
		for len(data) >= 3 && reg32(tr, regStatus)&StatusNeedsReset == 0 {
			var wlen [8]uint32
			var descs []desc
			n := 0
			for ; n < 8 && len(data) >= 3; n++ {
				w := uint32(data[0]) * 64
				l := min(int(binary.LittleEndian.Uint16(data[1:])), len(data)-3, 0x4000)
				at := uint64(0x10000 + n*0x8000)
				copy(r[at:], data[3:3+l])
				data = data[3+l:]
				wlen[n] = w
				descs = append(descs, desc{at, uint32(l), descFNext, uint16(2*n + 1)}, desc{at + 0x4000, w, descFWrite, 0})
			}
			putDescs(r, tDesc, descs)
			start := usedIdx(r, tUsed)
			for i := 0; i < n; i++ {
				offer(r, uint16(2*i))
			}
			tr.Notify(0)
			deadline := time.Now().Add(2 * time.Second)
			for usedIdx(r, tUsed)-start < uint16(n) && reg32(tr, regStatus)&StatusNeedsReset == 0 {
				if time.Now().After(deadline) {
					// A request may legitimately wait (a Tflush for a slow
					// one); but the device must still stop on Close.
					break
				}
				time.Sleep(100 * time.Microsecond)
			}
			for i := start; i != usedIdx(r, tUsed); i++ {
				e := r[tUsed+4+8*uint64(i%tSize):]
				id, l := binary.LittleEndian.Uint32(e), binary.LittleEndian.Uint32(e[4:])
				if id%2 != 0 || id/2 >= uint32(n) || l > wlen[id/2] {
					t.Fatalf("used element id %d len %d (writable %v)", id, l, wlen[:n])
				}
			}
		}
	})
}
