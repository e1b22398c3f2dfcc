package vmm

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/microvm-dev/microvm/internal/guard"
)

// failOnPanic is the report hook of tests that expect no panic (from any
// goroutine, hence Errorf).
func failOnPanic(t testing.TB) func(error) {
	return func(err error) { t.Errorf("guarded goroutine: %v", err) }
}

type panicWriter struct{}

func (panicWriter) Write([]byte) (int, error) { panic("boom") }

// TestGoroutinePanics: a panic on each VMM goroutine that lives with the
// machine ends the machine with an internal error naming the goroutine,
// stack kept, instead of killing the process (exit 2, terminal left raw).
// A Machine without KVM suffices: fatal only records the exit.
func TestGoroutinePanics(t *testing.T) {
	cases := []struct {
		name  string
		what  string
		start func(m *Machine)
	}{
		{"console drain", "console output", func(m *Machine) {
			m.out = newConsoleOut(panicWriter{}, m.fatal)
			_, _ = m.out.Write([]byte("x"))
		}},
		{"log writer", "log writer", func(m *Machine) {
			m.log = newRateLog(func(string) { panic("boom") }, m.fatal)
			m.logf("x")
		}},
		{"input to a device", "console input", func(m *Machine) {
			// No serial port: the device that takes the input panics.
			if err := m.SendInput(context.Background(), []byte("x")); !strings.HasPrefix(err.Error(), "internal error: console input: panic: ") {
				t.Errorf("SendInput returned %v", err)
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := newMachine(Config{})
			c.start(m)
			select {
			case e := <-m.guestExit:
				if want := "internal error: " + c.what + ": panic: "; e.reason != ExitError || e.err == nil || !strings.HasPrefix(e.err.Error(), want) {
					t.Fatalf("exit %v, %v; want ExitError, %q...", e.reason, e.err, want)
				}
				if p := guard.Of(e.err); p == nil || !strings.Contains(string(p.Stack), "panic") {
					t.Errorf("the error does not carry the panic's stack")
				}
			case <-time.After(5 * time.Second):
				t.Fatal("the panic did not end the machine")
			}
			if !m.stopping.Load() {
				t.Error("the machine was not stopped")
			}
		})
	}
}
