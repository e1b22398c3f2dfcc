package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"text/tabwriter"

	"github.com/microvm-dev/microvm"
	"github.com/microvm-dev/microvm/internal/agent"
	"github.com/microvm-dev/microvm/internal/report"
)

// compare --rootfs: the same directory once in a container and once in a
// microVM, both started the same way (exec of a fresh process) and timed
// the same way (to the first byte of `uname -r`'s output on stdout).

// firstOutput runs argv, and returns the time from exec to the first byte
// on its stdout, and all of its stdout. A non-zero exit is an error naming
// the last lines of its stderr.
func firstOutput(ctx context.Context, limit time.Duration, argv ...string) (float64, string, error) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	pr, err := cmd.StdoutPipe()
	if err != nil {
		return 0, "", err
	}
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, "", err
	}
	var first time.Duration
	var out bytes.Buffer
	br := bufio.NewReader(pr)
	if b, err := br.ReadByte(); err == nil {
		first = time.Since(t0)
		out.WriteByte(b)
	}
	io.Copy(&out, br)
	if err := cmd.Wait(); err != nil {
		return 0, out.String(), fmt.Errorf("%s: %v: %s", filepath.Base(argv[0]), err, lastLines(stderr.String(), 3))
	}
	if first == 0 {
		return 0, "", fmt.Errorf("%s printed nothing: %s", filepath.Base(argv[0]), lastLines(stderr.String(), 3))
	}
	return ms(first), out.String(), nil
}

// timeRuns is firstOutput n times; every run must print the same trimmed
// output, which it returns with the times.
func timeRuns(ctx context.Context, n int, limit time.Duration, argv ...string) ([]float64, string, error) {
	var times []float64
	var want string
	for i := 0; i < n; i++ {
		t, out, err := firstOutput(ctx, limit, argv...)
		if err != nil {
			return nil, "", err
		}
		out = strings.TrimSpace(out)
		if i > 0 && out != want {
			return nil, "", fmt.Errorf("run %d printed %q, run 1 %q", i+1, out, want)
		}
		want = out
		times = append(times, t)
	}
	return times, want, nil
}

func median(v []float64) float64 {
	return newStat("", append([]float64(nil), v...)).Median
}

// treeBytes is the disk space the tree at dir takes: allocated blocks of
// every entry, symlinks not followed, hard links counted once, other
// filesystems (/proc under --rootfs /) left out.
func treeBytes(dir string) (int64, error) {
	var root syscall.Stat_t
	if err := syscall.Stat(dir, &root); err != nil {
		return 0, err
	}
	type ino struct{ dev, ino uint64 }
	seen := map[ino]bool{}
	var total int64
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil // unreadable entries are not ours to count
		}
		var st syscall.Stat_t
		if syscall.Lstat(p, &st) != nil {
			return nil
		}
		if st.Dev != root.Dev {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		k := ino{st.Dev, st.Ino}
		if st.Nlink > 1 && !d.IsDir() {
			if seen[k] {
				return nil
			}
			seen[k] = true
		}
		total += st.Blocks * 512
		return nil
	})
	return total, err
}

