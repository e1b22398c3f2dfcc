package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/microvm-dev/microvm"
	"github.com/microvm-dev/microvm/internal/guard"
	"github.com/microvm-dev/microvm/internal/report"
	"github.com/spf13/pflag"
)

// vmFlags are the flags shared by every command that boots a guest.
type vmFlags struct {
	kernel, initrd, cmdline, memory string
	cpus                            int
	timeout                         time.Duration
	timings, json                   bool
	disks, nets, shares             []string
	consoleKind, rootfs             string
	acpi                            string
	sandbox                         sandboxFlags
	fs                              *pflag.FlagSet // the set they were registered in
}

func (f *vmFlags) register(fs *pflag.FlagSet, defaultCmdline string) {
	f.fs = fs
	fs.StringVar(&f.kernel, "kernel", "", "kernel image: bzImage or ELF64 vmlinux")
	fs.StringVar(&f.initrd, "initrd", "", "initramfs to load")
	fs.StringVar(&f.cmdline, "cmdline", defaultCmdline, "kernel command line")
	fs.IntVar(&f.cpus, "cpus", 1, "number of vCPUs")
	fs.StringVar(&f.memory, "memory", "256M", "guest RAM, e.g. 512M or 6G")
	fs.DurationVar(&f.timeout, "timeout", 0, "stop the guest and exit 124 after this long (0: no limit)")
	fs.BoolVar(&f.timings, "timings", false, "print the boot timeline and the guest's exit counts on stderr at exit")
	fs.BoolVar(&f.json, "json", false, "print the timeline and exit reason as one JSON object on stderr at exit")
	fs.StringArrayVar(&f.disks, "disk", nil, "attach a raw disk image as virtio-blk: PATH[,ro] (repeatable: vda, vdb, ...)")
	fs.StringArrayVar(&f.nets, "net", nil, "attach virtio-net on a host TAP: tap=NAME[,mac=MAC] (repeatable)")
	fs.StringArrayVar(&f.shares, "share", nil, "share a host directory over virtio-9p: HOSTDIR[:GUESTPATH][,ro] (repeatable; run mounts it at GUESTPATH, default the same path)")
	fs.StringVar(&f.rootfs, "rootfs", "", "run the command in host directory DIR[,rw] as the guest's root (read-only under a tmpfs overlay; rw writes through)")
	fs.StringVar(&f.consoleKind, "console", "serial", "guest console: serial (ttyS0) or virtio (hvc0, plus the agent channel)")
	fs.StringVar(&f.acpi, "acpi", "on", "ACPI tables: on (devices in the DSDT, S5 poweroff) or off (devices as virtio_mmio.device= on the command line, for kernels without ACPI)")
	f.sandbox.register(fs)
}

// agentFlags is the flag set of a command whose guest runs a command
// through the agent (run, uname, bench, compare): the VM flags, --cmdline
// being extra parameters for the agent's command line.
func agentFlags(name string) (*pflag.FlagSet, *vmFlags) {
	var f vmFlags
	fs := newFlags(name)
	f.register(fs, "")
	fs.Lookup("cmdline").Usage = "extra kernel command line parameters"
	return fs, &f
}

