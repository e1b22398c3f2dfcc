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
}

func (e *InputError) Error() string { return e.What + ": " + e.Msg }

func inputErr(what, format string, a ...any) error {
	return &InputError{What: what, Msg: fmt.Sprintf(format, a...)}
}

// IsInputError reports whether err is (or wraps) an InputError.
func IsInputError(err error) bool {
	var ie *InputError
	return errors.As(err, &ie)
}
