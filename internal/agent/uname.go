package agent

import (
	"strings"

	"github.com/microvm-dev/microvm/agentproto"
	"golang.org/x/sys/unix"
)

// UnameParams are the kernel parameters of uname mode: the agent prints
// its kernel's uname as one agentproto line and powers off.
const UnameParams = agentproto.UnameParam + "=1"

// FindUname returns the last uname line in console output.
func FindUname(out string) (agentproto.Uname, bool) {
	var u agentproto.Uname
	found := false
	for _, line := range strings.Split(out, "\n") {
		if v, err := agentproto.ParseUnameLine(line); err == nil {
			u, found = v, true
		}
	}
	return u, found
}

// HostUname is this host's uname in the agent's format.
func HostUname() agentproto.Uname {
	u, _ := agentproto.LocalUname()
	var si unix.Sysinfo_t
	if unix.Sysinfo(&si) == nil {
		u.UptimeS = float64(si.Uptime)
	}
	return u
}
