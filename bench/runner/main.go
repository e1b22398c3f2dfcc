// Command runner is the half of bench/compare.sh that runs where /dev/kvm
// is: directly on a host with hardware KVM, or as the payload of the nested
// harness's L1. In one run it measures, in this order:
//
//  1. the exit path: the pio micro-guest's 100k port-I/O exits to the no-op
//     register 0x3f4, run by package vmm (microvm's own vCPU loop and bus),
//     against bench/pioloop.c, a C loop doing the same KVM_RUN round trips;
//  2. `microvm bench`: the boot timeline and the VMM's memory overhead;
//  3. microvm against its peers (gokvm, QEMU -M microvm), same kernel,
//     initrd and command line, in rounds whose order rotates: time from exec
//     to the guest agent's first console line, time from exec to the VMM's
//     exit, and the VMM process's peak RSS.
//
// It prints each result as it comes, then a summary with ratios against the
// issue's targets.
package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/microvm-dev/microvm/internal/vmm"
)

type options struct {
	note string

	pioGuest, pioLoop, pioProfile string
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
}

func main() {
	var o options
	flag.StringVar(&o.note, "note", "", "where this runs (printed first)")
	flag.StringVar(&o.pioGuest, "pio-guest", "", "pio micro-guest ELF (tests/guests/pio.elf); empty skips the exit-path benchmark")
	flag.StringVar(&o.pioLoop, "pioloop", "", "the C baseline built from bench/pioloop.c")
	flag.StringVar(&o.pioProfile, "pio-cpuprofile", "", "write a CPU profile of microvm's first PIO run here (\"-\": base64 on stdout)")
	flag.IntVar(&o.pioCount, "pio-count", 100000, "port-I/O exits per run")
	flag.IntVar(&o.pioReps, "pio-reps", 3, "runs of each side, alternating")
	flag.StringVar(&o.microvm, "microvm", "", "microvm binary")
	flag.StringVar(&o.gokvm, "gokvm", "", "gokvm binary (empty: not compared)")
	flag.StringVar(&o.qemu, "qemu", "", "qemu-system-x86_64 (empty: not compared)")
	flag.BoolVar(&o.qemuI8042, "qemu-i8042", true, "give QEMU's microvm machine an i8042, so the guest's reset ends QEMU as it ends microvm")
	flag.StringVar(&o.kernel, "kernel", "", "guest kernel (bzImage)")
	flag.StringVar(&o.kernelName, "kernel-name", "", "kernel description for the report")
	flag.StringVar(&o.initrd, "initrd", "", "guest initrd")
	flag.StringVar(&o.cmdline, "cmdline", "console=ttyS0 reboot=k panic=-1 quiet", "guest kernel command line, the same for every VMM")
	flag.IntVar(&o.memoryMiB, "memory", 256, "guest RAM in MiB")
	flag.IntVar(&o.rounds, "rounds", 3, "comparison rounds (each boots every VMM once)")
	flag.IntVar(&o.benchRuns, "bench-runs", 3, "microvm bench --runs (0 skips it)")
	flag.DurationVar(&o.bootTimeout, "boot-timeout", 3*time.Minute, "limit for one boot to reach init")
	flag.DurationVar(&o.afterInit, "after-init", 30*time.Second, "how long to wait for a VMM to exit after its guest reached init")
	// gokvm emulates no working PIT or other clock the kernel can calibrate
	// the TSC against: without these (gokvm's own defaults, from its
	// flag/runs.go) our kernel hangs at "tsc: Unable to calibrate against PIT".
	flag.StringVar(&o.gokvmExtra, "gokvm-cmdline-extra", "noapic notsc nowatchdog nmi_watchdog=0 lapic tsc_early_khz=2000",
		"parameters appended to gokvm's kernel command line")
	flag.StringVar(&o.only, "only", "", "boot only this VMM (microvm, gokvm, qemu) once, as round --round, and print it as a trial line (the driver runs each boot in a fresh L1)")
	flag.IntVar(&o.round, "round", 1, "round number for --only")
	flag.StringVar(&o.summarize, "summarize", "", "print the summary of the trial lines and results in this log file, then exit (runs anywhere, no KVM)")
	flag.BoolVar(&o.showOutput, "show-output", false, "print the end of each comparison boot's output (for debugging a peer)")
	flag.Parse()
	if flag.NArg() > 0 {
		fatalf(2, "unexpected argument %q", flag.Arg(0))
	}
	if o.summarize != "" {
		os.Exit(summarizeLog(&o))
	}
	if o.only != "" {
		os.Exit(runOnly(&o))
	}
	fmt.Printf("== microvm benchmarks, %s\n", time.Now().UTC().Format("2006-01-02 15:04 MST"))
	if o.note != "" {
		fmt.Println(o.note)
	}
	var r report
	if o.pioGuest != "" {
		r.pio = runPIO(&o)
	}
	if o.microvm != "" && o.pioGuest != "" && o.benchRuns > 0 {
		r.firstRun = runFirstRun(&o)
	}
	if o.microvm != "" && o.benchRuns > 0 {
		r.bench = runMicrovmBench(&o)
	}
	if o.microvm != "" && o.rounds > 0 {
		r.cmp = runCompare(&o)
	}
	r.print(&o)
}

