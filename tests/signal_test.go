package tests

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Signal tests: microvm runs on a pty (its controlling terminal, as in a
// shell), gets SIGINT, SIGTERM or SIGHUP in a given phase, and must exit
// 128+N with the terminal's settings exactly as before and nothing of its
// own left running.

// ptyProc is microvm running with a pty slave as stdin, stdout and stderr.
type ptyProc struct {
	cmd       *exec.Cmd
	master    *os.File
	slave     *os.File
	before    *unix.Termios
	mu        sync.Mutex
	out       bytes.Buffer
	readDone  chan struct{}
	closeOnce sync.Once
}

// openPty opens a new pty pair through /dev/ptmx.
func openPty(t *testing.T) (master, slave *os.File) {
	t.Helper()
	// O_NONBLOCK puts the master in Go's poller, so that Close really
	// closes it (hanging up the slave) while the reader goroutine is in Read.
	mfd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		t.Fatalf("open /dev/ptmx: %v (the nested harness mounts devpts; is /dev/pts mounted?)", err)
	}
	if err := unix.IoctlSetPointerInt(mfd, unix.TIOCSPTLCK, 0); err != nil {
		t.Fatalf("unlockpt: %v", err)
	}
	n, err := unix.IoctlGetInt(mfd, unix.TIOCGPTN)
	if err != nil {
		t.Fatalf("TIOCGPTN: %v", err)
	}
	name := "/dev/pts/" + strconv.Itoa(n)
	sfd, err := unix.Open(name, unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("open %s: %v", name, err)
	}
	return os.NewFile(uintptr(mfd), "ptmx"), os.NewFile(uintptr(sfd), name)
}

func startOnPty(t *testing.T, args ...string) *ptyProc {
	t.Helper()
	p := &ptyProc{readDone: make(chan struct{})}
	p.master, p.slave = openPty(t)
	var err error
	if p.before, err = unix.IoctlGetTermios(int(p.slave.Fd()), unix.TCGETS); err != nil {
		t.Fatalf("TCGETS: %v", err)
	}
	if p.before.Lflag&unix.ICANON == 0 || p.before.Lflag&unix.ECHO == 0 {
		t.Fatalf("a new pty should start cooked with echo; lflag %#x", p.before.Lflag)
	}
	p.cmd = exec.Command(microvmBin(t), args...)
	p.cmd.Stdin, p.cmd.Stdout, p.cmd.Stderr = p.slave, p.slave, p.slave
	// Its own session with the pty as controlling terminal, as a shell
	// would arrange: closing the master then hangs it up.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start microvm: %v", err)
	}
	go func() {
		defer close(p.readDone)
		buf := make([]byte, 4096)
		for {
			n, err := p.master.Read(buf)
			p.mu.Lock()
			p.out.Write(buf[:n])
			p.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			p.cmd.Process.Kill()
			p.cmd.Wait()
		}
		p.closeMaster()
		p.slave.Close()
	})
	return p
}

func (p *ptyProc) closeMaster() { p.closeOnce.Do(func() { p.master.Close() }) }

func (p *ptyProc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// waitFor polls until cond holds, failing the test after limit.
func waitFor(t *testing.T, p *ptyProc, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s; output so far:\n%s", limit, what, p.output())
		}
		if p.exited() {
			t.Fatalf("microvm exited while waiting for %s; output:\n%s", what, p.output())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// exited reports whether microvm has exited (a zombie not yet reaped).
func (p *ptyProc) exited() bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		return true
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	return len(f) > 0 && f[0] == "Z"
}

func (p *ptyProc) termios(t *testing.T) *unix.Termios {
	t.Helper()
	tio, err := unix.IoctlGetTermios(int(p.slave.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatalf("TCGETS: %v", err)
	}
	return tio
}

func (p *ptyProc) isRaw(t *testing.T) bool {
	return p.termios(t).Lflag&(unix.ICANON|unix.ECHO|unix.ISIG) == 0
}

// wait reaps microvm within limit and returns its exit code.
func (p *ptyProc) wait(t *testing.T, limit time.Duration) int {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case err := <-done:
		code, err := exitCode(err)
		if err != nil {
			t.Fatalf("wait: %v", err)
		}
		if ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			t.Fatalf("microvm was killed by %v instead of exiting 128+N; output:\n%s", ws.Signal(), p.output())
		}
		return code
	case <-time.After(limit):
		t.Fatalf("microvm did not exit within %v of the signal; output:\n%s", limit, p.output())
	}
	return -1
}

