// Command microvm boots Linux kernels (and other 64-bit boot-protocol guests)
// in KVM micro-VMs. It is a thin layer over package microvm: it turns flags
// into a microvm.Config, and owns the exit codes and one-line messages.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/microvm-dev/microvm"
	"github.com/spf13/pflag"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "0.1.0-dev"

type command struct {
	name, args, summary string
	run                 func(e *env, args []string) int
}

// env is what every command gets: the process start (for the timeline), a
// context that SIGINT, SIGTERM and SIGHUP cancel, and the terminal guard.
type env struct {
	ctx   context.Context
	start time.Time
	tty   *ttyGuard
	sig   atomic.Value // os.Signal that canceled ctx
}

func (e *env) signal() os.Signal {
	s, _ := e.sig.Load().(os.Signal)
	return s
}

// stopGrace is how long a signal waits for the guest to stop before the
// process exits anyway: a step that cannot be interrupted (such as reading
// --kernel from a FIFO nobody writes) must not keep microvm alive.
const stopGrace = 5 * time.Second

// withSignals installs the signal handling for the whole process lifetime,
// before anything else, so that a signal in any phase ends in 128+N with the
// terminal restored. The returned func is called just before exiting.
func withSignals(start time.Time) (*env, func()) {
	ctx, cancel := context.WithCancel(context.Background())
	e := &env{ctx: ctx, start: start, tty: &ttyGuard{}}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	finished := make(chan struct{})
	go func() {
		select {
		case s := <-sigs:
			e.sig.Store(s)
			cancel()
			select {
			case <-finished:
			case <-time.After(stopGrace):
				e.tty.Restore()
				fmt.Fprintf(os.Stderr, "microvm: stopped by %v (forced after %v)\n", s, stopGrace)
				os.Exit(128 + int(s.(syscall.Signal)))
			}
		case <-finished:
		}
	}()
	return e, func() {
		signal.Stop(sigs)
		close(finished)
		cancel()
	}
}

func commands() []command {
	return []command{
		{"boot", "--kernel PATH [flags]", "boot a kernel with the serial console on this terminal", runBoot},
		{"run", "[flags] -- CMD [ARGS...]", "boot the default guest, run CMD in it, exit with its status", runRun},
		{"uname", "[flags]", "show the host's and a guest's kernel side by side", runUname},
		{"bench", "[--runs N] [flags]", "boot the guest N times; boot timeline and VMM memory overhead", runBench},

		{"check", "[--kernel PATH] [--json]", "say whether this host can boot a guest (or a kernel image will see the devices), and how to fix it if not", runCheck},
		{"compare", "[flags] [--json]", "container or VM? measure the VM side on this host", runCompare},
		{"version", "", "print the version", func(*env, []string) int {
			fmt.Println("microvm", version)
			return 0
		}},
	}
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: microvm COMMAND [flags]")
	fmt.Fprintln(w, "\ncommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nRun 'microvm COMMAND --help' for a command's flags.")
	fmt.Fprintln(w, "Exit codes: 0 guest reset/powered off, 1 internal or KVM error, 2 usage or bad input,")
	fmt.Fprintln(w, "3 guest crashed, 124 --timeout expired, 128+N stopped by signal N (129 SIGHUP, 130 SIGINT, 143 SIGTERM);")
	fmt.Fprintln(w, "`run` exits with the guest command's status; `check` exits 0 when a guest can boot, 1 when not.")
}

func main() {
	e, done := withSignals(time.Now())
	code := dispatch(e, os.Args[1:])
	e.tty.Restore()
	if s := e.signal(); s != nil {
		fmt.Fprintf(os.Stderr, "microvm: stopped by %v\n", s)
		code = 128 + int(s.(syscall.Signal))
	}
	done()
	os.Exit(code)
}

func dispatch(e *env, args []string) int {
	if len(args) == 0 {
		usage(os.Stderr)
		return microvm.CodeUsage
	}
	switch args[0] {
	case "-h", "--help", "help":
		usage(os.Stdout)
		return 0
	case "--version":
		args[0] = "version"
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return c.run(e, args[1:])
		}
	}
	return fail(microvm.CodeUsage, "unknown command %q (see 'microvm --help')", args[0])
}

// fail prints one line on stderr and returns code.
func fail(code int, format string, a ...any) int {
	msg := fmt.Sprintf(format, a...)
	msg = strings.ReplaceAll(strings.TrimSpace(msg), "\n", " ")
	fmt.Fprintln(os.Stderr, "microvm: "+msg)
	return code
}

// failErr maps an error to its exit code: bad input is 2, the rest
// (including a missing /dev/kvm, whose message says how to fix it) 1.
func failErr(err error) int {
	var ie *microvm.InputError
	if errors.As(err, &ie) {
		return fail(microvm.CodeUsage, "%s: %s", flagFor(ie.What), ie.Msg)
	}
	return fail(microvm.CodeInternal, "%v", err)
}

// configFlags names the flag that sets each microvm.Config field, for
// messages about bad input, which the library words in terms of the field.
var configFlags = map[string]string{
	"Kernel":     "--kernel",
	"Initrd":     "--initrd",
	"Cmdline":    "--cmdline",
	"CPUs":       "--cpus",
	"Memory":     "--memory",
	"Timeout":    "--timeout",
	"Command":    "command",
	"Disks":      "--disk",
	"Nets":       "--net",
	"Disks/Nets": "--disk/--net",
	"Restore":    "snapshot",
	"NoACPI":     "--acpi",
	"Shares":     "--share",
	"Rootfs":     "--rootfs",
	"Seccomp":    "--seccomp",
	"RunAs":      "--uid",
	"Jail":       "--jail",
}

// flagFor returns the flag for a Config field; anything else (a flag name
// already, or a file) is returned as it is.
func flagFor(what string) string {
	if f, ok := configFlags[what]; ok {
		return f
	}
	return what
}

// newFlags returns a flag set whose errors and help go through our own
// one-line reporting.
func newFlags(name string) *pflag.FlagSet {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	fs.SortFlags = false
	return fs
}

// parseFlags parses args; it returns (done, code): done means exit with code.
func parseFlags(fs *pflag.FlagSet, usageLine string, args []string) (bool, int) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			fmt.Printf("usage: microvm %s\n\nflags:\n", usageLine)
			fs.SetOutput(os.Stdout)
			fs.PrintDefaults()
			return true, 0
		}
		return true, fail(microvm.CodeUsage, "%v (see 'microvm %s --help')", err, fs.Name())
	}
	return false, 0
}
