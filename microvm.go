// Package microvm boots Linux kernels (and other 64-bit boot-protocol
// guests) in KVM micro-VMs, so that Go programs and tests can run a command
// under a different kernel:
//
//	vm, err := microvm.Start(ctx, microvm.Config{
//		Kernel:  "bzImage",
//		Initrd:  "initrd.cpio", // u-root with the microvm guest agent
//		Command: []string{"uname", "-r"},
//		Stdout:  os.Stdout,
//	})
//	if err != nil { ... }
//	res, err := vm.Wait()
//	// res.ExitCode is the command's exit status.
//
// The microvm command is a thin layer over this package; internal/vmm is the
// engine underneath.
package microvm

import (
	"context"
	"io"
	"time"

	"github.com/microvm-dev/microvm/internal/sandbox"
	"github.com/microvm-dev/microvm/internal/vmm"
)

// VM is a running guest. Call Wait to reap it.
type VM struct {
	m       *vmm.Machine
	cancel  context.CancelFunc
	done    chan struct{}
	ended   chan struct{} // the guest stopped; Close (the console drain) may run on
	sandbox *SandboxReport
	res     Result
	err     error
}

// Start checks cfg, creates the VM, loads the kernel, sandboxes the
// process (see Config.Seccomp) and starts the vCPUs. Bad input is an
// *InputError naming the Config field; a missing or forbidden /dev/kvm is
// an error for which IsNoKVM holds, whose message says how to fix it. In a
// process an earlier Start sandboxed, it returns ErrSandboxed. Canceling
// ctx stops the guest (ExitCanceled).
func Start(ctx context.Context, cfg Config) (*VM, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if sandbox.Applied() {
		// Before anything is opened: the filter would end the process.
		return nil, ErrSandboxed
	}
	vc, gate, err := cfg.engineConfig()
	if err != nil {
		return nil, err
	}
	sb, err := cfg.sandboxOptions()
	if err != nil {
		return nil, err
	}
	if cfg.Timeout > 0 {
		// The console drain at exit ends DrainGrace after the deadline,
		// before a caller's backstop for a stop that cannot complete.
		vc.DrainBy = time.Now().Add(cfg.Timeout + DrainGrace)
	}
	m, err := vmm.Build(vc)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		m.Close()
		return nil, err
	}
	vm := &VM{m: m, done: make(chan struct{}), ended: make(chan struct{})}
	if !cfg.NoSandbox {
		// Everything the guest needs is open and mapped, the vCPUs exist,
		// and no guest instruction has run yet.
		if vm.sandbox, err = confine(m, sb); err != nil {
			m.Close()
			return nil, err
		}
		m.Timeline().Mark(vmm.PhaseSandboxed)
	}
	var runCtx context.Context
	if cfg.Timeout > 0 {
		runCtx, vm.cancel = context.WithTimeout(ctx, cfg.Timeout)
	} else {
		runCtx, vm.cancel = context.WithCancel(ctx)
	}
	if cfg.Stdin != nil {
		go pumpInput(runCtx, m, cfg.Stdin)
	}
	go func() {
		defer close(vm.done)
		r := m.Run(runCtx)
		close(vm.ended)
		vm.res = result(r, gate)
		vm.res.Sandbox = vm.sandbox
		if r.Reason == vmm.ExitError {
			vm.err = r.Err
		}
		vm.cancel()
		m.Close()
	}()
	return vm, nil
}

// Wait waits for the guest to end and releases the VM. The error is set
// only for a VMM or KVM failure (Reason ExitError); a guest that crashed or
// timed out is a Result, not an error. Wait may be called more than once.
func (vm *VM) Wait() (Result, error) {
	<-vm.done
	return vm.res, vm.err
}

// Stop asks the guest to stop (as if Start's context were canceled); Wait
// then returns ExitCanceled.
func (vm *VM) Stop() { vm.cancel() }

// DrainGrace is how long after Config.Timeout the VM may take to hand the
// rest of the console output to a slow Stdout; what is left is dropped.
const DrainGrace = 4 * time.Second

// Ended is closed when the guest has stopped, before the VM is released
// (Done): from then on no deadline of the guest's can be missed.
func (vm *VM) Ended() <-chan struct{} { return vm.ended }

// Done is closed when the guest has ended and the VM is released.
func (vm *VM) Done() <-chan struct{} { return vm.done }

// Timeline returns the boot timeline recorded so far.
func (vm *VM) Timeline() []Mark {
	select {
	case <-vm.done:
		return vm.res.Timeline
	default:
		return vm.m.Timeline().Marks()
	}
}

// pumpInput copies r to the guest's serial port until r ends or the guest
// stops.
func pumpInput(ctx context.Context, m *vmm.Machine, r io.Reader) {
	buf := make([]byte, 256)
	for {
		n, err := r.Read(buf)
		if n > 0 && m.SendInput(ctx, append([]byte(nil), buf[:n]...)) != nil {
			return
		}
		if err != nil || ctx.Err() != nil {
			return
		}
	}
}
