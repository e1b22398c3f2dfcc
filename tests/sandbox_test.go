package tests

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/microvm-dev/microvm/internal/report"
	"golang.org/x/sys/unix"
)

// The sandbox as a running microvm shows it (issue 16, docs/security.md):
// /proc says what the process is, whatever microvm's own report claims.

// spinMemory is the spin guest's RAM, one anonymous mapping of this size:
// 100 MiB, not a multiple of the Go heap's 64 MiB arenas, so that no other
// mapping has it.
const (
	spinMemory     = 100 << 20
	spinMemoryFlag = "100M"
)

// procStatus is /proc/PID[/task/TID]/status as a map of its fields.
func procStatus(t *testing.T, path string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok {
			m[k] = strings.Join(strings.Fields(v), " ")
		}
	}
	return m
}

// wantFields checks fields of a status map.
func wantFields(t *testing.T, who string, st map[string]string, want map[string]string) {
	t.Helper()
	for k, v := range want {
		if st[k] != v {
			t.Errorf("%s: %s is %q, want %q", who, k, st[k], v)
		}
	}
}

// guestRAM finds the guest RAM mapping (findRAM) and checks that it is
// MADV_DONTDUMP where the kernel shows it.
func guestRAM(t *testing.T, pid int) {
	t.Helper()
	addr, flags, smaps := findRAM(pid)
	switch {
	case addr == 0:
		t.Fatalf("no %d-byte anonymous mapping (guest RAM) in /proc/%d/maps", spinMemory, pid)
	case !smaps:
		t.Logf("no /proc/%d/smaps (CONFIG_PROC_PAGE_MONITOR is off in this kernel): guest RAM's dd flag is checked by internal/vmm's TestDontDump", pid)
	case !strings.Contains(" "+flags+" ", " dd "):
		t.Errorf("guest RAM's VmFlags %q lack dd (MADV_DONTDUMP)", flags)
	}
}

// bootReport is the --json line in microvm's output: the last line that
// is a JSON object.
func bootReport(t *testing.T, out string) report.Boot {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(strings.ReplaceAll(out, "\r", "")), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.HasPrefix(lines[i], "{") {
			var b report.Boot
			if err := json.Unmarshal([]byte(lines[i]), &b); err != nil {
				t.Fatalf("--json line %q: %v", lines[i], err)
			}
			return b
		}
	}
	t.Fatalf("no --json line in the output:\n%s", out)
	return report.Boot{}
}

// TestSandboxProc: with the defaults, every thread of a running microvm
// (the vCPU's included) has the filter, no_new_privs and no capabilities;
// the limits are set; guest RAM is MADV_DONTDUMP; and the --json report
// says the same.
func TestSandboxProc(t *testing.T) {
	needKVM(t)
	disk := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(disk, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	p := startOnPty(t, "boot", "--kernel", filepath.Join(guestsDir(t), "spin.elf"), "--memory", spinMemoryFlag,
		"--disk", disk, "--timeout", "5m", "--json")
	waitFor(t, p, 3*time.Minute, "the guest's banner", func() bool { return strings.Contains(p.output(), "microguest: spin") })
	pid := p.cmd.Process.Pid
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"Seccomp": "2", "Seccomp_filters": "1", "NoNewPrivs": "1",
		"CapEff": "0000000000000000", "CapPrm": "0000000000000000", "CapInh": "0000000000000000", "CapAmb": "0000000000000000"}
	if os.Geteuid() == 0 {
		want["CapBnd"] = "0000000000000000" // root may drop it, and does
	}
	for _, task := range tasks {
		st := procStatus(t, fmt.Sprintf("/proc/%d/task/%s/status", pid, task.Name()))
		wantFields(t, "thread "+task.Name()+" ("+st["Name"]+")", st, want)
	}
	t.Logf("%d threads, each with Seccomp 2, NoNewPrivs 1 and no capabilities", len(tasks))
	limits, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range []string{"Max core file size", "Max file size", "Max open files"} {
		for _, line := range strings.Split(string(limits), "\n") {
			if strings.HasPrefix(line, l) {
				t.Logf("%s", line)
				f := strings.Fields(line[len(l):])
				if len(f) < 2 || f[0] != f[1] || f[0] == "unlimited" {
					t.Errorf("%s: soft and hard limits %v, want one finite limit", l, f)
				}
				if l == "Max file size" && f[0] != "1048576" {
					t.Errorf("Max file size %s, want the disk's 1048576", f[0])
				}
			}
		}
	}
	guestRAM(t, pid)
	p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.wait(t, time.Minute); code != 143 {
		t.Fatalf("exit %d after SIGTERM, want 143; output:\n%s", code, p.output())
	}
	p.checkClean(t)
	s := bootReport(t, p.output()).Sandbox
	if s == nil || s.Seccomp != "kill" || s.FilterInstructions == 0 || !s.NoNewPrivs || !s.CapsDropped || s.Dumpable ||
		s.CoreLimit != 0 || s.FSizeLimit != 1<<20 || !s.GuestDontDump {
		t.Errorf("--json sandbox report %+v", s)
	}
}

