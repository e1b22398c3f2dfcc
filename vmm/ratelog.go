package vmm

import (
	"fmt"
	"sync"
)

// logBurst is how many lines one source of guest-triggered warnings (a
// device or the agent channel, and one kind of message) may print. A guest
// can repeat any event forever (break a queue, reset, repeat), so the rest
// are only counted and summed up in one line when the machine is closed.
const logBurst = 5

// rateLog passes at most logBurst lines per key to sink. Keys come from the
// VMM's own format strings and device names, never from guest data, so
// their number is fixed by the code.
type rateLog struct {
	sink func(line string)

	mu    sync.Mutex
	keys  map[string]*logCount
	order []string // keys in first-seen order, for a stable summary
}

type logCount struct {
	n          uint64
	suppressed string // the first line not printed
}

func newRateLog(sink func(string)) *rateLog {
	return &rateLog{sink: sink, keys: map[string]*logCount{}}
}

// logf prints the line unless its key has used up its burst.
func (l *rateLog) logf(key, format string, a ...any) {
	line := fmt.Sprintf(format, a...)
	l.mu.Lock()
	c := l.keys[key]
	if c == nil {
		c = &logCount{}
		l.keys[key] = c
		l.order = append(l.order, key)
	}
	c.n++
	print := c.n <= logBurst
	if c.n == logBurst+1 {
		c.suppressed = line
	}
	l.mu.Unlock()
	if print {
		l.sink(line)
	}
}

// summary prints one line per key that had lines suppressed, and forgets
// them.
func (l *rateLog) summary() {
	l.mu.Lock()
	var out []string
	for _, k := range l.order {
		if c := l.keys[k]; c.n > logBurst {
			out = append(out, fmt.Sprintf("%d more lines like %q suppressed", c.n-logBurst, c.suppressed))
		}
	}
	l.keys, l.order = map[string]*logCount{}, nil
	l.mu.Unlock()
	for _, s := range out {
		l.sink(s)
	}
}
