// Command virtfs measures microvm's virtio-9p share against QEMU's
// reference 9p server (-fsdev local + virtio-9p-device, what -virtfs
// local,... sets up), with the same guest kernel, on the same host
// directory, one after the other in one run (bench/compare.sh runs it in
// one L1 of the nested harness, `make bench`):
//
//   - sequential read of a 256 MiB file (MiB/s);
//   - walk plus lstat of 10 000 files (s);
//   - create (with 16 bytes) and remove 1 000 files (s);
//   - exec to the first output of `uname -r` with the host's / as the
//     guest's root (microvm run --rootfs /; QEMU: root=9p, init=uname).
//
// Each is the median of --runs. The first three run inside one boot per
// VMM, by this same binary as the guest's /init (it mounts the share
// itself, with the options microvm's agent uses, so both servers see the
// same client); the last is --runs fresh VMM processes each.
package main

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/microvm-dev/microvm/internal/testimg"
	"golang.org/x/sys/unix"
)

// p9Opts are initrd/agent's mount options (msize, no cache), so the
// guest's client is the same for both servers.
const p9Opts = "trans=virtio,version=9p2000.L,msize=512000"

const cmdline = "console=ttyS0 reboot=k panic=-1 quiet"

func main() {
	if os.Getpid() == 1 {
		worker()
		return
	}
	var (
		microvm, qemu, kernel, initrd, work string
		runs, blobMiB, nfiles, ncreate      int
		skipFS                              bool
	)
	flag.StringVar(&microvm, "microvm", "", "microvm binary")
	flag.StringVar(&qemu, "qemu", "", "qemu-system-x86_64 binary")
	flag.StringVar(&kernel, "kernel", "", "guest bzImage, the same for both")
	flag.StringVar(&initrd, "initrd", "", "u-root initrd with microvm's agent (for `microvm run --rootfs /`)")
	flag.StringVar(&work, "work", "/tmp/virtfs", "scratch directory: the shared tree")
	flag.IntVar(&runs, "runs", 5, "repetitions of each measurement")
	flag.IntVar(&blobMiB, "blob-mib", 256, "size of the sequentially read file")
	flag.IntVar(&nfiles, "files", 10000, "files walked and stat'ed")
	flag.IntVar(&ncreate, "create", 1000, "files created and removed")
	flag.BoolVar(&skipFS, "skip-fs", false, "only the `uname -r` row (no file-system rows)")
	flag.Parse()
	if microvm == "" || qemu == "" || kernel == "" || initrd == "" {
		fatal("--microvm, --qemu, --kernel and --initrd are required")
	}
	data := filepath.Join(work, "data")
	fmt.Printf("virtfs: preparing %s: a %d MiB file, %d files in 100 directories\n", data, blobMiB, nfiles)
	must(prepare(data, blobMiB, nfiles))
	self, err := os.Executable()
	must(err)
	wcpio := filepath.Join(work, "worker.cpio")
	must(workerInitrd(wcpio, self))
	env := fmt.Sprintf("virtfs_runs=%d virtfs_files=%d virtfs_create=%d", runs, nfiles, ncreate)

	type side struct {
		name string
		fs   []string // guest /init's run of the file-system rows
		boot []string // `uname -r` with the host's / as root
	}
	sides := []side{
		{name: "microvm",
			fs: []string{microvm, "boot", "--kernel", kernel, "--initrd", wcpio, "--memory", "512M", "--acpi", "off",
				"--timeout", "30m", "--share", data, "--cmdline", cmdline + " virtfs_tag=microvm0 " + env},
			boot: []string{microvm, "run", "--kernel", kernel, "--initrd", initrd, "--memory", "512M", "--timeout", "5m",
				"--rootfs", "/", "--", "uname", "-r"}},
		{name: "qemu",
			fs: append(qemuArgs(qemu, kernel, "-initrd", wcpio, "-append", cmdline+" virtfs_tag=share "+env),
				"-fsdev", "local,id=fs0,path="+data+",security_model=none",
				"-device", "virtio-9p-device,fsdev=fs0,mount_tag=share"),
			// No initrd: the kernel mounts / over 9p itself and runs
			// uname as init; devtmpfs is mounted for its console. "-r"
			// reaches init as an unknown parameter without "=", not after
			// "--": QEMU appends virtio_mmio.device=... to the command
			// line, which after "--" would be init's too, and the kernel
			// would find no 9p device.
			boot: append(qemuArgs(qemu, kernel, "-append",
				cmdline+" root=root rootfstype=9p rootflags="+p9Opts+" ro init=/usr/bin/uname -r"),
				"-fsdev", "local,id=fs0,path=/,security_model=none,readonly=on",
				"-device", "virtio-9p-device,fsdev=fs0,mount_tag=root")},
	}
	release := unameRelease(kernel, microvm, initrd)
	res := map[string]map[string]float64{}
	for _, s := range sides {
		res[s.name] = map[string]float64{}
		if !skipFS {
			fsRows(s.name, s.fs, res[s.name])
		}
		var times []float64
		for i := 0; i < runs; i++ {
			ms, out, err := firstLine(s.boot, release, 5*time.Minute)
			if err != nil {
				fmt.Printf("virtfs: %s: uname -r with / as root: %v; console:\n%s\n", s.name, err, tail(out, 15))
				if s.name == "qemu" {
					// Once more without "quiet", so its console says why.
					loud := append([]string(nil), s.boot...)
					for j, a := range loud {
						loud[j] = strings.Replace(a, " quiet", " loglevel=7", 1)
					}
					_, out, _ := firstLine(loud, release, 5*time.Minute)
					fmt.Printf("virtfs: %s: the same without quiet, console (its virtio and 9p lines, and the last):\n%s\n%s\n",
						s.name, grepLines(out, "virtio", "9p", "mmio", "Command line"), tail(out, 8))
				}
				break
			}
			times = append(times, ms)
		}
		fmt.Printf("virtfs: %s: uname -r with / as root: %v ms\n", s.name, times)
		if len(times) == runs {
			res[s.name]["uname_root_ms"] = median(times)
		}
	}
	rows := []struct{ key, label, unit string }{
		{"seq_read_mibs", fmt.Sprintf("sequential read, %d MiB file", blobMiB), "MiB/s"},
		{"find_stat_s", fmt.Sprintf("walk + lstat, %d files", nfiles), "s"},
		{"create_remove_s", fmt.Sprintf("create + remove, %d files", ncreate), "s"},
		{"uname_root_ms", "exec to first output of `uname -r`, / as root", "ms"},
	}
	fmt.Printf("\n| %s, median of %d | microvm | QEMU virtfs | microvm vs QEMU |\n|---|---:|---:|---:|\n", "guest kernel "+release, runs)
	for _, r := range rows {
		m, mok := res["microvm"][r.key]
		q, qok := res["qemu"][r.key]
		cell := func(v float64, ok bool) string {
			if !ok {
				return "not measured"
			}
			return fmt.Sprintf("%.2f %s", v, r.unit)
		}
		ratio := "-"
		if mok && qok && m > 0 && q > 0 {
			// Always "how many times QEMU's performance": throughput
			// over throughput, or QEMU's time over microvm's.
			x := q / m
			if r.unit == "MiB/s" {
				x = m / q
			}
			ratio = fmt.Sprintf("%.2fx", x)
		}
		fmt.Printf("| %s | %s | %s | %s |\n", r.label, cell(m, mok), cell(q, qok), ratio)
	}
}