// TestSandboxModes: --seccomp log and off boot and report themselves;
// off keeps the rest of the sandbox.
func TestSandboxModes(t *testing.T) {
	for _, mode := range []string{"log", "off"} {
		t.Run(mode, func(t *testing.T) {
			r := bootGuest(t, "hello.elf", "--seccomp", mode, "--timeout", "3m", "--json")
			if r.code != 0 {
				t.Fatalf("exit %d", r.code)
			}
			s := bootReport(t, r.stderr).Sandbox
			if s == nil || string(s.Seccomp) != mode || (s.FilterInstructions == 0) != (mode == "off") || !s.NoNewPrivs || !s.CapsDropped || s.Dumpable {
				t.Errorf("--json sandbox report %+v", s)
			}
		})
	}
}

// TestSandboxMemory: another process of microvm's own uid, without
// privileges, can read neither its memory nor its maps; the same reader
// reads an ordinary process of that uid (the control). A helper (this
// test binary, runHelper "memreader") starts microvm and the control as
// its children (so that even Yama's ptrace_scope 1 would allow it), reads
// what root may, then gives up its privileges and tries.
//
//   - root: microvm as root, the reader root without capabilities. Only
//     PR_SET_DUMPABLE 0 stands in its way.
//   - uid: microvm with --uid, --gid and --jail, the reader dropped to the
//     same uid and gid; the ids and the jail show in /proc too.
func TestSandboxMemory(t *testing.T) {
	needKVM(t)
	if os.Geteuid() != 0 {
		t.Skip("not root: the reader must become another user or drop capabilities, and --uid and --jail need root (the nested harness runs the tests as root in L1)")
	}
	for _, as := range []string{"root", "uid"} {
		t.Run(as, func(t *testing.T) {
			jail := filepath.Join(t.TempDir(), "jail") // created by microvm
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), "MICROVM_TEST_HELPER=memreader", "MR_AS="+as, "MR_BIN="+microvmBin(t),
				"MR_GUEST="+filepath.Join(guestsDir(t), "spin.elf"), "MR_JAIL="+jail)
			out, err := cmd.CombinedOutput()
			t.Logf("helper:\n%s", out)
			if err != nil {
				t.Fatalf("helper: %v", err)
			}
			got := map[string]string{}
			for _, l := range strings.Split(string(out), "\n") {
				if k, v, ok := strings.Cut(l, "="); ok {
					got[k] = v
				}
			}
			want := map[string]string{"Seccomp": "2", "NoNewPrivs": "1", "CapEff": "0000000000000000",
				"control_mem": "ok", "vm_mem": "denied", "vm_maps": "denied", "vm_exit": "143",
				"Uid": "0 0 0 0", "Gid": "0 0 0 0", "root": "/"}
			if as == "uid" {
				want["Uid"] = fmt.Sprintf("%d %d %d %d", testUID, testUID, testUID, testUID)
				want["Gid"] = fmt.Sprintf("%d %d %d %d", testGID, testGID, testGID, testGID)
				want["Groups"], want["root"], want["cwd"] = "", jail, jail
			}
			for k, v := range want {
				if got[k] != v {
					t.Errorf("%s = %q, want %q", k, got[k], v)
				}
			}
			if got["ram"] == "0x0" {
				t.Errorf("no guest RAM mapping found in microvm's maps")
			}
			if got["smaps"] == "true" && !strings.Contains(" "+got["ram_flags"]+" ", " dd ") {
				t.Errorf("guest RAM's VmFlags %q lack dd (MADV_DONTDUMP)", got["ram_flags"])
			}
		})
	}
}

