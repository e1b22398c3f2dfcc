package tests

import (
	"encoding/json"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Linux-boot tests: the project's own kernel and u-root initrd, booted by the
// real microvm binary. Under the nested harness they run inside L1.

const linuxLimit = 3 * time.Minute

func linuxArtifacts(t *testing.T) (kernel, initrd string) {
	t.Helper()
	needKVM(t)
	kernel, initrd = os.Getenv("MICROVM_KERNEL"), os.Getenv("MICROVM_INITRD")
	if kernel == "" || initrd == "" {
		t.Fatal("MICROVM_KERNEL and MICROVM_INITRD must be set (tests/run.sh sets them after make kernel initrd)")
	}
	return kernel, initrd
}

// linuxCmd runs `microvm SUB --kernel K --initrd I ARGS...` on the built
// kernel and initrd within limit, and logs the outcome.
func linuxCmd(t *testing.T, limit time.Duration, sub string, args ...string) result {
	t.Helper()
	kernel, initrd := linuxArtifacts(t)
	args = append([]string{sub, "--kernel", kernel, "--initrd", initrd}, args...)
	r := runMicrovm(t, limit, args...)
	t.Logf("microvm %s: exit %d in %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.code, r.elapsed, r.stdout, r.stderr)
	return r
}

// linuxJSON is linuxCmd with --json: SUB must exit 0, and its stdout is
// decoded into v.
func linuxJSON(t *testing.T, limit time.Duration, v any, sub string, args ...string) result {
	t.Helper()
	r := linuxCmd(t, limit, sub, append(args, "--json")...)
	if r.code != 0 {
		t.Fatalf("exit code %d", r.code)
	}
	if err := json.Unmarshal([]byte(r.stdout), v); err != nil {
		t.Fatalf("%s --json output %q: %v", sub, r.stdout, err)
	}
	return r
}

// microvmRun runs argv in a Linux guest with `microvm run`, flags added.
func microvmRun(t *testing.T, flags []string, argv ...string) result {
	t.Helper()
	args := append(append([]string{"--timeout", "2m"}, flags...), "--")
	return linuxCmd(t, linuxLimit, "run", append(args, argv...)...)
}

func TestLinuxUname(t *testing.T) {
	var out struct {
		Host, Guest struct{ Release, Machine string }
		BootToInit  float64 `json:"boot_to_init_ms"`
	}
	linuxJSON(t, linuxLimit, &out, "uname", "--timeout", "2m")
	want := os.Getenv("MICROVM_KERNEL_RELEASE")
	if want == "" || out.Guest.Release != want {
		t.Errorf("guest release %q, want the built kernel's %q", out.Guest.Release, want)
	}
	host := os.Getenv("MICROVM_HOST_RELEASE")
	if host == "" {
		host = out.Host.Release
	}
	if out.Guest.Release == host || out.Guest.Release == out.Host.Release {
		t.Errorf("guest release %q equals the host's (%q, or %q as microvm saw it)", out.Guest.Release, host, out.Host.Release)
	}
	// In the nested harness microvm's host is L1, whose kernel is
	// Debian's stock one: the machine, L1 and the guest run three
	// different kernels, the point `make demo` makes.
	if os.Getenv("MICROVM_NESTED") == "1" && out.Host.Release == host {
		t.Errorf("L1 runs the machine's own kernel release %q", host)
	}
	if out.Guest.Machine != "x86_64" || out.BootToInit <= 0 {
		t.Errorf("guest machine %q, boot to init %v ms", out.Guest.Machine, out.BootToInit)
	}
}

func TestLinuxRunExitStatus(t *testing.T) {
	r := microvmRun(t, nil, "sh", "-c", "echo out-$((6*7)); exit 7")
	if r.code != 7 {
		t.Fatalf("exit code %d, want 7", r.code)
	}
	if !strings.Contains(r.stdout, "out-42") {
		t.Errorf("command output missing from stdout")
	}
	if strings.Contains(r.stdout, "Linux version") {
		t.Errorf("kernel log leaked into the command's stdout")
	}
}

// TestLinuxVmlinux boots the uncompressed ELF vmlinux, entered in 64-bit
// mode at e_entry like a micro-guest, instead of the bzImage.
func TestLinuxVmlinux(t *testing.T) {
	vmlinux := os.Getenv("MICROVM_VMLINUX")
	if vmlinux == "" {
		t.Fatal("MICROVM_VMLINUX must be set (tests/run.sh sets it)")
	}
	r := microvmRun(t, []string{"--kernel", vmlinux}, "uname", "-r")
	if want := os.Getenv("MICROVM_KERNEL_RELEASE"); r.code != 0 || strings.TrimSpace(r.stdout) != want {
		t.Fatalf("exit %d, uname -r %q, want %q", r.code, r.stdout, want)
	}
}

// Under the nested harness this needs an L1 with at least 2 CPUs: in a 1-CPU
// L1 a 2-vCPU guest can freeze L1 for good (tests/nested/NOTES.md).
func TestLinuxSMP(t *testing.T) {
	r := microvmRun(t, []string{"--cpus", "2"}, "cat", "/sys/devices/system/cpu/online")
	if r.code != 0 || strings.TrimSpace(r.stdout) != "0-1" {
		t.Fatalf("exit %d, online CPUs %q, want 0-1", r.code, r.stdout)
	}
}

func TestLinuxMemory(t *testing.T) {
	r := microvmRun(t, []string{"--memory", "512M"}, "cat", "/proc/meminfo")
	if r.code != 0 {
		t.Fatalf("exit code %d", r.code)
	}
	for _, l := range strings.Split(r.stdout, "\n") {
		f := strings.Fields(l)
		if len(f) >= 2 && f[0] == "MemTotal:" {
			kb, _ := strconv.Atoi(f[1])
			// The kernel reserves some of it; expect 400-512 MiB.
			if kb < 400<<10 || kb > 512<<10 {
				t.Fatalf("MemTotal %d kB for --memory 512M", kb)
			}
			return
		}
	}
	t.Fatal("no MemTotal in /proc/meminfo")
}

func TestLinuxCmdline(t *testing.T) {
	r := microvmRun(t, []string{"--cmdline", "microvm.test=hello42"}, "cat", "/proc/cmdline")
	if r.code != 0 || !strings.Contains(r.stdout, "microvm.test=hello42") {
		t.Fatalf("exit %d, /proc/cmdline %q", r.code, r.stdout)
	}
}

func TestLinuxPanic(t *testing.T) {
	// A missing init= makes the kernel panic ("Requested init ... failed");
	// with panic=-1 it reboots at once, which must be reported as a crash.
	r := linuxCmd(t, linuxLimit, "boot", "--timeout", "2m",
		"--cmdline", "console=ttyS0 reboot=k panic=-1 quiet rdinit=/nonexistent init=/nonexistent")
	if r.code != 3 {
		t.Fatalf("exit code %d, want 3; stderr %q", r.code, r.stderr)
	}
	if !strings.Contains(r.stderr, "kernel panic") {
		t.Errorf("stderr %q does not report the kernel panic", r.stderr)
	}
}

// A guest that powered off (all CPUs halted) leaves nothing behind: later
// boots in the same L1 were measured to be unaffected (tests/nested/NOTES.md).
func TestLinuxRebootAndPoweroff(t *testing.T) {
	// u-root has no reboot command; its shutdown does RESTART. Without ACPI
	// a poweroff halts every CPU with interrupts off, which microvm detects.
	for _, argv := range [][]string{{"shutdown", "reboot"}, {"poweroff"}} {
		t.Run(argv[0], func(t *testing.T) {
			r := microvmRun(t, nil, argv...)
			if r.code != 0 {
				t.Fatalf("guest %v: exit code %d, want 0", argv, r.code)
			}
			if !strings.Contains(r.stderr, "before the command reported") {
				t.Errorf("stderr %q: the guest should have gone down before the agent reported", r.stderr)
			}
		})
	}
}

// TestLinuxClockNoCalibration: the guest takes its TSC frequency from KVM's
// paravirtual clock (kvmclock sets X86_FEATURE_TSC_KNOWN_FREQ, so Linux's
// arch/x86/kernel/tsc.c neither calibrates against the PIT nor refines the
// frequency a second later), and its delay loop from that TSC (issue 17).
// Its own log says so.
func TestLinuxClockNoCalibration(t *testing.T) {
	r := microvmRun(t, nil, "dmesg")
	if r.code != 0 {
		t.Fatalf("exit code %d", r.code)
	}
	log := r.stdout
	for _, want := range []string{"kvm-clock: Using msrs", "tsc: Detected", "Calibrating delay loop (skipped)"} {
		if !strings.Contains(log, want) {
			t.Errorf("guest log lacks %q", want)
		}
	}
	for _, bad := range []string{"calibration using PIT", "Fast TSC calibration", "Refined TSC clocksource calibration", "TSC calibration failed"} {
		if strings.Contains(log, bad) {
			t.Errorf("guest log has %q: the guest calibrated its TSC", bad)
		}
	}
}
