package vmm

import (
	"io"

	"github.com/microvm-dev/microvm/initrd/agentproto"
)

// agentConn is the host end of the agent channel (the virtio-console port
// agentproto.ChannelName): it answers the agent's "ready" with the command
// and turns milestones and the exit status into timeline marks. It runs on
// the console device's goroutine.
type agentConn struct {
	m     *Machine
	port  io.Writer // to the agent
	split agentproto.LineSplitter
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
		reply := agentproto.EncodeMsg(agentproto.Msg{T: agentproto.MsgCmd, Argv: a.m.cfg.Command})
		// Writing to the port may wait for the guest to read, and this runs
		// on the goroutine that moves the bytes: send from another one.
		go a.port.Write(reply)
	case agentproto.MsgMilestone:
		a.m.milestone(msg.Code, 0)
	case agentproto.MsgExit:
		a.m.milestone(MilestoneCommandDone, uint32(msg.Status))
	}
}
