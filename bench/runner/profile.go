package main

// The boot profile (issue 17): the guest's own view of where its boot goes,
// under microvm and under QEMU, from the same kernel, initrd and command
// line, with initcall_debug and printk timestamps. The rows whose times
// differ most say what one VMM makes the guest do that the other does not.

import (
	"bufio"
	"debug/elf"
	"flag"
	"fmt"
	"io"
	"math"
	"os/exec"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/microvm-dev/microvm/internal/report"
)

func (o *options) profileFlags(fs *flag.FlagSet) {
	fs.BoolVar(&o.profile, "profile", false, "boot microvm and QEMU once each with initcall_debug and print where their guests' boots differ most")
	fs.IntVar(&o.profileTop, "profile-top", 15, "how many of the largest differences to print")
	fs.StringVar(&o.profileSyms, "profile-symbols", "", "ELF vmlinux whose symbols name the initcalls (default: --kernel, if it is an ELF)")
}

// profileCmdline is cmdline made verbose: every initcall timed, every
// message printed with its timestamp.
func profileCmdline(cmdline string) string {
	var kept []string
	for _, f := range strings.Fields(cmdline) {
		if f != "quiet" {
			kept = append(kept, f)
		}
	}
	return strings.Join(append(kept, "initcall_debug", "printk.time=1", "ignore_loglevel"), " ")
}

// logLine is one console line: when the host saw it (since exec), and the
// kernel's own timestamp, if it has one (-1 if not).
type logLine struct {
	host time.Duration
	kern float64 // seconds
	text string
}

var kernStamp = regexp.MustCompile(`^\[\s*(\d+\.\d+)\]\s?(.*)$`)

// readLog splits r into timestamped lines until it ends or stop says so.
func readLog(r io.Reader, t0 time.Time, stop func(string) bool) []logLine {
	var out []logLine
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		l := logLine{host: time.Since(t0), kern: -1, text: strings.TrimRight(sc.Text(), "\r")}
		if m := kernStamp.FindStringSubmatch(l.text); m != nil {
			l.kern, _ = strconv.ParseFloat(m[1], 64)
			l.text = m[2]
		}
		out = append(out, l)
		if stop(l.text) {
			break
		}
	}
	return out
}

var initcallRE = regexp.MustCompile(`^initcall (\S+?)(\+0x[0-9a-f]+/0x[0-9a-f]+)?( \[\S+\])? returned -?\d+ after (\d+) usecs`)

// profileOf turns a boot log into named durations in milliseconds: each
// initcall, the kernel's time to start /init, the initramfs unpacking,
// each calibration step, and, by the host's clock, exec to the first
// console line and exec to the agent's first line.
func profileOf(lines []logLine, syms *symbols) map[string]float64 {
	p := map[string]float64{}
	var unpack float64 = -1
	for i, l := range lines {
		switch {
		case i == 0:
			p["host: exec to first console line"] = report.MS(l.host)
		case strings.HasPrefix(l.text, "guest: Linux"):
			p["host: exec to agent's first line"] = report.MS(l.host)
		}
		if m := initcallRE.FindStringSubmatch(l.text); m != nil {
			us, _ := strconv.ParseFloat(m[4], 64)
			p["initcall "+syms.lookup(m[1])] += us / 1000
			continue
		}
		if l.kern < 0 {
			continue
		}
		switch {
		case strings.HasPrefix(l.text, "Run /init as init process"):
			p["kernel: boot to /init"] = l.kern * 1000
		case strings.HasPrefix(l.text, "Trying to unpack rootfs"):
			unpack = l.kern
		case strings.HasPrefix(l.text, "Freeing initrd memory") && unpack >= 0:
			p["kernel: initramfs unpacking"] = (l.kern - unpack) * 1000
		case strings.Contains(l.text, "alibrat") && i+1 < len(lines) && lines[i+1].kern >= l.kern:
			// The step runs until the next message.
			// Named by its text up to the first number (a frequency,
			// a count), so both VMMs' lines match.
			name := l.text
			if j := strings.IndexAny(name, "0123456789"); j > 0 {
				name = name[:j]
			}
			name = strings.TrimRight(name, " .,:(")
			p["kernel: "+name] += (lines[i+1].kern - l.kern) * 1000
		}
	}
	return p
}

type profileRow struct {
	name string
	a, b float64 // ms; NaN where a boot has no such row
}

func (r profileRow) diff() float64 {
	return nz(r.a) - nz(r.b)
}

func nz(v float64) float64 {
	if math.IsNaN(v) {
		return 0
	}
	return v
}

