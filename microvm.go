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
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/microvm-dev/microvm/agentproto"
	"github.com/microvm-dev/microvm/internal/agent"
	"github.com/microvm-dev/microvm/internal/vmm"
	"github.com/microvm-dev/microvm/internal/vmm/layout"
)

// Re-exported from the engine so that callers need only this package.
type (
	// ExitReason says how a guest ended.
	ExitReason = vmm.ExitReason
	// Mark is one point of the boot timeline.
	Mark = vmm.Mark
	// Phase names a point of the boot timeline.
	Phase = vmm.Phase
	// InputError is a bad Config field or file; the CLI exits 2 on it.
	InputError = vmm.InputError
)

// How a guest can end.
const (
	ExitReset    = vmm.ExitReset
	ExitPoweroff = vmm.ExitPoweroff
	ExitCrash    = vmm.ExitCrash
	ExitTimeout  = vmm.ExitTimeout
	ExitCanceled = vmm.ExitCanceled
	ExitError    = vmm.ExitError
)

// Boot timeline phases.
const (
	PhaseStart       = vmm.PhaseStart
	PhaseVMReady     = vmm.PhaseVMReady
	PhaseKernel      = vmm.PhaseKernel
	PhaseFirstRun    = vmm.PhaseFirstRun
	PhaseFirstOutput = vmm.PhaseFirstOutput
	PhaseInit        = vmm.PhaseInit
	PhaseAgentReady  = vmm.PhaseAgentReady
	PhaseCommandDone = vmm.PhaseCommandDone
	PhaseExit        = vmm.PhaseExit
)

// Milestone codes the guest writes to the boot/debug port (Config.OnMilestone).
const (
	MilestoneInit        = agentproto.MilestoneInit
	MilestoneAgentReady  = agentproto.MilestoneReady
	MilestoneCommandDone = agentproto.MilestoneCmdDone
)

// Kernel command lines. DefaultCmdline is used for a plain boot when
// Config.Cmdline is empty; AgentCmdline starts the command line of a guest
// driven by the guest agent (Config.Command): quiet, reset through the
// i8042 on reboot, an immediate reboot (reported as a crash) on panic.
const (
	DefaultCmdline = "console=ttyS0 reboot=k panic=-1"
	AgentCmdline   = "console=ttyS0 reboot=k panic=-1 quiet"
)

// Defaults for the zero values of Config.CPUs and Config.Memory.
const (
	DefaultCPUs   = 1
	DefaultMemory = 256 * layout.MiB
)

// The bounds of Config.Memory.
const (
	MinMemory = layout.MinMemory
	MaxMemory = layout.MaxMemory
)

// Config describes one guest. Only Kernel is required.
type Config struct {
	Kernel string // bzImage or ELF64 vmlinux
	Initrd string // initramfs; for Command it must hold the microvm guest agent
	// Cmdline is the kernel command line (default DefaultCmdline). With
	// Command set it holds extra parameters appended to AgentCmdline.
	Cmdline string
	CPUs    int    // vCPUs (default 1)
	Memory  uint64 // guest RAM in bytes (default 256 MiB)

	// Command, if set, is run in the guest by the guest agent; the guest
	// powers off when it ends and Result.ExitCode is its exit status.
	Command []string

	// Stdin is fed to the guest's serial console (nil: no input). A Read
	// still blocked when the guest ends is left to return on its own.
	Stdin io.Reader
	// Stdout receives the guest's serial console output (nil: discarded).
	// With Command, only the command's output is passed on; the boot log
	// is kept in Result.BootLog if the agent never became ready.
	Stdout io.Writer

	// Timeout stops the guest after this long (0: no limit), ending with
	// ExitTimeout. A deadline on Start's context does the same.
	Timeout time.Duration
	// Started is when the boot began, for the timeline (default: Start's
	// call). The CLI passes its process start.
	Started time.Time
	// OnMilestone, if set, sees every milestone (boot/debug port writes on
	// a vCPU thread, agent-channel messages on a device goroutine).
	OnMilestone func(code uint8, value uint32)

	// Disks are attached as virtio-blk (vda, vdb, ...), Nets as virtio-net
	// (eth0, ...) on host TAP devices.
	Disks []Disk
	Nets  []NetIf
	// VirtioConsole makes hvc0 (virtio-console) the guest console and adds
	// the agent channel, over which Command, milestones and the exit
	// status then travel instead of the kernel command line.
	VirtioConsole bool
}

// Disk is a raw disk image for virtio-blk; NetIf a TAP for virtio-net.
type (
	Disk  = vmm.Disk
	NetIf = vmm.NetIf
)

// CmdlineFor returns base (DefaultCmdline or AgentCmdline) with its
// console= set for the chosen console device.
func CmdlineFor(base string, virtioConsole bool) string {
	if virtioConsole {
		return strings.Replace(base, "console=ttyS0", "console=hvc0", 1)
	}
	return base
}

