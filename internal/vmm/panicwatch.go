package vmm

import (
	"bytes"
	"io"
	"sync"
)

// panicWatcher passes console output through and notices a Linux
// "Kernel panic - not syncing" line, so that a panic followed by the reboot
// that panic=N triggers is reported as a crash, not a clean reset. It keeps
// at most 256 bytes of tail and 200 bytes of the panic line, whatever the
// guest prints.
type panicWatcher struct {
	w    io.Writer
	mu   sync.Mutex
	tail []byte
	hit  []byte
}

var panicMarker = []byte("Kernel panic - not syncing")

const (
	panicTailMax = 256
	panicLineMax = 200
)

func (p *panicWatcher) Write(b []byte) (int, error) {
	p.mu.Lock()
	switch {
	case p.hit == nil:
		p.tail = append(p.tail, b...)
		if i := bytes.Index(p.tail, panicMarker); i >= 0 {
			p.hit = append([]byte(nil), p.tail[i:]...)
			p.tail = nil
		} else if len(p.tail) > panicTailMax {
			p.tail = append(p.tail[:0], p.tail[len(p.tail)-len(panicMarker)+1:]...)
		}
	case len(p.hit) < panicLineMax && bytes.IndexByte(p.hit, '\n') < 0:
		p.hit = append(p.hit, b...)
	}
	p.mu.Unlock()
	return p.w.Write(b)
}

// line returns the panic line seen so far (at most panicLineMax bytes and
// what the last write added), or "" if there was none.
func (p *panicWatcher) line() string {
	if p == nil {
		return ""
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.hit == nil {
		return ""
	}
	l, _, _ := bytes.Cut(p.hit, []byte("\n"))
	if l = bytes.TrimSpace(l); len(l) == 0 {
		return string(panicMarker)
	}
	return string(l)
}
