package vmm

import (
	"errors"
	"testing"
)

func TestDecide(t *testing.T) {
	stopped := vcpuExit{reason: ExitStopped}
	boom := errors.New("KVM_RUN: EFAULT")
	where := []string{"vcpu 0 at RIP 0xffffffff81000000", "vcpu 1 at RIP 0xffffffff81000010"}
	tests := []struct {
		name string
		o    observed
		want vcpuExit
	}{
		{"reset seen after the stop it caused",
			observed{events: []vcpuExit{stopped, {reason: ExitReset}, stopped}},
			vcpuExit{reason: ExitReset}},
		{"reset before the stops",
			observed{events: []vcpuExit{{reason: ExitReset}, stopped, stopped}},
			vcpuExit{reason: ExitReset}},
		{"KVM shutdown event beats the other vCPU's stop",
			observed{events: []vcpuExit{stopped, {reason: ExitPoweroff}}},
			vcpuExit{reason: ExitPoweroff}},
		{"triple fault",
			observed{events: []vcpuExit{{reason: ExitCrash, detail: "vcpu 0: triple fault (KVM_EXIT_SHUTDOWN) at RIP 0x1000"}, stopped}},
			vcpuExit{reason: ExitCrash, detail: "vcpu 0: triple fault (KVM_EXIT_SHUTDOWN) at RIP 0x1000"}},
		{"panic line then reset",
			observed{events: []vcpuExit{{reason: ExitReset}, stopped}, panicLine: "Kernel panic - not syncing: VFS: Unable to mount root fs"},
			vcpuExit{reason: ExitCrash, detail: "guest kernel panic: Kernel panic - not syncing: VFS: Unable to mount root fs"}},
		{"panic line then poweroff by halt",
			observed{events: []vcpuExit{{reason: ExitPoweroff, detail: "all vCPUs halted with interrupts disabled"}}, panicLine: "Kernel panic - not syncing: x"},
			vcpuExit{reason: ExitCrash, detail: "guest kernel panic: Kernel panic - not syncing: x"}},
		{"ACPI S5 beats the stops it caused",
			observed{events: []vcpuExit{stopped, {reason: ExitPoweroff, detail: "ACPI S5 through the sleep control register"}, stopped}},
			vcpuExit{reason: ExitPoweroff, detail: "ACPI S5 through the sleep control register"}},
		{"ACPI reset register",
			observed{events: []vcpuExit{{reason: ExitReset, detail: "ACPI reset register"}, stopped}},
			vcpuExit{reason: ExitReset, detail: "ACPI reset register"}},
		{"panic line then ACPI S5",
			observed{events: []vcpuExit{{reason: ExitPoweroff, detail: "ACPI S5 through the sleep control register"}}, panicLine: "Kernel panic - not syncing: y"},
			vcpuExit{reason: ExitCrash, detail: "guest kernel panic: Kernel panic - not syncing: y"}},
		{"poweroff by halt",
			observed{events: []vcpuExit{stopped, {reason: ExitPoweroff, detail: "all vCPUs halted with interrupts disabled"}, stopped}},
			vcpuExit{reason: ExitPoweroff, detail: "all vCPUs halted with interrupts disabled"}},
		{"timeout says where the vCPUs were",
			observed{events: []vcpuExit{{reason: ExitTimeout}, stopped, stopped}, where: where},
			vcpuExit{reason: ExitTimeout, detail: where[0] + ", " + where[1]}},
		{"timeout wins over a crash after it",
			observed{events: []vcpuExit{{reason: ExitTimeout}, {reason: ExitCrash, detail: "late"}}, where: where[:1]},
			vcpuExit{reason: ExitTimeout, detail: where[0]}},
		{"cancel",
			observed{events: []vcpuExit{{reason: ExitCanceled}, stopped}, where: where[:1]},
			vcpuExit{reason: ExitCanceled, detail: where[0]}},
		{"a panic line does not turn a timeout into a crash",
			observed{events: []vcpuExit{{reason: ExitTimeout}}, panicLine: "Kernel panic - not syncing: x"},
			vcpuExit{reason: ExitTimeout}},
		{"internal error",
			observed{events: []vcpuExit{stopped, {reason: ExitError, err: boom}}},
			vcpuExit{reason: ExitError, err: boom}},
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
