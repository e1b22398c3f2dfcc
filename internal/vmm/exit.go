package vmm

import (
	"errors"
	"strings"
	"time"

	"github.com/microvm-dev/microvm/devices"
)

// ExitReason says how a machine stopped.
type ExitReason string

const (
	ExitReset    ExitReason = "reset"    // the guest reset (i8042 or KVM reset event)
	ExitPoweroff ExitReason = "poweroff" // the guest powered off
	ExitCrash    ExitReason = "crash"    // triple fault, emulation failure, kernel panic
	ExitTimeout  ExitReason = "timeout"  // the context's deadline passed
	ExitCanceled ExitReason = "canceled" // the context was canceled
	ExitError    ExitReason = "error"    // a VMM or KVM failure
	ExitSnapshot ExitReason = "snapshot" // stopped after a snapshot, as asked
	ExitStopped  ExitReason = "stopped"  // internal: a vCPU was told to stop
)

// Result is how a run ended.
type Result struct {
	Reason ExitReason
	Detail string // e.g. the crash cause and RIP
	Err    error  // set when Reason is ExitError
	// GuestStatus is the exit status reported with the command-done
	// milestone, or -1.
	GuestStatus int
	Timeline    []Mark
	// Start is the timeline's zero (Config.Started).
	Start time.Time
	// GuestResident is how much guest RAM was resident at exit (mincore),
	// for the VMM-overhead measurement (peak RSS minus this).
	GuestResident uint64
	// Snapshot is the snapshot restored, or taken at agent ready, if any.
	Snapshot *SnapshotInfo
	// Exits is what the guest's exits to this process were, and which
	// device took each port or MMIO access.
	Exits Exits
}

// Exits counts KVM_RUN's returns to the VMM over a run, summed over the
// vCPUs. Exits KVM handles itself (page faults, HLT with the in-kernel
// LAPIC, interrupt windows) never reach it and are not here.
type Exits struct {
	IO   uint64 // KVM_EXIT_IO: one per exit, a string I/O exit counts once
	MMIO uint64 // KVM_EXIT_MMIO
	// Interrupted is KVM_RUN ended by a signal (EINTR): a kick, a poke or
	// the Go runtime's preemption.
	Interrupted uint64
	Other       uint64
	// PIO and MMIOBus are the accesses per device (devices.Bus.Accesses).
	PIO, MMIOBus []devices.Accesses
}

// Total is every return counted.
func (e Exits) Total() uint64 { return e.IO + e.MMIO + e.Interrupted + e.Other }

// count takes one KVM_RUN return with exit reason r.
func (e *Exits) count(r uint32) {
	switch r {
	case exitIO:
		e.IO++
	case exitMMIO:
		e.MMIO++
	case exitIntr:
		e.Interrupted++
	default:
		e.Other++
	}
}

func (e *Exits) add(o Exits) {
	e.IO += o.IO
	e.MMIO += o.MMIO
	e.Interrupted += o.Interrupted
	e.Other += o.Other
}

// vcpuExit is one event that can end a machine: a vCPU loop's end, an exit
// a device or goroutine asked for, or the context's end.
type vcpuExit struct {
	reason ExitReason
	detail string
	err    error
}

// observed is everything the end of a run is decided from.
type observed struct {
	// events in the order they were seen: the first from whichever came
	// first (context, a vCPU, a device), then the device's, then every
	// vCPU's. A vCPU that was told to stop reports ExitStopped.
	events []vcpuExit
	// panicLine is the console's "Kernel panic - not syncing" line, if any.
	panicLine string
	// where is each vCPU's position once stopped ("vcpu 0 at RIP 0x...").
	where []string
}

// decide turns what a run observed into how it ended. It is pure, so the
// races it settles are table-tested (exit_test.go):
//   - a device's reset or poweroff beats the ExitStopped it causes;
//   - a real vCPU exit (triple fault, error) beats a plain stop;
//   - a timeout or cancel says where each vCPU was;
//   - a reset or poweroff after a kernel panic line is a crash (panic=N
//     reboots the guest).
func decide(o observed) vcpuExit {
	first := vcpuExit{reason: ExitError, err: errors.New("the machine stopped with no exit recorded")}
	for _, e := range o.events {
		if e.reason != ExitStopped {
			first = e
			break
		}
	}
	switch first.reason {
	case ExitTimeout, ExitCanceled:
		// Where the guest was is the first thing one asks about a hang.
		first.detail = strings.Join(o.where, ", ")
	case ExitReset, ExitPoweroff:
		if o.panicLine != "" {
			first = vcpuExit{reason: ExitCrash, detail: "guest kernel panic: " + o.panicLine}
		}
	}
	return first
}
