package agent

import (
	"bytes"
	"sync"
)

// captureMax bounds what a Capture keeps: the uname line and a command's
// output come early, and a guest must not grow the host without limit.
const captureMax = 4 << 20

// Capture collects console output (the first captureMax bytes) for
// parsing after the run; the device goroutines and the caller may use it
// at once. The zero value is ready.
type Capture struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (c *Capture) Write(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if room := captureMax - c.buf.Len(); room > 0 {
		c.buf.Write(b[:min(len(b), room)])
	}
	return len(b), nil
}

func (c *Capture) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.String()
}
