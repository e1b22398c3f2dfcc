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
	var u unix.Utsname
	_ = unix.Uname(&u)
	var si unix.Sysinfo_t
	_ = unix.Sysinfo(&si)
	return agentproto.Uname{
		Sysname:  unix.ByteSliceToString(u.Sysname[:]),
		Nodename: unix.ByteSliceToString(u.Nodename[:]),
		Release:  unix.ByteSliceToString(u.Release[:]),
		Version:  unix.ByteSliceToString(u.Version[:]),
		Machine:  unix.ByteSliceToString(u.Machine[:]),
		UptimeS:  float64(si.Uptime),
	}
}
