package main

import (
	"io"
	"os"
	"sync"
	"sync/atomic"

	"golang.org/x/term"
)

// ttyGuard owns the terminal's saved state: raw mode is entered once and
// restored exactly once, by whichever of the normal exit and the signal
// fallback in main comes first.
type ttyGuard struct {
	mu      sync.Mutex
	restore func()
}

// makeRaw puts fd in raw mode (so Ctrl-C reaches the guest) if it is a
// terminal.
func (t *ttyGuard) makeRaw(fd int) {
	if !term.IsTerminal(fd) {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.restore != nil {
		return
	}
	if st, err := term.MakeRaw(fd); err == nil {
		t.restore = func() { _ = term.Restore(fd, st) }
	}
}

// Restore puts the terminal back as it was; it is safe to call any time.
func (t *ttyGuard) Restore() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.restore != nil {
		t.restore()
		t.restore = nil
	}
}

const escapeKey = 0x01 // Ctrl-a

// escReader is the console input: stdin with the escape sequence taken
// out. Ctrl-a x quits (calls stop and ends the input); Ctrl-a Ctrl-a sends
// one Ctrl-a. A closed or non-TTY stdin just ends the input: output keeps
// flowing and nothing spins.
type escReader struct {
	r    io.Reader
	stop func()
	esc  bool
	quit atomic.Bool
}

func newConsoleInput(stop func()) *escReader { return &escReader{r: os.Stdin, stop: stop} }

func (e *escReader) Read(p []byte) (int, error) {
	if e.quit.Load() {
		return 0, io.EOF
	}
	// An escaped byte may expand to two, so read at most half of p.
	buf := make([]byte, max(1, len(p)/2))
	n, err := e.r.Read(buf)
	out := p[:0]
	for _, b := range buf[:n] {
		switch {
		case e.esc && b == 'x':
			e.quit.Store(true)
			e.stop()
			return len(out), io.EOF
		case e.esc:
			e.esc = false
			if b != escapeKey {
				out = append(out, escapeKey)
			}
			out = append(out, b)
		case b == escapeKey:
			e.esc = true
		default:
			out = append(out, b)
		}
	}
	return len(out), err
}
