package nested

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeL1 writes a stand-in for QEMU that starts "the payload" and then runs
// script, and a placeholder kernel (also usable as l1init).
func fakeL1(t *testing.T, script string) (qemu, kernel string) {
	t.Helper()
	dir := t.TempDir()
	qemu, kernel = filepath.Join(dir, "qemu"), filepath.Join(dir, "bzImage")
	if err := os.WriteFile(qemu, []byte("#!/bin/sh\necho '@@L1 start'\n"+script+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(kernel, []byte("x"), 0o755); err != nil {
		t.Fatal(err)
	}
	return qemu, kernel
}

// TestStallDetected: an "L1" (a stand-in for QEMU that starts the payload,
// beats twice and then goes silent, as a frozen L1 does) is ended as
// stalled after StallAfter, not after Timeout, and the error says so with
// the last heartbeat.
func TestStallDetected(t *testing.T) {
	qemu, kernel := fakeL1(t, "echo '@@L1-HB t=1.0 vms=0 []'\nsleep 0.2\necho '@@L1-HB t=2.0 vms=1 [7:R:0.5s]'\nexec sleep 600")
	start := time.Now()
	_, err := Run(context.Background(), Config{
		Kernel: kernel, Init: "/x", L1Init: kernel, QEMU: qemu,
		Timeout: 5 * time.Minute, Heartbeat: 200 * time.Millisecond, StallAfter: time.Second,
	})
	var ne *Error
	if !errors.As(err, &ne) || !strings.Contains(ne.Reason, "L1 stalled: no heartbeat for") ||
		!strings.Contains(ne.Reason, "t=2.0 vms=1 [7:R:0.5s]") || !strings.Contains(ne.Reason, "monitor:") {
		t.Fatalf("err = %v, want a stall naming the last heartbeat and the monitor", err)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("stall reported after %v, want about StallAfter (1s)", d)
	}
}

// TestStallRevived: an L1 that beats again after the stall was diagnosed
// (here on its own; in QEMU after the NMI) runs on to its exit status, and
// the revival is counted and written into the console.
func TestStallRevived(t *testing.T) {
	qemu, kernel := fakeL1(t, "echo '@@L1-HB t=1.0 vms=0 []'\nsleep 2.5\necho '@@L1-HB t=3.0 vms=0 []'\nsleep 0.5\necho '@@L1-EXIT 3'")
	res, err := Run(context.Background(), Config{
		Kernel: kernel, Init: "/x", L1Init: kernel, QEMU: qemu,
		Timeout: time.Minute, Heartbeat: 200 * time.Millisecond, StallAfter: 2 * time.Second,
	})
	if err != nil || res.ExitCode != 3 || res.Revived != 1 {
		t.Fatalf("exit %d, revived %d, err %v; want 3, 1, nil", res.ExitCode, res.Revived, err)
	}
	if out := string(res.Output); !strings.Contains(out, "@@L1-STALL L1 stalled") || !strings.Contains(out, "@@L1-STALL revived") {
		t.Errorf("console lacks the stall and revival lines:\n%s", out)
	}
}

// TestKick: L1's serial input gets a byte every Kick (here the stand-in
// exits once it has read three).
func TestKick(t *testing.T) {
	qemu, kernel := fakeL1(t, "head -c 3 >/dev/null\necho '@@L1-EXIT 0'")
	res, err := Run(context.Background(), Config{
		Kernel: kernel, Init: "/x", L1Init: kernel, QEMU: qemu,
		Timeout: 20 * time.Second, Kick: 50 * time.Millisecond,
	})
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("exit %d, err %v: the stand-in never got three bytes on its stdin", res.ExitCode, err)
	}
}
