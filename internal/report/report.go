// Package report declares, once, the JSON that microvm's commands print and
// that bench/runner and the tests read back:
//
//	Boot          `microvm boot|run --json`, one line on stderr at exit
//	BenchSummary  `microvm bench --json`, one object on stdout
//	Compare       `microvm compare --json`, one object on stdout
//
// The field names are the wire format: renaming one breaks every reader.
package report

import (
	"sort"
	"time"

	"github.com/microvm-dev/microvm"
	"github.com/microvm-dev/microvm/devices"
)

// Phase is one point of a boot timeline on the wire: the phase's name and
// its time in ms since the timeline's zero.
type Phase struct {
	Phase string  `json:"phase"`
	MS    float64 `json:"ms"`
}

// Timeline is a boot timeline on the wire, in the order the phases happened.
type Timeline []Phase

// TimelineOf turns a Result's timeline into its wire form; nil for none, so
// that Boot.Timeline is JSON null, as it always was.
func TimelineOf(marks []microvm.Mark) Timeline {
	var t Timeline
	for _, m := range marks {
		t = append(t, Phase{Phase: string(m.Phase), MS: MS(m.At)})
	}
	return t
}

// MS returns when phase p happened, in ms since the timeline's zero.
func (t Timeline) MS(p microvm.Phase) (float64, bool) {
	for _, ph := range t {
		if ph.Phase == string(p) {
			return ph.MS, true
		}
	}
	return 0, false
}

// PhaseAt returns when phase p happened in a Result's timeline.
func PhaseAt(marks []microvm.Mark, p microvm.Phase) (time.Duration, bool) {
	for _, m := range marks {
		if m.Phase == p {
			return m.At, true
		}
	}
	return 0, false
}

// MS is d in milliseconds, to the microsecond: every ms figure on the wire.
func MS(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// Boot is the `--json` report of `microvm boot` and `microvm run`.
type Boot struct {
	Reason      string `json:"exit_reason"` // microvm.ExitReason
	Code        int    `json:"exit_code"`   // the process's exit code
	Detail      string `json:"detail,omitempty"`
	GuestStatus int    `json:"guest_status"` // the agent's status for the command, -1 for none
	// Timeline is in ms since StartUnixNS (the process's start).
	Timeline    Timeline `json:"timeline"`
	StartUnixNS int64    `json:"start_unix_ns"`
	// PeakRSS is the process's peak resident set (VmHWM, see PeakRSS);
	// GuestTouched the guest RAM resident at exit (mincore).
	PeakRSS      uint64 `json:"peak_rss_bytes"`
	GuestTouched uint64 `json:"guest_touched_bytes"`
	// Sandbox is what the sandbox did to the process (docs/security.md):
	// seccomp mode, capabilities, ids, jail, dumpability and limits.
	// Absent when the guest ran unsandboxed.
	Sandbox *microvm.SandboxReport `json:"sandbox,omitempty"`
	// Snapshot is the snapshot path taken (run --snapshot, --restore);
	// absent without one.
	Snapshot *Snapshot `json:"snapshot,omitempty"`
	// Exits counts the guest's exits to the VMM (absent if the guest
	// never ran).
	Exits *Exits `json:"exits,omitempty"`
}

// Exits is the wire form of microvm.Exits.
type Exits struct {
	Total       uint64 `json:"total"`
	IO          uint64 `json:"io"`
	MMIO        uint64 `json:"mmio"`
	Interrupted uint64 `json:"interrupted"`
	Other       uint64 `json:"other"`
	// Devices is each device's port or MMIO accesses, most first.
	Devices []DeviceExits `json:"devices,omitempty"`
}

// DeviceExits is one device's accesses; Bus is "pio" or "mmio".
type DeviceExits struct {
	Bus    string `json:"bus"`
	Name   string `json:"name"`
	Base   uint64 `json:"base"`
	Reads  uint64 `json:"reads"`
	Writes uint64 `json:"writes"`
}

// ExitsOf is the wire form of e, nil if nothing was counted.
func ExitsOf(e microvm.Exits) *Exits {
	if e.Total() == 0 {
		return nil
	}
	w := &Exits{Total: e.Total(), IO: e.IO, MMIO: e.MMIO, Interrupted: e.Interrupted, Other: e.Other}
	for _, b := range []struct {
		bus string
		a   []devices.Accesses
	}{{"pio", e.PIO}, {"mmio", e.MMIOBus}} {
		for _, a := range b.a {
			w.Devices = append(w.Devices, DeviceExits{Bus: b.bus, Name: a.Name, Base: a.Base, Reads: a.Reads, Writes: a.Writes})
		}
	}
	sort.SliceStable(w.Devices, func(i, j int) bool {
		return w.Devices[i].Reads+w.Devices[i].Writes > w.Devices[j].Reads+w.Devices[j].Writes
	})
	return w
}

// Snapshot is the path `run --snapshot` took: "restored" (from Dir),
// "saved" (booted, and saved Dir at agent ready) or "save-failed".
type Snapshot struct {
	Path        string  `json:"path"`
	Dir         string  `json:"dir"`
	PauseMS     float64 `json:"pause_ms,omitempty"`
	MemoryBytes uint64  `json:"memory_bytes,omitempty"` // allocated, not apparent
	StateBytes  uint64  `json:"state_bytes,omitempty"`
	Error       string  `json:"error,omitempty"`
}

// SnapshotOf is the wire form of a Result's snapshot, nil for none.
func SnapshotOf(s *microvm.SnapshotInfo) *Snapshot {
	if s == nil {
		return nil
	}
	w := &Snapshot{Path: "restored", Dir: s.Dir}
	switch {
	case s.Restored:
	case s.Saved:
		w.Path, w.PauseMS, w.MemoryBytes, w.StateBytes = "saved", MS(s.Pause), s.MemoryBytes, s.StateBytes
	default:
		w.Path = "save-failed"
		if s.Err != nil {
			w.Error = s.Err.Error()
		}
	}
	return w
}

// NewBoot is the report of res for a process exiting with code whose peak
// RSS is peakRSS.
func NewBoot(res microvm.Result, code int, peakRSS uint64) Boot {
	return Boot{
		Reason:       string(res.Reason),
		Code:         code,
		Detail:       res.Detail,
		GuestStatus:  res.GuestStatus,
		Timeline:     TimelineOf(res.Timeline),
		StartUnixNS:  res.Start.UnixNano(),
		PeakRSS:      peakRSS,
		GuestTouched: res.GuestTouched,
		Sandbox:      res.Sandbox,
		Snapshot:     SnapshotOf(res.Snapshot),
		Exits:        ExitsOf(res.Exits),
	}
}
