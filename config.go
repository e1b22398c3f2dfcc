package microvm

import (
	"io"
	"strings"
	"time"

	"github.com/microvm-dev/microvm/agentproto"
	"github.com/microvm-dev/microvm/internal/agent"
	"github.com/microvm-dev/microvm/internal/vmm"
	"github.com/microvm-dev/microvm/internal/vmm/layout"
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
	// NoACPI leaves out the ACPI tables (and the ACPI power registers)
	// and announces the virtio devices on the kernel command line
	// (virtio_mmio.device=) instead of in the DSDT: for kernels built
	// without CONFIG_ACPI, which need CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES.
	// By default the guest gets ACPI, which distribution kernels need to
	// find the devices, and powers off through it at once. The MP table
	// is there either way.
	NoACPI bool

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

	// SaveSnapshot, with Command and VirtioConsole, saves a snapshot of the
	// guest into this directory when its agent is ready, just before
	// Command is handed to it; Result.Snapshot says how it went (the
	// command runs either way). The directory must not exist, be empty, or
	// hold a snapshot, which is replaced in one step.
	SaveSnapshot string
	// Restore starts the guest from the snapshot in this directory
	// instead of booting Kernel. The rest of the Config must describe the
	// machine it was made of: Kernel and Initrd (if set) the same files,
	// CPUs, Memory, Cmdline, Disks (unchanged since), Nets and
	// VirtioConsole the same. Anything else is an *InputError; IsStale
	// says whether one made again would do (see SaveSnapshot). With
	// Command (and VirtioConsole), the snapshot must be one SaveSnapshot
	// took: Command is handed to the agent waiting in it, with fresh
	// entropy and the host's clock.
	Restore string

	// Shares are host directories over virtio-9p, mounted by the agent
	// (see Share). Rootfs, with Command, makes a host directory the
	// command's root filesystem (see Rootfs).
	Shares []Share
	Rootfs *Rootfs
	// Dir is the command's working directory in the guest. Default: where
	// the process's working directory is in the guest, when it lies inside
	// a share or the rootfs; else /.
	Dir string
	// The sandbox (docs/security.md). Once the guest is set up, Start
	// confines the whole calling process, every thread, for good: a
	// seccomp filter that admits only what running this guest needs, no
	// capabilities, no_new_privs, not dumpable, no core file, and
	// RLIMIT_NOFILE and RLIMIT_FSIZE cut to what the guest needs. The
	// process can then run this guest and exit, nothing else: no other
	// Start, no file opened, no exec. That is what the microvm command
	// wants; a program that goes on with other work sets NoSandbox, or
	// runs each guest in a process of its own (as the microvm command).
	//
	// Seccomp is what the filter does with any other call (the zero value
	// is SeccompKill).
	Seccomp SeccompMode
	// RunAs, if set, drops the process to this user and group, with no
	// supplementary groups (needs root).
	RunAs *Credential
	// Jail, if set, chroots the process into this directory: empty, or
	// created (needs root). The guest's files are open by then.
	Jail string
	// NoSandbox leaves the process as it is: only guest RAM is still kept
	// out of core dumps (MADV_DONTDUMP). Seccomp must then be unset or
	// SeccompOff, RunAs and Jail unset.
	NoSandbox bool
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

// engineConfig turns cfg into the engine's config, defaults applied; with
// Command it also returns the gate that passes on only the command's output.
func (cfg Config) engineConfig() (vmm.Config, *agent.Gate, error) {
	vc := vmm.Config{
		Kernel:        cfg.Kernel,
		Initrd:        cfg.Initrd,
		Cmdline:       cfg.Cmdline,
		CPUs:          cfg.CPUs,
		Memory:        cfg.Memory,
		ACPI:          !cfg.NoACPI,
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
	vc.Restore, vc.SnapshotAtReady, vc.Producer = cfg.Restore, cfg.SaveSnapshot, "microvm"
	vc.RestoreAtReady = cfg.Restore != "" && len(cfg.Command) > 0
	if (cfg.SaveSnapshot != "" || vc.RestoreAtReady) && (!cfg.VirtioConsole || len(cfg.Command) == 0) {
		what := "SaveSnapshot"
		if cfg.Restore != "" {
			what = "Restore"
		}
		return vc, nil, &InputError{What: what, Msg: "with a Command needs VirtioConsole: the command travels over the agent channel, so that one snapshot serves every command"}
	}
	if cfg.SaveSnapshot != "" || cfg.Restore != "" {
		// A snapshot at agent ready comes before the agent mounts anything,
		// but nothing records which host directories a share served, so a
		// restore could not check that it serves the same ones; and once
		// the guest mounts a share, its fids live in the 9P server, which
		// no snapshot carries (the device refuses VM.Snapshot then).
		what := ""
		switch {
		case cfg.Rootfs != nil:
			what = "Rootfs"
		case len(cfg.Shares) > 0:
			what = "Shares"
		}
		if what != "" {
			return vc, nil, &InputError{What: what, Msg: "not with a snapshot (SaveSnapshot or Restore): virtio-9p shares are not snapshotted"}
		}
	}
	shares, job, err := cfg.shares()
	if err != nil {
		return vc, nil, err
	}
	vc.Shares = shares
	if cfg.VirtioConsole {
		// The agent channel comes with the virtio console, with or without
		// a command: a guest's own agent may use it.
		vc.Channel = agent.Channel(job)
	}
	if len(cfg.Command) == 0 {
		if vc.Cmdline == "" {
			vc.Cmdline = CmdlineFor(DefaultCmdline, cfg.VirtioConsole)
		}
		if cfg.VirtioConsole {
			vc.Cmdline = agent.Cmdline(vc.Cmdline, agent.Params(agentproto.Job{}, true))
		}
		return vc, nil, nil
	}
	if cfg.Command[0] == "" {
		return vc, nil, &InputError{What: "Command", Msg: "the command name is empty"}
	}
	// The command goes on the kernel command line, or over the agent
	// channel with VirtioConsole.
	vc.Cmdline = agent.Cmdline(CmdlineFor(AgentCmdline, cfg.VirtioConsole), cfg.Cmdline, agent.Params(job, cfg.VirtioConsole))
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
