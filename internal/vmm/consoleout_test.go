package vmm

import (
	"bytes"
	"strings"
	"sync"
	"testing"
	"time"
)

// stalled is a console reader that never reads: Write blocks until unblock.
type stalled struct{ unblock chan struct{} }

func (s stalled) Write(b []byte) (int, error) { <-s.unblock; return len(b), nil }

// slow takes every write, a little late.
type slow struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *slow) Write(b []byte) (int, error) {
	time.Sleep(time.Millisecond)
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(b)
}

// TestConsoleOutStalled: a reader that never reads back-pressures the
// writer only until the machine stops; close gives up within a bound and
// counts what was lost.
func TestConsoleOutStalled(t *testing.T) {
	st := stalled{make(chan struct{})}
	defer close(st.unblock)
	c := newConsoleOut(st, failOnPanic(t))
	chunk := make([]byte, 4096)
	wrote := make(chan int)
	go func() {
		n := 0
		for i := 0; i < 2*consoleBufMax/len(chunk); i++ {
			k, _ := c.Write(chunk)
			n += k
		}
		wrote <- n
	}()
	select {
	case <-wrote:
		t.Fatal("writer was not held back by a full buffer")
	case <-time.After(100 * time.Millisecond):
	}
	start := time.Now()
	c.release()
	n := <-wrote
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Errorf("writer returned %v after release", d)
	}
	dropped := c.close(time.Time{})
	if d := time.Since(start); d > consoleFlushStall+200*time.Millisecond {
		t.Errorf("close took %v with a stalled reader; bound %v", d, consoleFlushStall)
	}
	// All but the chunk the drainer holds is lost.
	if dropped < uint64(n-consoleChunk) || dropped > uint64(n) {
		t.Errorf("dropped %d of %d bytes", dropped, n)
	}
	if _, err := c.Write(chunk); err != nil {
		t.Errorf("write after close: %v", err)
	}
}

// TestConsoleOutSlow: a reader that keeps reading gets every byte, in
// order, even more than the buffer holds.
func TestConsoleOutSlow(t *testing.T) {
	s := &slow{}
	c := newConsoleOut(s, failOnPanic(t))
	var want bytes.Buffer
	for i := 0; i < 3*consoleBufMax/1000; i++ {
		b := bytes.Repeat([]byte{byte(i)}, 1000)
		want.Write(b)
		c.Write(b)
	}
	if d := c.close(time.Time{}); d != 0 {
		t.Fatalf("%d bytes dropped for a reader that reads", d)
	}
	if !bytes.Equal(s.buf.Bytes(), want.Bytes()) {
		t.Fatalf("got %d bytes, want %d, or out of order", s.buf.Len(), want.Len())
	}
}

// TestConsoleOutDrainBy: a reader that reads, but too slowly to take the
// rest before the drain deadline, loses the rest instead of holding up
// close past it.
func TestConsoleOutDrainBy(t *testing.T) {
	c := newConsoleOut(&slow{}, failOnPanic(t))
	for i := 0; i < consoleBufMax/1000; i++ {
		c.Write(make([]byte, 1000)) // ~1 ms a 16 KiB chunk: well over 10 ms
	}
	start := time.Now()
	d := c.close(start.Add(10 * time.Millisecond))
	if el := time.Since(start); el > 200*time.Millisecond {
		t.Errorf("close took %v with a 10ms drain deadline", el)
	}
	if d == 0 {
		t.Error("nothing counted as dropped")
	}
}

// TestConsoleOutAfter: a mark runs once the output written before it has
// reached the reader, in order, and at once when nothing is pending; close
// runs the marks a stalled reader never let through.
func TestConsoleOutAfter(t *testing.T) {
	s := &slow{}
	c := newConsoleOut(s, failOnPanic(t))
	seen := make(chan int, 3)
	mark := func() {
		s.mu.Lock()
		seen <- s.buf.Len()
		s.mu.Unlock()
	}
	c.after(mark) // nothing written yet: runs now
	if got := <-seen; got != 0 {
		t.Fatalf("first mark saw %d bytes, want 0", got)
	}
	total := 0
	for i := 0; i < 40; i++ {
		c.Write(bytes.Repeat([]byte{'x'}, 1000))
		total += 1000
	}
	c.after(mark)
	c.Write([]byte("after the mark"))
	select {
	case got := <-seen:
		if got < total {
			t.Fatalf("the mark ran with %d of the %d bytes before it written", got, total)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the mark never ran")
	}
	c.close(time.Time{})

	st := stalled{unblock: make(chan struct{})}
	c = newConsoleOut(st, failOnPanic(t))
	c.Write([]byte("never read"))
	ran := make(chan struct{})
	c.after(func() { close(ran) })
	go func() { time.Sleep(100 * time.Millisecond); c.release() }()
	c.close(time.Now().Add(200 * time.Millisecond))
	select {
	case <-ran:
	default:
		t.Fatal("close did not run the mark of output that was dropped")
	}
	close(st.unblock)
}

// TestConsoleOutMarkSplitsChunks: bytes written before a mark reach the
// consumer before it runs and bytes after it after, even when both sit in
// the buffer at once (the drainer must not hand them over in one chunk):
// how `run`'s gate opens exactly at the agent's "ready".
func TestConsoleOutMarkSplitsChunks(t *testing.T) {
	for i := 0; i < 50; i++ {
		var mu sync.Mutex
		var log []string
		rec := writerFunc(func(b []byte) (int, error) {
			time.Sleep(100 * time.Microsecond) // the drainer lags
			mu.Lock()
			log = append(log, string(b))
			mu.Unlock()
			return len(b), nil
		})
		c := newConsoleOut(rec, failOnPanic(t))
		c.Write([]byte("boot log "))
		c.after(func() { mu.Lock(); log = append(log, "|ready|"); mu.Unlock() })
		c.Write([]byte("out-42 "))
		c.after(func() { mu.Lock(); log = append(log, "|done|"); mu.Unlock() })
		c.Write([]byte("late"))
		c.close(time.Time{})
		mu.Lock()
		got := strings.Join(log, "")
		mu.Unlock()
		if want := "boot log |ready|out-42 |done|late"; got != want {
			t.Fatalf("round %d: consumer saw %q, want %q", i, got, want)
		}
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }

// TestConsoleOutMarksBounded: a guest that floods milestones while the
// consumer is stalled makes at most maxMarks wait; the rest are dropped and
// counted, and close still runs those that waited.
func TestConsoleOutMarksBounded(t *testing.T) {
	st := stalled{unblock: make(chan struct{})}
	c := newConsoleOut(st, failOnPanic(t))
	c.Write([]byte("held"))
	ran := 0
	for i := 0; i < 10*maxMarks; i++ {
		c.after(func() { ran++ })
	}
	c.mu.Lock()
	waiting, dropped := len(c.marks), c.droppedMarks
	c.mu.Unlock()
	if waiting > maxMarks || dropped != uint64(10*maxMarks-waiting) {
		t.Fatalf("%d marks waiting, %d dropped, for %d sent (bound %d)", waiting, dropped, 10*maxMarks, maxMarks)
	}
	c.release()
	c.close(time.Now().Add(100 * time.Millisecond))
	if ran != waiting {
		t.Fatalf("close ran %d of the %d waiting marks", ran, waiting)
	}
	close(st.unblock)
}
