package main

import (
	"fmt"
	"strconv"

	"github.com/microvm-dev/microvm"
	"github.com/spf13/pflag"
)

// sandboxFlags are the sandbox's flags (docs/security.md), part of every
// command that boots a guest.
type sandboxFlags struct {
	seccomp, uid, gid, jail string
}

func (f *sandboxFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.seccomp, "seccomp", "kill", "system calls outside the VMM's allowlist: kill (the process dies of SIGSYS), log (they fail with EPERM and the kernel logs them) or off")
	fs.StringVar(&f.uid, "uid", "", "once the guest is set up, drop to this numeric user id (with --gid; needs root)")
	fs.StringVar(&f.gid, "gid", "", "once the guest is set up, drop to this numeric group id, with no supplementary groups (with --uid; needs root)")
	fs.StringVar(&f.jail, "jail", "", "once the guest is set up, chroot into this empty directory, created if missing (needs root)")
}

// apply puts the flags into cfg; the library checks the values it can
// (mode, root), this the ones only the command line can get wrong.
func (f *sandboxFlags) apply(cfg *microvm.Config) error {
	if f.seccomp == "" {
		// The API reads "" as the default; on the command line it is a
		// mistake.
		return &microvm.InputError{What: "--seccomp", Msg: "empty: want kill, log or off"}
	}
	cfg.Seccomp = microvm.SeccompMode(f.seccomp)
	cfg.Jail = f.jail
	switch {
	case f.uid == "" && f.gid == "":
		return nil
	case f.gid == "":
		return &microvm.InputError{What: "--uid", Msg: "needs --gid too: a user without its group would keep the caller's group"}
	case f.uid == "":
		return &microvm.InputError{What: "--gid", Msg: "needs --uid too"}
	}
	uid, err := parseID(f.uid)
	if err != nil {
		return &microvm.InputError{What: "--uid", Msg: err.Error()}
	}
	gid, err := parseID(f.gid)
	if err != nil {
		return &microvm.InputError{What: "--gid", Msg: err.Error()}
	}
	cfg.RunAs = &microvm.Credential{UID: uid, GID: gid}
	return nil
}

func parseID(s string) (uint32, error) {
	v, err := strconv.ParseUint(s, 10, 32)
	if err != nil || v == 1<<32-1 {
		return 0, fmt.Errorf("%q is not a numeric id (0 to 4294967294)", s)
	}
	return uint32(v), nil
}

// args are the flags again, for a child run (bench).
func (f *sandboxFlags) args() []string {
	a := []string{"--seccomp=" + f.seccomp}
	if f.uid != "" || f.gid != "" {
		a = append(a, "--uid="+f.uid, "--gid="+f.gid)
	}
	if f.jail != "" {
		a = append(a, "--jail="+f.jail)
	}
	return a
}
