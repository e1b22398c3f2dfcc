// Command l1init is /init of the nested harness's L1 initramfs (see package
// nested). It mounts the basic filesystems, reads /l1config.json (an
// l1proto.Config), runs the payload with its output on the console, prints
// "@@L1-EXIT <code>" and
// reboots, which ends QEMU (run with -no-reboot). It never waits forever: a
// payload that overruns its timeout is killed and reported as exit 124.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/microvm-dev/microvm/tests/nested/l1proto"
)

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stdout, "@@L1 "+format+"\n", args...)
}

func mount(src, target, fstype string, flags uintptr, data string) {
	os.MkdirAll(target, 0o755)
	if err := unix.Mount(src, target, fstype, flags, data); err != nil && !errors.Is(err, unix.EBUSY) {
		logf("mount %s on %s: %v", fstype, target, err)
	}
}

// fixStdio gives us the console as stdio if the kernel could not.
func fixStdio() {
	if _, err := unix.FcntlInt(1, unix.F_GETFD, 0); err == nil {
		return
	}
	fd, err := unix.Open("/dev/console", unix.O_RDWR, 0)
	if err != nil {
		return
	}
	for i := 0; i < 3; i++ {
		unix.Dup2(fd, i)
	}
	if fd > 2 {
		unix.Close(fd)
	}
}

// loopbackUp brings up lo; failures (no CONFIG_NET) are ignored.
func loopbackUp() {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return
	}
	if unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr) != nil {
		return
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
}

func setup() {
	mount("devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID, "mode=0755")
	fixStdio()
	// devpts: the signal tests drive microvm through a pty.
	mount("devpts", "/dev/pts", "devpts", unix.MS_NOSUID|unix.MS_NOEXEC, "mode=0620,ptmxmode=0666")
	mount("proc", "/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "")
	mount("sysfs", "/sys", "sysfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "")
	mount("tmpfs", "/tmp", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=1777")
	loopbackUp()
	quietConsoleInput()
}

func run(cfg *l1proto.Config) int {
	if cfg.Init == "" {
		logf("no payload in %s", l1proto.ConfigPath)
		return l1proto.ExitInitError
	}
	env := []string{
		"PATH=/bin:/sbin:/usr/bin:/usr/sbin:/usr/local/bin",
		"HOME=/tmp",
		"TMPDIR=/tmp",
	}
	env = append(env, cfg.Env...) // later entries win in os/exec
	cmd := exec.Command(cfg.Init, cfg.Args...)
	cmd.Env = env
	cmd.Dir = cfg.Dir
	cmd.Stdout = os.Stdout
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf("starting payload: %v", err)
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, exec.ErrNotFound) {
			return l1proto.ExitNotFound
		}
		return l1proto.ExitInitError
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	if cfg.HeartbeatMS > 0 {
		stop := make(chan struct{})
		defer close(stop)
		go heartbeat(time.Duration(cfg.HeartbeatMS)*time.Millisecond, stop)
	}
	var timeout <-chan time.Time
	if cfg.TimeoutMS > 0 {
		timeout = time.After(time.Duration(cfg.TimeoutMS) * time.Millisecond)
	}
	select {
	case err := <-done:
		return exitCode(cmd, err)
	case <-timeout:
		fmt.Println() // the payload may have left a partial line
		logf("payload overran its timeout of %v; killing it", time.Duration(cfg.TimeoutMS)*time.Millisecond)
		unix.Kill(-cmd.Process.Pid, unix.SIGKILL)
		unix.Kill(cmd.Process.Pid, unix.SIGKILL)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			logf("payload did not die")
		}
		return l1proto.ExitTimeout
	}
}

func exitCode(cmd *exec.Cmd, err error) int {
	if err == nil {
		return 0
	}
	if cmd.ProcessState == nil {
		return l1proto.ExitInitError
	}
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return cmd.ProcessState.ExitCode()
}

func main() {
	setup()
	code := func() int {
		raw, err := os.ReadFile(l1proto.ConfigPath)
		if err != nil {
			logf("reading config: %v", err)
			return l1proto.ExitInitError
		}
		var cfg l1proto.Config
		if err := json.Unmarshal(raw, &cfg); err != nil {
			logf("parsing config: %v", err)
			return l1proto.ExitInitError
		}
		if err := loadModules(cfg.Modules); err != nil {
			logf("%v", err)
			return l1proto.ExitInitError
		}
		if _, err := os.Stat("/dev/kvm"); err != nil {
			fmt.Println(l1proto.KVMMissing)
			if cfg.RequireKVM {
				return l1proto.ExitKVMMissing
			}
		}
		fmt.Println(l1proto.Start)
		return run(&cfg)
	}()
	// The leading newline keeps the marker on its own line.
	fmt.Printf("\n%s %d\n", l1proto.Exit, code)
	unix.Sync()
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART); err != nil {
		fmt.Fprintf(os.Stdout, "@@L1 reboot: %v\n", strings.TrimSpace(err.Error()))
	}
	// Returning from init panics the kernel, and panic=-1 reboots it.
	os.Exit(code)
}

// loadModules loads each .ko with finit_module(2), in order: a module's
// dependencies come before it in the list. One already built in or loaded
// (EEXIST) is fine.
func loadModules(paths []string) error {
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			return fmt.Errorf("module: %w", err)
		}
		err = unix.FinitModule(int(f.Fd()), "", 0)
		f.Close()
		if err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("module %s: finit_module: %w", p, err)
		}
	}
	return nil
}

// quietConsoleInput turns off echo, line editing and signal characters on
// the console: the host sends a byte now and then to keep QEMU polling L1's
// APIC (nested.Config.Kick), and those bytes must neither appear in the
// output nor signal the payload.
func quietConsoleInput() {
	t, err := unix.IoctlGetTermios(0, unix.TCGETS)
	if err != nil {
		return
	}
	t.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	t.Iflag &^= unix.IXON | unix.ICRNL
	unix.IoctlSetTermios(0, unix.TCSETS, t)
}
