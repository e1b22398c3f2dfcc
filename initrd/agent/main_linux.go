// Command agent is the microvm guest agent. It runs as u-root's uinit
// (/bin/uinit, started by u-root's init after it has mounted /proc, /sys,
// /dev, ...) and:
//
//  1. writes milestone 0x01 (init reached) to the VMM debug port 0x3f0;
//  2. prints "guest: <uname -a style line>";
//  3. reads /proc/cmdline:
//     - microvm.uname=1: prints "@@microvm-uname {json}" and powers off;
//     - microvm.cmd=<agentproto.EncodeJob(job)> (or the job over the agent
//     channel with microvm.chan=1): mounts the job's virtio-9p shares and
//     root filesystem (mounts_linux.go), writes milestone 0x02, runs argv
//     (stdin /dev/null, stdout/stderr on the console, cwd the job's Dir or
//     /) and writes milestone 0x03 with its exit status (128+signal if
//     killed); over the channel, "cmd" also carries host entropy and the
//     host's clock (fresh_linux.go), applied before anything else;
//     - neither: prints "guest: no command; powering off";
//  4. syncs and resets the machine through the i8042 (0xfe to port 0x64),
//     falling back to reboot(2) after one second.
//
// Unexpected errors print one "guest: agent: <err>" line and end with
// status 1. The agent never returns to init.
package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/microvm-dev/microvm/agentproto"
	"golang.org/x/sys/unix"
)

const (
	i8042CommandPort = 0x64
	i8042CmdReset    = 0xfe

	guestPath = "/bbin:/bin:/usr/bin:/sbin:/usr/sbin:/ubin:/buildbin"
)

// agent holds the state needed to shut down cleanly from anywhere.
type agent struct {
	status    int      // command exit status, -1 until known
	finishing bool     // finish has started; errors from here on skip to powerOff
	ch        *channel // agent channel, when the VMM provides one
}

func main() {
	a := &agent{status: -1}
	defer func() {
		if r := recover(); r != nil {
			a.fail(fmt.Errorf("panic: %v", r))
		}
	}()
	a.run()
}

func (a *agent) run() {
	errPort := milestone(agentproto.MilestoneInit)
	setupConsole()
	if errPort != nil {
		// Not fatal (the VMM still sees the console and the reboot), but
		// milestones and exit statuses will be missing: say why once.
		fmt.Fprintf(os.Stderr, "guest: agent: warning: no debug port (kernel needs CONFIG_X86_IOPL_IOPERM=y): %v\n", errPort)
	}

	// Keep console signals (^C, hangup) from killing the agent, which would
	// leave the VM running. signal.Notify (unlike signal.Ignore) is reset to
	// the default disposition in the command we exec.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGINT, syscall.SIGQUIT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGTSTP, syscall.SIGTTIN, syscall.SIGTTOU)

	u, err := unameInfo()
	if err != nil {
		a.fail(err)
	}
	fmt.Printf("guest: %s\n", u)

	raw, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		a.fail(err)
	}
	params := parseCmdline(string(raw))

	if flagEnabled(lookupParam(params, agentproto.UnameParam)) {
		drainConsole()
		milestone(agentproto.MilestoneReady)
		if up, err := uptime(); err != nil {
			a.fail(err)
		} else {
			u.UptimeS = up
		}
		fmt.Println(agentproto.FormatUnameLine(u))
		a.finish(0)
	}

	job, err := a.command(params)
	if err != nil {
		a.fail(err)
	}
	if len(job.Argv) == 0 {
		fmt.Println("guest: no command; powering off")
		a.finish(0)
	}
	path, err := setupJob(job)
	if err != nil {
		a.fail(err)
	}

	setupEnv(path)
	quietKernelConsole()
	rawConsoleOutput()
	drainConsole()
	a.milestone(agentproto.MilestoneReady)
	a.finish(runCommand(job.Argv, job.Dir))
}

