package agent

import (
	"io"
	"strings"

	"github.com/microvm-dev/microvm/agentproto"
	"github.com/microvm-dev/microvm/internal/vmm"
)

// Params returns the kernel parameters that start cmd in the agent: the
// command itself on the command line, or, with the agent channel, only the
// note that the channel exists (the command then travels over it).
func Params(cmd []string, channel bool) string {
	if channel {
		return agentproto.ChannelParam + "=1"
	}
	return agentproto.CmdParam + "=" + agentproto.EncodeCmd(cmd)
}

// Channel is the agent channel for a machine that runs cmd.
func Channel(cmd []string) *vmm.Channel {
	return &vmm.Channel{
		Name: agentproto.ChannelName,
		Open: func(e vmm.ChannelEnd) io.Writer {
			c := NewConn(cmd, e.Port, e.Milestone, e.Logf, e.Fatal)
			c.BeforeReply(e.BeforeReply)
			if e.Waiting {
				c.Waiting()
			}
			return c
		},
	}
}

// Cmdline joins kernel command-line parts with single spaces, leaving out
// the empty ones.
func Cmdline(parts ...string) string {
	var kept []string
	for _, p := range parts {
		if p != "" {
			kept = append(kept, p)
		}
	}
	return strings.Join(kept, " ")
}
