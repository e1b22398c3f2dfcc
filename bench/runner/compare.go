package main

// microvm against its peers: which VMMs, booted how, and the rounds.

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

type vmmSpec struct {
	name    string
	argv    []string
	markers []string // console text that means "guest init reached"
	why     string   // how init is detected
}

// The guest agent's first console line ("guest: Linux ...") is printed right
// after its init milestone; every VMM shows it on stdout. It must start a
// line: kernel lines such as "kvm-guest: ..." contain "guest: " too.
const agentMarker = "\nguest: Linux"

func specs(o *options) []vmmSpec {
	mem := strconv.Itoa(o.memoryMiB)
	s := []vmmSpec{{
		name: "microvm",
		argv: []string{o.microvm, "boot", "--kernel", o.kernel, "--initrd", o.initrd,
			"--memory", mem + "M", "--cmdline", o.cmdline, "--timeout", (o.bootTimeout + o.afterInit).String()},
		markers: []string{agentMarker},
		why:     "agent's first console line",
	}}
	if o.gokvm != "" {
		s = append(s, vmmSpec{
			name: "gokvm",
			argv: []string{o.gokvm, "boot", "-k", o.kernel, "-i", o.initrd, "-m", mem + "M", "-c", "1", "-p", strings.TrimSpace(o.cmdline + " " + o.gokvmExtra)},
			// gokvm has no device at the debug port 0x3f0: the agent's
			// init milestone (its first act, before its first console
			// line) stops gokvm's vCPU with this error, at the same point
			// of the boot. It marks init for gokvm; it also means gokvm's
			// guest never gets further.
			markers: []string{agentMarker, "unexpected io port 0x3f0"},
			why:     "agent's first console line, or gokvm's error on the agent's init write to port 0x3f0",
		})
	}
	if o.qemu != "" {
		argv := []string{o.qemu, "-M", "microvm", "-enable-kvm", "-cpu", "host", "-m", mem,
			"-nodefaults", "-no-user-config", "-nographic", "-serial", "stdio", "-no-reboot",
			"-kernel", o.kernel, "-initrd", o.initrd, "-append", o.cmdline}
		if o.qemuI8042 {
			argv = append(argv, "-device", "i8042")
		}
		s = append(s, vmmSpec{name: "qemu", argv: argv, markers: []string{agentMarker}, why: "agent's first console line"})
	}
	return s
}

type compareResult struct {
	specs  []vmmSpec
	trials []trial
}

func runCompare(o *options) *compareResult {
	ss := specs(o)
	names := make([]string, len(ss))
	for i, s := range ss {
		names[i] = s.name
	}
	fmt.Printf("\n== comparison: %s, %d rounds, order rotating each round\n", strings.Join(names, " vs "), o.rounds)
	fmt.Printf("kernel %s (%s), initrd %s, %d MiB, 1 vCPU, cmdline %q\n", o.kernel, o.kernelName, o.initrd, o.memoryMiB, o.cmdline)
	for _, s := range ss {
		fmt.Printf("  %-8s %s\n", s.name+":", strings.Join(s.argv, " "))
	}
	res := &compareResult{specs: ss}
	for round := 1; round <= o.rounds; round++ {
		for k := range ss {
			s := ss[(k+round-1)%len(ss)]
			progressf("round %d/%d: %s booting ...", round, o.rounds, s.name)
			t := runTrial(s, o)
			t.round = round
			res.trials = append(res.trials, t)
			progressf("round %d/%d: %s", round, o.rounds, t.String())
		}
	}
	return res
}

// trialLine is a trial as one "@@TRIAL {json}" line, so boots made in
// separate L1s can be summarized together.
type trialLine struct {
	VMM     string  `json:"vmm"`
	Round   int     `json:"round"`
	InitS   float64 `json:"init_s"`
	ExitS   float64 `json:"exit_s"`
	Reached bool    `json:"reached"`
	Exited  bool    `json:"exited"`
	Code    int     `json:"code"`
	RSS     uint64  `json:"rss_bytes"`
	Note    string  `json:"note,omitempty"`
}

