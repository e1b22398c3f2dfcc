package main

import (
	"fmt"
	"runtime"

	"golang.org/x/sys/unix"
)

// Implemented in port_linux_amd64.s.

func outb(port uint16, val uint8)

func outl(port uint16, val uint32)

// withIoperm runs fn with I/O permission for [port, port+n) on the current
// OS thread. ioperm(2) is per thread, so the goroutine is locked to its
// thread and permission is (re)granted there before fn runs. fn is not run
// if permission is denied: an OUT without it would kill us with SIGSEGV.
func withIoperm(port uint16, n int, fn func()) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := unix.Ioperm(int(port), n, 1); err != nil {
		return fmt.Errorf("ioperm(%#x, %d): %w", port, n, err)
	}
	fn()
	return nil
}