// checkClean verifies the terminal is as before and that nothing of
// microvm's session (its own pid is the session id) is still running.
func (p *ptyProc) checkClean(t *testing.T) {
	t.Helper()
	after := p.termios(t)
	b, a := p.before, after
	if b.Iflag != a.Iflag || b.Oflag != a.Oflag || b.Cflag != a.Cflag || b.Lflag != a.Lflag || b.Cc != a.Cc {
		t.Errorf("terminal not restored: before iflag %#x oflag %#x cflag %#x lflag %#x, after %#x %#x %#x %#x",
			b.Iflag, b.Oflag, b.Cflag, b.Lflag, a.Iflag, a.Oflag, a.Cflag, a.Lflag)
	}
	p.checkNoneLeft(t)
}

func (p *ptyProc) checkNoneLeft(t *testing.T) {
	t.Helper()
	sid := p.cmd.Process.Pid
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", sid)); err == nil {
		t.Errorf("process %d (microvm) still exists after it was reaped", sid)
	}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// Fields after the ")" that ends comm: state ppid pgrp session.
		i := bytes.LastIndexByte(b, ')')
		f := strings.Fields(string(b[i+1:]))
		if len(f) > 3 && f[3] == strconv.Itoa(sid) {
			t.Errorf("process %d of microvm's session is still running: %s", pid, b)
		}
	}
}

var stopSignals = []struct {
	sig  syscall.Signal
	code int
}{
	{syscall.SIGINT, 130},
	{syscall.SIGTERM, 143},
	{syscall.SIGHUP, 129},
}