// runHelper runs a helper mode of the test binary (MICROVM_TEST_HELPER).
func runHelper(mode string) int {
	var err error
	switch mode {
	case "memreader":
		err = memReader(os.Getenv("MR_AS") == "uid")
	case "sleeper":
		err = sleeper(os.Getenv("MR_AS") == "uid")
	case "api":
		return apiSandboxed()
	default:
		err = fmt.Errorf("unknown helper %q", mode)
	}
	if err != nil {
		fmt.Println("error:", err)
		return 1
	}
	return 0
}

// sleeper is the control: a process of the reader's uid that waits for
// its stdin to close. As root it gives up its capabilities, as the reader
// does: a process may not read one with capabilities it lacks
// (ptrace(2), "Ptrace access mode checking").
func sleeper(asUID bool) error {
	if !asUID {
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var none [2]unix.CapUserData
		if _, _, e := syscall.AllThreadsSyscall(unix.SYS_CAPSET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&none[0])), 0); e != 0 {
			return fmt.Errorf("capset on every thread: %v", e)
		}
	} else {
		if err := dropTo(testUID, testGID); err != nil {
			return err
		}
		// Changing uid made it undumpable (prctl(2)); a process started
		// as that user would not be.
		if err := unix.Prctl(unix.PR_SET_DUMPABLE, 1, 0, 0, 0); err != nil {
			return err
		}
	}
	fmt.Println("sleeping")
	_, err := bufio.NewReader(os.Stdin).ReadString('\n')
	if err == io.EOF {
		err = nil
	}
	return err
}

func dropTo(uid, gid int) error {
	if err := syscall.Setgroups(nil); err != nil {
		return err
	}
	if err := syscall.Setresgid(gid, gid, gid); err != nil {
		return err
	}
	return syscall.Setresuid(uid, uid, uid)
}

// startUntil starts cmd and reads its stdout until a line holds marker;
// the rest of its stdout is discarded.
func startUntil(cmd *exec.Cmd, marker string) error {
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	r := bufio.NewReader(out)
	for {
		l, err := r.ReadString('\n')
		if strings.Contains(l, marker) {
			go io.Copy(io.Discard, r)
			return nil
		}
		if err != nil {
			return fmt.Errorf("%v before %q", err, marker)
		}
	}
}

