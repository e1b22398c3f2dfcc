package main

import (
	"context"
	"os"
	"sync/atomic"

	"github.com/microvm-dev/microvm/vmm"
	"golang.org/x/term"
)

// console connects stdin to the guest's serial port. On a TTY it switches to
// raw mode (so Ctrl-C reaches the guest) and always restores it.
type console struct {
	restoreFn func()
	quit      atomic.Bool
}

func (c *console) restore() {
	if c.restoreFn != nil {
		c.restoreFn()
		c.restoreFn = nil
	}
}

const escapeKey = 0x01 // Ctrl-a

func attachConsole(ctx context.Context, m *vmm.Machine, stop func()) *console {
	c := &console{}
	fd := int(os.Stdin.Fd())
	if term.IsTerminal(fd) {
		st, err := term.MakeRaw(fd)
		if err == nil {
			c.restoreFn = func() { _ = term.Restore(fd, st) }
		}
	}
	go c.pump(ctx, m, stop)
	return c
}

// pump copies stdin to the guest. Ctrl-a x quits; Ctrl-a Ctrl-a sends one
// Ctrl-a. A closed or non-TTY stdin just ends the pump: output keeps flowing
// and nothing spins. The blocking read goroutine is left behind at exit,
// which is harmless: the process is ending.
func (c *console) pump(ctx context.Context, m *vmm.Machine, stop func()) {
	buf := make([]byte, 256)
	esc := false
	for {
		n, err := os.Stdin.Read(buf)
		if n > 0 {
			out := make([]byte, 0, n+1)
			for _, b := range buf[:n] {
				switch {
				case esc && b == 'x':
					c.quit.Store(true)
					stop()
					return
				case esc:
					esc = false
					if b != escapeKey {
						out = append(out, escapeKey)
					}
					out = append(out, b)
				case b == escapeKey:
					esc = true
				default:
					out = append(out, b)
				}
			}
			if m.SendInput(ctx, out) != nil {
				return
			}
		}
		if err != nil || ctx.Err() != nil {
			return
		}
	}
}
