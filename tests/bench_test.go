package tests

import (
	"strings"
	"testing"

	"github.com/microvm-dev/microvm/internal/report"
)

// TestLinuxBench runs `microvm bench` for two boots of the real kernel and
// initrd and checks that the summary has every boot phase, in order, with
// sane numbers. Speed targets live in the benchmark, not here.
func TestLinuxBench(t *testing.T) {
	var s report.BenchSummary
	r := linuxJSON(t, 2*linuxLimit, &s, "bench", "--runs", "2", "--timeout", "2m")
	if !strings.Contains(r.stderr, "boot 2/2") {
		t.Errorf("no progress line for boot 2/2 on stderr")
	}
	if s.Runs != 2 {
		t.Errorf("runs = %d, want 2", s.Runs)
	}
	want := []string{"process-start", "kvm-vm-ready", "kernel-loaded", "first-kvm-run",
		"first-console-byte", "init-reached", "agent-ready", "command-done", "exit", "process-exit"}
	if len(s.Phases) != len(want) {
		t.Fatalf("%d phases, want %d: %+v", len(s.Phases), len(want), s.Phases)
	}
	prev := 0.0
	for i, p := range s.Phases {
		if p.Name != want[i] {
			t.Errorf("phase %d is %q, want %q", i, p.Name, want[i])
		}
		if p.N != 2 || p.Min <= 0 || p.Min > p.Median || p.Median > p.Max {
			t.Errorf("phase %s: %+v: want 2 samples with 0 < min <= median <= max", p.Name, p)
		}
		// Medians of different phases need not be ordered exactly, but
		// each boot's phases are, so the minimums are too.
		if p.Min < prev {
			t.Errorf("phase %s min %.1f ms is before the previous phase's %.1f ms", p.Name, p.Min, prev)
		}
		prev = p.Min
	}
	// Guest RAM touched: at least the kernel and initrd it booted, at most
	// the 256 MiB default; overhead positive and below the peak.
	if g := s.GuestTouched; g.Min < 5 || g.Max > 256 {
		t.Errorf("guest touched %+v MiB, want 5..256", g)
	}
	if o := s.Overhead; o.Min <= 0 || o.Max >= s.PeakRSS.Min {
		t.Errorf("VMM overhead %+v MiB not in (0, peak RSS %+v)", o, s.PeakRSS)
	}
}
