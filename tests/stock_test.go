package tests

import (
	"bytes"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/microvm-dev/microvm/internal/testimg"
)

// Debian 12's stock kernels (scripts/stock-kernel.sh; tests/run.sh puts
// them in $MICROVM_STOCK_CLOUD and $MICROVM_STOCK_GENERIC): they have no
// CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES and find the devices only through
// ACPI, whose virtio drivers are modules.

// stockKernel returns a stock kernel's directory (vmlinuz, release,
// virtio/NN-name.ko) and its release.
func stockKernel(t *testing.T, env string) (dir, release string) {
	t.Helper()
	needKVM(t)
	dir = os.Getenv(env)
	if dir == "" {
		t.Fatalf("%s must be set (tests/run.sh sets it after scripts/stock-kernel.sh)", env)
	}
	b, err := os.ReadFile(filepath.Join(dir, "release"))
	if err != nil {
		t.Fatal(err)
	}
	return dir, strings.TrimSpace(string(b))
}

// moduleHook is /bin/uinit for a stock kernel: it loads the virtio modules
// that come with the initrd, in order, then becomes the agent. It replaces
// u-root's symlink of the same name when the kernel unpacks the second
// archive over the first.
const moduleHook = `#!/bin/sh
for m in /lib/modules/microvm/*.ko; do insmod $m || echo "guest: insmod $m failed"; done
exec /bbin/agent
`

// modulesInitrd is the project's initrd with a second newc archive
// appended: the kernel's virtio modules and the hook that loads them.
func modulesInitrd(t *testing.T, dir string) string {
	t.Helper()
	_, initrd := linuxArtifacts(t)
	base, err := os.ReadFile(initrd)
	if err != nil {
		t.Fatal(err)
	}
	mods, err := filepath.Glob(filepath.Join(dir, "virtio", "*.ko"))
	if err != nil || len(mods) == 0 {
		t.Fatalf("no modules in %s/virtio: %v", dir, err)
	}
	sort.Strings(mods) // NN- prefixes: load order
	var extra bytes.Buffer
	c := testimg.NewCPIO(&extra)
	for _, m := range mods {
		c.HostFile("lib/modules/microvm/"+filepath.Base(m), m)
	}
	c.Bytes("bin/uinit", 0o755, []byte(moduleHook))
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "modules.cpio")
	if err := os.WriteFile(p, append(base, extra.Bytes()...), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// stockRun runs `microvm run` on a stock kernel; the generous limit is for
// its emulated decompressor and boot under the nested harness.
func stockRun(t *testing.T, kernel, initrd string, flags []string, argv ...string) result {
	t.Helper()
	args := append([]string{"run", "--kernel", kernel, "--initrd", initrd, "--timeout", "5m"}, flags...)
	r := runMicrovm(t, 8*time.Minute, append(append(args, "--"), argv...)...)
	t.Logf("microvm %s: exit %d in %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.code, r.elapsed, r.stdout, r.stderr)
	return r
}

func TestStockKernelCloud(t *testing.T)   { testStockKernel(t, "MICROVM_STOCK_CLOUD") }
func TestStockKernelGeneric(t *testing.T) { testStockKernel(t, "MICROVM_STOCK_GENERIC") }

func testStockKernel(t *testing.T, env string) {
	dir, release := stockKernel(t, env)
	kernel := filepath.Join(dir, "vmlinuz")
	_, initrd := linuxArtifacts(t)

	t.Run("uname", func(t *testing.T) {
		r := stockRun(t, kernel, initrd, nil, "uname", "-r")
		if r.code != 0 || strings.TrimSpace(r.stdout) != release {
			t.Fatalf("exit %d, uname -r %q, want %q", r.code, r.stdout, release)
		}
	})

	t.Run("vmgenid", func(t *testing.T) { vmgenidTest(t, dir, kernel, release) })

	t.Run("devices", func(t *testing.T) {
		img := filepath.Join(t.TempDir(), "disk.img")
		disk := make([]byte, 1<<20)
		copy(disk, "host-wrote-this\n")
		if err := os.WriteFile(img, disk, 0o644); err != nil {
			t.Fatal(err)
		}
		// Every device through ACPI: the disk read and written, eth0,
		// hvc0 (the console itself, and the agent's channel), the rng;
		// then a poweroff, which goes through the ACPI sleep registers.
		script := `head -n 1 /dev/vda; echo guest-wrote-this > /dev/vda; sync;
			ls /sys/class/net; test -c /dev/hvc0 && echo hvc0-ok; test -c /dev/hwrng && echo hwrng-ok;
			cat /sys/class/misc/hw_random/rng_current; ls /sys/bus/platform/devices; cat /proc/cmdline;
			poweroff`
		// With --console virtio the command itself comes over the agent
		// channel, a virtio-console port; console=ttyS0 after hvc0 keeps
		// /dev/console on the UART, which exists before the hook has
		// loaded virtio_console, so init and the hook have a console.
		r := stockRun(t, kernel, modulesInitrd(t, dir),
			[]string{"--console", "virtio", "--cmdline", "console=ttyS0", "--disk", img, "--net", "tap=mvstock0", "--json"}, "sh", "-c", script)
		if r.code != 0 {
			t.Fatalf("exit %d, want 0", r.code)
		}
		// Five windows in the DSDT: hvc0, the agent channel, vda, eth0,
		// the rng; none on the command line.
		for _, want := range []string{"host-wrote-this", "eth0", "hvc0-ok", "hwrng-ok", "virtio_rng.0", "LNRO0005:04"} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("guest output lacks %q", want)
			}
		}
		if strings.Contains(r.stdout, "LNRO0005:05") || strings.Contains(r.stdout, "virtio_mmio.device=") {
			t.Errorf("devices announced twice or too many windows")
		}
		if !strings.Contains(r.stderr, `"exit_reason":"poweroff"`) || !strings.Contains(r.stderr, "ACPI S5") {
			t.Errorf("the guest did not power off through ACPI S5: stderr %q", r.stderr)
		}
		got, err := os.ReadFile(img)
		if err != nil || !bytes.HasPrefix(got, []byte("guest-wrote-this\n")) {
			t.Errorf("disk after the guest's write starts %q (%v), want guest-wrote-this", got[:32], err)
		}
	})
}

