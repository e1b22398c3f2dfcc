package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/microvm-dev/microvm/vmm"
	"github.com/spf13/pflag"
)

// vmFlags are the flags shared by every command that boots a guest.
type vmFlags struct {
	kernel, initrd, cmdline, memory string
	cpus                            int
	timeout                         time.Duration
	timings, json                   bool
}

func (f *vmFlags) register(fs *pflag.FlagSet, defaultCmdline string) {
	fs.StringVar(&f.kernel, "kernel", "", "kernel image: bzImage or ELF64 vmlinux")
	fs.StringVar(&f.initrd, "initrd", "", "initramfs to load")
	fs.StringVar(&f.cmdline, "cmdline", defaultCmdline, "kernel command line")
	fs.IntVar(&f.cpus, "cpus", 1, "number of vCPUs")
	fs.StringVar(&f.memory, "memory", "256M", "guest RAM, e.g. 512M or 6G")
	fs.DurationVar(&f.timeout, "timeout", 0, "stop the guest and exit 124 after this long (0: no limit)")
	fs.BoolVar(&f.timings, "timings", false, "print the boot timeline on stderr at exit")
	fs.BoolVar(&f.json, "json", false, "print the timeline and exit reason as one JSON object on stderr at exit")
}

// config turns the flags into a vmm.Config; errors name the flag.
func (f *vmFlags) config(start time.Time) (vmm.Config, error) {
	mem, err := vmm.ParseSize(f.memory)
	if err != nil {
		return vmm.Config{}, &vmm.InputError{What: "--memory", Msg: err.Error()}
	}
	if f.timeout < 0 {
		return vmm.Config{}, &vmm.InputError{What: "--timeout", Msg: "must not be negative"}
	}
	return vmm.Config{
		Kernel:  f.kernel,
		Initrd:  f.initrd,
		Cmdline: f.cmdline,
		CPUs:    f.cpus,
		Memory:  mem,
		Console: os.Stdout,
		Start:   start,
	}, nil
}

const defaultBootCmdline = "console=ttyS0 reboot=k panic=-1"

func runBoot(start time.Time, args []string) int {
	var f vmFlags
	fs := newFlags("boot")
	f.register(fs, defaultBootCmdline)
	if done, code := parseFlags(fs, "boot --kernel PATH [--initrd PATH] [--cmdline STR] [--cpus N] [--memory SIZE] [--timeout DUR]", args); done {
		return code
	}
	if fs.NArg() > 0 {
		return fail(vmm.CodeUsage, "boot: unexpected argument %q", fs.Arg(0))
	}
	if f.kernel == "" {
		return fail(vmm.CodeUsage, "--kernel: required (see 'microvm boot --help')")
	}
	cfg, err := f.config(start)
	if err != nil {
		return failErr(err)
	}
	_, code := execute(cfg, &f, true)
	return code
}

// execute runs one guest and reports how it ended. interactive attaches
// stdin to the guest's serial port. It returns the result (nil if the VM
// never started) and the exit code.
func execute(cfg vmm.Config, f *vmFlags, interactive bool) (*vmm.Result, int) {
	m, err := vmm.New(cfg)
	if err != nil {
		return nil, failErr(err)
	}
	defer m.Close()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if f.timeout > 0 {
		ctx, cancel = context.WithTimeout(ctx, f.timeout)
		defer cancel()
	}
	// Signals stop the guest; the terminal is restored before we exit.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	var gotSig os.Signal
	sigDone := make(chan struct{})
	go func() {
		defer close(sigDone)
		select {
		case s := <-sigs:
			gotSig = s
			cancel()
		case <-ctx.Done():
		}
	}()

	con := &console{}
	if interactive {
		con = attachConsole(ctx, m, cancel)
	}
	res := m.Run(ctx)
	con.restore()
	cancel()
	<-sigDone

	code := res.ExitCode()
	switch {
	case gotSig != nil:
		code = 128 + int(gotSig.(syscall.Signal))
		fmt.Fprintf(os.Stderr, "microvm: stopped by %v\n", gotSig)
	case con.quit.Load():
		code = 0
		fmt.Fprintln(os.Stderr, "microvm: console quit (Ctrl-a x)")
	case res.Reason == vmm.ExitTimeout:
		fmt.Fprintf(os.Stderr, "microvm: --timeout %v expired; guest stopped (%s)\n", f.timeout, res.Detail)
	case res.Reason == vmm.ExitCrash:
		fmt.Fprintf(os.Stderr, "microvm: guest crashed: %s\n", res.Detail)
	case res.Reason == vmm.ExitError:
		fmt.Fprintf(os.Stderr, "microvm: %v\n", res.Err)
	}
	reportTimeline(f, res, code)
	return &res, code
}

func reportTimeline(f *vmFlags, res vmm.Result, code int) {
	if f.timings {
		fmt.Fprintln(os.Stderr, "boot timeline:")
		prev := time.Duration(0)
		for _, mk := range res.Timeline {
			fmt.Fprintf(os.Stderr, "  %-20s %10.3f ms  (+%.3f ms)\n", mk.Phase, ms(mk.At), ms(mk.At-prev))
			prev = mk.At
		}
		fmt.Fprintf(os.Stderr, "  exit: %s, code %d\n", res.Reason, code)
	}
	if f.json {
		type phase struct {
			Phase string  `json:"phase"`
			MS    float64 `json:"ms"`
		}
		out := struct {
			Reason       string  `json:"exit_reason"`
			Code         int     `json:"exit_code"`
			Detail       string  `json:"detail,omitempty"`
			GuestStatus  int     `json:"guest_status"`
			Timeline     []phase `json:"timeline"`
			StartUnixNS  int64   `json:"start_unix_ns"`
			PeakRSS      uint64  `json:"peak_rss_bytes"`
			GuestTouched uint64  `json:"guest_touched_bytes"`
		}{Reason: string(res.Reason), Code: code, Detail: res.Detail, GuestStatus: res.GuestStatus,
			StartUnixNS: res.Start.UnixNano(), PeakRSS: peakRSS(), GuestTouched: res.GuestTouched}
		for _, mk := range res.Timeline {
			out.Timeline = append(out.Timeline, phase{string(mk.Phase), ms(mk.At)})
		}
		b, _ := json.Marshal(out)
		fmt.Fprintln(os.Stderr, string(b))
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