// Result is how a guest ended.
type Result struct {
	Reason ExitReason
	Detail string // e.g. the crash cause and RIP, or where a stopped guest was
	// ExitCode is the microvm command's exit code for this result: the
	// guest command's status when the agent reported one, else 0 for a
	// clean reset or poweroff, 3 crash, 124 timeout, 130 canceled, 1 error.
	ExitCode int
	// GuestStatus is the status the guest agent reported for Command, or
	// -1 if it reported none.
	GuestStatus int
	Timeline    []Mark
	// BootLog is the console output held back with Command when the agent
	// never became ready (the kernel log says why).
	BootLog []byte
	// GuestResident is the guest RAM the host had backed with pages when
	// the guest ended; HostRSS is this process's resident set at that
	// moment (with several VMs in one process, all of theirs).
	GuestResident, HostRSS uint64
	// Start is the timeline's zero; GuestTouched is the guest RAM resident
	// at exit as the engine measured it (mincore), for overhead figures.
	Start        time.Time
	GuestTouched uint64
}

// VM is a running guest. Call Wait to reap it.
type VM struct {
	m      *vmm.Machine
	cancel context.CancelFunc
	done   chan struct{}
	ended  chan struct{} // the guest stopped; Close (the console drain) may run on
	res    Result
	err    error
}

// Start checks cfg, creates the VM, loads the kernel and starts the vCPUs.
// Bad input is an *InputError naming the Config field; a missing or
// forbidden /dev/kvm is an error for which IsNoKVM holds, whose message says
// how to fix it. Canceling ctx stops the guest (ExitCanceled).
func Start(ctx context.Context, cfg Config) (*VM, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	vc, gate, err := cfg.engineConfig()
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
		if r.Reason == vmm.ExitError {
			vm.err = r.Err
		}
		vm.cancel()
		m.Close()
	}()
	return vm, nil
}

// result is the public form of the engine's result; gate is the agent's
// output gate of a guest run with Command.
func result(r vmm.Result, gate *agent.Gate) Result {
	res := Result{
		Reason:        r.Reason,
		Detail:        r.Detail,
		ExitCode:      exitCode(r.Reason),
		GuestStatus:   r.GuestStatus,
		Timeline:      r.Timeline,
		Start:         r.Start,
		GuestResident: r.GuestResident,
		GuestTouched:  r.GuestResident,
		HostRSS:       selfRSS(),
	}
	if gate != nil {
		res.BootLog = gate.Held()
		if (r.Reason == vmm.ExitReset || r.Reason == vmm.ExitPoweroff) && r.GuestStatus >= 0 {
			res.ExitCode = r.GuestStatus
		}
	}
	return res
}

// engineConfig turns cfg into the engine's config, defaults applied; with
// Command it also returns the gate that passes on only the command's output.
func (cfg Config) engineConfig() (vmm.Config, *agent.Gate, error) {
	vc := vmm.Config{
		Kernel:        cfg.Kernel,
		Initrd:        cfg.Initrd,
		Cmdline:       cfg.Cmdline,
		CPUs:          cfg.CPUs,
		Memory:        cfg.Memory,
		Stdout:        cfg.Stdout,
		Started:       cfg.Started,
		OnMilestone:   cfg.OnMilestone,
		Disks:         cfg.Disks,
		Nets:          cfg.Nets,
		VirtioConsole: cfg.VirtioConsole,
	}
	if vc.CPUs == 0 {
		vc.CPUs = DefaultCPUs
	}
	if vc.Memory == 0 {
		vc.Memory = DefaultMemory
	}
	if vc.Started.IsZero() {
		vc.Started = time.Now()
	}
	if cfg.Timeout < 0 {
		return vc, nil, &InputError{What: "Timeout", Msg: "must not be negative"}
	}
	if cfg.VirtioConsole {
		// The agent channel comes with the virtio console, with or without
		// a command: a guest's own agent may use it.
		vc.Channel = agent.Channel(cfg.Command)
	}
	if len(cfg.Command) == 0 {
		if vc.Cmdline == "" {
			vc.Cmdline = CmdlineFor(DefaultCmdline, cfg.VirtioConsole)
		}
		if cfg.VirtioConsole {
			vc.Cmdline = joinCmdline(vc.Cmdline, agent.Params(nil, true))
		}
		return vc, nil, nil
	}
	if cfg.Command[0] == "" {
		return vc, nil, &InputError{What: "Command", Msg: "the command name is empty"}
	}
	// The command goes on the kernel command line, or over the agent
	// channel with VirtioConsole.
	vc.Cmdline = joinCmdline(CmdlineFor(AgentCmdline, cfg.VirtioConsole), cfg.Cmdline, agent.Params(cfg.Command, cfg.VirtioConsole))
	out := cfg.Stdout
	if out == nil {
		out = io.Discard
	}
	gate := agent.NewGate(out)
	vc.Stdout = gate
	vc.OnMilestone = func(code uint8, value uint32) {
		gate.Milestone(code)
		if cfg.OnMilestone != nil {
			cfg.OnMilestone(code, value)
		}
	}
	return vc, gate, nil
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

// selfRSS is this process's VmRSS in bytes (0 if unknown).
func selfRSS() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

func joinCmdline(parts ...string) string {
	var kept []string
	for _, p := range parts {
		if p != "" {
			kept = append(kept, p)
		}
	}
	return strings.Join(kept, " ")
}

// IsInputError reports whether err is (or wraps) bad input.
func IsInputError(err error) bool { return vmm.IsInputError(err) }

// IsNoKVM reports whether err is a missing or forbidden /dev/kvm.
func IsNoKVM(err error) bool { return vmm.IsNoKVM(err) }
