package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/microvm-dev/microvm"
	"golang.org/x/sys/unix"
)

// microvm bench boots the guest --runs times and summarizes the boot
// timeline and the VMM's own memory overhead.
//
// Each run is a separate `microvm run --json ... -- true` child process:
// peak RSS (VmHWM) is per process, so only a fresh process per boot gives a
// per-boot peak, and the timeline then also covers exec and Go runtime start.
// The parent notes the wall-clock time just before exec; the child reports
// its own start time, which gives the exec-to-main() offset.

const benchCommand = "true"

// benchRun is one child's report (the fields of `--json` that bench uses).
type benchRun struct {
	Reason   string `json:"exit_reason"`
	Code     int    `json:"exit_code"`
	Detail   string `json:"detail"`
	Timeline []struct {
		Phase string  `json:"phase"`
		MS    float64 `json:"ms"`
	} `json:"timeline"`
	StartUnixNS  int64  `json:"start_unix_ns"`
	PeakRSS      uint64 `json:"peak_rss_bytes"`
	GuestTouched uint64 `json:"guest_touched_bytes"`

	// Filled in by the parent.
	execToMain float64            // ms from exec to the child's timeline zero
	phases     map[string]float64 // ms since exec
	wall       float64            // ms from exec to the child's exit, seen by the parent
}

func (r *benchRun) overhead() int64 { return int64(r.PeakRSS) - int64(r.GuestTouched) }

// Phases in display order: the timeline's, plus the parent's view of the end.
var benchPhases = []microvm.Phase{
	microvm.PhaseStart, microvm.PhaseVMReady, microvm.PhaseKernel, microvm.PhaseFirstRun,
	microvm.PhaseFirstOutput, microvm.PhaseInit, microvm.PhaseAgentReady,
	microvm.PhaseCommandDone, microvm.PhaseExit,
}

const phaseProcessExit = "process-exit"

func runBench(_ *env, args []string) int {
	var f vmFlags
	fs := newFlags("bench")
	runs := fs.Int("runs", 5, "number of boots")
	f.register(fs, "")
	fs.Lookup("cmdline").Usage = "extra kernel command line parameters"
	fs.Lookup("json").Usage = "print the summary as one JSON object on stdout"
	fs.Lookup("timings").Hidden = true
	if done, code := parseFlags(fs, "bench [--runs N] [--kernel K] [--initrd I] [--cpus N] [--memory M] [--timeout D] [--json]", args); done {
		return code
	}
	if fs.NArg() > 0 {
		return fail(microvm.CodeUsage, "bench: unexpected argument %q", fs.Arg(0))
	}
	if *runs < 1 || *runs > 1000 {
		return fail(microvm.CodeUsage, "--runs: %d is out of range: need 1 to 1000", *runs)
	}
	if err := f.defaultArtifacts(); err != nil {
		return failErr(err)
	}
	// Check the flags here so a typo fails once, not in every child.
	if _, err := f.config(time.Now()); err != nil {
		return failErr(err)
	}
	if f.timeout == 0 {
		f.timeout = 5 * time.Minute // a hung boot must not hang the benchmark
	}
	self, err := os.Executable()
	if err != nil {
		return fail(microvm.CodeInternal, "bench: cannot find my own executable: %v", err)
	}
	childArgs := []string{"run", "--json",
		"--kernel", f.kernel, "--initrd", f.initrd,
		"--cpus", strconv.Itoa(f.cpus), "--memory", f.memory,
		"--timeout", f.timeout.String()}
	if f.cmdline != "" {
		childArgs = append(childArgs, "--cmdline", f.cmdline)
	}
	childArgs = append(childArgs, "--", benchCommand)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	prog := newProgress(os.Stderr)
	var results []*benchRun
	for i := 1; i <= *runs; i++ {
		prog.update("bench: boot %d/%d running ...", i, *runs)
		r, err := benchOnce(ctx, self, childArgs, f.timeout)
		if err != nil {
			prog.done()
			if ctx.Err() != nil {
				return fail(130, "bench: interrupted during boot %d/%d", i, *runs)
			}
			return fail(microvm.CodeInternal, "bench: boot %d/%d: %v", i, *runs, err)
		}
		results = append(results, r)
		init := "no init milestone"
		if v, ok := r.phases[string(microvm.PhaseInit)]; ok {
			init = fmt.Sprintf("init %.0f ms", v)
		}
		prog.update("bench: boot %d/%d done: %s, exit %.0f ms, overhead %.1f MiB", i, *runs, init, r.wall, float64(r.overhead())/(1<<20))
		prog.line()
	}
	prog.done()
	s := summarize(results)
	if f.json {
		b, _ := json.Marshal(s)
		fmt.Println(string(b))
		return 0
	}
	printBench(os.Stdout, s, &f)
	return 0
}