// config turns the flags into a microvm.Config; errors name the flag.
func (f *vmFlags) config(start time.Time) (microvm.Config, error) {
	mem, err := parseSize(f.memory)
	if err != nil {
		return microvm.Config{}, &microvm.InputError{What: "--memory", Msg: err.Error()}
	}
	// The API reads zero as "default"; on the command line it is an error.
	if f.cpus < 1 {
		return microvm.Config{}, &microvm.InputError{What: "--cpus", Msg: fmt.Sprintf("%d is out of range: need 1 to 254", f.cpus)}
	}
	if mem == 0 {
		return microvm.Config{}, &microvm.InputError{What: "--memory", Msg: fmt.Sprintf("0 is below the minimum of %d MiB", microvm.MinMemory>>20)}
	}
	if f.consoleKind != "serial" && f.consoleKind != "virtio" {
		return microvm.Config{}, &microvm.InputError{What: "--console", Msg: fmt.Sprintf("%q: want serial or virtio", f.consoleKind)}
	}
	if f.acpi != "on" && f.acpi != "off" {
		return microvm.Config{}, &microvm.InputError{What: "--acpi", Msg: fmt.Sprintf("%q: want on or off", f.acpi)}
	}
	cfg := microvm.Config{
		Kernel:        f.kernel,
		Initrd:        f.initrd,
		Cmdline:       f.cmdline,
		CPUs:          f.cpus,
		Memory:        mem,
		Stdout:        os.Stdout,
		Timeout:       f.timeout,
		Started:       start,
		VirtioConsole: f.consoleKind == "virtio",
		NoACPI:        f.acpi == "off",
	}
	for _, d := range f.disks {
		disk, err := parseDisk(d)
		if err != nil {
			return microvm.Config{}, err
		}
		cfg.Disks = append(cfg.Disks, disk)
	}
	for _, n := range f.nets {
		nic, err := parseNet(n)
		if err != nil {
			return microvm.Config{}, err
		}
		cfg.Nets = append(cfg.Nets, nic)
	}
	if err := f.shareConfig(&cfg); err != nil {
		return microvm.Config{}, err
	}
	if err := f.sandbox.apply(&cfg); err != nil {
		return microvm.Config{}, err
	}
	return cfg, nil
}

// parseDisk parses --disk PATH[,ro].
func parseDisk(s string) (microvm.Disk, error) {
	path, opts, _ := strings.Cut(s, ",")
	d := microvm.Disk{Path: path}
	if path == "" {
		return d, &microvm.InputError{What: "--disk", Msg: fmt.Sprintf("%q: no path", s)}
	}
	ro, err := flagOption("--disk", path, opts, "ro")
	d.ReadOnly = ro
	return d, err
}

// parseNet parses --net tap=NAME[,mac=MAC].
func parseNet(s string) (microvm.NetIf, error) {
	var n microvm.NetIf
	for _, kv := range strings.Split(s, ",") {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "tap":
			n.Tap = v
		case "mac":
			mac, err := net.ParseMAC(v)
			if err != nil || len(mac) != 6 {
				return n, &microvm.InputError{What: "--net", Msg: fmt.Sprintf("mac=%s is not a MAC address like 02:00:00:00:00:01", v)}
			}
			n.MAC = mac
		default:
			return n, &microvm.InputError{What: "--net", Msg: fmt.Sprintf("%q: unknown option %q (want tap=NAME[,mac=MAC])", s, k)}
		}
	}
	if n.Tap == "" {
		return n, &microvm.InputError{What: "--net", Msg: fmt.Sprintf("%q: tap=NAME is required", s)}
	}
	return n, nil
}

func runBoot(e *env, args []string) int {
	var f vmFlags
	fs := newFlags("boot")
	f.register(fs, "")
	fs.Lookup("cmdline").Usage = "kernel command line (default \"" + microvm.DefaultCmdline + "\", hvc0 with --console virtio)"
	if done, code := parseFlags(fs, "boot --kernel PATH [--initrd PATH] [--cmdline STR] [--cpus N] [--memory SIZE] [--disk PATH[,ro]] [--net tap=NAME] [--share HOSTDIR[:GUESTPATH][,ro]] [--rootfs DIR[,rw]] [--console serial|virtio] [--acpi on|off] [--timeout DUR] [--seccomp kill|log|off] [--uid UID --gid GID] [--jail DIR]", args); done {
		return code
	}
	if fs.NArg() > 0 {
		return fail(microvm.CodeUsage, "boot: unexpected argument %q", fs.Arg(0))
	}
	if f.kernel == "" {
		return fail(microvm.CodeUsage, "--kernel: required (see 'microvm boot --help')")
	}
	cfg, err := f.config(e.start)
	if err != nil {
		return failErr(err)
	}
	_, code := execute(e, cfg, &f, true, microvm.Start)
	return code
}

// startFunc starts a guest: microvm.Start, or run --snapshot's restore or
// boot.
type startFunc func(context.Context, microvm.Config) (*microvm.VM, error)

