// Package nested runs a program inside an L1 Linux booted under QEMU TCG
// ("-accel tcg -cpu max", which emulates AMD SVM), so that the program sees a
// working /dev/kvm (kvm_amd) even where the host has none or only a
// paravirtual one.
//
// The L1 boots from an initramfs that Run writes: /init is the static Go
// program in ./l1init, which reads /l1config.json, runs the payload with its
// output on the serial console, prints "@@L1-EXIT <code>" and reboots; QEMU
// runs with -no-reboot, so it exits then.
package nested

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
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/microvm-dev/microvm/internal/testimg"
	"github.com/microvm-dev/microvm/tests/nested/l1proto"
)

// Config describes one L1 run.
type Config struct {
	// Kernel is the host path of the L1 bzImage. It needs KVM and KVM_AMD
	// built in, devtmpfs, tmpfs and a serial console.
	Kernel string
	// Files maps a destination path inside L1 to a host path. A host
	// directory is copied recursively. Files with an execute bit get 0755.
	Files map[string]string
	// Init is the path inside L1 of the payload program.
	Init string
	// Args are the payload's arguments (without argv[0]).
	Args []string
	// Env holds extra KEY=VALUE entries for the payload. PATH, HOME=/tmp
	// and TMPDIR=/tmp are set by default and can be overridden.
	Env []string
	// Dir is the payload's working directory inside L1 (default "/").
	Dir string
	// MemoryMiB is L1's RAM (default 4096). The initramfs, and so every
	// file in Files, lives in this RAM, as does /tmp.
	MemoryMiB int
	// CPUs is L1's vCPU count (default 1). Above 1, MTTCG is used.
	CPUs int
	// Timeout bounds the whole run, boot included (default 10 minutes).
	// The payload gets a little less, so an overrun ends as exit code 124
	// with a clean L1 shutdown rather than a killed QEMU.
	Timeout time.Duration
	// Console, if set, receives L1's serial console output live.
	Console io.Writer
	// KernelArgs are appended to the L1 kernel command line.
	KernelArgs string
	// Monitor, if set, is a Unix socket path for QEMU's human monitor
	// (to inspect a stuck L1: socat - UNIX-CONNECT:path, "info registers").
	Monitor string
	// AllowNoKVM lets the payload run even if L1 has no /dev/kvm.
	// Otherwise that ends the run with an error.
	AllowNoKVM bool
	// L1Init is a prebuilt static l1init binary. If empty, Run builds
	// ./l1init with "go build" (CGO_ENABLED=0).
	L1Init string
	// QEMU is the QEMU binary (default qemu-system-x86_64 from PATH).
	QEMU string
	// Heartbeat is how often L1 prints a heartbeat line while the payload
	// runs (default 10 s; negative turns heartbeats and stall detection
	// off).
	Heartbeat time.Duration
	// Kick is how often a byte is sent to L1's serial port (default 2 s;
	// negative: never). QEMU 10.0's helper_vmrun sets a bit in the vCPU's
	// interrupt_request without the lock or an atomic, racing the I/O
	// thread's APIC timer, which sets CPU_INTERRUPT_POLL there: when the
	// POLL bit is lost, L1's timer vector sits in IRR for good and L1
	// freezes (fixed upstream in QEMU 10.2, "cpu-common: use atomic access
	// for interrupt_request"; tests/nested/NOTES.md). A serial interrupt
	// makes QEMU poll the APIC again, so a lost bit costs at most a Kick.
	// l1init turns echo off, so the bytes go nowhere.
	Kick time.Duration
	// StallAfter is how long L1 may go without a heartbeat once the
	// payload started (default 6 heartbeats). Then the run is diagnosed
	// (L1's RIP and LAPIC, printed as an "@@L1-STALL" line) and L1 gets an
	// NMI; if no heartbeat follows within StallAfter/2, the run ends as
	// stalled. A frozen L1 (tests/nested/NOTES.md) then costs a minute
	// and a half, not the whole Timeout.
	StallAfter time.Duration
}

// Result is the outcome of a run that reached the payload's end.
type Result struct {
	// ExitCode is the payload's exit status: 128+n if killed by signal n,
	// 124 if it overran its timeout, 127 if it could not be started.
	ExitCode int
	// Duration is the wall time from QEMU's start to its exit.
	Duration time.Duration
	// Output is everything L1 printed on its console (and QEMU's stderr).
	Output []byte
	// Revived counts stalls that an NMI ended (see StallAfter).
	Revived int
}

