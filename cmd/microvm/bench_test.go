package main

import (
	"io"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/microvm-dev/microvm"
	"github.com/microvm-dev/microvm/internal/report"
	"github.com/spf13/pflag"
)

func TestNewStat(t *testing.T) {
	for _, tt := range []struct {
		name             string
		in               []float64
		min, median, max float64
	}{
		{"one", []float64{3}, 3, 3, 3},
		{"odd unsorted", []float64{5, 1, 3}, 1, 3, 5},
		{"even", []float64{4, 1, 2, 3}, 1, 2.5, 4},
		{"empty", nil, 0, 0, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := newStat("x", tt.in)
			if s.N != len(tt.in) || s.Min != tt.min || s.Median != tt.median || s.Max != tt.max {
				t.Errorf("newStat(%v) = %+v, want n=%d min %v median %v max %v", tt.in, s, len(tt.in), tt.min, tt.median, tt.max)
			}
		})
	}
}

func TestSummarizeMissingPhases(t *testing.T) {
	// A micro-guest has no init or agent milestones: those phases have no
	// samples, and the others are still summarized.
	rs := []*benchRun{
		{Boot: report.Boot{PeakRSS: 10 << 20, GuestTouched: 4 << 20}, phases: map[microvm.Phase]float64{"process-start": 1, "exit": 9, report.PhaseProcessExit: 10}},
		{Boot: report.Boot{PeakRSS: 12 << 20, GuestTouched: 4 << 20}, phases: map[microvm.Phase]float64{"process-start": 2, "exit": 11, report.PhaseProcessExit: 12}},
	}
	s := summarize(rs)
	got := map[string]report.Stat{}
	for _, p := range s.Phases {
		got[p.Name] = p
	}
	if p := got["init-reached"]; p.N != 0 {
		t.Errorf("init-reached: %+v, want no samples", p)
	}
	if p := got["exit"]; p.N != 2 || p.Median != 10 {
		t.Errorf("exit: %+v, want 2 samples, median 10", p)
	}
	if o := s.Overhead; o.Min != 6 || o.Max != 8 {
		t.Errorf("overhead %+v, want 6..8 MiB", o)
	}
}

// TestBenchChildArgs: every VM flag bench takes reaches each child run:
// the child's argv, parsed by the same flag registration `run` uses, gives
// back the flags bench was given. --runs and --json are bench's own, and
// --timings is refused.
func TestBenchChildArgs(t *testing.T) {
	own := map[string]bool{"runs": true, "json": true, "timings": true}
	for _, c := range []struct {
		name string
		args []string
	}{
		{"defaults", []string{"--kernel", "/k", "--initrd", "/i"}},
		{"every flag", []string{"--runs", "3", "--json", "--kernel", "/k/bzImage", "--initrd", "/i.cpio",
			"--cmdline", "quiet loglevel=0", "--cpus", "2", "--memory", "512M", "--timeout", "90s",
			"--disk", "/d/a.img", "--disk", "/d/b.img,ro", "--net", "tap=mvtap0,mac=02:00:00:00:00:01", "--net", "tap=t1",
			"--share", "/src", "--share", "/data:/mnt/data,ro", "--rootfs", "/,rw", "--console", "virtio", "--acpi", "off"}},
		{"values that look like flags", []string{"--kernel", "-k", "--initrd", "--i", "--cmdline", "--x=y", "--disk", "-d.img"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			fs, bf, _ := benchFlags()
			if err := fs.Parse(c.args); err != nil {
				t.Fatal(err)
			}
			if c.name == "every flag" {
				fs.VisitAll(func(fl *pflag.Flag) {
					if !own[fl.Name] && !fs.Changed(fl.Name) {
						t.Errorf("bench flag --%s is not set by this test: add it", fl.Name)
					}
				})
			}
			argv := benchChildArgs(bf)
			if len(argv) < 4 || argv[0] != "run" || strings.Join(argv[len(argv)-2:], " ") != "-- "+benchCommand {
				t.Fatalf("child argv %q: want run ... -- %s", argv, benchCommand)
			}
			var child vmFlags
			cfs := newFlags("run")
			child.register(cfs, "")
			if err := cfs.Parse(argv[1:]); err != nil {
				t.Fatalf("child argv %q: %v", argv, err)
			}
			if cfs.Changed("timings") || !child.json {
				t.Errorf("child argv %q: want --json and no --timings", argv)
			}
			if got := cfs.Args(); !reflect.DeepEqual(got, []string{benchCommand}) {
				t.Errorf("child command %q, want [%s]", got, benchCommand)
			}
			want := *bf
			want.json, want.timings, want.fs = true, false, child.fs
			if !reflect.DeepEqual(child, want) {
				t.Errorf("child argv %q\nparses to %+v\nwant       %+v", argv, child, want)
			}
		})
	}
}

// TestBenchRefusesTimings: the one VM flag bench cannot pass on is a usage
// error naming it, before any boot.
func TestBenchRefusesTimings(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := os.Stderr
	os.Stderr = w
	code := runBench(nil, []string{"--timings", "--kernel", "/nonexistent"})
	os.Stderr = stderr
	w.Close()
	out, _ := io.ReadAll(r)
	if lines := strings.Split(strings.TrimSpace(string(out)), "\n"); code != 2 || len(lines) != 1 || !strings.HasPrefix(lines[0], "microvm: --timings: ") {
		t.Errorf("bench --timings: exit %d, stderr %q; want exit 2 and one line naming --timings", code, out)
	}
}