// benchOnce runs one child and parses its JSON report from stderr.
func benchOnce(ctx context.Context, self string, args []string, timeout time.Duration) (*benchRun, error) {
	// The child has its own --timeout; this outer limit only catches a
	// child that does not honour it.
	ctx, cancel := context.WithTimeout(ctx, timeout+time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, self, args...)
	var stderr bytes.Buffer
	cmd.Stdout = io.Discard
	cmd.Stderr = &stderr
	cmd.Stdin = nil
	t0 := time.Now()
	err := cmd.Run()
	wall := time.Since(t0)
	var r *benchRun
	sc := bufio.NewScanner(bytes.NewReader(stderr.Bytes()))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 || line[0] != '{' {
			continue
		}
		var cand benchRun
		if json.Unmarshal(line, &cand) == nil && cand.Timeline != nil {
			r = &cand
		}
	}
	tail := lastLines(stderr.String(), 5)
	if r == nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return nil, fmt.Errorf("child exited %d without a timeline: %s", ee.ExitCode(), tail)
		}
		return nil, fmt.Errorf("child: %v: %s", err, tail)
	}
	if r.Code != 0 {
		return nil, fmt.Errorf("guest ended with %s (exit %d): %s", r.Reason, r.Code, tail)
	}
	r.execToMain = ms(time.Unix(0, r.StartUnixNS).Sub(t0))
	r.wall = ms(wall)
	r.phases = map[string]float64{}
	for _, p := range r.Timeline {
		r.phases[p.Phase] = r.execToMain + p.MS
	}
	r.phases[phaseProcessExit] = r.wall
	return r, nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// stat is min/median/max of one quantity over the runs that have it.
type stat struct {
	Name   string  `json:"name"`
	N      int     `json:"n"`
	Min    float64 `json:"min"`
	Median float64 `json:"median"`
	Max    float64 `json:"max"`
}

func newStat(name string, v []float64) stat {
	s := stat{Name: name, N: len(v)}
	if len(v) == 0 {
		return s
	}
	sort.Float64s(v)
	s.Min, s.Max = v[0], v[len(v)-1]
	if len(v)%2 == 1 {
		s.Median = v[len(v)/2]
	} else {
		s.Median = (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	return s
}

type benchSummary struct {
	Runs int `json:"runs"`
	// Phases: ms since exec (process-start = exec to main()).
	Phases []stat `json:"phases_ms_since_exec"`
	// Memory in MiB: peak RSS (VmHWM), guest RAM touched, and their
	// difference, the VMM's own overhead.
	PeakRSS      stat `json:"peak_rss_mib"`
	GuestTouched stat `json:"guest_touched_mib"`
	Overhead     stat `json:"vmm_overhead_mib"`
}

func summarize(rs []*benchRun) benchSummary {
	s := benchSummary{Runs: len(rs)}
	names := make([]string, 0, len(benchPhases)+1)
	for _, p := range benchPhases {
		names = append(names, string(p))
	}
	names = append(names, phaseProcessExit)
	for _, n := range names {
		var v []float64
		for _, r := range rs {
			if x, ok := r.phases[n]; ok {
				v = append(v, x)
			}
		}
		s.Phases = append(s.Phases, newStat(n, v))
	}
	var peak, touched, over []float64
	for _, r := range rs {
		peak = append(peak, mib(uint64(r.PeakRSS)))
		touched = append(touched, mib(uint64(r.GuestTouched)))
		over = append(over, float64(r.overhead())/(1<<20))
	}
	s.PeakRSS = newStat("peak RSS", peak)
	s.GuestTouched = newStat("guest RAM touched", touched)
	s.Overhead = newStat("VMM overhead", over)
	return s
}

func printBench(w io.Writer, s benchSummary, f *vmFlags) {
	fmt.Fprintf(w, "microvm bench: %d boots of %s + %s, %d vCPU, %s, guest command %q\n",
		s.Runs, f.kernel, f.initrd, f.cpus, f.memory, benchCommand)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "ms since exec\tmin\tmedian\tmax\t")
	for _, p := range s.Phases {
		if p.N == 0 {
			fmt.Fprintf(tw, "%s\t-\t-\t-\t\n", p.Name)
			continue
		}
		fmt.Fprintf(tw, "%s\t%.1f\t%.1f\t%.1f\t\n", p.Name, p.Min, p.Median, p.Max)
	}
	fmt.Fprintln(tw, "MiB\t\t\t\t")
	for _, m := range []stat{s.PeakRSS, s.GuestTouched, s.Overhead} {
		fmt.Fprintf(tw, "%s\t%.2f\t%.2f\t%.2f\t\n", m.Name, m.Min, m.Median, m.Max)
	}
	tw.Flush()
	fmt.Fprintln(w, "process-start is exec to main(); VMM overhead = peak RSS (VmHWM) - guest RAM touched (mincore).")
}

// peakRSS is this process's peak resident set (VmHWM), falling back to
// getrusage's maxrss.
func peakRSS() uint64 {
	if b, err := os.ReadFile("/proc/self/status"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if rest, ok := strings.CutPrefix(l, "VmHWM:"); ok {
				kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
				if err == nil {
					return kb << 10
				}
			}
		}
	}
	var ru unix.Rusage
	if unix.Getrusage(unix.RUSAGE_SELF, &ru) == nil {
		return uint64(ru.Maxrss) << 10
	}
	return 0
}

// progress shows one status line: rewritten in place on a terminal,
// printed as plain lines otherwise (so logs stay readable).
type progress struct {
	w    io.Writer
	tty  bool
	last string
}

func newProgress(f *os.File) *progress {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return &progress{w: f, tty: err == nil}
}

func (p *progress) update(format string, a ...any) {
	p.last = fmt.Sprintf(format, a...)
	if p.tty {
		fmt.Fprintf(p.w, "\r\033[K%s", p.last)
	} else if strings.HasSuffix(p.last, "...") {
		fmt.Fprintln(p.w, p.last)
	}
}

// line keeps the current status as a finished line.
func (p *progress) line() {
	if p.tty {
		fmt.Fprintln(p.w)
	} else {
		fmt.Fprintln(p.w, p.last)
	}
	p.last = ""
}

func (p *progress) done() {
	if p.tty && p.last != "" {
		fmt.Fprint(p.w, "\r\033[K")
	}
}
