package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/microvm-dev/microvm"
	"github.com/microvm-dev/microvm/internal/agent"
	"github.com/microvm-dev/microvm/internal/report"
)

func runCompare(e *env, args []string) int {
	fs, f := agentFlags("compare")
	runs := fs.Int("runs", 5, "with --rootfs: timed starts per column (the table shows their median)")
	containerOnly := fs.Bool("container-only", false, "with --rootfs: measure only the container column and print it as JSON (the nested harness runs this on the host, the VM column inside L1)")
	containerJSON := fs.String("container-json", "", "with --rootfs: take the container column from this `file`, the output of --container-only on the host")
	if done, code := parseFlags(fs, "compare [--rootfs DIR [--runs N] [--container-only | --container-json FILE]] [--kernel K] [--initrd I] [--memory M] [--json]", args); done {
		return code
	}
	if fs.NArg() > 0 {
		return fail(microvm.CodeUsage, "compare: unexpected argument %q", fs.Arg(0))
	}
	rootfs, _, _ := strings.Cut(f.rootfs, ",")
	switch {
	case rootfs == "" && (*containerOnly || *containerJSON != "" || fs.Changed("runs")):
		return fail(microvm.CodeUsage, "compare: --runs, --container-only and --container-json need --rootfs")
	case *runs < 1 || *runs > 100:
		return fail(microvm.CodeUsage, "compare: --runs %d: want 1 to 100", *runs)
	case *containerOnly && *containerJSON != "":
		return fail(microvm.CodeUsage, "compare: --container-only and --container-json exclude each other")
	case rootfs != "" && strings.Contains(f.rootfs, ",rw"):
		// The container must see the same tree the VM saw; a guest
		// writing through would change it between the columns.
		return fail(microvm.CodeUsage, "compare: --rootfs %s: compare runs the directory read-only (drop ,rw)", f.rootfs)
	}
	if rootfs != "" {
		if st, err := os.Stat(rootfs); err != nil || !st.IsDir() {
			return fail(microvm.CodeUsage, "compare: --rootfs %s: not a directory", rootfs)
		}
	}
	if *containerOnly {
		c, note := measureRootfsContainer(e.ctx, rootfs, *runs)
		b, _ := json.MarshalIndent(report.Compare{Container: c, ContainerNote: note, Rootfs: rootfs}, "", "  ")
		fmt.Println(string(b))
		return 0
	}
	var given *report.Compare
	if *containerJSON != "" {
		b, err := os.ReadFile(*containerJSON)
		given = &report.Compare{}
		if err == nil {
			err = json.Unmarshal(b, given)
		}
		if err != nil {
			return fail(microvm.CodeUsage, "compare: --container-json %s: %v", *containerJSON, err)
		}
	}
	if err := f.defaults(); err != nil {
		return failErr(err)
	}
	if f.timeout == 0 {
		f.timeout = 5 * time.Minute
	}
	cfg, err := f.config(e.start)
	if err != nil {
		return failErr(err)
	}
	if rootfs != "" {
		// compare --rootfs goes on to run the container engine and fresh
		// microvm processes after this guest, which a sandboxed process
		// cannot (no exec): this one measuring guest runs unsandboxed.
		cfg.NoSandbox = true
		cfg.Seccomp = microvm.SeccompDefault // --seccomp's default "kill" means the sandbox's
	}
	// Everything measured on the host comes first: once the guest is set
	// up this process is sandboxed, and can neither open files nor run a
	// container engine. Their time is taken out of exec to init.
	t0 := time.Now()
	v := report.VMSide{
		KernelBytes:  fileSize(cfg.Kernel),
		InitrdBytes:  fileSize(cfg.Initrd),
		GuestMemory:  cfg.Memory,
		MemAvailable: microvm.MemAvailable(),
		HostRelease:  agent.HostUname().Release,
		// The proof that a VM runs a kernel of its own choosing: the
		// release the guest reports is the one written in the --kernel
		// image, whatever the host runs (inside the nested harness the L1
		// host happens to run the same image).
		ImageRelease: imageRelease(cfg.Kernel),
	}
	var c *report.ContainerSide
	var note string
	if rootfs == "" {
		c, note = measureContainer(e.ctx)
	}
	hostWork := time.Since(t0)
	fmt.Fprintln(os.Stderr, "microvm: compare: booting the guest to run `uname -r` (memory and release)...")
	var out agent.Capture
	cfg.Stdout = &out
	cfg.Command = []string{"uname", "-r"}
	vm, err := microvm.Start(e.ctx, cfg)
	if err != nil {
		if e.ctx.Err() != nil {
			return microvm.CodeInternal
		}
		return failErr(err)
	}
	res, err := vm.Wait()
	if err != nil || res.ExitCode != 0 || res.GuestStatus != 0 {
		if e.signal() != nil {
			return microvm.CodeInternal
		}
		os.Stderr.Write(res.BootLog)
		return fail(max(res.ExitCode, microvm.CodeInternal), "compare: the guest did not run `uname -r` (exit: %s %s, err %v)", res.Reason, res.Detail, err)
	}
	v.HostRSSBytes, v.GuestRAMBytes = res.HostRSS, res.GuestResident
	v.GuestRelease = strings.TrimSpace(out.String())
	if at, ok := report.PhaseAt(res.Timeline, microvm.PhaseInit); ok {
		v.StartToInitMS = ms(at - hostWork)
	}
	v.DiskBytes = v.KernelBytes + v.InitrdBytes
	if v.HostRSSBytes > v.GuestRAMBytes {
		v.OverheadBytes = v.HostRSSBytes - v.GuestRAMBytes
	}
	v.GuestsFit = v.MemAvailable / (v.GuestMemory + v.OverheadBytes)
	v.RunsGivenKernel = v.GuestRelease != "" && v.GuestRelease == v.ImageRelease

	if rootfs != "" {
		return compareRootfs(e, f, v, rootfs, *runs, given)
	}
	if f.json {
		b, _ := json.MarshalIndent(report.Compare{VM: v, Container: c, ContainerNote: note}, "", "  ")
		fmt.Println(string(b))
		return 0
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 3, ' ', 0)
	dash := func(s string) string {
		if c == nil {
			return ""
		}
		return s
	}
	cs := report.ContainerSide{}
	if c != nil {
		cs = *c
	}
	fmt.Fprintln(tw, "\tCONTAINER\tVM (microvm, measured here)")
	fmt.Fprintf(tw, "start time to init\t%s\t%.0f ms (exec to guest init)\n", dash(fmt.Sprintf("%.0f ms (whole `run --rm`)", cs.RunMS)), v.StartToInitMS)
	fmt.Fprintf(tw, "on-disk size\t%s\t%.1f MiB (kernel %.1f + initrd %.1f)\n", dash(fmt.Sprintf("%.1f MiB (image %s)", mib(uint64(cs.ImageBytes)), cs.Image)), mib(uint64(v.DiskBytes)), mib(uint64(v.KernelBytes)), mib(uint64(v.InitrdBytes)))
	fmt.Fprintf(tw, "VMM overhead RSS\t%s\t%.1f MiB (process RSS %.1f MiB - guest RAM touched %.1f MiB)\n", dash("not measured"), mib(v.OverheadBytes), mib(v.HostRSSBytes), mib(v.GuestRAMBytes))
	fmt.Fprintf(tw, "guests of %d MiB in free memory\t%s\t%d (%.1f GiB available / (%d MiB + overhead))\n", v.GuestMemory>>20, dash("not measured"), v.GuestsFit, gib(v.MemAvailable), v.GuestMemory>>20)
	fmt.Fprintf(tw, "isolation\t%s\town kernel: guest %s, host %s\n", dash("shared host kernel: "+cs.Release), v.GuestRelease, v.HostRelease)
	fmt.Fprintf(tw, "can run a different kernel\t%s\t%s\n", dash("no"), givenKernel(v))
	tw.Flush()
	if note != "" {
		fmt.Println("\ncontainer: " + note)
	}
	return 0
}

