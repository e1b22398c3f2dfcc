package vmm

import (
	"errors"
	"fmt"
)

// InputError is bad input: a Config field or a file that cannot be used.
// What names the Config field ("Memory", "Disks", ...); the message names the
// file where there is one. The CLI maps fields to its flags and exits 2.
type InputError struct {
	What string
	Msg  string
	// Stale is set for a snapshot (What "Restore") that is intact but
	// was made for another machine: other kernel, initrd, memory, vCPUs,
	// command line, devices or disk contents, or an older format. One can
	// be made again in its place; `run --snapshot` does.
	Stale bool
}

func (e *InputError) Error() string { return e.What + ": " + e.Msg }

func inputErr(what, format string, a ...any) error {
	return &InputError{What: what, Msg: fmt.Sprintf(format, a...)}
}

func staleErr(format string, a ...any) error {
	return &InputError{What: "Restore", Msg: fmt.Sprintf(format, a...), Stale: true}
}

// IsStaleSnapshot reports whether err is an InputError for a stale
// snapshot, or for none at all.
func IsStaleSnapshot(err error) bool {
	var ie *InputError
	return errors.As(err, &ie) && ie.Stale
}

// IsInputError reports whether err is (or wraps) an InputError.
func IsInputError(err error) bool {
	var ie *InputError
	return errors.As(err, &ie)
}
