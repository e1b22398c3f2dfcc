// Command runner is the half of bench/compare.sh that runs where /dev/kvm
// is: directly on a host with hardware KVM, or as the payload of the nested
// harness's L1. In one run it measures, in this order:
//
//  1. the exit path (pio.go): the pio micro-guest's 100k port-I/O exits to
//     the no-op register 0x3f4, each run in a child of this process through
//     package microvm (microvm's own vCPU loop and bus), sandboxed and with
//     --seccomp off, against bench/pioloop.c, a C loop doing the same
//     KVM_RUN round trips;
//  2. `microvm bench` (bench.go): the boot timeline and the VMM's memory
//     overhead, exec to the first KVM_RUN of the pio micro-guest, and
//     exec to init with the sandbox against --seccomp off;
//  3. (compare.go, trial.go) microvm against its peers (gokvm, QEMU -M microvm), same kernel,
//     initrd and command line, in rounds whose order rotates: time from exec
//     to the guest agent's first console line, time from exec to the VMM's
//     exit, and the VMM process's peak RSS;
//  4. with --profile (profile.go), one verbose boot each of microvm and QEMU
//     and the rows of their guests' boot logs that differ most;
//  5. with --snapshot-rounds (snapshot.go), `run -- true` cold and restored
//     from a snapshot, against QEMU restoring the same guest (-incoming).
//
// It prints each result as it comes, then a summary with ratios against the
// issue's targets (summary.go).
package main

import (
	"flag"
	"fmt"
	"os"
	"time"
)

type options struct {
	note string

	pioGuest, pioLoop, pioProfile string
	pioChild                      string
	pioCount, pioReps             int

	microvm, gokvm, qemu string
	qemuI8042            bool
	kernel, initrd       string
	kernelName           string
	cmdline              string
	memoryMiB            int
	rounds, benchRuns    int
	bootTimeout          time.Duration
	afterInit            time.Duration
	showOutput           bool
	gokvmExtra           string
	only                 string
	round                int
	summarize            string
	profile              bool
	profileTop           int
	profileSyms          string
	snapRounds           int
	snapDir              string
}

// flags registers what every stage shares: the microvm binary and the
// guest it boots. Each stage's own flags are registered beside it.
func (o *options) flags(fs *flag.FlagSet) {
	fs.StringVar(&o.note, "note", "", "where this runs (printed first)")
	fs.StringVar(&o.microvm, "microvm", "", "microvm binary")
	fs.StringVar(&o.kernel, "kernel", "", "guest kernel (bzImage)")
	fs.StringVar(&o.kernelName, "kernel-name", "", "kernel description for the report")
	fs.StringVar(&o.initrd, "initrd", "", "guest initrd")
	fs.StringVar(&o.cmdline, "cmdline", "console=ttyS0 reboot=k panic=-1 quiet", "guest kernel command line, the same for every VMM")
	fs.IntVar(&o.memoryMiB, "memory", 256, "guest RAM in MiB")
	fs.DurationVar(&o.bootTimeout, "boot-timeout", 3*time.Minute, "limit for one boot to reach init")
	o.pioFlags(fs)
	o.benchFlags(fs)
	o.compareFlags(fs)
	o.profileFlags(fs)
	o.snapshotFlags(fs)
	fs.StringVar(&o.summarize, "summarize", "", "print the summary of the trial lines and results in this log file, then exit (runs anywhere, no KVM)")
}

func main() {
	var o options
	o.flags(flag.CommandLine)
	flag.Parse()
	if flag.NArg() > 0 {
		fatalf(2, "unexpected argument %q", flag.Arg(0))
	}
	if o.summarize != "" {
		os.Exit(summarizeLog(&o))
	}
	if o.pioChild != "" {
		os.Exit(pioChild(&o))
	}
	if o.only != "" {
		os.Exit(runOnly(&o))
	}
	fmt.Printf("== microvm benchmarks, %s\n", time.Now().UTC().Format("2006-01-02 15:04 MST"))
	if o.note != "" {
		fmt.Println(o.note)
	}
	var s summary
	if o.pioGuest != "" {
		s.pio = runPIO(&o)
	}
	if o.microvm != "" && o.pioGuest != "" && o.benchRuns > 0 {
		s.firstRun = runFirstRun(&o)
	}
	if o.microvm != "" && o.benchRuns > 0 {
		s.bench = runMicrovmBench(&o)
		s.sbInit = runSandboxInit(&o)
	}
	if o.microvm != "" && o.profile {
		runProfile(&o)
	}
	if o.microvm != "" && o.snapRounds > 0 {
		s.snap = runSnapshot(&o)
	}
	if o.microvm != "" && o.rounds > 0 {
		s.cmp = runCompare(&o)
	}
	s.print(&o)
}

func fatalf(code int, format string, a ...any) {
	fmt.Fprintf(os.Stderr, "runner: "+format+"\n", a...)
	os.Exit(code)
}

func progressf(format string, a ...any) {
	fmt.Printf("  .. "+format+"\n", a...)
}