func fatalf(code int, format string, a ...any) {
	fmt.Fprintf(os.Stderr, "runner: "+format+"\n", a...)
	os.Exit(code)
}

func progressf(format string, a ...any) {
	fmt.Printf("  .. "+format+"\n", a...)
}

// ---- 1. exit path --------------------------------------------------------

type pioResult struct {
	microvm, cloop []float64 // µs per exit, per run
	errs           []string
}

var pioLoopRE = regexp.MustCompile(`pioloop: (\d+) exits, ([0-9.]+) s, ([0-9.]+) us/exit`)

func runPIO(o *options) *pioResult {
	fmt.Printf("\n== exit path: %d port-I/O exits to the no-op register 0x3f4, %d runs each, alternating\n", o.pioCount, o.pioReps)
	res := &pioResult{}
	var prof io.Writer
	if o.pioProfile == "-" {
		// Inside L1 there is no way to copy a file out: print it.
		var buf bytes.Buffer
		prof = &buf
		defer func() {
			fmt.Printf("@@PPROF-BASE64 %s\n", base64.StdEncoding.EncodeToString(buf.Bytes()))
		}()
	} else if o.pioProfile != "" {
		f, err := os.Create(o.pioProfile)
		if err != nil {
			fatalf(1, "--pio-cpuprofile: %v", err)
		}
		prof = f
		defer f.Close()
	}
	for i := 1; i <= o.pioReps; i++ {
		out, err := exec.Command(o.pioLoop, strconv.Itoa(o.pioCount)).CombinedOutput()
		if m := pioLoopRE.FindSubmatch(out); err == nil && m != nil {
			us, _ := strconv.ParseFloat(string(m[3]), 64)
			res.cloop = append(res.cloop, us)
			progressf("run %d/%d  C loop  : %.2f µs/exit", i, o.pioReps, us)
		} else {
			res.errs = append(res.errs, fmt.Sprintf("C loop: %v: %s", err, bytes.TrimSpace(out)))
			progressf("run %d/%d  C loop  : failed: %v: %s", i, o.pioReps, err, bytes.TrimSpace(out))
		}
		if prof != nil {
			_ = pprof.StartCPUProfile(prof)
		}
		us, err := pioMicrovm(o.pioGuest, o.pioCount)
		if prof != nil {
			pprof.StopCPUProfile()
			prof = nil // one profile is enough
		}
		if err != nil {
			res.errs = append(res.errs, "microvm: "+err.Error())
			progressf("run %d/%d  microvm : failed: %v", i, o.pioReps, err)
			continue
		}
		res.microvm = append(res.microvm, us)
		progressf("run %d/%d  microvm : %.2f µs/exit", i, o.pioReps, us)
	}
	return res
}

