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
	"github.com/microvm-dev/microvm/internal/report"
	"github.com/spf13/pflag"
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

// benchRun is one child's `--json` report and what the parent adds to it.
type benchRun struct {
	report.Boot

	execToMain float64                   // ms from exec to the child's timeline zero
	phases     map[microvm.Phase]float64 // ms since exec
	wall       float64                   // ms from exec to the child's exit, seen by the parent
}

func (r *benchRun) overhead() int64 { return int64(r.PeakRSS) - int64(r.GuestTouched) }

// Phases in display order: the timeline's, plus the parent's view of the end.
var benchPhases = []microvm.Phase{
	microvm.PhaseStart, microvm.PhaseVMReady, microvm.PhaseKernel, microvm.PhaseFirstRun,
	microvm.PhaseFirstOutput, microvm.PhaseInit, microvm.PhaseAgentReady,
	microvm.PhaseCommandDone, microvm.PhaseExit, report.PhaseProcessExit,
}

// benchFlags is bench's flag set: the VM flags, which every child run gets
// (benchChildArgs) except --json (bench's own output) and --timings
// (refused: the summary is the timeline), plus --runs.
func benchFlags() (*pflag.FlagSet, *vmFlags, *int) {
	fs, f := agentFlags("bench")
	runs := fs.Int("runs", 5, "number of boots")
	fs.Lookup("json").Usage = "print the summary as one JSON object on stdout"
	fs.Lookup("timings").Hidden = true
	return fs, f, runs
}

func runBench(_ *env, args []string) int {
	fs, f, runs := benchFlags()
	if done, code := parseFlags(fs, "bench [--runs N] [--kernel K] [--initrd I] [--cmdline STR] [--cpus N] [--memory M] [--disk PATH[,ro]] [--net tap=NAME] [--console serial|virtio] [--acpi on|off] [--timeout D] [--json]", args); done {
		return code
	}
	if fs.NArg() > 0 {
		return fail(microvm.CodeUsage, "bench: unexpected argument %q", fs.Arg(0))
	}
	if fs.Changed("timings") {
		return fail(microvm.CodeUsage, "--timings: not taken by bench, whose summary is the timeline (--json prints it as JSON)")
	}
	if *runs < 1 || *runs > 1000 {
		return fail(microvm.CodeUsage, "--runs: %d is out of range: need 1 to 1000", *runs)
	}
	if err := f.defaults(); err != nil {
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
	childArgs := benchChildArgs(f)

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
		if v, ok := r.phases[microvm.PhaseInit]; ok {
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
	printBench(os.Stdout, s, f)
	return 0
}

// benchChildArgs is the command line of one child run: `microvm run
// --json` with every VM flag bench was given (defaults filled in), so each
// boot is the one bench was asked to measure.
func benchChildArgs(f *vmFlags) []string {
	args := []string{"run", "--json",
		"--kernel=" + f.kernel, "--initrd=" + f.initrd,
		"--cpus=" + strconv.Itoa(f.cpus), "--memory=" + f.memory,
		"--timeout=" + f.timeout.String(), "--console=" + f.consoleKind, "--acpi=" + f.acpi}
	if f.cmdline != "" {
		args = append(args, "--cmdline="+f.cmdline)
	}
	for _, d := range f.disks {
		args = append(args, "--disk="+d)
	}
	for _, n := range f.nets {
		args = append(args, "--net="+n)
	}
	for _, sh := range f.shares {
		args = append(args, "--share="+sh)
	}
	if f.rootfs != "" {
		args = append(args, "--rootfs="+f.rootfs)
	}
	return append(args, "--", benchCommand)
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
		var cand report.Boot
		if json.Unmarshal(line, &cand) == nil && cand.Timeline != nil {
			r = &benchRun{Boot: cand}
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
	r.phases = map[microvm.Phase]float64{}
	for _, p := range r.Timeline {
		r.phases[microvm.Phase(p.Phase)] = r.execToMain + p.MS
	}
	r.phases[report.PhaseProcessExit] = r.wall
	return r, nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// newStat is min/median/max of v, a quantity over the runs that have it.
func newStat(name string, v []float64) report.Stat {
	s := report.Stat{Name: name, N: len(v)}
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

func summarize(rs []*benchRun) report.BenchSummary {
	s := report.BenchSummary{Runs: len(rs)}
	for _, p := range benchPhases {
		var v []float64
		for _, r := range rs {
			if x, ok := r.phases[p]; ok {
				v = append(v, x)
			}
		}
		s.Phases = append(s.Phases, newStat(string(p), v))
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

func printBench(w io.Writer, s report.BenchSummary, f *vmFlags) {
	var devices string
	for _, d := range f.disks {
		devices += ", --disk " + d
	}
	for _, n := range f.nets {
		devices += ", --net " + n
	}
	if f.consoleKind != "serial" {
		devices += ", --console " + f.consoleKind
	}
	fmt.Fprintf(w, "microvm bench: %d boots of %s + %s, %d vCPU, %s%s, guest command %q\n",
		s.Runs, f.kernel, f.initrd, f.cpus, f.memory, devices, benchCommand)
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
	for _, m := range []report.Stat{s.PeakRSS, s.GuestTouched, s.Overhead} {
		fmt.Fprintf(tw, "%s\t%.2f\t%.2f\t%.2f\t\n", m.Name, m.Min, m.Median, m.Max)
	}
	tw.Flush()
	fmt.Fprintln(w, "process-start is exec to main(); VMM overhead = peak RSS (VmHWM) - guest RAM touched (mincore).")
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
