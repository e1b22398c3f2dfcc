package tests

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/microvm-dev/microvm"
	"github.com/microvm-dev/microvm/internal/agent"
	"github.com/microvm-dev/microvm/internal/report"
)

// Tests of the Go API (package microvm), booting real guests in this
// process, as a Go test that uses microvm would.

// waitGoroutines waits until the goroutine count is back to base: a
// finished VM leaves no vCPU, poller or input goroutine behind.
func waitGoroutines(t *testing.T, base int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > base {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines left after the VMs ended, %d before:\n%s", runtime.NumGoroutine(), base, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestAPIMicroGuest(t *testing.T) {
	needKVM(t)
	guests := guestsDir(t)
	base := runtime.NumGoroutine()
	ctx := context.Background()

	t.Run("reset", func(t *testing.T) {
		var out agent.Capture
		in, w := io.Pipe()
		vm, err := microvm.Start(ctx, microvm.Config{
			Kernel: filepath.Join(guests, "hello.elf"), Cmdline: "api=yes",
			Memory: 64 << 20, Stdout: &out, Stdin: in, NoACPI: true,
		})
		if err != nil {
			t.Fatal(err)
		}
		res, err := vm.Wait()
		w.Close() // ends the input pump's Read
		if err != nil || res.Reason != microvm.ExitReset || res.ExitCode != 0 {
			t.Fatalf("result %+v, err %v", res, err)
		}
		// Without ACPI the VMM appends its virtio-mmio announcement
		// (virtio-rng).
		wantLines(t, out.String(), "microguest: hello", "cmdline: api=yes virtio_mmio.device=4K@0xd0000000:5")
		phases := map[microvm.Phase]bool{}
		for _, m := range res.Timeline {
			phases[m.Phase] = true
		}
		for _, p := range []microvm.Phase{microvm.PhaseVMReady, microvm.PhaseKernel, microvm.PhaseFirstRun, microvm.PhaseFirstOutput, microvm.PhaseExit} {
			if !phases[p] {
				t.Errorf("timeline lacks %s: %v", p, res.Timeline)
			}
		}
		if res.HostRSS == 0 || res.GuestResident == 0 || res.GuestResident > 64<<20 {
			t.Errorf("implausible memory: host RSS %d, guest resident %d", res.HostRSS, res.GuestResident)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		vm, err := microvm.Start(ctx, microvm.Config{Kernel: filepath.Join(guests, "spin.elf"), Timeout: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		res, err := vm.Wait()
		if err != nil || res.Reason != microvm.ExitTimeout || res.ExitCode != 124 || !strings.Contains(res.Detail, "RIP") {
			t.Fatalf("result %+v, err %v", res, err)
		}
	})
	t.Run("cancel", func(t *testing.T) {
		var out agent.Capture
		cctx, cancel := context.WithCancel(ctx)
		defer cancel()
		vm, err := microvm.Start(cctx, microvm.Config{Kernel: filepath.Join(guests, "spin.elf"), Stdout: &out})
		if err != nil {
			t.Fatal(err)
		}
		for !strings.Contains(out.String(), "microguest: spin") {
			select {
			case <-vm.Done():
				t.Fatalf("guest ended early: %q", out.String())
			case <-time.After(20 * time.Millisecond):
			}
		}
		cancel()
		res, err := vm.Wait()
		if err != nil || res.Reason != microvm.ExitCanceled || res.ExitCode != 130 {
			t.Fatalf("result %+v, err %v", res, err)
		}
	})
	t.Run("crash", func(t *testing.T) {
		vm, err := microvm.Start(ctx, microvm.Config{Kernel: filepath.Join(guests, "triple.elf"), Timeout: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		if res, err := vm.Wait(); err != nil || res.Reason != microvm.ExitCrash || res.ExitCode != 3 {
			t.Fatalf("result %+v, err %v", res, err)
		}
	})
	// Issue 12's crash: input that arrives after the guest ended and the VM
	// was released (a reader that returns bytes only then) reached a closed
	// machine and panicked with a nil dereference. It must be dropped.
	for _, virtio := range []bool{false, true} {
		t.Run(fmt.Sprintf("late stdin virtio=%v", virtio), func(t *testing.T) {
			in := &lateReader{after: make(chan (<-chan struct{}), 1), sent: make(chan struct{})}
			vm, err := microvm.Start(ctx, microvm.Config{
				Kernel: filepath.Join(guests, "hello.elf"), Memory: 64 << 20,
				Stdin: in, VirtioConsole: virtio,
			})
			if err != nil {
				t.Fatal(err)
			}
			in.after <- vm.Done()
			res, err := vm.Wait()
			if err != nil || res.Reason != microvm.ExitReset {
				t.Fatalf("result %+v, err %v", res, err)
			}
			select {
			case <-in.sent:
			case <-time.After(10 * time.Second):
				t.Fatal("the reader never returned its late bytes")
			}
			// The pump hands them to the closed machine right after Read
			// returns; give it the time to (not) crash.
			time.Sleep(200 * time.Millisecond)
			if res2, _ := vm.Wait(); res2.Reason != res.Reason {
				t.Errorf("second Wait: %+v", res2)
			}
		})
	}
	waitGoroutines(t, base)
}

// lateReader returns one line once the channel it is given is closed, then
// EOF.
type lateReader struct {
	after chan (<-chan struct{})
	sent  chan struct{}
	once  sync.Once
	done  bool
}

func (r *lateReader) Read(p []byte) (int, error) {
	if r.done {
		return 0, io.EOF
	}
	<-<-r.after
	r.done = true
	defer r.once.Do(func() { close(r.sent) })
	return copy(p, "late input\n"), nil
}

// TestLinuxAPI boots the project's Linux guest through the API, runs a
// command that reads a line from the serial console (fed through
// Config.Stdin) and exits with a status of its own.
func TestLinuxAPI(t *testing.T) {
	kernel, initrd := linuxArtifacts(t)
	base := runtime.NumGoroutine()
	ready := make(chan struct{})
	var once sync.Once
	in, w := io.Pipe()
	var out agent.Capture
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	vm, err := microvm.Start(ctx, microvm.Config{
		Kernel: kernel, Initrd: initrd, Memory: 128 << 20,
		Command: []string{"sh", "-c", "read line < /dev/ttyS0; echo got-$line; exit 5"},
		Stdin:   in,
		Stdout:  &out,
		OnMilestone: func(code uint8, _ uint32) {
			if code == microvm.MilestoneAgentReady {
				once.Do(func() { close(ready) })
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	// The command opens the console at some point after the agent is
	// ready; lines sent before that may be dropped, so resend until the
	// guest has answered.
	go func() {
		select {
		case <-ready:
		case <-vm.Done():
			return
		}
		for !strings.Contains(out.String(), "got-") {
			if _, err := w.Write([]byte("hello\n")); err != nil {
				return
			}
			select {
			case <-vm.Done():
				return
			case <-time.After(500 * time.Millisecond):
			}
		}
	}()
	res, err := vm.Wait()
	w.CloseWithError(errors.New("guest ended"))
	t.Logf("result %+v\noutput %q\nboot log %s", res, out.String(), res.BootLog)
	if err != nil {
		t.Fatal(err)
	}
	if res.ExitCode != 5 || res.GuestStatus != 5 {
		t.Errorf("exit code %d, guest status %d, want 5", res.ExitCode, res.GuestStatus)
	}
	if !strings.Contains(out.String(), "got-hello") {
		t.Errorf("the command did not read the console input: output %q", out.String())
	}
	if strings.Contains(out.String(), "Linux version") {
		t.Error("the kernel log leaked into the command's output")
	}
	if at, ok := report.PhaseAt(res.Timeline, microvm.PhaseInit); !ok || at <= 0 {
		t.Errorf("no init-reached in the timeline %v", res.Timeline)
	}
	if _, ok := report.PhaseAt(res.Timeline, microvm.PhaseCommandDone); !ok {
		t.Errorf("no command-done in the timeline %v", res.Timeline)
	}
	waitGoroutines(t, base)
}