// Error is returned when L1 did not report the payload's exit status.
type Error struct {
	Reason string   // what happened, one line
	Tail   []string // last console lines (up to 20)
}

func (e *Error) Error() string {
	if len(e.Tail) == 0 {
		return "nested: " + e.Reason
	}
	return "nested: " + e.Reason + "; last console lines:\n\t" + strings.Join(e.Tail, "\n\t")
}

// ExitKVMMissing is the code l1init reports when /dev/kvm is missing and
// AllowNoKVM is false.
const ExitKVMMissing = l1proto.ExitKVMMissing

var exitRE = regexp.MustCompile(regexp.QuoteMeta(l1proto.Exit) + ` (-?[0-9]+)`)

// ParseExit returns the payload exit code from the last "@@L1-EXIT <n>"
// marker in out, and whether there was one.
func ParseExit(out []byte) (int, bool) {
	m := exitRE.FindAllSubmatch(out, -1)
	if len(m) == 0 {
		return 0, false
	}
	n, err := strconv.Atoi(string(m[len(m)-1][1]))
	if err != nil {
		return 0, false
	}
	return n, true
}

func (cfg *Config) defaults() {
	if cfg.MemoryMiB <= 0 {
		cfg.MemoryMiB = 4096
	}
	if cfg.CPUs <= 0 {
		cfg.CPUs = 1
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Minute
	}
	if cfg.QEMU == "" {
		cfg.QEMU = "qemu-system-x86_64"
	}
	if cfg.Heartbeat == 0 {
		cfg.Heartbeat = 10 * time.Second
	}
	if cfg.Kick == 0 {
		cfg.Kick = 2 * time.Second
	}
	if cfg.StallAfter <= 0 {
		cfg.StallAfter = 6 * cfg.Heartbeat
	}
}

// payloadTimeout leaves L1 time to boot and to shut down after a kill.
func payloadTimeout(total time.Duration) time.Duration {
	margin := total / 5
	if margin > time.Minute {
		margin = time.Minute
	}
	return total - margin
}

func qemuArgs(cfg *Config, initrd string) []string {
	accel := "tcg"
	if cfg.CPUs > 1 {
		accel = "tcg,thread=multi"
	}
	cmdline := "console=ttyS0 panic=-1 reboot=t quiet loglevel=4"
	if khz := hostTSCkHz(); khz > 0 {
		// Under TCG the L1 kernel's PIT calibration of the TSC fails in
		// a third to a half of boots on a busy host. L1 then runs with
		// tsc_khz 0, and KVM_RUN there spins forever in
		// kvm_guest_time_update without ever entering the guest. So give
		// L1 the rate: TCG's guest TSC is the host's. tsc=reliable keeps
		// a jiffies-based watchdog, jittery under TCG, from switching L1
		// to the jiffies clock.
		cmdline += " tsc_early_khz=" + strconv.Itoa(khz) + " tsc=reliable"
	}
	// idle=poll: an L1 whose CPU halted while its only runnable work was
	// an L2 vCPU blocked in HLT was seen to sleep for good (QEMU's CPU time
	// frozen), its next timer interrupt never waking it. An L1 that never
	// halts keeps TCG running and its timers firing.
	cmdline += " idle=poll"
	if cfg.KernelArgs != "" {
		cmdline += " " + cfg.KernelArgs
	}
	var extra []string
	if cfg.Monitor != "" {
		extra = []string{"-monitor", "unix:" + cfg.Monitor + ",server,nowait"}
	}
	return append(extra,
		// microvm (qboot firmware) rather than pc (SeaBIOS): its MP table
		// lists every vCPU, so an L1 kernel without ACPI sees -smp N;
		// SeaBIOS's lists one. It also prints nothing on the serial port.
		"-M", "microvm",
		"-accel", accel,
		"-cpu", "max",
		"-m", strconv.Itoa(cfg.MemoryMiB),
		"-smp", strconv.Itoa(cfg.CPUs),
		"-nographic", "-nodefaults", "-no-user-config",
		"-serial", "stdio",
		"-no-reboot",
		"-kernel", cfg.Kernel,
		"-initrd", initrd,
		"-append", cmdline,
	)
}