// Debug-port milestones of the pio micro-guest (tests/guests/common.h).
const (
	pioStart = 0x11
	pioEnd   = 0x12
)

// pioMicrovm boots the pio guest with package vmm, the code the microvm
// command runs, and times the exits between its start and end milestones:
// count OUTs to 0x3f4 plus the end milestone's own OUT.
func pioMicrovm(guest string, count int) (float64, error) {
	var t0, t1 time.Time
	cfg := vmm.Config{
		Kernel:  guest,
		Cmdline: fmt.Sprintf("count=%d", count),
		CPUs:    1,
		Memory:  64 << 20,
		Stdout:  io.Discard,
		OnMilestone: func(code uint8, _ uint32) {
			switch code {
			case pioStart:
				t0 = time.Now()
			case pioEnd:
				t1 = time.Now()
			}
		},
	}
	m, err := vmm.Build(cfg)
	if err != nil {
		return 0, err
	}
	defer m.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	res := m.Run(ctx)
	if res.Reason != vmm.ExitReset {
		return 0, fmt.Errorf("guest ended with %s %s %v", res.Reason, res.Detail, res.Err)
	}
	if t0.IsZero() || t1.IsZero() {
		return 0, errors.New("guest did not write its start and end milestones")
	}
	return float64(t1.Sub(t0).Nanoseconds()) / 1e3 / float64(count+1), nil
}

// ---- 2. microvm bench ----------------------------------------------------

type benchStat struct {
	Name   string  `json:"name"`
	N      int     `json:"n"`
	Min    float64 `json:"min"`
	Median float64 `json:"median"`
	Max    float64 `json:"max"`
}

type benchSummary struct {
	Runs         int         `json:"runs"`
	Phases       []benchStat `json:"phases_ms_since_exec"`
	PeakRSS      benchStat   `json:"peak_rss_mib"`
	GuestTouched benchStat   `json:"guest_touched_mib"`
	Overhead     benchStat   `json:"vmm_overhead_mib"`
	err          string
}

func (b *benchSummary) phase(name string) (benchStat, bool) {
	for _, p := range b.Phases {
		if p.Name == name && p.N > 0 {
			return p, true
		}
	}
	return benchStat{}, false
}

func runMicrovmBench(o *options) *benchSummary {
	fmt.Printf("\n== microvm bench --runs %d (boot timeline, VMM memory overhead)\n", o.benchRuns)
	args := []string{"bench", "--runs", strconv.Itoa(o.benchRuns), "--json",
		"--kernel", o.kernel, "--initrd", o.initrd, "--memory", fmt.Sprintf("%dM", o.memoryMiB),
		"--timeout", o.bootTimeout.String()}
	cmd := exec.Command(o.microvm, args...)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = os.Stdout // its progress lines
	err := cmd.Run()
	var s benchSummary
	if err != nil {
		s.err = err.Error()
	} else if jerr := json.Unmarshal(out.Bytes(), &s); jerr != nil {
		s.err = fmt.Sprintf("bad JSON %q: %v", out.String(), jerr)
	}
	if s.err != "" {
		progressf("microvm bench failed: %s", s.err)
	}
	return &s
}

