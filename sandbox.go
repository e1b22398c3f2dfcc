package microvm

import (
	"errors"
	"fmt"

	"github.com/microvm-dev/microvm/internal/procstat"
	"github.com/microvm-dev/microvm/internal/sandbox"
	"github.com/microvm-dev/microvm/internal/vmm"
)

// The sandbox (docs/security.md): what Start does to the calling process
// once the guest is set up, before its first instruction runs.
type (
	// SeccompMode is what the seccomp filter does with a system call
	// outside the VMM's allowlist (Config.Seccomp).
	SeccompMode = sandbox.Mode
	// Credential is a user and group to run as (Config.RunAs).
	Credential = sandbox.Credential
	// SandboxReport is what the sandbox did (Result.Sandbox).
	SandboxReport = sandbox.Report
	// SandboxSupport is what of the sandbox this host offers
	// (CheckReport.Sandbox).
	SandboxSupport = sandbox.Support
)

// Seccomp modes. The zero value, SeccompDefault, is SeccompKill.
const (
	SeccompDefault = sandbox.Default
	SeccompKill    = sandbox.Kill // the process dies of SIGSYS
	SeccompLog     = sandbox.Log  // the call fails with EPERM, the kernel logs it
	SeccompOff     = sandbox.Off  // no filter; the rest of the sandbox stays
)

// ErrSandboxed is Start's error in a process that an earlier Start has
// sandboxed: it can open nothing, so it can set up no other guest.
var ErrSandboxed = sandbox.ErrApplied

// sandboxOptions checks the sandbox fields of cfg.
func (cfg Config) sandboxOptions() (sandbox.Options, error) {
	o := sandbox.Options{Seccomp: cfg.Seccomp, RunAs: cfg.RunAs, Jail: cfg.Jail}
	if cfg.NoSandbox {
		switch {
		case cfg.Seccomp != SeccompDefault && cfg.Seccomp != SeccompOff:
			return o, &InputError{What: "Seccomp", Msg: fmt.Sprintf("%q needs the sandbox, which NoSandbox turns off", string(cfg.Seccomp))}
		case cfg.RunAs != nil:
			return o, &InputError{What: "RunAs", Msg: "needs the sandbox, which NoSandbox turns off"}
		case cfg.Jail != "":
			return o, &InputError{What: "Jail", Msg: "needs the sandbox, which NoSandbox turns off"}
		}
		return o, nil
	}
	var ie *sandbox.InputError
	if err := sandbox.Validate(o); errors.As(err, &ie) {
		return o, &InputError{What: ie.Field, Msg: ie.Msg}
	} else if err != nil {
		return o, err
	}
	return o, nil
}

// confine applies the sandbox to this process for machine m. The
// /proc/self/status figures read at exit (Result.HostRSS, the peak RSS of
// `--json`) come from a file opened here, before the filter and the jail
// close the file system.
func confine(m *vmm.Machine, o sandbox.Options) (*SandboxReport, error) {
	procstat.Keep()
	o.Needs = m.SandboxNeeds()
	r, err := sandbox.Apply(o)
	if err != nil {
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	r.GuestDontDump = m.GuestDontDump()
	return &r, nil
}
