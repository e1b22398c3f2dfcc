// Package sandbox confines the microvm process once its guest is set up:
// a seccomp-BPF allowlist on every thread, no capabilities, no_new_privs,
// an optional unprivileged user and chroot jail, no core dumps and tight
// resource limits. docs/security.md is the threat model it serves.
//
// Everything here is per process and cannot be undone, so it is applied
// once, after every file the guest needs is open, guest memory is mapped
// and the vCPUs exist, and before the first guest instruction runs: from
// then on a guest that took over the VMM's device code holds a process
// that can do nothing but run this guest.
package sandbox

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Mode is what the seccomp filter does with a call outside the allowlist.
type Mode string

const (
	Default Mode = ""     // Kill
	Kill    Mode = "kill" // the process dies of SIGSYS
	Log     Mode = "log"  // the call fails with EPERM and the kernel logs it
	Off     Mode = "off"  // no filter (the rest of the sandbox still applies)
)

// Credential is a user and group to run as.
type Credential struct{ UID, GID uint32 }

// Options are what to apply.
type Options struct {
	Seccomp Mode
	// RunAs, if set, is the user and group every thread drops to, with no
	// supplementary groups. Needs root.
	RunAs *Credential
	// Jail, if set, is a directory to chroot into: empty, or created.
	// Needs root.
	Jail string
	// Needs is what the machine asks of the host once it runs.
	Needs Needs
}

// Report is what Apply did, for `--json` (report.Boot) and the tests.
type Report struct {
	Seccomp Mode `json:"seccomp"` // kill, log or off
	// FilterInstructions is the BPF program's length (0 with off).
	FilterInstructions int  `json:"seccomp_instructions"`
	NoNewPrivs         bool `json:"no_new_privs"`
	// CapsDropped: effective, permitted, inheritable and ambient sets
	// are empty on every thread. BoundingDropped: the bounding set too
	// (needs CAP_SETPCAP, i.e. root).
	CapsDropped     bool   `json:"capabilities_dropped"`
	BoundingDropped bool   `json:"bounding_set_dropped"`
	UID             uint32 `json:"uid"`
	GID             uint32 `json:"gid"`
	Jail            string `json:"jail,omitempty"` // the chroot, resolved
	// Dumpable is PR_GET_DUMPABLE after Apply: false means no core dump
	// and no /proc/PID/mem for another process of the same user.
	Dumpable  bool   `json:"dumpable"`
	CoreLimit uint64 `json:"rlimit_core"`
	// NoFileLimit is RLIMIT_NOFILE: the descriptors open at Apply plus
	// fdSpare, plus what the backends may still open (Needs.ExtraFiles).
	NoFileLimit uint64 `json:"rlimit_nofile"`
	// FSizeLimit is RLIMIT_FSIZE, the largest writable disk; -1 when it
	// stays unlimited (see Notes).
	FSizeLimit int64 `json:"rlimit_fsize"`
	// GuestDontDump: guest RAM is MADV_DONTDUMP (set by the engine).
	GuestDontDump bool     `json:"guest_ram_dontdump"`
	Notes         []string `json:"notes,omitempty"`
}

// InputError is a bad option; Field is the microvm.Config field.
type InputError struct{ Field, Msg string }

func (e *InputError) Error() string { return e.Field + ": " + e.Msg }

func inputErr(field, format string, a ...any) error {
	return &InputError{Field: field, Msg: fmt.Sprintf(format, a...)}
}

// Validate checks o before anything is set up, so that bad input is
// reported (exit 2) before KVM is touched.
func Validate(o Options) error {
	switch o.Seccomp {
	case Default, Kill, Log, Off:
	default:
		return inputErr("Seccomp", "%q: want kill, log or off", string(o.Seccomp))
	}
	root := os.Geteuid() == 0
	if o.RunAs != nil {
		switch {
		case !root:
			return inputErr("RunAs", "changing to uid %d gid %d needs root (you are uid %d)", o.RunAs.UID, o.RunAs.GID, os.Geteuid())
		case o.RunAs.UID == ^uint32(0) || o.RunAs.GID == ^uint32(0):
			return inputErr("RunAs", "4294967295 is not a valid id (it means \"no change\" to setresuid(2))")
		}
	}
	if o.Jail != "" {
		if !root {
			return inputErr("Jail", "%s: chroot needs root (you are uid %d)", o.Jail, os.Geteuid())
		}
		if err := checkJail(o.Jail); err != nil {
			return inputErr("Jail", "%v", err)
		}
	}
	return nil
}

