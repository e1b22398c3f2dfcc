package guard

import (
	"errors"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestGuard: Run, Call and Go turn a panic into an error carrying the value
// and the stack; Call and Go report it as the internal error of what, and
// Call reports a *Panic a helper returned just the same.
func TestGuard(t *testing.T) {
	helper := Run(func() error { panic("helper boom") })
	for _, c := range []struct {
		name string
		run  func(report func(error))
		want string // the reported error; "" for none
	}{
		{"Call panics", func(r func(error)) { _ = Call("device x", r, func() error { panic("boom") }) }, "internal error: device x: panic: boom"},
		{"Call returns a helper's panic", func(r func(error)) {
			_ = Call("device x", r, func() error { return errors.Join(errors.New("other"), helper) })
		}, "internal error: device x: panic: helper boom"},
		{"Call returns an error", func(r func(error)) { _ = Call("device x", r, func() error { return errors.New("plain") }) }, ""},
		{"Go panics", func(r func(error)) { Go("agent reply", r, func() { panic("boom") }) }, "internal error: agent reply: panic: boom"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := make(chan error, 1)
			c.run(func(err error) { got <- err })
			if c.want == "" {
				select {
				case err := <-got:
					t.Fatalf("reported %v", err)
				default:
					return
				}
			}
			err := <-got
			if err.Error() != c.want {
				t.Fatalf("reported %q, want %q", err, c.want)
			}
			if p := Of(err); p == nil || !strings.Contains(string(p.Stack), "guard_test.go") {
				t.Error("the error does not carry the stack of the panic")
			}
		})
	}
}

// TestRunFault: a read of a file mapping past its file's end (SIGBUS, what
// a shrunk snapshot memory file under guest RAM gives) is an error from
// Run, not the end of the process.
func TestRunFault(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "shrinks")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(2 * 4096); err != nil {
		t.Fatal(err)
	}
	b, err := unix.Mmap(int(f.Fd()), 0, 2*4096, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(b)
	if err := f.Truncate(0); err != nil {
		t.Fatal(err)
	}
	var sink byte
	err = Run(func() error { sink = b[4096]; return nil })
	if p := Of(err); p == nil || !strings.Contains(p.Error(), "invalid memory address") {
		t.Fatalf("Run of a faulting read = %v (read %d), want a *Panic for the fault", err, sink)
	}
}
