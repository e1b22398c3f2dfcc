package main

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/microvm-dev/microvm/internal/guard"
)

// TestReportError: an ordinary error is one line; an internal error from a
// panic is its line, then the panic's stack once.
func TestReportError(t *testing.T) {
	panicked := guard.Internal("device virtio-blk vda at 0xd0001070", guard.Run(func() error { panic("boom") }))
	for _, c := range []struct {
		name      string
		err       error
		line      string
		withStack bool
	}{
		{"plain", errors.New("KVM_CREATE_VM: permission denied"), "microvm: KVM_CREATE_VM: permission denied", false},
		{"panic", panicked, "microvm: internal error: device virtio-blk vda at 0xd0001070: panic: boom", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			var b bytes.Buffer
			reportError(&b, c.err)
			first, rest, _ := strings.Cut(b.String(), "\n")
			if first != c.line {
				t.Errorf("first line %q, want %q", first, c.line)
			}
			if hasStack := strings.Contains(rest, "[running]"); hasStack != c.withStack || strings.Count(rest, "[running]") > 1 {
				t.Errorf("after the line: %q (want the stack: %v, once)", rest, c.withStack)
			}
		})
	}
}