func qemuArgs(qemu, kernel string, extra ...string) []string {
	// acpi=off: the project's kernel has no ACPI, and only then does
	// QEMU announce the virtio-mmio devices on the command line (the
	// first run found no 9p device without it).
	return append([]string{qemu, "-M", "microvm,acpi=off", "-enable-kvm", "-cpu", "host", "-m", "512",
		"-nodefaults", "-no-user-config", "-nographic", "-serial", "stdio", "-no-reboot",
		"-device", "i8042", "-kernel", kernel}, extra...)
}

// unameRelease is the guest kernel's release, the line both VMMs' uname
// must print: asked of a microvm guest once (not timed).
func unameRelease(kernel, microvm, initrd string) string {
	out, err := exec.Command(microvm, "run", "--kernel", kernel, "--initrd", initrd, "--timeout", "5m", "--", "uname", "-r").Output()
	if err != nil {
		fatal("microvm run -- uname -r: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// firstLine runs argv and returns the time from exec to the first line on
// stdout that is want (QEMU's console also carries the kernel's panic
// when init exits), then waits for the VMM to exit.
func firstLine(argv []string, want string, limit time.Duration) (float64, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stderr = os.Stderr
	pr, err := cmd.StdoutPipe()
	if err != nil {
		return 0, "", err
	}
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, "", err
	}
	var at time.Duration
	var all bytes.Buffer
	sc := bufio.NewScanner(pr)
	for sc.Scan() {
		if at == 0 && strings.TrimSpace(sc.Text()) == want {
			at = time.Since(t0)
		}
		all.WriteString(sc.Text() + "\n")
	}
	err = cmd.Wait()
	if at == 0 {
		return 0, all.String(), fmt.Errorf("no line %q (exit: %v)", want, err)
	}
	return float64(at.Microseconds()) / 1000, all.String(), nil
}

// fsRows boots argv, whose guest runs the file-system rows and prints each
// as "@@VIRTFS name value", into res.
func fsRows(name string, argv []string, res map[string]float64) {
	fmt.Printf("virtfs: %s: %s\n", name, strings.Join(argv, " "))
	out, err := runCapture(argv, 30*time.Minute)
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(strings.TrimSpace(l)); len(f) == 3 && f[0] == "@@VIRTFS" {
			v, _ := strconv.ParseFloat(f[2], 64)
			res[f[1]] = v
			fmt.Printf("virtfs: %s: %s = %s\n", name, f[1], f[2])
		}
	}
	if err != nil || len(res) < 3 {
		fmt.Printf("virtfs: %s: file-system rows incomplete (%v); its console:\n%s\n", name, err, tail(out, 20))
	}
}

func runCapture(argv []string, limit time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// prepare makes the shared tree: blob, tree/dNN/fNNNN, scratch/.
func prepare(data string, blobMiB, nfiles int) error {
	os.RemoveAll(data)
	if err := os.MkdirAll(filepath.Join(data, "scratch"), 0o777); err != nil {
		return err
	}
	f, err := os.Create(filepath.Join(data, "blob"))
	if err != nil {
		return err
	}
	chunk := bytes.Repeat([]byte("0123456789abcdef"), 1<<16)
	for i := 0; i < blobMiB; i++ {
		if _, err := f.Write(chunk); err != nil {
			return err
		}
	}
	if err := f.Close(); err != nil {
		return err
	}
	for i := 0; i < nfiles; i++ {
		d := filepath.Join(data, "tree", fmt.Sprintf("d%02d", i%100))
		if i < 100 {
			if err := os.MkdirAll(d, 0o755); err != nil {
				return err
			}
		}
		if err := os.WriteFile(filepath.Join(d, fmt.Sprintf("f%05d", i)), []byte("x"), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// workerInitrd is an initramfs holding only this binary as /init.
func workerInitrd(dst, self string) error {
	f, err := os.Create(dst)
	if err != nil {
		return err
	}
	c := testimg.NewCPIO(f)
	for _, d := range []string{"dev", "proc", "mnt"} {
		c.Dir(d, 0o755)
	}
	c.CharDev("dev/console", 0o600, 5, 1)
	c.HostFile("init", self)
	if err := c.Close(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// worker is the guest's /init: mount the share, run the file-system rows,
// print "@@VIRTFS key value" lines, reset. The kernel passes the
// virtfs_* command-line parameters to init as environment variables (a
// dotted name would be taken for a module parameter).
func worker() {
	defer func() {
		unix.Sync()
		unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART)
	}()
	atoi := func(k string, def int) int {
		if v, err := strconv.Atoi(os.Getenv(k)); err == nil && v > 0 {
			return v
		}
		return def
	}
	runs, nfiles, ncreate := atoi("virtfs_runs", 5), atoi("virtfs_files", 10000), atoi("virtfs_create", 1000)
	tag := os.Getenv("virtfs_tag")
	if tag == "" {
		// Not in a guest: a dry run on /mnt as it is (unshare -fp).
	} else if err := unix.Mount(tag, "/mnt", "9p", 0, p9Opts); err != nil {
		fmt.Printf("virtfs worker: mount %s: %v\n", tag, err)
		return
	}
	seq, walk, create := []float64{}, []float64{}, []float64{}
	buf := make([]byte, 1<<20)
	for r := 0; r < runs; r++ {
		t0 := time.Now()
		f, err := os.Open("/mnt/blob")
		if err != nil {
			fmt.Println("virtfs worker:", err)
			return
		}
		// Plain 1 MiB reads: io.Copy to io.Discard would read in its
		// own 8 KiB pieces.
		var n int64
		for {
			k, err := f.Read(buf)
			n += int64(k)
			if err != nil {
				break
			}
		}
		f.Close()
		seq = append(seq, float64(n)/(1<<20)/time.Since(t0).Seconds())

		t0 = time.Now()
		count := 0
		filepath.WalkDir("/mnt/tree", func(p string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				if _, err := os.Lstat(p); err == nil {
					count++
				}
			}
			return nil
		})
		walk = append(walk, time.Since(t0).Seconds())
		if count != nfiles {
			fmt.Printf("virtfs worker: walked %d files, want %d\n", count, nfiles)
			return
		}

		t0 = time.Now()
		for i := 0; i < ncreate; i++ {
			if err := os.WriteFile(fmt.Sprintf("/mnt/scratch/c%04d", i), []byte("0123456789abcdef"), 0o644); err != nil {
				fmt.Println("virtfs worker:", err)
				return
			}
		}
		for i := 0; i < ncreate; i++ {
			if err := os.Remove(fmt.Sprintf("/mnt/scratch/c%04d", i)); err != nil {
				fmt.Println("virtfs worker:", err)
				return
			}
		}
		create = append(create, time.Since(t0).Seconds())
		fmt.Printf("virtfs worker: run %d: %.1f MiB/s, walk %.2f s, create+remove %.2f s\n", r+1, seq[r], walk[r], create[r])
	}
	fmt.Printf("@@VIRTFS seq_read_mibs %.2f\n@@VIRTFS find_stat_s %.3f\n@@VIRTFS create_remove_s %.3f\n", median(seq), median(walk), median(create))
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// grepLines is tail's form of the lines of s holding any of words.
func grepLines(s string, words ...string) string {
	var keep []string
	for _, l := range strings.Split(s, "\n") {
		for _, w := range words {
			if strings.Contains(l, w) {
				keep = append(keep, l)
				break
			}
		}
	}
	return tail(strings.Join(keep, "\n"), len(keep))
}

func tail(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	// Indented: bench/compare.sh drops L1's own kernel lines ("[ 1.2] ...")
	// from its output, and a guest console's lines look the same.
	return "  | " + strings.Join(l, "\n  | ")
}

func must(err error) {
	if err != nil {
		fatal("%v", err)
	}
}

func fatal(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "virtfs: "+format+"\n", a...)
	os.Exit(1)
}
