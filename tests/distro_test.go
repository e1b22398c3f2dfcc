package tests

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// A whole Debian 12, booted the way a user boots a VM image: its own
// stock kernel and initramfs-tools initrd, root on the virtio disk, systemd
// as init. scripts/distro.sh builds it; tests/run.sh puts its directory
// (debian.img, vmlinuz, initrd.img, release) in $MICROVM_DISTRO.

// distroMarker is the line the image's microvm-distro-up.service prints
// on the console and writes to distroUpFile once multi-user.target is
// reached (scripts/distro.sh).
var distroMarker = regexp.MustCompile(`MICROVM-DISTRO-UP uptime=([0-9.]+) boot_id=([0-9a-f-]{36}) multi-user=(\S+) failed=(\d+)`)

const distroUpFile = "/var/lib/microvm/distro-up"

// markerClock notes when the marker first crosses microvm's stdout.
type markerClock struct {
	mu   sync.Mutex
	buf  []byte
	seen time.Time
}

func (m *markerClock) Write(p []byte) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.seen.IsZero() {
		m.buf = append(m.buf, p...)
		if distroMarker.Match(m.buf) {
			m.seen = time.Now()
			m.buf = nil
		} else if i := bytes.LastIndexByte(m.buf, '\n'); i >= 0 {
			m.buf = m.buf[i+1:] // the marker is one line
		}
	}
	return len(p), nil
}

// debugfsCat reads a file out of an ext4 image on the host, without
// mounting it.
func debugfsCat(t *testing.T, img, path string) (string, error) {
	t.Helper()
	debugfs, err := exec.LookPath("debugfs")
	if err != nil {
		t.Fatalf("debugfs not found (tests/run.sh installs e2fsprogs and puts it in L1): %v", err)
	}
	var out, errb bytes.Buffer
	cmd := exec.Command(debugfs, "-R", "cat "+path, img)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("debugfs %s: %v\n%s", img, err, errb.String())
	}
	// debugfs exits 0 for a missing file and says so on stderr.
	if strings.Contains(errb.String(), "File not found") {
		return "", os.ErrNotExist
	}
	return out.String(), nil
}

// TestDebianBoot boots the image MICROVM_DISTRO_BOOTS times (default 1;
// more to measure the boot time, each from a fresh copy) and logs each
// boot's time and their median.
func TestDebianBoot(t *testing.T) {
	needKVM(t)
	dir := os.Getenv("MICROVM_DISTRO")
	if dir == "" {
		t.Fatal("MICROVM_DISTRO must be set (tests/run.sh sets it after scripts/distro.sh)")
	}
	rel, err := os.ReadFile(filepath.Join(dir, "release"))
	if err != nil {
		t.Fatal(err)
	}
	release := strings.TrimSpace(string(rel))
	var execs, uptimes []time.Duration
	for i := 1; i <= envInt(t, "MICROVM_DISTRO_BOOTS", 1); i++ {
		e, u := debianBoot(t, dir, release)
		t.Logf("boot %d: full Debian boot to multi-user: %.1f s exec to marker, guest uptime %.1f s", i, e.Seconds(), u.Seconds())
		execs, uptimes = append(execs, e), append(uptimes, u)
	}
	t.Logf("full Debian boot to multi-user, median of %d: %.1f s exec to marker (%.1f-%.1f), guest uptime %.1f s (%.1f-%.1f)",
		len(execs), median(execs).Seconds(), slices.Min(execs).Seconds(), slices.Max(execs).Seconds(),
		median(uptimes).Seconds(), slices.Min(uptimes).Seconds(), slices.Max(uptimes).Seconds())
}

// debianBoot boots a fresh copy of the image once, checks everything, and
// returns exec to the marker and the guest's uptime at the marker.
func debianBoot(t *testing.T, dir, release string) (toMarker, uptime time.Duration) {
	t.Helper()
	// The guest writes its disk: boot a copy, the cached image stays as built.
	img := copyFile(t, filepath.Join(dir, "debian.img"), filepath.Join(t.TempDir(), "debian.img"), 0o644)
	defer os.Remove(img) // L1's RAM holds every copy until the test ends otherwise
	if _, err := debugfsCat(t, img, distroUpFile); err != os.ErrNotExist {
		t.Fatalf("%s is already in the fresh image (err %v): the check below would prove nothing", distroUpFile, err)
	}

	args := []string{"boot", "--kernel", filepath.Join(dir, "vmlinuz"), "--initrd", filepath.Join(dir, "initrd.img"),
		"--disk", img, "--memory", "512M", "--cmdline", "root=/dev/vda rw console=ttyS0", "--timeout", "12m", "--json"}
	var clock markerClock
	start := time.Now()
	r := runMicrovmTee(t, 14*time.Minute, &clock, args...)
	t.Logf("microvm %s: exit %d in %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.code, r.elapsed, r.stdout, r.stderr)

	m := distroMarker.FindStringSubmatch(r.stdout)
	if m == nil {
		t.Fatalf("no %q line on the console: systemd did not reach multi-user.target", "MICROVM-DISTRO-UP")
	}
	if m[3] != "active" || m[4] != "0" {
		t.Errorf("multi-user.target %s with %s failed units (the console lists them), want active and 0", m[3], m[4])
	}
	if r.code != 0 {
		t.Errorf("exit %d, want 0 (systemctl poweroff)", r.code)
	}
	if !strings.Contains(r.stderr, `"exit_reason":"poweroff"`) {
		t.Errorf("the guest did not end by powering off through ACPI: stderr %q", r.stderr)
	}
	// The image's own kernel ran, not the project's.
	if !strings.Contains(r.stdout, "Linux version "+release) {
		t.Errorf("console lacks %q", "Linux version "+release)
	}

	// From the host, after exit: the unit wrote the same line, with the
	// same boot id, into the image's ext4, and it reached the disk.
	got, err := debugfsCat(t, img, distroUpFile)
	if err != nil {
		t.Fatalf("%s not in the image after the boot: %v", distroUpFile, err)
	}
	if strings.TrimSpace(got) != m[0] {
		t.Errorf("%s in the image is %q, want the console's %q", distroUpFile, got, m[0])
	}
	up, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		t.Fatal(err)
	}
	return clock.seen.Sub(start), time.Duration(up * float64(time.Second))
}