var (
	tscOnce sync.Once
	tscKHz  int
)

func hostTSCkHz() int {
	tscOnce.Do(func() { tscKHz = measureTSCkHz() })
	return tscKHz
}

// Run boots L1 and runs cfg.Init in it. It returns an error (an *Error when
// L1 booted but did not report an exit status) unless the payload's exit
// status was read; a non-zero status is not an error.
func Run(ctx context.Context, cfg Config) (Result, error) {
	cfg.defaults()
	if cfg.Kernel == "" {
		return Result{}, errors.New("nested: no kernel given")
	}
	if _, err := os.Stat(cfg.Kernel); err != nil {
		return Result{}, fmt.Errorf("nested: kernel: %w", err)
	}
	if !strings.HasPrefix(cfg.Init, "/") {
		return Result{}, fmt.Errorf("nested: init %q must be an absolute path inside L1", cfg.Init)
	}
	qemu, err := exec.LookPath(cfg.QEMU)
	if err != nil {
		return Result{}, fmt.Errorf("nested: %w (apt-get install qemu-system-x86)", err)
	}
	tmp, err := os.MkdirTemp("", "microvm-nested-")
	if err != nil {
		return Result{}, err
	}
	defer os.RemoveAll(tmp)

	l1init := cfg.L1Init
	if l1init == "" {
		l1init = filepath.Join(tmp, "l1init")
		if err := BuildL1Init(ctx, l1init); err != nil {
			return Result{}, err
		}
	}
	initrd := filepath.Join(tmp, "initramfs.cpio")
	if err := writeInitramfs(initrd, &cfg, l1init); err != nil {
		return Result{}, fmt.Errorf("nested: initramfs: %w", err)
	}
	return runQEMU(ctx, &cfg, qemu, initrd)
}

// BuildL1Init builds the l1init program as a static binary at out. It needs
// the module's source tree: it uses the directory this file was compiled
// from, or else the import path resolved from the working directory.
func BuildL1Init(ctx context.Context, out string) error {
	args := []string{"build", "-trimpath", "-o", out}
	dir := ""
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		if d := filepath.Join(filepath.Dir(file), "l1init"); isDir(d) {
			dir = d
		}
	}
	if dir != "" {
		args = append(args, ".")
	} else {
		args = append(args, "github.com/microvm-dev/microvm/tests/nested/l1init")
	}
	gobin := "go"
	if g := filepath.Join(runtime.GOROOT(), "bin", "go"); runtime.GOROOT() != "" && isFile(g) {
		gobin = g
	}
	cmd := exec.CommandContext(ctx, gobin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nested: building l1init: %v: %s", err, bytes.TrimSpace(out))
	}
	return nil
}

func isDir(p string) bool  { fi, err := os.Stat(p); return err == nil && fi.IsDir() }
func isFile(p string) bool { fi, err := os.Stat(p); return err == nil && fi.Mode().IsRegular() }

