package main

import (
	"testing"

	"github.com/microvm-dev/microvm"
	"github.com/microvm-dev/microvm/internal/report"
)

func TestNewStat(t *testing.T) {
	for _, tt := range []struct {
		name             string
		in               []float64
		min, median, max float64
	}{
		{"one", []float64{3}, 3, 3, 3},
		{"odd unsorted", []float64{5, 1, 3}, 1, 3, 5},
		{"even", []float64{4, 1, 2, 3}, 1, 2.5, 4},
		{"empty", nil, 0, 0, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := newStat("x", tt.in)
			if s.N != len(tt.in) || s.Min != tt.min || s.Median != tt.median || s.Max != tt.max {
				t.Errorf("newStat(%v) = %+v, want n=%d min %v median %v max %v", tt.in, s, len(tt.in), tt.min, tt.median, tt.max)
			}
		})
	}
}

func TestSummarizeMissingPhases(t *testing.T) {
	// A micro-guest has no init or agent milestones: those phases have no
	// samples, and the others are still summarized.
	rs := []*benchRun{
		{Boot: report.Boot{PeakRSS: 10 << 20, GuestTouched: 4 << 20}, phases: map[microvm.Phase]float64{"process-start": 1, "exit": 9, report.PhaseProcessExit: 10}},
		{Boot: report.Boot{PeakRSS: 12 << 20, GuestTouched: 4 << 20}, phases: map[microvm.Phase]float64{"process-start": 2, "exit": 11, report.PhaseProcessExit: 12}},
	}
	s := summarize(rs)
	got := map[string]report.Stat{}
	for _, p := range s.Phases {
		got[p.Name] = p
	}
	if p := got["init-reached"]; p.N != 0 {
		t.Errorf("init-reached: %+v, want no samples", p)
	}
	if p := got["exit"]; p.N != 2 || p.Median != 10 {
		t.Errorf("exit: %+v, want 2 samples, median 10", p)
	}
	if o := s.Overhead; o.Min != 6 || o.Max != 8 {
		t.Errorf("overhead %+v, want 6..8 MiB", o)
	}
}