// execute runs one guest through the microvm API and reports how it ended.
// interactive attaches stdin (raw mode on a terminal) to the guest's serial
// port. It returns the result (nil if the VM never started) and the exit
// code; a signal's 128+N is applied by main.
func execute(e *env, cfg microvm.Config, f *vmFlags, interactive bool, start startFunc) (*microvm.Result, int) {
	ctx, cancel := context.WithCancel(e.ctx)
	defer cancel()
	var in *escReader
	if interactive {
		in = newConsoleInput(cancel)
		cfg.Stdin = in
	}
	vm, err := start(ctx, cfg)
	if err != nil {
		if e.ctx.Err() != nil {
			return nil, microvm.CodeInternal // stopped by a signal: main says so
		}
		return nil, failErr(err)
	}
	if interactive {
		e.tty.makeRaw(int(os.Stdin.Fd()))
	}
	if cfg.Timeout > 0 {
		// The machine stops itself at the deadline, whatever its I/O is
		// doing; this is the backstop for a stop that cannot complete, as
		// stopGrace is for signals.
		force := time.AfterFunc(cfg.Timeout+stopGrace, func() {
			e.tty.Restore()
			fmt.Fprintf(os.Stderr, "microvm: --timeout %v expired; the guest did not stop within %v, forced exit\n", f.timeout, stopGrace)
			os.Exit(microvm.CodeTimeout)
		})
		defer force.Stop()
		// Once the guest has stopped, the exit code is the guest's: the
		// console drain in Wait ends by itself (microvm.DrainGrace, shorter
		// than stopGrace), and must not turn a clean exit into 124.
		go func() {
			select {
			case <-vm.Ended():
				force.Stop()
			case <-ctx.Done():
			}
		}()
	}
	res, err := vm.Wait()
	e.tty.Restore()

	code := res.ExitCode
	switch {
	case e.signal() != nil:
		code = 128 + int(e.signal().(syscall.Signal))
	case in != nil && in.quit.Load():
		code = 0
		fmt.Fprintln(os.Stderr, "microvm: console quit (Ctrl-a x)")
	case res.Reason == microvm.ExitTimeout:
		fmt.Fprintf(os.Stderr, "microvm: --timeout %v expired; guest stopped (%s)\n", f.timeout, res.Detail)
	case res.Reason == microvm.ExitCrash:
		fmt.Fprintf(os.Stderr, "microvm: guest crashed: %s\n", res.Detail)
	case err != nil:
		reportError(os.Stderr, err)
	}
	reportTimeline(f, res, code)
	return &res, code
}

// reportError prints err in one line. An internal error from a panic is a
// VMM bug: its stack follows, once, for the bug report.
func reportError(w io.Writer, err error) {
	fmt.Fprintf(w, "microvm: %v\n", err)
	if p := guard.Of(err); p != nil {
		_, _ = w.Write(p.Stack)
	}
}

func reportTimeline(f *vmFlags, res microvm.Result, code int) {
	if f.timings {
		fmt.Fprintln(os.Stderr, "boot timeline:")
		prev := time.Duration(0)
		for _, mk := range res.Timeline {
			fmt.Fprintf(os.Stderr, "  %-20s %10.3f ms  (+%.3f ms)\n", mk.Phase, ms(mk.At), ms(mk.At-prev))
			prev = mk.At
		}
		fmt.Fprintf(os.Stderr, "  exit: %s, code %d\n", res.Reason, code)
		if s := res.Snapshot; s != nil {
			fmt.Fprintf(os.Stderr, "  snapshot: %s\n", describeSnapshot(s))
		}
		printExits(os.Stderr, res.Exits)
	}
	if f.json {
		b, _ := json.Marshal(report.NewBoot(res, code, report.PeakRSS()))
		fmt.Fprintln(os.Stderr, string(b))
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// printExits is the --timings summary of the guest's exits to the VMM: by
// kind, then the devices that took the most port and MMIO accesses.
func printExits(w io.Writer, e microvm.Exits) {
	r := report.ExitsOf(e)
	if r == nil {
		return
	}
	fmt.Fprintf(w, "  exits to the VMM: %d (port I/O %d, MMIO %d, signals %d, other %d)\n", r.Total, r.IO, r.MMIO, r.Interrupted, r.Other)
	for i, d := range r.Devices {
		if i == 6 {
			fmt.Fprintf(w, "    ... %d more devices\n", len(r.Devices)-i)
			break
		}
		fmt.Fprintf(w, "    %-28s %4s %#-10x %8d reads %8d writes\n", d.Name, d.Bus, d.Base, d.Reads, d.Writes)
	}
}