func writeInitramfs(dst string, cfg *Config, l1init string) error {
	lc := l1proto.Config{
		Init:       cfg.Init,
		Args:       cfg.Args,
		Env:        cfg.Env,
		Dir:        cfg.Dir,
		TimeoutMS:  payloadTimeout(cfg.Timeout).Milliseconds(),
		RequireKVM: !cfg.AllowNoKVM,
	}
	if cfg.Heartbeat > 0 {
		lc.HeartbeatMS = cfg.Heartbeat.Milliseconds()
	}
	js, err := json.MarshalIndent(lc, "", "  ")
	if err != nil {
		return err
	}
	f, err := os.Create(dst)
	if err != nil {
		return err
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	c := testimg.NewCPIO(bw)
	for _, d := range []string{"dev", "proc", "sys", "tmp", "root", "etc"} {
		c.Dir(d, 0o755)
	}
	// The kernel opens /dev/console for init's stdio before init runs,
	// which is before l1init can mount devtmpfs.
	c.CharDev("dev/console", 0o600, 5, 1)
	c.HostFile("init", l1init)
	c.Bytes(l1proto.ConfigPath, 0o644, append(js, '\n'))
	dests := make([]string, 0, len(cfg.Files))
	for d := range cfg.Files {
		dests = append(dests, d)
	}
	sort.Strings(dests)
	for _, d := range dests {
		if n := testimg.CPIOName(d); n == "init" || n == testimg.CPIOName(l1proto.ConfigPath) {
			f.Close()
			return fmt.Errorf("%s is reserved", d)
		}
		c.HostFile(d, cfg.Files[d])
	}
	err = c.Close()
	if err == nil {
		err = bw.Flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// console collects QEMU's output, forwards it live and watches for the
// exit marker.
type console struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	out     io.Writer
	line    []byte
	exited  chan struct{} // closed when the exit marker has been seen
	once    sync.Once
	started bool
	// alive is when the payload started or L1 last printed a heartbeat.
	alive     time.Time
	heartbeat string // the last heartbeat line
}

func (c *console) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.buf.Write(p)
	if c.out != nil {
		c.out.Write(p) // a failing console must not stop the run
	}
	for _, b := range p {
		if b != '\n' {
			c.line = append(c.line, b)
			continue
		}
		if bytes.Contains(c.line, []byte(l1proto.Start)) {
			c.started = true
			c.alive = time.Now()
		}
		if i := bytes.Index(c.line, []byte(l1proto.Heartbeat)); i >= 0 {
			c.alive = time.Now()
			c.heartbeat = strings.TrimSpace(string(c.line[i:]))
		}
		if exitRE.Match(c.line) {
			c.once.Do(func() { close(c.exited) })
		}
		c.line = c.line[:0]
	}
	return len(p), nil
}

func (c *console) bytes() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]byte(nil), c.buf.Bytes()...)
}

// note writes a harness line into the console stream, on a line of its own.
func (c *console) note(line string) {
	c.Write([]byte("\n" + line + "\n"))
}

// lastBeat is when L1 last printed a heartbeat (or started the payload).
func (c *console) lastBeat() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.alive
}

// silent reports how long L1 has gone without a sign of life since the
// payload started (0 before it started), and the last heartbeat.
func (c *console) silent() (time.Duration, string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.started {
		return 0, ""
	}
	return time.Since(c.alive), c.heartbeat
}

func tail(out []byte, n int) []string {
	s := strings.ReplaceAll(string(out), "\r", "")
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	if len(lines) == 1 && lines[0] == "" {
		return nil
	}
	return lines
}

// kick writes a NUL to L1's serial input every period until stop.
func kick(w *os.File, period time.Duration, stop <-chan struct{}) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			// QEMU may stop reading (L1 gone): never block on it.
			w.SetWriteDeadline(time.Now().Add(period))
			w.Write([]byte{0})
		}
	}
}

// stallReason describes a stalled L1: how long it was silent, its last
// heartbeat, and where its CPUs are, sampled twice through the monitor to
// tell a CPU stuck on one instruction loop from one that still moves.
func stallReason(cfg *Config, quiet time.Duration, last string) string {
	r := fmt.Sprintf("L1 stalled: no heartbeat for %.0fs", quiet.Seconds())
	if last != "" {
		r += " (last: " + last + ")"
	}
	var samples []string
	for i := 0; i < 2; i++ {
		if i > 0 {
			time.Sleep(time.Second)
		}
		regs, err := monitorCmd(cfg.Monitor, "info registers -a", 5*time.Second)
		if err != nil {
			samples = append(samples, "monitor: "+err.Error())
			break
		}
		samples = append(samples, cpuState(regs))
	}
	r += "; L1 CPU state: " + strings.Join(samples, " | then ")
	// The local APIC: a timer that is armed or expired, and vectors
	// pending (IRR) or in service (ISR), tell a lost interrupt from none.
	if lapic, err := monitorCmd(cfg.Monitor, "info lapic", 5*time.Second); err == nil {
		r += "; L1 LAPIC: " + strings.Join(strings.Fields(lapic), " ")
	}
	return r
}

// exitGrace is how long QEMU may take to exit after the exit marker.
const exitGrace = 20 * time.Second

