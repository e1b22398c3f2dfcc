package vmm

import (
	"sync/atomic"

	"github.com/microvm-dev/microvm/agentproto"
	"github.com/microvm-dev/microvm/internal/guard"
)

// agentConn is the host end of the agent channel (the virtio-console port
// agentproto.ChannelName): it answers the agent's "ready" with the command
// and turns milestones and the exit status into timeline marks. It runs on
// the console device's goroutine.
type agentConn struct {
	m     *Machine
	port  agentPort // to the agent
	split agentproto.LineSplitter
	// replying is set while the one reply writer runs. A "ready" that
	// arrives while a reply is still being written or not yet read is
	// answered by that reply (the agent sends one and reads one), so the
	// guest cannot make the host hold more than one reply or start more
	// than one goroutine, however often it repeats itself.
	replying atomic.Bool
	// dropped counts the "ready" messages answered that way.
	dropped atomic.Uint64
}

// agentPort is the part of *virtio.Port the agent uses (a fake in tests).
type agentPort interface {
	Write([]byte) (int, error)
	Unread() int
}

func (a *agentConn) Write(b []byte) (int, error) {
	a.split.Feed(b, a.line, func() {
		a.m.logf("agent channel: message over %d bytes dropped", agentproto.MaxMsgLen)
	})
	return len(b), nil
}

func (a *agentConn) line(l []byte) {
	msg, err := agentproto.ParseMsg(l)
	if err != nil {
		a.m.logf("agent channel: %v", err)
		return
	}
	switch msg.T {
	case agentproto.MsgReady:
		if a.port.Unread() > 0 || !a.replying.CompareAndSwap(false, true) {
			a.dropped.Add(1)
			return
		}
		reply := agentproto.EncodeMsg(agentproto.Msg{T: agentproto.MsgCmd, Argv: a.m.cfg.Command})
		// Writing to the port may wait for the guest to read (a command
		// line can be longer than the port's buffer), and this runs on the
		// goroutine that moves the bytes: send from another one. It ends
		// when the guest has taken all but the last conMaxPending bytes, or
		// when the machine closes the port.
		guard.Go("agent reply", a.m.fatal, func() {
			defer a.replying.Store(false)
			_, _ = a.port.Write(reply)
		})
	case agentproto.MsgMilestone:
		a.m.milestone(msg.Code, 0)
	case agentproto.MsgExit:
		a.m.milestone(MilestoneCommandDone, uint32(msg.Status))
	}
}