// largestDiffs returns the top n rows by |a - b|, a row missing on one side
// counting as 0 there.
func largestDiffs(a, b map[string]float64, n int) []profileRow {
	var rows []profileRow
	for k, v := range a {
		w, ok := b[k]
		if !ok {
			w = math.NaN()
		}
		rows = append(rows, profileRow{k, v, w})
	}
	for k, w := range b {
		if _, ok := a[k]; !ok {
			rows = append(rows, profileRow{k, math.NaN(), w})
		}
	}
	sort.Slice(rows, func(i, j int) bool {
		di, dj := math.Abs(rows[i].diff()), math.Abs(rows[j].diff())
		if di != dj {
			return di > dj
		}
		return rows[i].name < rows[j].name
	})
	if len(rows) > n {
		rows = rows[:n]
	}
	return rows
}

// bootProfile boots s with the verbose command line and returns its log,
// up to the agent's first line (or the boot limit).
func bootProfile(s vmmSpec, o *options) ([]logLine, error) {
	argv := append([]string(nil), s.argv...)
	for i := range argv {
		if argv[i] == o.cmdline {
			argv[i] = profileCmdline(o.cmdline)
		}
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = cmd.Stdout
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	timer := time.AfterFunc(o.bootTimeout, func() { _ = cmd.Process.Kill() })
	defer timer.Stop()
	lines := readLog(out, t0, func(t string) bool { return strings.HasPrefix(t, "guest: Linux") })
	_ = cmd.Process.Kill()
	_, _ = io.Copy(io.Discard, out)
	_ = cmd.Wait()
	return lines, nil
}

// runProfile boots microvm and QEMU once each and prints where they differ.
func runProfile(o *options) {
	symPath := o.profileSyms
	if symPath == "" {
		symPath = o.kernel
	}
	syms, err := loadSymbols(symPath)
	if err != nil {
		progressf("profile: no kernel symbols (%v): initcalls stay addresses", err)
	}
	var logs []map[string]float64
	var names []string
	for _, s := range specs(o) {
		if s.name != "microvm" && s.name != "qemu" {
			continue
		}
		progressf("profile: %s booting with initcall_debug ...", s.name)
		lines, err := bootProfile(s, o)
		if err != nil {
			progressf("profile: %s: %v", s.name, err)
			return
		}
		p := profileOf(lines, syms)
		progressf("profile: %s: %d console lines, %d timed rows", s.name, len(lines), len(p))
		logs, names = append(logs, p), append(names, s.name)
	}
	if len(logs) != 2 {
		fmt.Println("\n== boot profile: needs both microvm and --qemu")
		return
	}
	fmt.Printf("\n== boot profile: the %d largest differences, %s vs %s (ms; kernel rows by the guest's clock)\n", o.profileTop, names[0], names[1])
	fmt.Printf("  %-52s %10s %10s %10s\n", "", names[0], names[1], "diff")
	for _, r := range largestDiffs(logs[0], logs[1], o.profileTop) {
		fmt.Printf("  %-52.52s %10s %10s %+10.1f\n", r.name, msCell(r.a), msCell(r.b), r.diff())
	}
}

func msCell(v float64) string {
	if math.IsNaN(v) {
		return "-"
	}
	return fmt.Sprintf("%.1f", v)
}

// symbols names kernel addresses from an ELF image's symbol table: a kernel
// without KALLSYMS prints each initcall as a bare address.
type symbols struct {
	addr []uint64
	name []string
}

func loadSymbols(path string) (*symbols, error) {
	f, err := elf.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	syms, err := f.Symbols()
	if err != nil {
		return nil, err
	}
	var fn []elf.Symbol
	for _, s := range syms {
		if elf.ST_TYPE(s.Info) == elf.STT_FUNC && s.Value != 0 {
			fn = append(fn, s)
		}
	}
	sort.Slice(fn, func(i, j int) bool { return fn[i].Value < fn[j].Value })
	t := &symbols{}
	for _, s := range fn {
		t.addr, t.name = append(t.addr, s.Value), append(t.name, s.Name)
	}
	return t, nil
}

// lookup returns the function holding a "0xffffffff81..." address, or s as
// it is.
func (t *symbols) lookup(s string) string {
	a, err := strconv.ParseUint(strings.TrimPrefix(s, "0x"), 16, 64)
	if t == nil || err != nil || !strings.HasPrefix(s, "0x") {
		return s
	}
	i := sort.Search(len(t.addr), func(i int) bool { return t.addr[i] > a }) - 1
	if i < 0 {
		return s
	}
	return t.name[i]
}