func runQEMU(ctx context.Context, cfg *Config, qemu, initrd string) (Result, error) {
	con := &console{out: cfg.Console, exited: make(chan struct{})}
	if cfg.Monitor == "" && cfg.Heartbeat > 0 {
		// Always reachable, so a stall can be diagnosed.
		cfg.Monitor = filepath.Join(filepath.Dir(initrd), "monitor.sock")
	}
	cmd := exec.Command(qemu, qemuArgs(cfg, initrd)...)
	// L1's serial input is a pipe of ours, not the terminal. Every Kick
	// one byte goes down it (see Kick).
	kickR, kickW, err := os.Pipe()
	if err != nil {
		return Result{}, fmt.Errorf("nested: %w", err)
	}
	defer kickW.Close()
	cmd.Stdin = kickR
	cmd.Stdout = con
	cmd.Stderr = con
	// QEMU stays in our process group, so that a signal to the group
	// (Ctrl-C, a CI runner's kill) ends it with us rather than orphaning it.
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	err = cmd.Start()
	kickR.Close()
	if err != nil {
		return Result{}, fmt.Errorf("nested: starting qemu: %w", err)
	}
	if cfg.Kick > 0 {
		stopKick := make(chan struct{})
		defer close(stopKick)
		go kick(kickW, cfg.Kick, stopKick)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	kill := func() { cmd.Process.Kill() }

	timer := time.NewTimer(cfg.Timeout)
	defer timer.Stop()
	var reason string
	var waitErr error
	exitSeen := con.exited
	var grace <-chan time.Time
	var watch <-chan time.Time
	var nmiAt time.Time // when an NMI was sent to a stalled L1
	var stall string    // its diagnosis
	var revived int
	if cfg.Heartbeat > 0 {
		t := time.NewTicker(cfg.Heartbeat / 2)
		defer t.Stop()
		watch = t.C
	}
loop:
	for {
		select {
		case <-watch:
			if exitSeen == nil {
				continue
			}
			quiet, last := con.silent()
			if nmiAt.IsZero() {
				if quiet < cfg.StallAfter {
					continue
				}
				// Diagnose, then try to revive L1 with an NMI: it is
				// not masked by IF, and it makes QEMU's vCPU leave
				// whatever loop it is in and look at its pending
				// interrupts again.
				stall = stallReason(cfg, quiet, last)
				con.note("@@L1-STALL " + stall + "; sending an NMI")
				if _, err := monitorCmd(cfg.Monitor, "nmi", 5*time.Second); err != nil {
					con.note("@@L1-STALL monitor nmi: " + err.Error())
				}
				nmiAt = time.Now()
				continue
			}
			if b := con.lastBeat(); b.After(nmiAt) {
				con.note(fmt.Sprintf("@@L1-STALL revived: a heartbeat %.1fs after the NMI", b.Sub(nmiAt).Seconds()))
				revived++
				nmiAt, stall = time.Time{}, ""
				continue
			}
			// Half of StallAfter for a stalled L1 to beat again.
			if time.Since(nmiAt) < cfg.StallAfter/2 {
				continue
			}
			reason = stall + "; an NMI did not revive it"
			kill()
			waitErr = <-done
			break loop
		case waitErr = <-done:
			break loop
		case <-exitSeen:
			exitSeen = nil
			grace = time.After(exitGrace)
		case <-grace:
			// The payload's status is known; L1 just failed to reset.
			kill()
			waitErr = <-done
			break loop
		case <-timer.C:
			reason = fmt.Sprintf("timed out after %v", cfg.Timeout)
			kill()
			waitErr = <-done
			break loop
		case <-ctx.Done():
			reason = fmt.Sprintf("cancelled: %v", ctx.Err())
			kill()
			waitErr = <-done
			break loop
		}
	}
	if !nmiAt.IsZero() && reason == "" && con.lastBeat().After(nmiAt) {
		con.note("@@L1-STALL revived: L1 went on after the NMI")
		revived++
	}
	res := Result{Duration: time.Since(start), Output: con.bytes(), Revived: revived}
	code, ok := ParseExit(res.Output)
	if ok && reason == "" {
		res.ExitCode = code
		if code == ExitKVMMissing && !cfg.AllowNoKVM && bytes.Contains(res.Output, []byte(l1proto.KVMMissing)) {
			return res, &Error{Reason: "L1 has no /dev/kvm (is KVM_AMD built into the L1 kernel?)", Tail: tail(res.Output, 20)}
		}
		return res, nil
	}
	if reason == "" {
		reason = "qemu exited"
		if waitErr != nil {
			reason = "qemu exited: " + waitErr.Error()
		}
		if con.started {
			reason += " before the payload reported an exit status"
		} else {
			reason += " before L1 reached /init's payload"
		}
	}
	return res, &Error{Reason: reason, Tail: tail(res.Output, 20)}
}
