package tests

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/microvm-dev/microvm"
	"github.com/microvm-dev/microvm/internal/agent"
	"github.com/microvm-dev/microvm/internal/report"
)

// Snapshot and restore (issue 15): a micro-guest's computation survives
// VM.Snapshot and Config.Restore; Linux guests restored by `run
// --snapshot` run commands, are independent of each other, keep working
// devices, are remade when their inputs change, and bad snapshots are
// refused with one line and exit 2.

// counts returns the "count N" lines of the counter guest, in order.
func counts(out string) []int {
	var c []int
	for _, l := range strings.Split(out, "\n") {
		if n, err := strconv.Atoi(strings.TrimPrefix(l, "count ")); err == nil && strings.HasPrefix(l, "count ") {
			c = append(c, n)
		}
	}
	return c
}

// waitOutput waits until out holds want, or fails after limit.
func waitOutput(t *testing.T, out *agent.Capture, want string, limit time.Duration) {
	t.Helper()
	for deadline := time.Now().Add(limit); !strings.Contains(out.String(), want); {
		if time.Now().After(deadline) {
			t.Fatalf("no %q after %v; output:\n%s", want, limit, out.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestAPISnapshotCounter: the counter micro-guest is snapshotted (and
// stopped) at count 5 or so; restored twice from that one snapshot, each
// clone carries on from where it was, never counting from the start again.
func TestAPISnapshotCounter(t *testing.T) {
	needKVM(t)
	kernel := filepath.Join(guestsDir(t), "counter.elf")
	dir := filepath.Join(t.TempDir(), "snap")
	ctx := context.Background()
	base := runtime.NumGoroutine()
	var out agent.Capture
	vm, err := startHere(ctx, microvm.Config{Kernel: kernel, Memory: 64 << 20, Stdout: &out, Timeout: 2 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	waitOutput(t, &out, "count 5\n", time.Minute)
	info, err := vm.Snapshot(dir, microvm.SnapshotOptions{Stop: true})
	if err != nil {
		t.Fatal(err)
	}
	res, err := vm.Wait()
	if err != nil || res.Reason != microvm.ExitSnapshot || res.ExitCode != 0 {
		t.Fatalf("snapshotted guest ended %+v, %v", res, err)
	}
	before := counts(out.String())
	last := before[len(before)-1]
	t.Logf("snapshot at count %d: guest paused %v, memory file %d KiB allocated, state %d bytes", last, info.Pause, info.MemoryBytes>>10, info.StateBytes)
	if info.MemoryBytes == 0 || info.MemoryBytes > 8<<20 {
		t.Errorf("memory file of %d bytes allocated for a micro-guest", info.MemoryBytes)
	}
	for clone := range 2 {
		var out2 agent.Capture
		vm, err := startHere(ctx, microvm.Config{Restore: dir, Memory: 64 << 20, Stdout: &out2, Timeout: 2 * time.Minute})
		if err != nil {
			t.Fatalf("restore %d: %v", clone, err)
		}
		waitOutput(t, &out2, fmt.Sprintf("count %d\n", last+5), time.Minute)
		vm.Stop()
		res, err := vm.Wait()
		if err != nil || res.Reason != microvm.ExitCanceled || res.Snapshot == nil || !res.Snapshot.Restored {
			t.Fatalf("restore %d ended %+v, %v", clone, res, err)
		}
		after := counts(out2.String())
		// A line cut by the snapshot may be finished first: the first
		// whole one is last+1 or last+2.
		if strings.Contains(out2.String(), "counter: start") || len(after) == 0 || after[0] < last+1 || after[0] > last+2 {
			t.Errorf("restore %d: counted %v after the snapshot at %d; output:\n%s", clone, after, last, out2.String())
		}
		for i := 1; i < len(after); i++ {
			if after[i] != after[i-1]+1 {
				t.Errorf("restore %d: count went from %d to %d", clone, after[i-1], after[i])
			}
		}
		if _, ok := report.PhaseAt(res.Timeline, microvm.PhaseSnapshotLoaded); !ok {
			t.Errorf("restore %d: no %s in %v", clone, microvm.PhaseSnapshotLoaded, res.Timeline)
		}
	}
	waitGoroutines(t, base)
}

// snapRun runs `microvm run --json FLAGS -- ARGV` on the Linux guest and
// decodes its report (the last stderr line).
func snapRun(t *testing.T, flags []string, argv ...string) (result, report.Boot) {
	t.Helper()
	kernel, initrd := linuxArtifacts(t)
	args := append([]string{"run", "--kernel", kernel, "--initrd", initrd, "--timeout", "3m", "--json"}, flags...)
	args = append(append(args, "--"), argv...)
	r := runMicrovm(t, linuxLimit+time.Minute, args...)
	var b report.Boot
	err := fmt.Errorf("no line starting %q", `{"exit_reason"`)
	for _, l := range strings.Split(r.stderr, "\n") {
		if strings.HasPrefix(l, `{"exit_reason"`) {
			err = json.Unmarshal([]byte(l), &b)
		}
	}
	if err != nil {
		t.Fatalf("microvm %s: exit %d, no JSON report (%v); stderr:\n%s", strings.Join(args, " "), r.code, err, r.stderr)
	}
	t.Logf("microvm %s: exit %d in %v, snapshot %+v, %d bytes of stdout", strings.Join(flags, " "), r.code, r.elapsed, b.Snapshot, len(r.stdout))
	if path(b) == "restored" {
		// Where a restore's time goes, for the README's numbers.
		var ph []string
		for _, p := range b.Timeline {
			ph = append(ph, fmt.Sprintf("%s %.0f", p.Phase, p.MS))
		}
		t.Logf("restored timeline (ms since exec): %s", strings.Join(ph, ", "))
	}
	return r, b
}

// path is the snapshot path a run took, "" for none.
func path(b report.Boot) string {
	if b.Snapshot == nil {
		return ""
	}
	return b.Snapshot.Path
}

// TestLinuxSnapshot: `run --snapshot DIR` boots and saves a snapshot the
// first time, restores it the second, and the restored guest's devices
// work: a read-only disk reads back byte for byte over hvc0 (1 MiB), and
// the command's exit status is microvm's.
func TestLinuxSnapshot(t *testing.T) {
	linuxArtifacts(t)
	tmp := t.TempDir()
	dir := filepath.Join(tmp, "snap")
	data, sum := randomFile(t, tmp, "data.img", 1<<20)
	flags := []string{"--snapshot", dir, "--disk", data + ",ro"}
	r, b := snapRun(t, flags, "sh", "-c", "echo cold-run")
	if r.code != 0 || path(b) != "saved" || !strings.Contains(r.stdout, "cold-run") {
		t.Fatalf("first run: exit %d, snapshot %+v, stdout %q, stderr:\n%s", r.code, b.Snapshot, r.stdout, r.stderr)
	}
	// The memory file holds what the guest touched, not all 256 MiB.
	if m := b.Snapshot.MemoryBytes; m == 0 || m > b.GuestTouched+(4<<20) || m > 128<<20 {
		t.Errorf("memory file: %d bytes allocated, guest touched %d", m, b.GuestTouched)
	}
	r, b = snapRun(t, flags, "cat", "/dev/vda")
	got := sha256.Sum256([]byte(r.stdout))
	if r.code != 0 || path(b) != "restored" || len(r.stdout) != 1<<20 || hex.EncodeToString(got[:]) != sum {
		t.Fatalf("restored run: exit %d, snapshot %+v, %d bytes of stdout (SHA-256 %x, want %s); stderr:\n%s", r.code, b.Snapshot, len(r.stdout), got, sum, r.stderr)
	}
	for _, p := range []microvm.Phase{microvm.PhaseSnapshotLoaded, microvm.PhaseFirstRun, microvm.PhaseAgentReady, microvm.PhaseCommandDone, microvm.PhaseExit} {
		if _, ok := b.Timeline.MS(p); !ok {
			t.Errorf("restored timeline lacks %s: %v", p, b.Timeline)
		}
	}
	if _, ok := b.Timeline.MS(microvm.PhaseKernel); ok {
		t.Errorf("a restored guest loaded a kernel: %v", b.Timeline)
	}
	r, b = snapRun(t, flags, "sh", "-c", "exit 7")
	if r.code != 7 || path(b) != "restored" {
		t.Errorf("restored `exit 7`: exit %d, snapshot %+v", r.code, b.Snapshot)
	}
}

// cloneScript has restored guest id write its own file, list them, and
// print a hash of 64 bytes of /dev/urandom and its wall clock (u-root's
// date has no %s: UTC fields, the month unpadded).
func cloneScript(id int) string {
	return fmt.Sprintf("echo %d > /tmp/clone-%d; sleep 1; echo files=$(ls /tmp | grep clone-); echo rand=$(head -c 64 /dev/urandom | shasum); echo date=$(date -u +%%Y:%%m:%%d:%%H:%%M:%%S)", id, id)
}

func field(out, key string) string {
	for _, l := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), key+"="); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// TestLinuxSnapshotClones: two guests restored at once from one snapshot
// are two guests: each sees only the file it wrote, their /dev/urandom
// bytes differ, and each one's clock is the host's (the snapshot's clock
// is seconds behind by then).
func TestLinuxSnapshotClones(t *testing.T) {
	linuxArtifacts(t)
	dir := filepath.Join(t.TempDir(), "snap")
	if r, b := snapRun(t, []string{"--snapshot", dir}, "true"); r.code != 0 || path(b) != "saved" {
		t.Fatalf("saving run: exit %d, snapshot %+v", r.code, b.Snapshot)
	}
	time.Sleep(5 * time.Second) // so that a clone left on the snapshot's clock is seconds off
	type clone struct {
		r      result
		b      report.Boot
		t0, t1 time.Time
	}
	var cl [2]clone
	var wg sync.WaitGroup
	for i := range cl {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl[i].t0 = time.Now()
			cl[i].r, cl[i].b = snapRun(t, []string{"--snapshot", dir}, "sh", "-c", cloneScript(i))
			cl[i].t1 = time.Now()
		}()
	}
	wg.Wait()
	for i, c := range cl {
		out := c.r.stdout
		if c.r.code != 0 || path(c.b) != "restored" {
			t.Fatalf("clone %d: exit %d, snapshot %+v; stdout %q", i, c.r.code, c.b.Snapshot, out)
		}
		if f := field(out, "files"); f != fmt.Sprintf("clone-%d", i) {
			t.Errorf("clone %d sees files %q, want only its own", i, f)
		}
		var y, mo, dd, h, mi, sec int
		_, err := fmt.Sscanf(field(out, "date"), "%d:%d:%d:%d:%d:%d", &y, &mo, &dd, &h, &mi, &sec)
		d := time.Date(y, time.Month(mo), dd, h, mi, sec, 0, time.UTC).Unix()
		if err != nil || d < c.t0.Unix()-1 || d > c.t1.Unix()+1 {
			t.Errorf("clone %d: guest clock %q, host clock %d to %d", i, field(out, "date"), c.t0.Unix(), c.t1.Unix())
		}
	}
	r0, r1 := field(cl[0].r.stdout, "rand"), field(cl[1].r.stdout, "rand")
	if r0 == "" || r0 == r1 {
		t.Errorf("the clones read the same /dev/urandom bytes: %q and %q", r0, r1)
	}
}

// TestLinuxSnapshotRemake: run --snapshot makes the snapshot again when the
// kernel, the initrd or --memory changes, and restores it otherwise.
func TestLinuxSnapshotRemake(t *testing.T) {
	_, initrd := linuxArtifacts(t)
	vmlinux := os.Getenv("MICROVM_VMLINUX")
	if vmlinux == "" {
		t.Fatal("MICROVM_VMLINUX must be set (tests/run.sh sets it)")
	}
	tmp := t.TempDir()
	dir := filepath.Join(tmp, "snap")
	// Another initrd: the same archive and 512 zero bytes, which the
	// kernel skips as padding.
	b, err := os.ReadFile(initrd)
	if err != nil {
		t.Fatal(err)
	}
	initrd2 := filepath.Join(tmp, "initrd2.cpio")
	if err := os.WriteFile(initrd2, append(b, make([]byte, 512)...), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, s := range []struct {
		what  string
		flags []string
		want  string
	}{
		{"first run", nil, "saved"},
		{"same again", nil, "restored"},
		{"another kernel (vmlinux)", []string{"--kernel", vmlinux}, "saved"},
		{"another initrd", []string{"--kernel", vmlinux, "--initrd", initrd2}, "saved"},
		{"--memory 320M", []string{"--kernel", vmlinux, "--initrd", initrd2, "--memory", "320M"}, "saved"},
		{"the last one again", []string{"--kernel", vmlinux, "--initrd", initrd2, "--memory", "320M"}, "restored"},
	} {
		r, b := snapRun(t, append([]string{"--snapshot", dir}, s.flags...), "sh", "-c", "exit 3")
		if r.code != 3 || path(b) != s.want {
			t.Errorf("%s: exit %d, snapshot path %q, want exit 3 and %q; stderr:\n%s", s.what, r.code, path(b), s.want, r.stderr)
		}
		if s.want == "saved" && s.what != "first run" && !strings.Contains(r.stderr, "booting to make it again") {
			t.Errorf("%s: no note that the snapshot is made again; stderr:\n%s", s.what, r.stderr)
		}
	}
}