// exec to the first KVM_RUN with the smallest guest (the pio micro-guest,
// 1 exit, no initrd): the VMM's own fixed start-up cost.
func runFirstRun(o *options) []float64 {
	fmt.Printf("\n== exec to first KVM_RUN: microvm boot of the pio micro-guest (no initrd), %d runs\n", o.benchRuns)
	var v []float64
	for i := 1; i <= o.benchRuns; i++ {
		cmd := exec.Command(o.microvm, "boot", "--kernel", o.pioGuest, "--cmdline", "count=1", "--json", "--timeout", "1m")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		t0 := time.Now()
		err := cmd.Run()
		var rep struct {
			Timeline []struct {
				Phase string  `json:"phase"`
				MS    float64 `json:"ms"`
			} `json:"timeline"`
			StartUnixNS int64 `json:"start_unix_ns"`
		}
		lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
		jerr := json.Unmarshal([]byte(lines[len(lines)-1]), &rep)
		if err != nil || jerr != nil {
			progressf("run %d: failed: %v %v: %s", i, err, jerr, lastLine(stderr.Bytes()))
			continue
		}
		for _, p := range rep.Timeline {
			if p.Phase == string(vmm.PhaseFirstRun) {
				ms := float64(time.Unix(0, rep.StartUnixNS).Sub(t0).Microseconds())/1e3 + p.MS
				v = append(v, ms)
				progressf("run %d/%d: first KVM_RUN %.1f ms after exec", i, o.benchRuns, ms)
			}
		}
	}
	return v
}

// ---- 3. comparison -------------------------------------------------------

type vmmSpec struct {
	name    string
	argv    []string
	markers []string // console text that means "guest init reached"
	why     string   // how init is detected
}

type trial struct {
	vmm        string
	round      int
	init, exit time.Duration
	reached    bool
	exited     bool
	code       int
	rss        uint64
	note       string
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
	var r report
	fmt.Printf("\n== comparison summary (%d boots, each in a fresh L1)\n", len(c.trials))
	r.printCompare(c)
	return 0
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

func (t trial) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-8s ", t.vmm)
	if t.reached {
		fmt.Fprintf(&b, "init at %6.2f s", t.init.Seconds())
	} else {
		b.WriteString("init not reached")
	}
	if t.exited {
		fmt.Fprintf(&b, ", exited (code %d) at %6.2f s", t.code, t.exit.Seconds())
		if t.code != 0 {
			b.WriteString(" (not a clean exit: not counted)")
		}
	} else {
		fmt.Fprintf(&b, ", did not exit (killed at %.1f s)", t.exit.Seconds())
	}
	fmt.Fprintf(&b, ", peak RSS %.1f MiB", mib(t.rss))
	if t.note != "" {
		b.WriteString("; " + t.note)
	}
	return b.String()
}

// markerWriter timestamps the first appearance of any marker in a stream
// and keeps its tail for diagnostics.
type markerWriter struct {
	markers []string
	found   chan string
	buf     []byte
	tail    []byte
	seen    bool
}

func (w *markerWriter) Write(b []byte) (int, error) {
	w.tail = append(w.tail, b...)
	if len(w.tail) > 8192 {
		w.tail = w.tail[len(w.tail)-8192:]
	}
	if w.seen {
		return len(b), nil
	}
	w.buf = append(w.buf, b...)
	for _, m := range w.markers {
		if bytes.Contains(w.buf, []byte(m)) {
			w.seen = true
			w.found <- m
			return len(b), nil
		}
	}
	keep := 256
	if len(w.buf) > keep {
		w.buf = w.buf[len(w.buf)-keep:]
	}
	return len(b), nil
}

func runTrial(s vmmSpec, o *options) trial {
	t := trial{vmm: s.name, code: -1}
	cmd := exec.Command(s.argv[0], s.argv[1:]...)
	pr, pw, err := os.Pipe()
	if err != nil {
		t.note = err.Error()
		return t
	}
	cmd.Stdout, cmd.Stderr = pw, pw // stdin: /dev/null
	mw := &markerWriter{markers: s.markers, found: make(chan string, 1), buf: []byte("\n")}
	copied := make(chan struct{})
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		pw.Close()
		pr.Close()
		t.note = "start: " + err.Error()
		return t
	}
	pw.Close()
	go func() {
		_, _ = io.Copy(mw, pr)
		close(copied)
	}()
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()

	var werr error
	deadline := time.NewTimer(o.bootTimeout)
	defer deadline.Stop()