const trialPrefix = "@@TRIAL "

func (t trial) line() string {
	b, _ := json.Marshal(trialLine{t.vmm, t.round, t.init.Seconds(), t.exit.Seconds(), t.reached, t.exited, t.code, t.rss, t.note})
	return trialPrefix + string(b)
}

func (l trialLine) trial() trial {
	return trial{vmm: l.VMM, round: l.Round, init: time.Duration(l.InitS * float64(time.Second)),
		exit: time.Duration(l.ExitS * float64(time.Second)), reached: l.Reached, exited: l.Exited,
		code: l.Code, rss: l.RSS, note: l.Note}
}

// runOnly boots one VMM once and prints its trial line.
func runOnly(o *options) int {
	for _, s := range specs(o) {
		if s.name != o.only {
			continue
		}
		progressf("round %d: %s booting: %s", o.round, s.name, strings.Join(s.argv, " "))
		t := runTrial(s, o)
		t.round = o.round
		progressf("round %d: %s", o.round, t.String())
		fmt.Println(t.line())
		return 0
	}
	fmt.Fprintf(os.Stderr, "runner: --only %q: not one of the configured VMMs\n", o.only)
	return 2
}

// summarizeLog prints the summary of a driver's log: the trial lines, plus
// the first run's report lines (exit path, bench), which it passes through.
func summarizeLog(o *options) int {
	b, err := os.ReadFile(o.summarize)
	if err != nil {
		fmt.Fprintf(os.Stderr, "runner: --summarize: %v\n", err)
		return 1
	}
	c := &compareResult{specs: specs(o)}
	for _, l := range strings.Split(strings.ReplaceAll(string(b), "\r", ""), "\n") {
		i := strings.Index(l, trialPrefix)
		if i < 0 {
			continue
		}
		var tl trialLine
		if json.Unmarshal([]byte(l[i+len(trialPrefix):]), &tl) == nil {
			c.trials = append(c.trials, tl.trial())
		}
	}
	if len(c.trials) == 0 {
		fmt.Fprintf(os.Stderr, "runner: --summarize: no trial lines in %s\n", o.summarize)
		return 1
	}
	var s summary
	fmt.Printf("\n== comparison summary (%d boots, each in a fresh L1)\n", len(c.trials))
	s.printCompare(c)
	return 0
}

// compareFlags registers the peers and how the comparison boots them.
func (o *options) compareFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.gokvm, "gokvm", "", "gokvm binary (empty: not compared)")
	fs.StringVar(&o.qemu, "qemu", "", "qemu-system-x86_64 (empty: not compared)")
	fs.BoolVar(&o.qemuI8042, "qemu-i8042", true, "give QEMU's microvm machine an i8042, so the guest's reset ends QEMU as it ends microvm")
	fs.IntVar(&o.rounds, "rounds", 3, "comparison rounds (each boots every VMM once)")
	fs.DurationVar(&o.afterInit, "after-init", 30*time.Second, "how long to wait for a VMM to exit after its guest reached init")
	// gokvm emulates no working PIT or other clock the kernel can calibrate
	// the TSC against: without these (gokvm's own defaults, from its
	// flag/runs.go) our kernel hangs at "tsc: Unable to calibrate against PIT".
	fs.StringVar(&o.gokvmExtra, "gokvm-cmdline-extra", "noapic notsc nowatchdog nmi_watchdog=0 lapic tsc_early_khz=2000",
		"parameters appended to gokvm's kernel command line")
	fs.StringVar(&o.only, "only", "", "boot only this VMM (microvm, gokvm, qemu) once, as round --round, and print it as a trial line (the driver runs each boot in a fresh L1)")
	fs.IntVar(&o.round, "round", 1, "round number for --only")
	fs.BoolVar(&o.showOutput, "show-output", false, "print the end of each comparison boot's output (for debugging a peer)")
}
