package main

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"golang.org/x/sys/unix"
)

// Implemented in port_linux_amd64.s.

func outb(port uint16, val uint8)

func outl(port uint16, val uint32)

// withIoperm runs fn with I/O permission for [port, port+n) on the current
// OS thread. ioperm(2) is per thread, so the goroutine is locked to its
// thread and permission is (re)granted there before fn runs. fn is not run
// if permission is denied: an OUT without it would kill us with SIGSEGV.
//
// The OUT can fault even when ioperm succeeded: in a guest QEMU 7.2 had
// restored from its migration stream (nested, bench/runner/snapshot.go),
// the agent's last status write died with SIGSEGV (code 0x80, #GP), and
// with it the reset that ends the VM. So a fault is an error here, which
// the callers answer with /dev/port, not a crash.
func withIoperm(port uint16, n int, fn func()) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := unix.Ioperm(int(port), n, 1); err != nil {
		return fmt.Errorf("ioperm(%#x, %d): %w", port, n, err)
	}
	return faultToError(port, fn)
}

// faultToError runs fn and turns a memory fault in it into an error.
func faultToError(port uint16, fn func()) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("port %#x: OUT faulted despite ioperm: %v", port, r)
		}
	}()
	fn()
	return nil
}