// command returns the job to run: from the agent channel when the VMM
// announced one, else from the kernel command line; none is not an error.
func (a *agent) command(params []param) (agentproto.Job, error) {
	if flagEnabled(lookupParam(params, agentproto.ChannelParam)) {
		ch, err := openChannel(10 * time.Second)
		if err != nil {
			return agentproto.Job{}, err
		}
		a.ch = ch
		if err := ch.send(agentproto.Msg{T: agentproto.MsgReady}); err != nil {
			return agentproto.Job{}, err
		}
		m, err := ch.recv()
		if err != nil {
			return agentproto.Job{}, err
		}
		if m.T != agentproto.MsgCmd {
			return agentproto.Job{}, fmt.Errorf("agent channel: expected %q, got %q", agentproto.MsgCmd, m.T)
		}
		freshen(m)
		return m.Job(), nil
	}
	p, ok := lookupParam(params, agentproto.CmdParam)
	if !ok {
		return agentproto.Job{}, nil
	}
	return agentproto.DecodeJob(p.Value)
}

// milestone reports a milestone over the agent channel if there is one,
// else through the debug port.
func (a *agent) milestone(code uint8) {
	if a.ch != nil {
		if err := a.ch.send(agentproto.Msg{T: agentproto.MsgMilestone, Code: code}); err == nil {
			return
		}
	}
	_ = milestone(code)
}

// quietKernelConsole keeps kernel messages below KERN_ALERT off the console
// while the command runs, so a late warning (an RCU stall on a slow host,
// say) does not land in the middle of the command's output. Panics still
// print. syslog(SYSLOG_ACTION_CONSOLE_LEVEL, NULL, 1) is `dmesg -n 1`.
func quietKernelConsole() {
	const syslogActionConsoleLevel = 8
	_, _, _ = unix.Syscall(unix.SYS_SYSLOG, syslogActionConsoleLevel, 0, 1)
}

// rawConsoleOutput turns off output post-processing (ONLCR) on the
// console, so the command's stdout reaches the host byte for byte.
func rawConsoleOutput() {
	t, err := unix.IoctlGetTermios(1, unix.TCGETS)
	if err != nil {
		return // not a tty
	}
	t.Oflag &^= unix.OPOST
	_ = unix.IoctlSetTermios(1, unix.TCSETS, t)
}

// setupConsole makes fds 1 and 2 refer to the console device itself.
// u-root's init hands uinit a pipe when console= is on the command line
// (its multi-TTY copier); output still in that pipe would be lost at reset,
// and a pipe cannot be drained. Opening /dev/console directly makes our and
// the command's output synchronous with the tty. The raw open keeps the fd
// blocking (os.OpenFile would make the shared file description O_NONBLOCK,
// which the command would inherit).
func setupConsole() {
	var st unix.Stat_t
	if err := unix.Fstat(1, &st); err == nil && st.Mode&unix.S_IFMT == unix.S_IFCHR {
		return
	}
	fd, err := unix.Open("/dev/console", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return // keep whatever init gave us
	}
	defer unix.Close(fd)
	if unix.Dup3(fd, 1, 0) == nil {
		_ = unix.Dup3(fd, 2, 0)
	}
}

// setupEnv puts first (the initrd's binary directories, or a root
// filesystem's) in PATH and sets a usable HOME; os/exec resolves argv[0]
// with this PATH.
func setupEnv(first string) {
	path := first
	seen := map[string]bool{}
	for _, d := range strings.Split(first, ":") {
		seen[d] = true
	}
	for _, d := range strings.Split(os.Getenv("PATH"), ":") {
		if d != "" && !seen[d] {
			seen[d] = true
			path += ":" + d
		}
	}
	os.Setenv("PATH", path)
	if os.Getenv("HOME") == "" {
		os.Setenv("HOME", "/")
	}
}

// runCommand runs argv with stdin from /dev/null and stdout/stderr on ours,
// returning its exit status: 0..255, 128+signal if killed by a signal,
// 127 if it cannot be found, 126 if it cannot be executed.
func runCommand(argv []string, dir string) int {
	cmd := exec.Command(argv[0], argv[1:]...)
	// u-root's busybox picks the command from argv[0]. For aliases such as
	// sh (/bin/sh -> ../bbin/gosh -> bb) a bare "sh" cannot be resolved
	// (it looks for ./sh), so pass the full path found in PATH when that is
	// a symlink.
	if !strings.Contains(argv[0], "/") && cmd.Err == nil {
		if fi, err := os.Lstat(cmd.Path); err == nil && fi.Mode()&os.ModeSymlink != 0 {
			cmd.Args[0] = cmd.Path
		}
	}
	cmd.Stdin = nil // os/exec opens /dev/null
	cmd.Stdout = os.Stdout
	cmd.Stderr = os.Stderr
	cmd.Dir = "/"
	if dir != "" {
		cmd.Dir = dir
	}
	err := cmd.Run()
	if err == nil {
		return 0
	}
	if cmd.ProcessState == nil { // never started
		var ee *exec.Error
		if errors.As(err, &ee) {
			err = ee.Err
		}
		fmt.Fprintf(os.Stderr, "guest: %s: %v\n", argv[0], err)
		if errors.Is(err, os.ErrPermission) || errors.Is(err, syscall.ENOEXEC) || errors.Is(err, syscall.EISDIR) {
			return 126
		}
		return 127
	}
	return exitStatus(cmd.ProcessState)
}

