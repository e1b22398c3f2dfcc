package vmm

import (
	"fmt"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/microvm-dev/microvm/internal/guard"
)

const (
	// logBurst is how many lines one source of guest-triggered warnings (a
	// device or the agent channel, and one kind of message) may print in a
	// machine's life. A guest can repeat any event forever (break a queue,
	// reset, repeat), so the rest are only counted and summed up in one
	// line when the machine is closed.
	logBurst = 5
	// logLineMax bounds one line: most carry guest bytes (an agent message,
	// a quoted type), and a guest must not turn five lines into megabytes.
	logLineMax = 256
	// logQueue is how many lines wait for a slow sink (stderr a pipe
	// nobody reads); more are dropped and counted, so that no logging
	// device, vCPU or Close ever waits on the sink.
	logQueue = 64
	// logFlushWait is how long close waits for the sink to take the
	// queued lines before it abandons the writer goroutine.
	logFlushWait = 500 * time.Millisecond
)

// rateLog passes at most logBurst lines per key, each at most logLineMax
// bytes, to sink, from one writer goroutine. Keys come from the VMM's own
// format strings and device names, never from guest data, so their number
// is fixed by the code.
type rateLog struct {
	lines chan string
	done  chan struct{} // closed when the writer has passed every line on

	mu      sync.Mutex
	keys    map[string]*logCount
	order   []string // keys in first-seen order, for a stable summary
	dropped uint64   // lines the sink did not take in time
	closed  bool
}

type logCount struct {
	n          uint64
	suppressed string // the first line not printed, capped
}

// newRateLog starts the writer; a panic there (in sink, or a bug here) is
// passed to report as an internal error.
func newRateLog(sink func(string), report func(error)) *rateLog {
	l := &rateLog{lines: make(chan string, logQueue), done: make(chan struct{}), keys: map[string]*logCount{}}
	guard.Go("log writer", report, func() {
		defer close(l.done)
		for s := range l.lines {
			sink(s)
		}
	})
	return l
}

// capLine cuts s to logLineMax bytes (on a rune boundary) and says so.
func capLine(s string) string {
	if len(s) <= logLineMax {
		return s
	}
	i := logLineMax
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return fmt.Sprintf("%s... (%d bytes cut)", s[:i], len(s)-i)
}

// logf prints the line unless its key has used up its burst. Lines past
// the burst are not even formatted, except the first (for the summary).
func (l *rateLog) logf(key, format string, a ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.keys[key]
	if c == nil {
		c = &logCount{}
		l.keys[key] = c
		l.order = append(l.order, key)
	}
	c.n++
	switch {
	case c.n <= logBurst:
		l.emitLocked(capLine(fmt.Sprintf(format, a...)))
	case c.n == logBurst+1:
		c.suppressed = capLine(fmt.Sprintf(format, a...))
	}
}

// emitLocked queues s for the writer, or drops and counts it when the sink
// is behind: it never waits.
func (l *rateLog) emitLocked(s string) {
	if l.closed {
		return
	}
	select {
	case l.lines <- s:
	default:
		l.dropped++
	}
}

// close prints one line per key that had lines suppressed (and one for lines
// the sink did not take), waits at most logFlushWait for the sink, and ends
// the log: a sink that is stalled keeps its goroutine, abandoned.
func (l *rateLog) close() {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	for _, k := range l.order {
		if c := l.keys[k]; c.n > logBurst {
			l.emitLocked(fmt.Sprintf("%d more lines like %q suppressed", c.n-logBurst, c.suppressed))
		}
	}
	if l.dropped > 0 {
		d := l.dropped
		l.emitLocked(fmt.Sprintf("%d log lines dropped: the log's reader did not take them", d))
	}
	l.closed = true
	close(l.lines)
	l.mu.Unlock()
	select {
	case <-l.done:
	case <-time.After(logFlushWait):
	}
}
