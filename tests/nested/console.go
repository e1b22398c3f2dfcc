package nested

import (
	"bytes"
	"io"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/microvm-dev/microvm/tests/nested/l1proto"
)

var exitRE = regexp.MustCompile(regexp.QuoteMeta(l1proto.Exit) + ` (-?[0-9]+)`)

// ParseExit returns the payload exit code from the last "@@L1-EXIT <n>"
// marker in out, and whether there was one.
func ParseExit(out []byte) (int, bool) {
	m := exitRE.FindAllSubmatch(out, -1)
	if len(m) == 0 {
		return 0, false
	}
	n, err := strconv.Atoi(string(m[len(m)-1][1]))
	if err != nil {
		return 0, false
	}
	return n, true
}

// console collects QEMU's output, forwards it live and watches for the
// exit marker.
type console struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	out     io.Writer
	line    []byte
	exited  chan struct{} // closed when the exit marker has been seen
	once    sync.Once
	started bool
	// alive is when the payload started or L1 last printed a heartbeat.
	alive     time.Time
	heartbeat string // the last heartbeat line
}

func (c *console) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.buf.Write(p)
	if c.out != nil {
		c.out.Write(p) // a failing console must not stop the run
	}
	for _, b := range p {
		if b != '\n' {
			c.line = append(c.line, b)
			continue
		}
		if bytes.Contains(c.line, []byte(l1proto.Start)) {
			c.started = true
			c.alive = time.Now()
		}
		if i := bytes.Index(c.line, []byte(l1proto.Heartbeat)); i >= 0 {
			c.alive = time.Now()
			c.heartbeat = strings.TrimSpace(string(c.line[i:]))
		}
		if exitRE.Match(c.line) {
			c.once.Do(func() { close(c.exited) })
		}
		c.line = c.line[:0]
	}
	return len(p), nil
}

func (c *console) bytes() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]byte(nil), c.buf.Bytes()...)
}

// note writes a harness line into the console stream, on a line of its own.
func (c *console) note(line string) {
	c.Write([]byte("\n" + line + "\n"))
}

// lastBeat is when L1 last printed a heartbeat (or started the payload).
func (c *console) lastBeat() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.alive
}

// silent reports how long L1 has gone without a sign of life since the
// payload started (0 before it started), and the last heartbeat.
func (c *console) silent() (time.Duration, string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.started {
		return 0, ""
	}
	return time.Since(c.alive), c.heartbeat
}

// tail is the last n lines of out, carriage returns dropped.
func tail(out []byte, n int) []string {
	s := strings.ReplaceAll(string(out), "\r", "")
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	if len(lines) == 1 && lines[0] == "" {
		return nil
	}
	return lines
}
