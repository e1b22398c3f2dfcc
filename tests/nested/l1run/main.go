// Command l1run runs a program inside an L1 Linux under QEMU TCG, where it
// has a working /dev/kvm, and exits with that program's exit code. L1's
// console is streamed to stdout. See package nested.
//
//	go run ./tests/nested/l1run --kernel bzImage --file /bin/t=./t --init /bin/t --arg -v
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/microvm-dev/microvm/tests/nested"
)

// exitHarness is l1run's own failure: L1 did not report the payload's status.
const exitHarness = 125

type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

func main() {
	var (
		cfg   nested.Config
		files multi
		trees multi
		args  multi
		env   multi
		mods  multi
	)
	flag.StringVar(&cfg.Kernel, "kernel", "", "L1 `bzImage` (with KVM_AMD built in, or as a --module)")
	flag.Var(&mods, "module", "host `path` of a kernel module for L1, loaded before the program in the order given (repeatable)")
	flag.Var(&files, "file", "`dest=src`: put host file or directory src at dest inside L1 (repeatable)")
	flag.Var(&trees, "tree", "`dest=src`: put host directory src at dest inside L1 as a root filesystem: symlinks and modes kept (repeatable)")
	flag.StringVar(&cfg.Init, "init", "", "`path` inside L1 of the program to run")
	flag.Var(&args, "arg", "argument for the program (repeatable)")
	flag.Var(&env, "env", "`K=V` environment entry for the program (repeatable)")
	flag.StringVar(&cfg.Dir, "dir", "", "working directory inside L1 (default /)")
	flag.IntVar(&cfg.MemoryMiB, "memory", 4096, "L1 RAM in MiB")
	flag.IntVar(&cfg.CPUs, "cpus", 1, "L1 vCPUs (above 1 uses MTTCG)")
	flag.DurationVar(&cfg.Timeout, "timeout", 10*time.Minute, "limit for the whole L1 run")
	flag.StringVar(&cfg.L1Init, "l1init", "", "prebuilt static l1init binary (default: build it)")
	flag.StringVar(&cfg.QEMU, "qemu", "", "QEMU binary (default qemu-system-x86_64)")
	flag.StringVar(&cfg.KernelArgs, "append", "", "extra L1 kernel command line")
	flag.StringVar(&cfg.Monitor, "monitor", "", "Unix socket `path` for QEMU's monitor (debugging a stuck L1)")
	flag.DurationVar(&cfg.Heartbeat, "heartbeat", 10*time.Second, "L1 heartbeat period while the program runs (negative: none, and no stall detection)")
	flag.DurationVar(&cfg.StallAfter, "stall-after", 0, "end the run as stalled after this long without a heartbeat (default 6 heartbeats)")
	flag.BoolVar(&cfg.AllowNoKVM, "allow-no-kvm", false, "run the program even if L1 has no /dev/kvm")
	flag.Parse()
	if flag.NArg() > 0 {
		fail("unexpected argument %q (use --arg)", flag.Arg(0))
	}
	if cfg.Kernel == "" || cfg.Init == "" {
		fail("--kernel and --init are required")
	}
	cfg.Files = map[string]string{}
	for _, f := range files {
		dest, src, ok := strings.Cut(f, "=")
		if !ok || dest == "" || src == "" {
			fail("--file %q: want dest=src", f)
		}
		cfg.Files[dest] = src
	}
	cfg.Trees = map[string]string{}
	for _, f := range trees {
		dest, src, ok := strings.Cut(f, "=")
		if !ok || dest == "" || src == "" {
			fail("--tree %q: want dest=src", f)
		}
		cfg.Trees[dest] = src
	}
	cfg.Args, cfg.Env, cfg.Modules = args, env, mods
	cfg.Console = os.Stdout

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := nested.Run(ctx, cfg)
	if err != nil {
		var ne *nested.Error
		if errors.As(err, &ne) {
			// The console has been streamed already; the tail would repeat it.
			fail("%s (after %.1fs)", ne.Reason, res.Duration.Seconds())
		}
		fail("%v", err)
	}
	revived := ""
	if res.Revived > 0 {
		revived = fmt.Sprintf("; %d stall(s) revived by an NMI", res.Revived)
	}
	fmt.Fprintf(os.Stderr, "l1run: payload exited %d; L1 round trip %.1fs%s\n", res.ExitCode, res.Duration.Seconds(), revived)
	os.Exit(res.ExitCode)
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "l1run: "+format+"\n", args...)
	os.Exit(exitHarness)
}