// checkJail accepts an empty directory, or a name that can be created: a
// jail holding files (a setuid binary, a device node) would hand them to
// the guest's attacker.
func checkJail(dir string) error {
	ents, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if st, err := os.Stat(filepath.Dir(dir)); err != nil || !st.IsDir() {
			return fmt.Errorf("%s: neither exists nor can be created (no directory %s)", dir, filepath.Dir(dir))
		}
		return nil
	case err != nil:
		return fmt.Errorf("%s: %v", dir, err)
	case len(ents) > 0:
		return fmt.Errorf("%s: not empty (%d entries); the jail must be an empty directory", dir, len(ents))
	}
	return nil
}

var applied atomic.Bool

// Applied reports whether this process is already sandboxed.
func Applied() bool { return applied.Load() }

// ErrApplied is Apply's error in a process that is already sandboxed.
var ErrApplied = errors.New("this process is already sandboxed for an earlier guest: run each guest in a process of its own, or set NoSandbox")

// Apply confines the process (all threads) as o says, in the one order
// that works: what needs the file system first, then the jail, then the
// privileges (the bounding set needs CAP_SETPCAP, the ids CAP_SETUID and
// CAP_SETGID, so the capabilities go last), then the limits, then the
// filter, which denies everything used before it. Validate o first.
//
// Threads the Go runtime creates later are cloned from these and inherit
// all of it: filter, credentials, capabilities, root and limits.
func Apply(o Options) (Report, error) {
	if !applied.CompareAndSwap(false, true) {
		return Report{}, ErrApplied
	}
	mode := o.Seccomp
	if mode == Default {
		mode = Kill
	}
	r := Report{Seccomp: mode, FSizeLimit: -1}
	// time.Local reads /etc/localtime on first use: read it now.
	_ = time.Local.String()
	lastCap := lastCap()
	nofile, err := openFDs()
	if err != nil {
		return r, err
	}
	if o.Jail != "" {
		if r.Jail, err = enterJail(o.Jail); err != nil {
			return r, err
		}
	}
	if r.BoundingDropped, err = dropBounding(lastCap); err != nil {
		return r, err
	}
	if !r.BoundingDropped {
		r.Notes = append(r.Notes, "bounding set kept: dropping it needs CAP_SETPCAP; with no_new_privs and no exec it grants nothing")
	}
	if o.RunAs != nil {
		if err := setIDs(*o.RunAs); err != nil {
			return r, err
		}
	}
	r.UID, r.GID = uint32(os.Getuid()), uint32(os.Getgid())
	if err := dropCaps(); err != nil {
		return r, err
	}
	r.CapsDropped = true
	if err := setNoNewPrivs(); err != nil {
		return r, err
	}
	r.NoNewPrivs = true
	if err := noDumps(&r); err != nil {
		return r, err
	}
	r.NoFileLimit = nofile + fdSpare + o.Needs.ExtraFiles
	// Never above the hard limit: the capabilities are gone by now, and
	// lowering is all a process may do without CAP_SYS_RESOURCE. The
	// backends that want more (p9fs.Open) raised it while they could.
	var cur unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &cur) == nil && r.NoFileLimit > cur.Max {
		r.Notes = append(r.Notes, fmt.Sprintf("RLIMIT_NOFILE %d, the hard limit, rather than the %d the backends could use", cur.Max, r.NoFileLimit))
		r.NoFileLimit = cur.Max
	}
	if err := setLimits(&r, o.Needs.MaxFileSize); err != nil {
		return r, err
	}
	if o.Needs.Snapshot {
		r.Notes = append(r.Notes, "saving a snapshot: newfstatat, renameat2 and unlinkat are allowed, on names seccomp cannot check (the snapshot's files are open already)")
	}
	if mode != Off {
		if r.FilterInstructions, err = installFilter(o.Needs, mode); err != nil {
			return r, err
		}
	}
	return r, nil
}