func memReader(asUID bool) error {
	ctl := exec.Command(os.Args[0], "-test.run=^$")
	ctl.Env = append(os.Environ(), "MICROVM_TEST_HELPER=sleeper")
	stopCtl, _ := ctl.StdinPipe()
	if err := startUntil(ctl, "sleeping"); err != nil {
		return fmt.Errorf("control: %w", err)
	}
	defer ctl.Wait()
	defer stopCtl.Close()
	args := []string{"boot", "--kernel", os.Getenv("MR_GUEST"), "--memory", spinMemoryFlag, "--timeout", "3m"}
	if asUID {
		args = append(args, "--uid", strconv.Itoa(testUID), "--gid", strconv.Itoa(testGID), "--jail", os.Getenv("MR_JAIL"))
	}
	vm := exec.Command(os.Getenv("MR_BIN"), args...)
	var vmErr bytes.Buffer
	vm.Stderr = &vmErr
	if err := startUntil(vm, "microguest: spin"); err != nil {
		return fmt.Errorf("microvm: %w", err)
	}
	pid := vm.Process.Pid
	defer vm.Process.Kill()
	// As root (CAP_SYS_PTRACE): what the process is.
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return err
	}
	for _, l := range strings.Split(string(st), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok {
			fmt.Printf("%s=%s\n", k, strings.Join(strings.Fields(v), " "))
		}
	}
	for _, link := range []string{"root", "cwd"} {
		v, err := os.Readlink(fmt.Sprintf("/proc/%d/%s", pid, link))
		fmt.Printf("%s=%s\n%s_err=%v\n", link, v, link, err)
	}
	ram, flags, smaps := findRAM(pid)
	fmt.Printf("ram=%#x\nram_flags=%s\nsmaps=%v\n", ram, flags, smaps)
	// The control's first mapping (its ELF header).
	maps, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", ctl.Process.Pid))
	if err != nil {
		return err
	}
	start, _, _ := strings.Cut(string(maps), "-")
	ctlAddr, _ := strconv.ParseUint(start, 16, 64)

	// Give up the privileges. Capabilities are per thread: this
	// goroutine stays on the thread that drops them and does the reads.
	runtime.LockOSThread()
	if asUID {
		err = dropTo(testUID, testGID)
	} else {
		var none [2]unix.CapUserData
		err = unix.Capset(&unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}, &none[0])
	}
	if err != nil {
		return fmt.Errorf("give up privileges: %w", err)
	}
	for _, m := range []struct {
		key  string
		pid  int
		addr uint64
	}{{"control_mem", ctl.Process.Pid, ctlAddr}, {"vm_mem", pid, ram}} {
		v, err := readMem(m.pid, m.addr)
		fmt.Printf("%s=%s\n%s_err=%v\n", m.key, v, m.key, err)
	}
	if f, err := os.Open(fmt.Sprintf("/proc/%d/maps", pid)); err == nil {
		f.Close()
		fmt.Println("vm_maps=readable")
	} else {
		fmt.Printf("vm_maps=denied\nvm_maps_err=%v\n", err)
	}
	vm.Process.Signal(syscall.SIGTERM) // the same uid: allowed
	done := make(chan error, 1)
	go func() { done <- vm.Wait() }()
	select {
	case err := <-done:
		code, _ := exitCode(err)
		fmt.Printf("vm_exit=%d\nmicrovm stderr: %q\n", code, vmErr.String())
	case <-time.After(time.Minute):
		return errors.New("microvm did not exit after SIGTERM")
	}
	return nil
}

// findRAM returns the start of the spinMemory-sized anonymous mapping
// (guest RAM) in /proc/PID/maps, or 0, and its VmFlags from smaps where
// the kernel has it (CONFIG_PROC_PAGE_MONITOR).
func findRAM(pid int) (addr uint64, flags string, smaps bool) {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l) // range perms offset dev inode [path]
		if len(f) != 5 || f[4] != "0" {
			continue
		}
		s, e, _ := strings.Cut(f[0], "-")
		start, _ := strconv.ParseUint(s, 16, 64)
		end, _ := strconv.ParseUint(e, 16, 64)
		if end-start == spinMemory {
			addr = start
			break
		}
	}
	sm, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps", pid))
	if addr == 0 || err != nil {
		return addr, "", false
	}
	_, rest, _ := strings.Cut("\n"+string(sm), fmt.Sprintf("\n%x-", addr))
	_, flags, _ = strings.Cut(rest, "VmFlags:")
	flags, _, _ = strings.Cut(flags, "\n")
	return addr, strings.TrimSpace(flags), true
}

// readMem reads 16 bytes of process pid's memory at addr: "ok", or
// "denied" and why.
func readMem(pid int, addr uint64) (string, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/mem", pid))
	if err != nil {
		return "denied", err
	}
	defer f.Close()
	if _, err := f.ReadAt(make([]byte, 16), int64(addr)); err != nil {
		return "denied", err
	}
	return "ok", nil
}