// vmgenidTest: a snapshot of a stock kernel restored with a new VM
// generation ID, which the kernel's own vmgenid driver notices (GED
// interrupt, Notify on VGEN): it reseeds its CRNG and says so in its log,
// which on a cold boot it never does. A kernel built without the driver
// (Debian's cloud kernel) skips, naming it.
func vmgenidTest(t *testing.T, dir, kernel, release string) {
	cfg, err := os.ReadFile(filepath.Join(dir, "config"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(cfg), "\nCONFIG_VMGENID=y\n") {
		t.Skipf("%s is built without CONFIG_VMGENID: no driver reads the generation ID", release)
	}
	const reseeded = "crng reseeded due to virtual machine fork"
	initrd := modulesInitrd(t, dir)
	flags := []string{"--console", "virtio", "--cmdline", "console=ttyS0", "--snapshot", filepath.Join(t.TempDir(), "snap"), "--json"}
	saved := stockRun(t, kernel, initrd, flags, "dmesg")
	if saved.code != 0 || !strings.Contains(saved.stderr, `"path":"saved"`) {
		t.Fatalf("saving run: exit %d, want 0 and a saved snapshot", saved.code)
	}
	if strings.Contains(saved.stdout, reseeded) {
		t.Fatalf("a cold boot's log says %q", reseeded)
	}
	r := stockRun(t, kernel, initrd, flags, "dmesg")
	if r.code != 0 || !strings.Contains(r.stderr, `"path":"restored"`) {
		t.Fatalf("restore: exit %d, want 0 from a restored snapshot", r.code)
	}
	if !strings.Contains(r.stdout, reseeded) {
		t.Errorf("the restored kernel's log lacks %q: it did not see a new generation ID", reseeded)
	}
}

// TestStockKernelSMP: --cpus 2 brings both CPUs online, both kernels
// finding them in the MADT. Its own group: a 2-CPU L1 (tests/nested/NOTES.md).
func TestStockKernelSMP(t *testing.T) {
	for _, env := range []string{"MICROVM_STOCK_CLOUD", "MICROVM_STOCK_GENERIC"} {
		t.Run(strings.ToLower(strings.TrimPrefix(env, "MICROVM_STOCK_")), func(t *testing.T) {
			dir, _ := stockKernel(t, env)
			_, initrd := linuxArtifacts(t)
			r := stockRun(t, filepath.Join(dir, "vmlinuz"), initrd, []string{"--cpus", "2"}, "cat", "/sys/devices/system/cpu/online")
			if r.code != 0 || strings.TrimSpace(r.stdout) != "0-1" {
				t.Fatalf("exit %d, online CPUs %q, want 0-1", r.code, r.stdout)
			}
		})
	}
}
