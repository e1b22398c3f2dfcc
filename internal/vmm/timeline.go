package vmm

import (
	"sync"
	"time"
)

// Phase names a point on the boot timeline.
type Phase string

// Boot timeline phases, in the order they normally happen.
const (
	PhaseStart Phase = "process-start"
	// PhaseBuildStart: Build begins (after the CLI's parsing and checks);
	// each of its steps then adds a StepPhase as it ends, so that --timings
	// shows where the time before the first KVM_RUN goes (issue 17).
	PhaseBuildStart Phase = "build-start"
	PhaseVMReady    Phase = "kvm-vm-ready"
	PhaseKernel     Phase = "kernel-loaded"
	// PhaseSnapshotLoaded replaces PhaseKernel for a restored machine:
	// its state, memory mapping and devices are back, ready to run.
	PhaseSnapshotLoaded Phase = "snapshot-loaded"
	// PhaseSandboxed: the sandbox is in place (microvm.Start, after Build),
	// the last step before the first KVM_RUN.
	PhaseSandboxed   Phase = "sandboxed"
	PhaseFirstRun    Phase = "first-kvm-run"
	PhaseFirstOutput Phase = "first-console-byte"
	PhaseInit        Phase = "init-reached"
	PhaseAgentReady  Phase = "agent-ready"
	// PhaseSnapshotSaved: the snapshot asked for at agent ready is written
	// and the guest runs again (before its command is handed over).
	PhaseSnapshotSaved Phase = "snapshot-saved"
	PhaseCommandDone   Phase = "command-done"
	PhaseExit          Phase = "exit"
)

// StepPhase names the end of one step of Build ("built: load kernel").
func StepPhase(step string) Phase { return Phase("built: " + step) }

// Guest milestone codes written to the boot/debug port.
const (
	MilestoneInit        = 0x01
	MilestoneAgentReady  = 0x02
	MilestoneCommandDone = 0x03
)

// Mark is one timeline entry: a phase and its offset from the start.
type Mark struct {
	Phase Phase         `json:"phase"`
	At    time.Duration `json:"at_ns"`
}

// Timeline records when each boot phase was first reached.
type Timeline struct {
	mu    sync.Mutex
	start time.Time
	marks []Mark
}

// NewTimeline starts a timeline at start (the process start, ideally).
func NewTimeline(start time.Time) *Timeline {
	t := &Timeline{start: start}
	t.marks = append(t.marks, Mark{Phase: PhaseStart})
	return t
}

// Mark records phase now, unless it was already recorded.
func (t *Timeline) Mark(p Phase) {
	now := time.Since(t.start)
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, m := range t.marks {
		if m.Phase == p {
			return
		}
	}
	t.marks = append(t.marks, Mark{Phase: p, At: now})
}

// Marks returns a copy of the recorded phases in the order they happened.
func (t *Timeline) Marks() []Mark {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]Mark(nil), t.marks...)
}

// Get returns when phase p happened, if it did.
func (t *Timeline) Get(p Phase) (time.Duration, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, m := range t.marks {
		if m.Phase == p {
			return m.At, true
		}
	}
	return 0, false
}