// TestSignalBeforeKVM: the signal arrives while microvm is still reading
// its kernel (a FIFO that we hold open and never write), before /dev/kvm is
// opened. That read cannot be interrupted, so this also covers the forced
// exit after the grace period.
func TestSignalBeforeKVM(t *testing.T) {
	for _, s := range stopSignals {
		t.Run(s.sig.String(), func(t *testing.T) {
			t.Parallel() // each waits out the 5 s grace period
			fifo := filepath.Join(t.TempDir(), "kernel.fifo")
			if err := unix.Mkfifo(fifo, 0o600); err != nil {
				t.Fatal(err)
			}
			p := startOnPty(t, "boot", "--kernel", fifo)
			// A non-blocking open for writing succeeds only once microvm
			// has the FIFO open for reading, i.e. is reading its kernel.
			var w int
			waitFor(t, p, time.Minute, "microvm to open the kernel FIFO", func() bool {
				fd, err := unix.Open(fifo, unix.O_WRONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
				if err != nil {
					return false
				}
				w = fd
				return true
			})
			defer unix.Close(w)
			t0 := time.Now()
			p.cmd.Process.Signal(s.sig)
			if code := p.wait(t, time.Minute); code != s.code {
				t.Fatalf("exit code %d, want %d; output:\n%s", code, s.code, p.output())
			}
			t.Logf("%v while reading the kernel: exit %d after %v", s.sig, s.code, time.Since(t0).Round(time.Millisecond))
			p.checkClean(t)
		})
	}
}

// startSpin boots the spin micro-guest on a pty and waits for its banner
// and for the console to be in raw mode.
func startSpin(t *testing.T) *ptyProc {
	t.Helper()
	needKVM(t)
	p := startOnPty(t, "boot", "--kernel", filepath.Join(guestsDir(t), "spin.elf"), "--timeout", "5m")
	waitFor(t, p, 3*time.Minute, "the guest's banner", func() bool { return strings.Contains(p.output(), "microguest: spin") })
	waitFor(t, p, 30*time.Second, "raw mode", func() bool { return p.isRaw(t) })
	return p
}

// TestSignalGuestRunning: the signal arrives while a micro-guest runs (and
// the console is in raw mode).
func TestSignalGuestRunning(t *testing.T) {
	needKVM(t) // here too, so that without KVM the test, not each subtest, skips
	for _, s := range stopSignals {
		t.Run(s.sig.String(), func(t *testing.T) {
			p := startSpin(t)
			p.cmd.Process.Signal(s.sig)
			if code := p.wait(t, time.Minute); code != s.code {
				t.Fatalf("exit code %d, want %d; output:\n%s", code, s.code, p.output())
			}
			p.checkClean(t)
			if !strings.Contains(p.output(), "stopped by") {
				t.Errorf("no 'stopped by' message in the output:\n%s", p.output())
			}
		})
	}
}

// TestSignalHangup: the terminal goes away (the pty master closes) while a
// guest runs: the kernel sends SIGHUP and microvm exits 129.
func TestSignalHangup(t *testing.T) {
	p := startSpin(t)
	p.closeMaster()
	if code := p.wait(t, time.Minute); code != 129 {
		t.Fatalf("exit code %d after hangup, want 129", code)
	}
	// The hung-up pty's settings can no longer be read; what is left to
	// check is that nothing survived.
	p.checkNoneLeft(t)
}

// TestLinuxSignalCommand: SIGTERM while a Linux guest's command runs.
func TestLinuxSignalCommand(t *testing.T) {
	kernel, initrd := linuxArtifacts(t)
	p := startOnPty(t, "run", "--kernel", kernel, "--initrd", initrd, "--timeout", "5m", "--",
		"sh", "-c", "echo command-started; sleep 600")
	waitFor(t, p, 3*time.Minute, "the command to start", func() bool { return strings.Contains(p.output(), "command-started") })
	p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.wait(t, time.Minute); code != 143 {
		t.Fatalf("exit code %d, want 143; output:\n%s", code, p.output())
	}
	p.checkClean(t)
}

// TestLinuxSignalBoot: SIGINT while a Linux kernel is still booting, with
// the console in raw mode.
func TestLinuxSignalBoot(t *testing.T) {
	kernel, initrd := linuxArtifacts(t)
	p := startOnPty(t, "boot", "--kernel", kernel, "--initrd", initrd, "--timeout", "5m")
	waitFor(t, p, 3*time.Minute, "the kernel's banner", func() bool { return strings.Contains(p.output(), "Linux version") })
	if !p.isRaw(t) {
		t.Fatal("console is not in raw mode while the guest boots")
	}
	p.cmd.Process.Signal(syscall.SIGINT)
	if code := p.wait(t, time.Minute); code != 130 {
		t.Fatalf("exit code %d, want 130; output:\n%s", code, p.output())
	}
	p.checkClean(t)
}

// TestConsoleEscape: in raw mode Ctrl-C is input for the guest, not a
// signal for microvm; Ctrl-a x quits with exit 0 and restores the terminal.
func TestConsoleEscape(t *testing.T) {
	p := startSpin(t)
	p.master.Write([]byte{0x03})
	time.Sleep(time.Second)
	if p.exited() {
		t.Fatalf("Ctrl-C on the raw console stopped microvm; output:\n%s", p.output())
	}
	p.master.Write([]byte{0x01, 'x'})
	if code := p.wait(t, time.Minute); code != 0 {
		t.Fatalf("exit code %d after Ctrl-a x, want 0; output:\n%s", code, p.output())
	}
	p.checkClean(t)
	if !strings.Contains(p.output(), "console quit") {
		t.Errorf("no 'console quit' message:\n%s", p.output())
	}
}
