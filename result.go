package microvm

import (
	"time"

	"github.com/microvm-dev/microvm/agentproto"
	"github.com/microvm-dev/microvm/internal/agent"
	"github.com/microvm-dev/microvm/internal/procstat"
	"github.com/microvm-dev/microvm/internal/vmm"
)

// Re-exported from the engine so that callers need only this package.
type (
	// ExitReason says how a guest ended.
	ExitReason = vmm.ExitReason
	// Mark is one point of the boot timeline.
	Mark = vmm.Mark
	// Phase names a point of the boot timeline.
	Phase = vmm.Phase
	// InputError is a bad Config field or file; the CLI exits 2 on it.
	InputError = vmm.InputError
)

// How a guest can end.
const (
	ExitReset    = vmm.ExitReset
	ExitPoweroff = vmm.ExitPoweroff
	ExitCrash    = vmm.ExitCrash
	ExitTimeout  = vmm.ExitTimeout
	ExitCanceled = vmm.ExitCanceled
	ExitError    = vmm.ExitError
	// ExitSnapshot: stopped by VM.Snapshot with SnapshotOptions.Stop.
	ExitSnapshot = vmm.ExitSnapshot
)

// Boot timeline phases.
const (
	PhaseStart   = vmm.PhaseStart
	PhaseVMReady = vmm.PhaseVMReady
	PhaseKernel  = vmm.PhaseKernel
	// PhaseSnapshotLoaded replaces PhaseKernel for a restored guest.
	PhaseSnapshotLoaded = vmm.PhaseSnapshotLoaded
	// PhaseSandboxed: the sandbox is in place, just before the first KVM_RUN.
	PhaseSandboxed   = vmm.PhaseSandboxed
	PhaseFirstRun    = vmm.PhaseFirstRun
	PhaseFirstOutput = vmm.PhaseFirstOutput
	PhaseInit        = vmm.PhaseInit
	PhaseAgentReady  = vmm.PhaseAgentReady
	// PhaseSnapshotSaved: the SaveSnapshot snapshot is written.
	PhaseSnapshotSaved = vmm.PhaseSnapshotSaved
	PhaseCommandDone   = vmm.PhaseCommandDone
	PhaseExit          = vmm.PhaseExit
)

// Milestone codes the guest writes to the boot/debug port (Config.OnMilestone).
const (
	MilestoneInit        = agentproto.MilestoneInit
	MilestoneAgentReady  = agentproto.MilestoneReady
	MilestoneCommandDone = agentproto.MilestoneCmdDone
)

// Result is how a guest ended.
type Result struct {
	Reason ExitReason
	Detail string // e.g. the crash cause and RIP, or where a stopped guest was
	// ExitCode is the microvm command's exit code for this result: the
	// guest command's status when the agent reported one, else 0 for a
	// clean reset or poweroff, 3 crash, 124 timeout, 130 canceled, 1 error.
	ExitCode int
	// GuestStatus is the status the guest agent reported for Command, or
	// -1 if it reported none.
	GuestStatus int
	Timeline    []Mark
	// BootLog is the console output held back with Command when the agent
	// never became ready (the kernel log says why).
	BootLog []byte
	// GuestResident is the guest RAM the host had backed with pages when
	// the guest ended; HostRSS is this process's resident set at that
	// moment (with several VMs in one process, all of theirs).
	GuestResident, HostRSS uint64
	// Start is the timeline's zero; GuestTouched is the guest RAM resident
	// at exit as the engine measured it (mincore), for overhead figures.
	Start        time.Time
	GuestTouched uint64
	// Sandbox is what the sandbox did to the process (nil with
	// NoSandbox).
	Sandbox *SandboxReport
	// Snapshot is the snapshot restored (Config.Restore) or saved
	// (Config.SaveSnapshot), nil for neither.
	Snapshot *SnapshotInfo
	// Exits counts the guest's exits to the VMM by kind, and each
	// device's share of the port and MMIO accesses.
	Exits Exits
}

// Exits counts a run's exits to the VMM (Result.Exits).
type Exits = vmm.Exits

// result is the public form of the engine's result; gate is the agent's
// output gate of a guest run with Command.
func result(r vmm.Result, gate *agent.Gate) Result {
	res := Result{
		Reason:        r.Reason,
		Detail:        r.Detail,
		ExitCode:      exitCode(r.Reason),
		GuestStatus:   r.GuestStatus,
		Timeline:      r.Timeline,
		Start:         r.Start,
		GuestResident: r.GuestResident,
		GuestTouched:  r.GuestResident,
		HostRSS:       selfRSS(),
		Snapshot:      r.Snapshot,
		Exits:         r.Exits,
	}
	if gate != nil {
		res.BootLog = gate.Held()
		if (r.Reason == vmm.ExitReset || r.Reason == vmm.ExitPoweroff) && r.GuestStatus >= 0 {
			res.ExitCode = r.GuestStatus
		}
	}
	return res
}

// selfRSS is this process's VmRSS in bytes (0 if unknown).
func selfRSS() uint64 {
	v, _ := procstat.Bytes("VmRSS")
	return v
}

// IsInputError reports whether err is (or wraps) bad input.
func IsInputError(err error) bool { return vmm.IsInputError(err) }

// IsNoKVM reports whether err is a missing or forbidden /dev/kvm.
func IsNoKVM(err error) bool { return vmm.IsNoKVM(err) }
