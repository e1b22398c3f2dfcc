// Package guard turns a Go panic in device or VMM code into an error, so
// that the process can restore the terminal and exit 1 (internal error)
// instead of dying with Go's default handler (exit 2, terminal left raw).
package guard

import (
	"errors"
	"fmt"
	"runtime/debug"
)

// Panic is a recovered panic: a VMM bug, so its stack is kept for the
// report.
type Panic struct {
	Value any
	Stack []byte
}

func (p *Panic) Error() string { return fmt.Sprintf("panic: %v", p.Value) }

// Recovered wraps v, the value of a recover() made by the caller's own
// deferred function. Called while the panic unwinds, so the stack still
// shows where it was raised.
func Recovered(v any) *Panic { return &Panic{Value: v, Stack: debug.Stack()} }

// Run calls f, turning a panic into a *Panic. A memory fault in f panics
// too, instead of killing the process (debug.SetPanicOnFault, for this
// goroutine only): SIGBUS from a restored guest's RAM, a mapping of its
// snapshot's memory file, if that file shrank under the running guest.
func Run(f func() error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = Recovered(r)
		}
	}()
	return f()
}

// Internal is the one form of an internal error: what names the component
// (a device, a vCPU, a VMM goroutine), err is usually a *Panic.
func Internal(what string, err error) error {
	return fmt.Errorf("internal error: %s: %w", what, err)
}

// Call runs f. A panic in it, or a *Panic among the errors it returns (a
// helper's, from Run), is passed to report as the internal error of what,
// and returned.
func Call(what string, report func(error), f func() error) error {
	err := Run(f)
	if p := Of(err); p != nil {
		err = Internal(what, p)
		report(err)
	}
	return err
}

// Go runs f on its own goroutine; a panic there is passed to report as the
// internal error of what.
func Go(what string, report func(error), f func()) {
	go Call(what, report, func() error { f(); return nil })
}

// Of is the panic err carries, nil if none.
func Of(err error) *Panic {
	var p *Panic
	if errors.As(err, &p) {
		return p
	}
	return nil
}
