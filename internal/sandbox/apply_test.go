package sandbox

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The denial tests re-execute this test binary as a child (childEnv names
// the attempt and the mode) that applies the sandbox with the allowlist of
// a machine, then makes one call. In kill mode the child must die of
// SIGSYS; in log mode the call must fail with EPERM and the child goes on.

const childEnv = "SANDBOX_TEST_CHILD"

func TestMain(m *testing.M) {
	if c := os.Getenv(childEnv); c != "" {
		os.Exit(child(c))
	}
	os.Exit(m.Run())
}

// attempts are what an attacker in the VMM would try first.
var attempts = map[string]func() error{
	"execve": func() error { return syscall.Exec("/bin/true", []string{"true"}, nil) },
	"socket": func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
		if err == nil {
			unix.Close(fd)
		}
		return err
	},
	"open": func() error {
		f, err := os.Open("/etc/passwd")
		if err == nil {
			f.Close()
		}
		return err
	},
	"ptrace": func() error { return unix.PtraceAttach(os.Getppid()) },
	"fork": func() error {
		pid, _, errno := unix.RawSyscall(unix.SYS_FORK, 0, 0, 0)
		if errno == 0 && pid == 0 {
			unix.RawSyscall(unix.SYS_EXIT_GROUP, 0, 0, 0) // the forked copy
		}
		return errnoErr(errno)
	},
	"os/exec": func() error { return exec.Command("/bin/true").Run() },
	"mount":   func() error { return unix.Mount("none", "/mnt", "tmpfs", 0, "") },
}

func errnoErr(e syscall.Errno) error {
	if e == 0 {
		return nil
	}
	return e
}

// child applies the sandbox and runs attempt c ("NAME MODE"); "threads"
// instead reports readiness and waits on stdin so that the parent can read
// every thread's /proc status.
func child(c string) int {
	name, mode, _ := strings.Cut(c, " ")
	// Threads that exist before Apply: TSYNC must reach them too.
	for i := 0; i < 3; i++ {
		go func() {
			runtime.LockOSThread()
			select {}
		}()
	}
	time.Sleep(10 * time.Millisecond)
	r, err := Apply(Options{Seccomp: Mode(mode), Needs: Needs{Ioctls: testIoctls}})
	if err != nil {
		fmt.Println("apply:", err)
		return 1
	}
	if name == "threads" {
		// A thread created after the filter: the runtime's clone passes.
		started := make(chan struct{})
		go func() {
			runtime.LockOSThread()
			close(started)
			select {}
		}()
		<-started
		runtime.GC()
		fmt.Printf("ready %d instructions\n", r.FilterInstructions)
		bufio.NewReader(os.Stdin).ReadString('\n')
		return 0
	}
	err = attempts[name]()
	fmt.Printf("result: %v (EPERM=%v)\n", err, errors.Is(err, unix.EPERM))
	return 0
}

func startChild(t *testing.T, c string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+c)
	return cmd
}

func TestDenials(t *testing.T) {
	for name := range attempts {
		for _, mode := range []Mode{Kill, Log} {
			t.Run(name+"/"+string(mode), func(t *testing.T) {
				out, err := startChild(t, name+" "+string(mode)).CombinedOutput()
				var ee *exec.ExitError
				switch mode {
				case Kill:
					if !errors.As(err, &ee) {
						t.Fatalf("child was not killed: %v\n%s", err, out)
					}
					ws := ee.Sys().(syscall.WaitStatus)
					if !ws.Signaled() || ws.Signal() != syscall.SIGSYS {
						t.Fatalf("child ended with %v, want death by SIGSYS\n%s", ws, out)
					}
				case Log:
					if err != nil || !strings.Contains(string(out), "EPERM=true") {
						t.Fatalf("child: %v, want the call to fail with EPERM\n%s", err, out)
					}
				}
			})
		}
	}
}

// TestAllThreads: after Apply every thread of the process, those that
// existed and one created afterwards, has the filter, no_new_privs and no
// capabilities.
func TestAllThreads(t *testing.T) {
	cmd := startChild(t, "threads kill")
	in, _ := cmd.StdinPipe()
	outp, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer in.Close()
	line, _ := bufio.NewReader(outp).ReadString('\n')
	if !strings.HasPrefix(line, "ready") {
		t.Fatalf("child: %q", line)
	}
	t.Logf("child %d: %s", cmd.Process.Pid, strings.TrimSpace(line))
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	if len(tasks) < 5 {
		t.Errorf("%d threads, want at least 5 (main, 3 before, 1 after)", len(tasks))
	}
	for _, task := range tasks {
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/status", cmd.Process.Pid, task.Name()))
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"Seccomp:\t2", "NoNewPrivs:\t1", "CapEff:\t0000000000000000", "CapPrm:\t0000000000000000", "CapAmb:\t0000000000000000"} {
			if !strings.Contains(string(st), want+"\n") {
				t.Errorf("thread %s: status lacks %q", task.Name(), want)
			}
		}
		if os.Geteuid() == 0 && !strings.Contains(string(st), "CapBnd:\t0000000000000000\n") {
			t.Errorf("thread %s: bounding set not empty", task.Name())
		}
	}
}
