package nested

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/microvm-dev/microvm/tests/nested/l1proto"
)

// qemuArgs is the QEMU command line that boots L1 from initrd.
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

// hostTSCkHz is the host's TSC rate in kHz (0 if unknown), measured once.
func hostTSCkHz() int {
	tscOnce.Do(func() { tscKHz = measureTSCkHz() })
	return tscKHz
}

// exitGrace is how long QEMU may take to exit after the exit marker.
const exitGrace = 20 * time.Second

// runQEMU runs L1 to the payload's exit status, or until it stalls (see
// Config.StallAfter), times out or ctx ends.
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