wait:
	for {
		select {
		case m := <-mw.found:
			t.reached, t.init = true, time.Since(t0)
			if m != agentMarker {
				t.note = "init seen as: " + strings.TrimSpace(m)
			}
			deadline.Reset(o.afterInit)
		case werr = <-waited:
			t.exited, t.exit = true, time.Since(t0)
			break wait
		case <-deadline.C:
			t.exit = time.Since(t0)
			_ = cmd.Process.Kill()
			werr = <-waited
			break wait
		}
	}
	// The marker may have been seen just as the process exited.
	select {
	case <-mw.found:
		t.reached = true
		if t.init == 0 {
			t.init = t.exit
		}
	default:
	}
	<-copied
	pr.Close()
	if st := cmd.ProcessState; st != nil {
		if ru, ok := st.SysUsage().(*syscall.Rusage); ok {
			t.rss = uint64(ru.Maxrss) << 10
		}
		if t.exited {
			t.code = st.ExitCode()
		}
	}
	var ee *exec.ExitError
	if werr != nil && !errors.As(werr, &ee) {
		t.note = join(t.note, werr.Error())
	}
	if !t.exited {
		limit := o.bootTimeout
		if t.reached {
			limit = o.afterInit
		}
		t.note = join(t.note, fmt.Sprintf("no exit within %v of %s", limit, map[bool]string{true: "init", false: "exec"}[t.reached]))
	}
	if o.showOutput {
		fmt.Printf("---- %s output (end) ----\n%s\n----\n", s.name, strings.ReplaceAll(string(mw.tail), "\r", ""))
	}
	if !t.reached || (t.exited && t.code != 0) {
		t.note = join(t.note, "output tail: "+lastLine(mw.tail))
	}
	return t
}

func join(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}

func lastLine(b []byte) string {
	s := strings.TrimSpace(strings.ReplaceAll(string(b), "\r", ""))
	lines := strings.Split(s, "\n")
	if len(lines) > 3 {
		lines = lines[len(lines)-3:]
	}
	return strings.Join(lines, " | ")
}

// ---- report --------------------------------------------------------------

type report struct {
	firstRun []float64
	pio      *pioResult
	bench    *benchSummary
	cmp      *compareResult
}

