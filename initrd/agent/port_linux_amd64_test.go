package main

import (
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// A fault inside withIoperm's fn (what a faulting OUT is) comes back as an
// error, so that outByte and outLong fall back to /dev/port, instead of
// killing the agent and with it the VM's reset.
func TestFaultToError(t *testing.T) {
	page, err := unix.Mmap(-1, 0, 4096, unix.PROT_NONE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(page)
	err = faultToError(0x3f0, func() { page[0] = 1 })
	if err == nil || !strings.Contains(err.Error(), "faulted") {
		t.Fatalf("faultToError with a faulting fn = %v, want a fault error", err)
	}
	ran := false
	if err := faultToError(0x3f0, func() { ran = true }); err != nil || !ran {
		t.Fatalf("faultToError(no fault) = %v, ran %v", err, ran)
	}
}