// exitStatus maps a finished process to a shell-style status.
func exitStatus(ps *os.ProcessState) int {
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	if c := ps.ExitCode(); c >= 0 {
		return c & 0xff
	}
	return 1
}

func unameInfo() (agentproto.Uname, error) {
	u, err := agentproto.LocalUname()
	if err != nil {
		return u, fmt.Errorf("uname: %w", err)
	}
	return u, nil
}

// uptime returns seconds since boot from /proc/uptime.
func uptime() (float64, error) {
	b, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return 0, err
	}
	return parseUptime(string(b))
}

func parseUptime(s string) (float64, error) {
	f := strings.Fields(s)
	if len(f) == 0 {
		return 0, fmt.Errorf("parse /proc/uptime %q: empty", s)
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return 0, fmt.Errorf("parse /proc/uptime: %w", err)
	}
	return v, nil
}

// milestone writes a 1-byte milestone to the debug port. Failures are not
// fatal: the VMM also sees the console and the reset.
func milestone(code uint8) error {
	return outByte(agentproto.DebugPort, code)
}

// fail reports an unexpected error and shuts down with status 1 (or the
// command's status if it is already known).
func (a *agent) fail(err error) {
	fmt.Fprintf(os.Stderr, "guest: agent: %v\n", err)
	if a.finishing {
		powerOff()
	}
	if a.status >= 0 {
		a.finish(a.status)
	}
	a.finish(1)
}

// finish reports status to the VMM and powers off. It never returns.
func (a *agent) finish(status int) {
	a.status = status
	a.finishing = true
	drainConsole()
	if a.ch == nil || a.ch.send(agentproto.Msg{T: agentproto.MsgExit, Status: status}) != nil {
		_ = outLong(agentproto.DebugPort, agentproto.PackMilestone(agentproto.MilestoneCmdDone, uint32(status)))
	}
	unix.Sync()
	powerOff()
}

// drainConsole waits (bounded) until the console has transmitted everything
// written so far. Done before milestones 0x02 and 0x03 so that for the VMM
// the console output between them is exactly the command's output.
func drainConsole() {
	done := make(chan struct{})
	go func() {
		defer close(done)
		// TCSBRK with a non-zero argument is tcdrain(3); fails harmlessly
		// if fd 1 is not a tty. The kernel returns EINTR (not a restart)
		// when a signal arrives while it waits, and the Go runtime signals
		// its threads (preemption, GC); on a loaded host that cut the
		// drain short and the command's output came after 0x03, where
		// the VMM no longer passes it on. So retry.
		for unix.IoctlSetInt(1, unix.TCSBRK, 1) == unix.EINTR {
		}
	}()
	// The bound only guards against a tty that never drains; it is
	// generous because many guests may share a host CPU (the density
	// test runs 20 at once in a 1-CPU nested L1).
	select {
	case <-done:
	case <-time.After(30 * time.Second):
	}
}

// powerOff resets the machine via the i8042 controller (the VMM treats the
// reset as the end of the VM). Fallback, after 1 s or at once if the port
// write was impossible: reboot(2) (with reboot=k the kernel also resets via
// the i8042). It never returns; as a last resort it exits, and init then
// exits too and the kernel panics (panic=-1 reboots).
func powerOff() {
	errReset := outByte(i8042CommandPort, i8042CmdReset)
	if errReset == nil {
		time.Sleep(time.Second)
	}
	errReboot := unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART)
	time.Sleep(time.Second)
	fmt.Fprintf(os.Stderr, "guest: agent: power off failed: i8042 reset: %v; reboot: %v\n", errReset, errReboot)
	_ = unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	os.Exit(1)
}