func median(v []float64) (float64, bool) {
	if len(v) == 0 {
		return 0, false
	}
	v = append([]float64(nil), v...)
	sort.Float64s(v)
	if len(v)%2 == 1 {
		return v[len(v)/2], true
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2, true
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "MISSED"
}

func (r *report) print(o *options) {
	fmt.Printf("\n== summary\n")
	if p := r.pio; p != nil {
		mv, ok1 := median(p.microvm)
		c, ok2 := median(p.cloop)
		fmt.Printf("exit path (%d PIO exits, median of %d): microvm %s µs/exit, C loop %s µs/exit",
			o.pioCount, o.pioReps, fmtOpt(mv, ok1, "%.2f"), fmtOpt(c, ok2, "%.2f"))
		if ok1 && ok2 {
			fmt.Printf(", ratio %.2fx (target <= 1.3x: %s)", mv/c, verdict(mv/c <= 1.3))
		}
		fmt.Println()
	}
	if fr, ok := median(r.firstRun); ok {
		fmt.Printf("exec to first guest instruction (first KVM_RUN), micro-guest without initrd, median of %d: %.1f ms (target <= 5 ms: %s)\n",
			len(r.firstRun), fr, verdict(fr <= 5))
	}
	if b := r.bench; b != nil {
		if b.err != "" {
			fmt.Printf("microvm bench: failed: %s\n", b.err)
		} else {
			if fr, ok := b.phase(string(vmm.PhaseFirstRun)); ok {
				fmt.Printf("exec to first guest instruction (first KVM_RUN), Linux + %s initrd, median of %d: %.1f ms (min %.1f, max %.1f; target <= 5 ms: %s)\n",
					"u-root", b.Runs, fr.Median, fr.Min, fr.Max, verdict(fr.Median <= 5))
			}
			if in, ok := b.phase(string(vmm.PhaseInit)); ok {
				fmt.Printf("exec to init (debug-port milestone), median of %d: %.0f ms (min %.0f, max %.0f)\n", b.Runs, in.Median, in.Min, in.Max)
			}
			ov := b.Overhead
			fmt.Printf("VMM overhead (peak RSS - guest RAM touched), median of %d: %.2f MiB (peak RSS %.2f MiB, guest touched %.2f MiB; target <= 5 MiB: %s)\n",
				b.Runs, ov.Median, b.PeakRSS.Median, b.GuestTouched.Median, verdict(ov.Median <= 5))
		}
	}
	if c := r.cmp; c != nil {
		r.printCompare(c)
	}
}

func fmtOpt(v float64, ok bool, f string) string {
	if !ok {
		return "n/a"
	}
	return fmt.Sprintf(f, v)
}

type agg struct {
	init, exit, rss []float64
	runs, exits     int
	notes           []string
}

func (r *report) printCompare(c *compareResult) {
	aggs := map[string]*agg{}
	for _, s := range c.specs {
		aggs[s.name] = &agg{}
	}
	for _, t := range c.trials {
		a := aggs[t.vmm]
		a.runs++
		if t.reached {
			a.init = append(a.init, t.init.Seconds())
		}
		if t.exited && t.code == 0 {
			a.exits++
			a.exit = append(a.exit, t.exit.Seconds())
		}
		if t.rss > 0 {
			a.rss = append(a.rss, mib(t.rss))
		}
		if t.note != "" {
			a.notes = append(a.notes, fmt.Sprintf("round %d: %s", t.round, t.note))
		}
	}
	fmt.Printf("comparison (medians; init = exec to the guest agent's first console line):\n")
	fmt.Printf("  %-8s %-24s %-26s %s\n", "VMM", "exec to init", "exec to exit", "peak RSS")
	for _, s := range c.specs {
		a := aggs[s.name]
		in, okIn := median(a.init)
		ex, okEx := median(a.exit)
		rs, okRs := median(a.rss)
		fmt.Printf("  %-8s %-24s %-26s %s\n", s.name,
			fmt.Sprintf("%s (%d/%d runs)", fmtOpt(in, okIn, "%.2f s"), len(a.init), a.runs),
			fmt.Sprintf("%s (%d/%d runs)", fmtOpt(ex, okEx, "%.2f s"), a.exits, a.runs),
			fmtOpt(rs, okRs, "%.1f MiB"))
	}
	mv := aggs["microvm"]
	mIn, okIn := median(mv.init)
	mEx, okEx := median(mv.exit)
	mRs, okRs := median(mv.rss)
	for _, s := range c.specs[1:] {
		a := aggs[s.name]
		fmt.Printf("microvm vs %s:", s.name)
		if pIn, ok := median(a.init); ok && okIn {
			fmt.Printf(" boot to init %.2fx (target <= 0.5x: %s);", mIn/pIn, verdict(mIn/pIn <= 0.5))
		} else {
			fmt.Printf(" boot to init: no ratio (%s did not reach init);", s.name)
		}
		if pEx, ok := median(a.exit); ok && okEx {
			fmt.Printf(" exec to exit %.2fx;", mEx/pEx)
		} else {
			fmt.Printf(" exec to exit: no ratio (%s never exited cleanly);", s.name)
		}
		if pRs, ok := median(a.rss); ok && okRs {
			fmt.Printf(" peak RSS %.2fx", mRs/pRs)
		}
		fmt.Println()
	}
	for _, s := range c.specs {
		for _, n := range aggs[s.name].notes {
			fmt.Printf("  note %s %s\n", s.name, n)
		}
	}
	fmt.Printf("  (peak RSS is the kernel's maxrss for each VMM process; this runner's own peak, %.1f MiB, is a floor for it because exec inherits the parent's high-water mark)\n", selfHWM())
}

func selfHWM() float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			return kb / 1024
		}
	}
	return 0
}
