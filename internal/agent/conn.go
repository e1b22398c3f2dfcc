// Package agent is the host's side of the microvm guest agent (the u-root
// uinit in the initrd): the command-line parameters that start it, the
// agent channel connection that hands it the command and turns its messages
// into milestones, the gate that passes on only the command's output, and
// the uname mode. The wire formats are package agentproto's.
package agent

import (
	"crypto/rand"
	"sync/atomic"
	"time"

	"github.com/microvm-dev/microvm/agentproto"
	"github.com/microvm-dev/microvm/internal/guard"
)

// Port is the host end of the agent channel (the virtio-console port
// agentproto.ChannelName): writes go to the guest; Unread is how much of
// them it has not read yet.
type Port interface {
	Write([]byte) (int, error)
	Unread() int
}

// Conn is the host end of the agent channel: it answers the agent's
// "ready" with the command and turns milestones and the exit status into
// milestone calls. Its Write runs on the console device's goroutine.
type Conn struct {
	job       agentproto.Job
	port      Port
	milestone func(code uint8, value uint32)
	logf      func(format string, a ...any)
	fatal     func(error)
	split     agentproto.LineSplitter
	// before, if set, runs before the reply to "ready" (on the reply
	// goroutine): a snapshot at agent ready is taken there.
	before func()
	// replying is set while the one reply writer runs. A "ready" that
	// arrives while a reply is still being written or not yet read is
	// answered by that reply (the agent sends one and reads one), so the
	// guest cannot make the host hold more than one reply or start more
	// than one goroutine, however often it repeats itself.
	replying atomic.Bool
	// dropped counts the "ready" messages answered that way.
	dropped atomic.Uint64
}

// NewConn returns the connection that will run job. milestone receives the
// agent's milestones (MilestoneCmdDone with the exit status); logf the
// guest's protocol errors; fatal a panic of the reply goroutine.
func NewConn(job agentproto.Job, port Port, milestone func(uint8, uint32), logf func(string, ...any), fatal func(error)) *Conn {
	return &Conn{job: job, port: port, milestone: milestone, logf: logf, fatal: fatal}
}

// BeforeReply makes the connection run f before it replies to "ready".
func (a *Conn) BeforeReply(f func()) { a.before = f }

// Waiting tells the connection that the agent sent its "ready" already
// (the machine was restored from a snapshot taken while the agent waited
// for its command): the reply goes out now.
func (a *Conn) Waiting() { a.ready() }

// Write takes what the agent sent; a message over agentproto.MaxMsgLen is
// dropped.
func (a *Conn) Write(b []byte) (int, error) {
	a.split.Feed(b, a.line, func() {
		a.logf("agent channel: message over %d bytes dropped", agentproto.MaxMsgLen)
	})
	return len(b), nil
}

// Close reports, once, the "ready" messages that were coalesced.
func (a *Conn) Close() error {
	if n := a.dropped.Swap(0); n > 0 {
		a.logf("agent channel: %d repeated \"ready\" messages answered by the pending reply", n)
	}
	return nil
}

func (a *Conn) line(l []byte) {
	msg, err := agentproto.ParseMsg(l)
	if err != nil {
		a.logf("agent channel: %v", err)
		return
	}
	switch msg.T {
	case agentproto.MsgReady:
		a.ready()
	case agentproto.MsgMilestone:
		a.milestone(msg.Code, 0)
	case agentproto.MsgExit:
		a.milestone(agentproto.MilestoneCmdDone, uint32(msg.Status))
	}
}

// seedLen is how much of the host's entropy each command carries.
const seedLen = 64

func (a *Conn) ready() {
	if a.port.Unread() > 0 || !a.replying.CompareAndSwap(false, true) {
		a.dropped.Add(1)
		return
	}
	// Writing to the port may wait for the guest to read (a command line
	// can be longer than the port's buffer), and this runs on the
	// goroutine that moves the bytes: send from another one. It ends when
	// the guest has taken all but the last bytes the port keeps, or when
	// the machine closes the port. The seed and the clock are taken as
	// late as possible: after a snapshot, and just before the send.
	guard.Go("agent reply", a.fatal, func() {
		defer a.replying.Store(false)
		if a.before != nil {
			a.before()
		}
		seed := make([]byte, seedLen)
		_, _ = rand.Read(seed) // getrandom(2); it does not fail on Linux
		msg := agentproto.CmdMsg(a.job)
		msg.Seed, msg.TimeNS = seed, time.Now().UnixNano()
		reply := agentproto.EncodeMsg(msg)
		_, _ = a.port.Write(reply)
	})
}
