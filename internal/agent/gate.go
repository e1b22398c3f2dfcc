package agent

import (
	"io"
	"sync"

	"github.com/microvm-dev/microvm/agentproto"
)

// Gate passes console output on only while the command runs: bytes before
// the agent's "ready" milestone (kernel log, agent banner) are held back,
// the last holdMax of them kept for diagnostics; after "command done"
// nothing passes.
type Gate struct {
	mu     sync.Mutex
	w      io.Writer
	state  gateState
	buf    []byte
	opened bool
}

type gateState int

const (
	gateBefore gateState = iota
	gateOpen
	gateClosed
)

const holdMax = 64 << 10

// NewGate returns a closed gate in front of w.
func NewGate(w io.Writer) *Gate { return &Gate{w: w} }

func (g *Gate) Write(b []byte) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	switch g.state {
	case gateBefore:
		g.buf = append(g.buf, b...)
		if len(g.buf) > holdMax {
			g.buf = g.buf[len(g.buf)-holdMax:]
		}
	case gateOpen:
		return g.w.Write(b)
	}
	return len(b), nil
}

// Milestone opens the gate at the agent's "ready" and closes it for good at
// "command done".
func (g *Gate) Milestone(code uint8) {
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case code == agentproto.MilestoneReady && g.state == gateBefore:
		g.state, g.opened, g.buf = gateOpen, true, nil
	case code == agentproto.MilestoneCmdDone:
		g.state = gateClosed
	}
}

// Held returns the output held back, if the gate never opened (the kernel
// log then says why the agent did not start); nil otherwise.
func (g *Gate) Held() []byte {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.opened {
		return nil
	}
	return append([]byte(nil), g.buf...)
}