// pss is the proportional set size of process pid (shared pages split
// among their users, so a library shared with the rest of the host counts
// only its share).
func pss(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "Pss:" {
			kb, err := strconv.ParseUint(f[1], 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("pid %d: no Pss in smaps_rollup", pid)
}

// podmanArgs is how podman runs a plain directory here: with runc, since
// podman's default crun refuses these machines' hybrid cgroup hierarchy,
// and explicit ulimits, without which runc's setrlimit fails with EPERM
// (../shared/notes/kvm-on-these-machines.md).
func podmanArgs(podman, dir string, extra ...string) []string {
	args := []string{podman, "run", "--rm"}
	if runc, err := exec.LookPath("runc"); err == nil {
		args = append(args, "--runtime", runc)
	}
	args = append(args, "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024", "--network", "none")
	args = append(args, extra...)
	return append(args, "--rootfs", dir)
}

// measureRootfsContainer fills the container column for dir with podman:
// runs of `uname -r`, then one idle `sleep` container for its memory. nil
// and one line of why if no engine runs here.
func measureRootfsContainer(ctx context.Context, dir string, runs int) (*report.ContainerSide, string) {
	podman, err := exec.LookPath("podman")
	if err != nil {
		return nil, "no container engine here: podman is not installed (make compare installs it)"
	}
	c := &report.ContainerSide{Engine: "podman", Image: dir, HostRelease: agent.HostUname().Release}
	if b, err := exec.CommandContext(ctx, podman, "--version").Output(); err == nil {
		c.Engine = strings.TrimSpace(string(b))
	}
	c.Command = append(podmanArgs(podman, dir), "uname", "-r")
	times, rel, err := timeRuns(ctx, runs, 2*time.Minute, c.Command...)
	if err != nil {
		return nil, "no container engine runs here: " + err.Error()
	}
	c.FirstOutputMS, c.FirstOutputMedianMS, c.Release = times, median(times), rel
	c.RunMS = c.FirstOutputMedianMS
	c.SharedKernel = c.Release == c.HostRelease
	c.ImageBytes, _ = treeBytes(dir)
	if why := containerMemory(ctx, podman, dir, c); why != "" {
		c.UnmeasuredWhy = why
	}
	return c, ""
}

// containerMemory starts one detached container sleeping in dir and reads
// the PSS of its monitor (conmon) and its processes; "" or why not.
func containerMemory(ctx context.Context, podman, dir string, c *report.ContainerSide) string {
	name := fmt.Sprintf("microvm-compare-%d", os.Getpid())
	argv := podmanArgs(podman, dir, "-d", "--name", name)
	argv = append(argv, "sleep", "120")
	if b, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput(); err != nil {
		return fmt.Sprintf("memory not measured: podman run -d ... sleep: %v: %s", err, lastLines(string(b), 2))
	}
	defer exec.Command(podman, "rm", "-f", "-t", "0", name).Run()
	b, err := exec.CommandContext(ctx, podman, "inspect", "--format", "{{.State.ConmonPid}} {{.State.Pid}}", name).Output()
	f := strings.Fields(string(b))
	if err != nil || len(f) != 2 {
		return fmt.Sprintf("memory not measured: podman inspect: %v %q", err, b)
	}
	conmon, _ := strconv.Atoi(f[0])
	pid, _ := strconv.Atoi(f[1])
	// Let the sleep settle (exec done, libraries mapped) before reading.
	time.Sleep(500 * time.Millisecond)
	mon, err1 := pss(conmon)
	work, err2 := pss(pid)
	if err := errors.Join(err1, err2); err != nil {
		return "memory not measured: " + err.Error()
	}
	c.MonitorPSSBytes, c.WorkloadPSSBytes = mon, work
	c.OverheadBytes = mon
	c.MemAvailable = microvm.MemAvailable()
	if mon+work > 0 {
		c.ContainersFit = c.MemAvailable / (mon + work)
	}
	return ""
}

// compareRootfs finishes `compare --rootfs DIR`: v has the VM's memory and
// release from one boot; this times runs fresh `microvm run --rootfs DIR`
// children, measures the container column (or takes it from given, measured
// on the outer host), and prints both.
func compareRootfs(e *env, f *vmFlags, v report.VMSide, dir string, runs int, given *report.Compare) int {
	self, err := os.Executable()
	if err != nil {
		return fail(microvm.CodeInternal, "compare: %v", err)
	}
	if outer := os.Getenv("MICROVM_OUTER_HOST"); outer != "" {
		// Set by the nested harness (scripts/compare.sh, demo.sh): this
		// "host" is its L1, under QEMU TCG, not the machine the container
		// column ran on.
		v.Where = "inside the nested harness's L1 (QEMU TCG)"
	}
	v.RootfsBytes, _ = treeBytes(dir)
	v.DiskBytes += v.RootfsBytes
	fmt.Fprintf(os.Stderr, "microvm: compare: %d timed VM starts (microvm run --rootfs %s -- uname -r)...\n", runs, dir)
	argv := append([]string{self, "run"}, runArgs(f, "uname", "-r")...)
	times, rel, err := timeRuns(e.ctx, runs, f.timeout+time.Minute, argv...)
	if err != nil {
		return fail(microvm.CodeInternal, "compare: the VM column: %v", err)
	}
	if rel != v.GuestRelease {
		return fail(microvm.CodeInternal, "compare: timed VM runs printed %q, the measured boot %q", rel, v.GuestRelease)
	}
	v.FirstOutputMS, v.FirstOutputMedianMS = times, median(times)

	out := report.Compare{VM: v, Rootfs: dir}
	if given != nil {
		out.Container, out.ContainerNote = given.Container, given.ContainerNote
		if given.Rootfs != "" && out.Container != nil {
			out.Container.Image = given.Rootfs + " (on the outer host)"
		}
	} else {
		fmt.Fprintf(os.Stderr, "microvm: compare: %d timed container starts (podman run --rootfs %s uname -r)...\n", runs, dir)
		out.Container, out.ContainerNote = measureRootfsContainer(e.ctx, dir, runs)
	}
	if f.json {
		b, _ := json.MarshalIndent(out, "", "  ")
		fmt.Println(string(b))
		return 0
	}
	printRootfsCompare(os.Stdout, out)
	return 0
}

// printRootfsCompare is the seed's table, both columns from measurements;
// a column without them stays empty.
func printRootfsCompare(w io.Writer, out report.Compare) {
	v, c := out.VM, out.Container
	col := func(format string, a ...any) string {
		if c == nil {
			return ""
		}
		return fmt.Sprintf(format, a...)
	}
	cs := report.ContainerSide{}
	if c != nil {
		cs = *c
	}
	where := "measured here"
	if v.Where != "" {
		where = "measured " + v.Where
	}
	tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
	fmt.Fprintf(tw, "rootfs %s\t%s\t%s\n", out.Rootfs, col("CONTAINER (%s, on the host)", cs.Engine), "VM (microvm, "+where+")")
	fmt.Fprintf(tw, "start: exec to first output of `uname -r`\t%s\t%.0f ms (median of %d)\n",
		col("%.0f ms (median of %d)", cs.FirstOutputMedianMS, len(cs.FirstOutputMS)), v.FirstOutputMedianMS, len(v.FirstOutputMS))
	fmt.Fprintf(tw, "disk\t%s\t%.1f MiB (rootfs %.1f + kernel %.1f + initrd %.1f)\n",
		col("%.1f MiB (rootfs)", mib(uint64(cs.ImageBytes))), mib(uint64(v.DiskBytes)), mib(uint64(v.RootfsBytes)), mib(uint64(v.KernelBytes)), mib(uint64(v.InitrdBytes)))
	memC, fitC := col("not measured: %s", cs.UnmeasuredWhy), col("not measured")
	if c != nil && cs.UnmeasuredWhy == "" {
		memC = fmt.Sprintf("%.1f MiB (conmon PSS; the idle container's own processes %.1f MiB)", mib(cs.MonitorPSSBytes), mib(cs.WorkloadPSSBytes))
		fitC = fmt.Sprintf("%d idle containers (%.1f GiB available / %.1f MiB each)", cs.ContainersFit, gib(cs.MemAvailable), mib(cs.MonitorPSSBytes+cs.WorkloadPSSBytes))
	}
	fmt.Fprintf(tw, "memory overhead\t%s\t%.1f MiB (VMM RSS %.1f MiB - guest RAM touched %.1f MiB)\n", memC, mib(v.OverheadBytes), mib(v.HostRSSBytes), mib(v.GuestRAMBytes))
	fmt.Fprintf(tw, "density in free memory\t%s\t%d guests of %d MiB (%.1f GiB available / (%d MiB + overhead))\n", fitC, v.GuestsFit, v.GuestMemory>>20, gib(v.MemAvailable), v.GuestMemory>>20)
	shared := "NOT the host's " + cs.HostRelease
	if cs.SharedKernel {
		shared = "the host's (uname -r there: " + cs.HostRelease + ")"
	}
	vmHost := "host"
	if v.Where != "" {
		vmHost = "its host, L1"
	}
	fmt.Fprintf(tw, "kernel release it sees\t%s\t%s, the guest's own (%s: %s)\n", col("%s, %s", cs.Release, shared), v.GuestRelease, vmHost, v.HostRelease)
	diff := "no: it runs on the host's kernel"
	if c != nil && !cs.SharedKernel {
		diff = "not shown: it did not report the host's release"
	}
	fmt.Fprintf(tw, "can run a different kernel\t%s\t%s\n", col("%s", diff), givenKernel(v))
	tw.Flush()
	if out.ContainerNote != "" {
		fmt.Fprintln(w, "\ncontainer: "+out.ContainerNote)
	}
}
