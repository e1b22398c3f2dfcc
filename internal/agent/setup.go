package agent

import (
	"io"
	"strings"

	"github.com/microvm-dev/microvm/agentproto"
	"github.com/microvm-dev/microvm/internal/vmm"
)

// Params returns the kernel parameters that start job in the agent: the
// job itself on the command line, or, with the agent channel, only the
// note that the channel exists (the job then travels over it).
func Params(job agentproto.Job, channel bool) string {
	if channel {
		return agentproto.ChannelParam + "=1"
	}
	return agentproto.CmdParam + "=" + agentproto.EncodeJob(job)
}

// Channel is the agent channel for a machine that runs job.
func Channel(job agentproto.Job) *vmm.Channel {
	return &vmm.Channel{
		Name: agentproto.ChannelName,
		Open: func(e vmm.ChannelEnd) io.Writer {
			c := NewConn(job, e.Port, e.Milestone, e.Logf, e.Fatal)
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