func givenKernel(v report.VMSide) string {
	if !v.RunsGivenKernel {
		return fmt.Sprintf("not shown: guest reported %q, the image says %q", v.GuestRelease, v.ImageRelease)
	}
	return "yes: it ran the --kernel image's " + v.ImageRelease + ", whatever the host runs"
}

// imageRelease reads the kernel release from a kernel image: the
// kernel_version string of a bzImage's setup header (boot.rst: at the
// offset in 0x20e, plus 0x200), or "Linux version X" in an uncompressed
// vmlinux. "" if neither is found.
func imageRelease(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	if len(b) > 0x210 && string(b[0x202:0x206]) == "HdrS" {
		off := int(binary.LittleEndian.Uint16(b[0x20e:])) + 0x200
		if off > 0x200 && off < len(b) {
			f := strings.Fields(string(b[off:min(len(b), off+256)]))
			if len(f) > 0 {
				return f[0]
			}
		}
		return ""
	}
	if i := bytes.Index(b, []byte("Linux version ")); i >= 0 {
		f := strings.Fields(string(b[i+len("Linux version ") : min(len(b), i+256)]))
		if len(f) > 0 {
			return f[0]
		}
	}
	return ""
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }

func fileSize(p string) int64 {
	st, err := os.Stat(p)
	if err != nil {
		return 0
	}
	return st.Size()
}

// measureContainer runs `uname -r` in a container if docker or podman is
// installed, its daemon answers and an image is already present (there may
// be no network to pull one). Otherwise it returns nil and why.
func measureContainer(ctx context.Context) (*report.ContainerSide, string) {
	var why []string
	for _, engine := range []string{"docker", "podman"} {
		if _, err := exec.LookPath(engine); err != nil {
			continue
		}
		run := func(args ...string) (string, error) {
			cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
			defer cancel()
			b, err := exec.CommandContext(cctx, engine, args...).CombinedOutput()
			if err != nil {
				first, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
				return "", fmt.Errorf("%s %s: %v: %s", engine, args[0], err, first)
			}
			return strings.TrimSpace(string(b)), nil
		}
		if _, err := run("info"); err != nil {
			why = append(why, err.Error())
			continue
		}
		imgs, err := run("images", "--format", "{{.Repository}}:{{.Tag}}")
		img := ""
		for _, l := range strings.Split(imgs, "\n") {
			if l != "" && !strings.Contains(l, "<none>") {
				img = l
				break
			}
		}
		if err != nil || img == "" {
			why = append(why, engine+": no local image to run (and none is pulled)")
			continue
		}
		c := &report.ContainerSide{Engine: engine, Image: img}
		t0 := time.Now()
		rel, err := run("run", "--rm", img, "uname", "-r")
		if err != nil {
			why = append(why, err.Error())
			continue
		}
		c.RunMS = ms(time.Since(t0))
		c.Release = rel
		c.SharedKernel = rel == agent.HostUname().Release
		if s, err := run("image", "inspect", "--format", "{{.Size}}", img); err == nil {
			c.ImageBytes, _ = strconv.ParseInt(s, 10, 64)
		}
		return c, ""
	}
	note := "no container engine here"
	if len(why) > 0 {
		note += " (" + strings.Join(why, "; ") + ")"
	}
	return nil, note
}
