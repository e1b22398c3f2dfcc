package nested

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/microvm-dev/microvm/internal/testimg"
)

func TestWriteInitramfs(t *testing.T) {
	dir := t.TempDir()
	l1init := filepath.Join(dir, "l1init")
	payload := filepath.Join(dir, "payload")
	os.WriteFile(l1init, []byte("init"), 0o755)
	os.WriteFile(payload, []byte("payload"), 0o755)
	cfg := Config{
		Files:   map[string]string{"/bin/payload": payload},
		Init:    "/bin/payload",
		Args:    []string{"-v"},
		Timeout: time.Minute,
	}
	cfg.defaults()
	dst := filepath.Join(dir, "initrd")
	if err := writeInitramfs(dst, &cfg, l1init); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(dst)
	ents, err := testimg.ReadCPIO(b)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]testimg.CPIOEntry{}
	for _, e := range ents {
		got[e.Name] = e
	}
	if e := got["init"]; string(e.Data) != "init" || e.Mode != testimg.ModeReg|0o755 {
		t.Errorf("init: %+v", e)
	}
	if e := got["bin/payload"]; string(e.Data) != "payload" {
		t.Errorf("bin/payload: %+v", e)
	}
	js := string(got["l1config.json"].Data)
	for _, s := range []string{`"init": "/bin/payload"`, `"-v"`, `"timeout_ms": 48000`, `"require_kvm": true`} {
		if !strings.Contains(js, s) {
			t.Errorf("l1config.json lacks %s:\n%s", s, js)
		}
	}
	cfg.Files["/init"] = payload
	if err := writeInitramfs(dst, &cfg, l1init); err == nil {
		t.Error("overriding /init was accepted")
	}
}

func TestParseExit(t *testing.T) {
	for _, tc := range []struct {
		name string
		out  string
		code int
		ok   bool
	}{
		{"none", "booting\n@@L1 start\n", 0, false},
		{"empty", "", 0, false},
		{"zero", "@@L1 start\n\r\n@@L1-EXIT 0\r\n", 0, true},
		{"nonzero", "x\n@@L1-EXIT 3\r\n[    2.1] reboot: Restarting system\n", 3, true},
		{"timeout", "@@L1-EXIT 124\n", 124, true},
		{"mid-line", "[ 1.0] some kernel noise@@L1-EXIT 7\n", 7, true},
		{"no newline at end", "@@L1-EXIT 42", 42, true},
		{"last wins", "payload said @@L1-EXIT 9\n@@L1-EXIT 1\n", 1, true},
		{"negative", "@@L1-EXIT -1\n", -1, true},
		{"no number", "@@L1-EXIT \n", 0, false},
		{"wrong marker", "@@L1-EXITED 3\n@@L1 EXIT 3\n", 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, ok := ParseExit([]byte(tc.out))
			if code != tc.code || ok != tc.ok {
				t.Errorf("ParseExit(%q) = %d, %v; want %d, %v", tc.out, code, ok, tc.code, tc.ok)
			}
		})
	}
}

func TestConsoleMarkers(t *testing.T) {
	var live bytes.Buffer
	c := &console{out: &live, exited: make(chan struct{})}
	for _, chunk := range []string{"boot\r\n@@L1 st", "art\r\nhello\r\n@@L1-EX", "IT 5\r\n"} {
		c.Write([]byte(chunk))
	}
	if !c.started {
		t.Error("start marker split over writes not seen")
	}
	select {
	case <-c.exited:
	default:
		t.Error("exit marker split over writes not seen")
	}
	if live.String() != string(c.bytes()) {
		t.Error("live console differs from the captured output")
	}
	if got := tail(c.bytes(), 2); strings.Join(got, "|") != "hello|@@L1-EXIT 5" {
		t.Errorf("tail = %q", got)
	}
}

func TestPayloadTimeout(t *testing.T) {
	for total, want := range map[time.Duration]time.Duration{
		time.Minute:      48 * time.Second,
		10 * time.Minute: 9 * time.Minute,
	} {
		if got := payloadTimeout(total); got != want {
			t.Errorf("payloadTimeout(%v) = %v, want %v", total, got, want)
		}
	}
}

// TestRunNested boots a real L1. It runs only when MICROVM_NESTED_KERNEL
// names an L1 bzImage, since a boot under TCG takes seconds.
func TestRunNested(t *testing.T) {
	kernel := os.Getenv("MICROVM_NESTED_KERNEL")
	if kernel == "" {
		t.Skip("MICROVM_NESTED_KERNEL not set")
	}
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skip("no qemu-system-x86_64")
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "main.go")
	os.WriteFile(src, []byte(`package main
import ("fmt"; "os")
func main() { _, err := os.Stat("/dev/kvm"); fmt.Println("payload kvm err:", err, os.Args[1:], os.Getenv("FOO")); os.Exit(7) }
`), 0o644)
	bin := filepath.Join(dir, "payload")
	cmd := exec.Command("go", "build", "-o", bin, src)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GO111MODULE=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building payload: %v: %s", err, out)
	}
	var console bytes.Buffer
	res, err := Run(context.Background(), Config{
		Kernel:    kernel,
		Files:     map[string]string{"/bin/payload": bin},
		Init:      "/bin/payload",
		Args:      []string{"a", "b"},
		Env:       []string{"FOO=bar"},
		MemoryMiB: 512,
		Timeout:   3 * time.Minute,
		Console:   &console,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("L1 round trip %v", res.Duration)
	if res.ExitCode != 7 {
		t.Errorf("exit code %d, want 7", res.ExitCode)
	}
	if !strings.Contains(string(res.Output), "payload kvm err: <nil> [a b] bar") {
		t.Errorf("payload output missing:\n%s", res.Output)
	}
}

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

func TestCPUState(t *testing.T) {
	regs := "CPU#0\nRAX=0000000000000000 RBX=ffff88800f300000\nRIP=ffffffff8103c2d2 RFL=00000246 [---Z-P-] CPL=0 II=0 A20=1 SMM=0 HLT=0\n" +
		"ES =0000 0000000000000000 00000000 00000000\nGS =0000 ffff88800f300000 00000000 00000000\n" +
		"CPU#1\nRIP=00007f0000001000 RFL=00000202 [-------] CPL=3 II=0 A20=1 SMM=0 HLT=1\nGS =0000 0000000000000000 00000000 00000000\n"
	want := "RIP=ffffffff8103c2d2 CPL=0 GS.base=ffff88800f300000; RIP=00007f0000001000 CPL=3 GS.base=0000000000000000"
	if got := cpuState(regs); got != want {
		t.Errorf("cpuState = %q\nwant %q", got, want)
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
