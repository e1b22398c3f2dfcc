package vmm

import (
	"errors"
	"testing"
)

func TestDecide(t *testing.T) {
	stopped := vcpuExit{reason: ExitStopped}
	boom := errors.New("KVM_RUN: EFAULT")
	where := []string{"vcpu 0 at RIP 0xffffffff81000000", "vcpu 1 at RIP 0xffffffff81000010"}
	ev := func(r ExitReason, detail string) vcpuExit { return vcpuExit{reason: r, detail: detail} }
	seen := func(events ...vcpuExit) observed { return observed{events: events} }
	panicked := func(line string, events ...vcpuExit) observed { return observed{events: events, panicLine: line} }
	stuck := func(where []string, events ...vcpuExit) observed { return observed{events: events, where: where} }
	const (
		triple = "vcpu 0: triple fault (KVM_EXIT_SHUTDOWN) at RIP 0x1000"
		halted = "all vCPUs halted with interrupts disabled"
		s5     = "ACPI S5 through the sleep control register"
		vfs    = "Kernel panic - not syncing: VFS: Unable to mount root fs"
	)
	tests := []struct {
		name string
		o    observed
		want vcpuExit
	}{
		{"reset seen after the stop it caused", seen(stopped, ev(ExitReset, ""), stopped), ev(ExitReset, "")},
		{"reset before the stops", seen(ev(ExitReset, ""), stopped, stopped), ev(ExitReset, "")},
		{"KVM shutdown event beats the other vCPU's stop", seen(stopped, ev(ExitPoweroff, "")), ev(ExitPoweroff, "")},
		{"triple fault", seen(ev(ExitCrash, triple), stopped), ev(ExitCrash, triple)},
		{"panic line then reset", panicked(vfs, ev(ExitReset, ""), stopped), ev(ExitCrash, "guest kernel panic: "+vfs)},
		{"panic line then poweroff by halt", panicked("Kernel panic - not syncing: x", ev(ExitPoweroff, halted)), ev(ExitCrash, "guest kernel panic: Kernel panic - not syncing: x")},
		{"ACPI S5 beats the stops it caused", seen(stopped, ev(ExitPoweroff, s5), stopped), ev(ExitPoweroff, s5)},
		{"ACPI reset register", seen(ev(ExitReset, "ACPI reset register"), stopped), ev(ExitReset, "ACPI reset register")},
		{"panic line then ACPI S5", panicked("Kernel panic - not syncing: y", ev(ExitPoweroff, s5)), ev(ExitCrash, "guest kernel panic: Kernel panic - not syncing: y")},
		{"poweroff by halt", seen(stopped, ev(ExitPoweroff, halted), stopped), ev(ExitPoweroff, halted)},
		{"timeout says where the vCPUs were", stuck(where, ev(ExitTimeout, ""), stopped, stopped), ev(ExitTimeout, where[0]+", "+where[1])},
		{"timeout wins over a crash after it", stuck(where[:1], ev(ExitTimeout, ""), ev(ExitCrash, "late")), ev(ExitTimeout, where[0])},
		{"cancel", stuck(where[:1], ev(ExitCanceled, ""), stopped), ev(ExitCanceled, where[0])},
		{"a panic line does not turn a timeout into a crash", panicked("Kernel panic - not syncing: x", ev(ExitTimeout, "")), ev(ExitTimeout, "")},
		{"internal error", seen(stopped, vcpuExit{reason: ExitError, err: boom}), vcpuExit{reason: ExitError, err: boom}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := decide(tt.o)
			if got.reason != tt.want.reason || got.detail != tt.want.detail || !errors.Is(got.err, tt.want.err) {
				t.Errorf("decide = %+v, want %+v", got, tt.want)
			}
		})
	}
	if got := decide(observed{events: []vcpuExit{stopped, stopped}}); got.reason != ExitError || got.err == nil {
		t.Errorf("only stops: %+v, want an internal error", got)
	}
}

func TestPanicWatcher(t *testing.T) {
	tests := []struct {
		name   string
		writes []string
		want   string
	}{
		{"none", []string{"[    0.1] Booting\n", "reboot: Restarting system\n"}, ""},
		{"one write", []string{"[ 1.0] Kernel panic - not syncing: VFS: no root\n"}, "Kernel panic - not syncing: VFS: no root"},
		{"marker split across writes", []string{"[ 1.0] Kernel pa", "nic - not sync", "ing: Attempted to kill init!\n"}, "Kernel panic - not syncing: Attempted to kill init!"},
		{"line split after the marker", []string{"Kernel panic - not syncing", ": oops", " more\nnext line\n"}, "Kernel panic - not syncing: oops more"},
		{"after much output", []string{string(make([]byte, 10000)), "x\nKernel panic - not syncing: late\n"}, "Kernel panic - not syncing: late"},
		{"endless line is bounded", []string{"Kernel panic - not syncing: ", string(make([]byte, 300)), string(make([]byte, 300))}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var sink countWriter
			p := &panicWatcher{w: &sink}
			total := 0
			for _, w := range tt.writes {
				p.Write([]byte(w))
				total += len(w)
			}
			if int(sink) != total {
				t.Errorf("passed on %d bytes of %d", sink, total)
			}
			got := p.line()
			if tt.name == "endless line is bounded" {
				if len(got) > panicLineMax+300 || len(p.hit) > panicLineMax+300 {
					t.Errorf("kept %d bytes of an endless panic line", len(p.hit))
				}
				return
			}
			if got != tt.want {
				t.Errorf("line %q, want %q", got, tt.want)
			}
		})
	}
}

type countWriter int

func (c *countWriter) Write(b []byte) (int, error) { *c += countWriter(len(b)); return len(b), nil }

// TestExitsCount: each KVM_RUN return lands in the one counter its exit
// reason names, everything else in Other, and Total sums them.
func TestExitsCount(t *testing.T) {
	var e Exits
	for _, r := range []uint32{exitIO, exitIO, exitMMIO, exitIntr, exitHLT, exitShutdown} {
		e.count(r)
	}
	if want := (Exits{IO: 2, MMIO: 1, Interrupted: 1, Other: 2}); e.IO != want.IO || e.MMIO != want.MMIO ||
		e.Interrupted != want.Interrupted || e.Other != want.Other || e.Total() != 6 {
		t.Errorf("counts %+v (total %d), want %+v (total 6)", e, e.Total(), want)
	}
}
