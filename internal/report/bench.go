package report

import "github.com/microvm-dev/microvm"

// PhaseProcessExit is the bench summary's last phase: the child's exit as
// its parent saw it, after the timeline's own phases.
const PhaseProcessExit microvm.Phase = "process-exit"

// Stat is min/median/max of one quantity over the runs that have it (N).
type Stat struct {
	Name   string  `json:"name"`
	N      int     `json:"n"`
	Min    float64 `json:"min"`
	Median float64 `json:"median"`
	Max    float64 `json:"max"`
}

// BenchSummary is the `--json` output of `microvm bench`.
type BenchSummary struct {
	Runs int `json:"runs"`
	// Phases: ms since exec (process-start = exec to main()), in timeline
	// order, then PhaseProcessExit.
	Phases []Stat `json:"phases_ms_since_exec"`
	// Memory in MiB: peak RSS (VmHWM), guest RAM touched, and their
	// difference, the VMM's own overhead.
	PeakRSS      Stat `json:"peak_rss_mib"`
	GuestTouched Stat `json:"guest_touched_mib"`
	Overhead     Stat `json:"vmm_overhead_mib"`
}

// Phase returns the statistics of phase p, if any run reached it.
func (s *BenchSummary) Phase(p microvm.Phase) (Stat, bool) {
	for _, st := range s.Phases {
		if st.Name == string(p) && st.N > 0 {
			return st, true
		}
	}
	return Stat{}, false
}
