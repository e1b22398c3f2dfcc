package tests

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// virtio device tests: real guests (the project's kernel and u-root initrd)
// using virtio-blk, virtio-net, virtio-console and virtio-rng.

// randomFile writes n random bytes to a new file in dir and returns its path
// and SHA-256.
func randomFile(t *testing.T, dir, name string, n int) (string, string) {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return p, hex.EncodeToString(sum[:])
}

func fileSHA(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// durabilityLoops: 3 in the gate (4 boots in one L1: the gate boots as few
// L2s per L1 as it can, tests/nested/NOTES.md); MICROVM_DURABILITY_LOOPS=100
// makes a soak.
func durabilityLoops(t *testing.T) int { return envInt(t, "MICROVM_DURABILITY_LOOPS", 3) }

var sumRE = regexp.MustCompile(`(?m)^([0-9a-f]{64})\s`)

// TestLinuxDiskDurability: each boot checks the file the previous boot wrote
// to an ext4 filesystem on /dev/vda, then writes new random bytes (handed
// in on a read-only /dev/vdb), syncs and powers off. The host compares the
// guest's checksum with the bytes it handed in.
func TestLinuxDiskDurability(t *testing.T) {
	linuxArtifacts(t)
	mkfs, err := exec.LookPath("mkfs.ext4")
	if err != nil {
		t.Fatalf("mkfs.ext4 not found (tests/run.sh installs e2fsprogs and puts it in L1): %v", err)
	}
	dir := t.TempDir()
	img := filepath.Join(dir, "fs.img")
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 64<<20); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(mkfs, "-q", "-F", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	const size = 256 << 10
	loops := durabilityLoops(t)
	prev := ""
	for i := 0; i <= loops; i++ {
		src, sum := randomFile(t, dir, "src.img", size)
		script := "mkdir -p /mnt && mount -t ext4 /dev/vda /mnt || exit 10\n"
		if prev != "" {
			script += "shasum -a 256 /mnt/data || exit 11\n"
		}
		if i < loops {
			script += fmt.Sprintf("dd if=/dev/vdb of=/mnt/data bs=4096 count=%d 2>/dev/null || exit 12\n", size/4096)
		}
		script += "sync && umount /mnt || exit 13\n"
		r := microvmRun(t, []string{"--disk", img, "--disk", src + ",ro"}, "sh", "-c", script)
		if r.code != 0 {
			t.Fatalf("boot %d: exit code %d", i, r.code)
		}
		if prev != "" {
			m := sumRE.FindStringSubmatch(r.stdout)
			if m == nil {
				t.Fatalf("boot %d: no checksum in guest output %q", i, r.stdout)
			}
			if m[1] != prev {
				t.Fatalf("boot %d: the file written by boot %d reads back with SHA-256 %s, want %s", i, i-1, m[1], prev)
			}
		}
		prev = sum
	}
	t.Logf("%d boots: every file survived power-off and reboot byte for byte", loops+1)
}

// TestLinuxDiskReadOnly: with ",ro" the guest sees a read-only disk, a
// write fails, and the host file is unchanged. The same boot reads the
// entropy device.
func TestLinuxDiskReadOnly(t *testing.T) {
	linuxArtifacts(t)
	dir := t.TempDir()
	img, sum := randomFile(t, dir, "ro.img", 1<<20)
	script := strings.Join([]string{
		"echo ro=$(cat /sys/block/vda/ro)",
		"echo rng=$(cat /sys/class/misc/hw_random/rng_current)",
		"echo hwrng=$(head -c 64 /dev/hwrng | wc -c)",
		"dd if=/dev/vdb of=/dev/vda bs=512 count=1 2>/dev/null && echo write=ok || echo write=failed",
	}, "\n")
	src, _ := randomFile(t, dir, "src.img", 4096)
	r := microvmRun(t, []string{"--disk", img + ",ro", "--disk", src}, "sh", "-c", script)
	if r.code != 0 {
		t.Fatalf("exit code %d", r.code)
	}
	for _, want := range []string{"ro=1", "rng=virtio_rng.0", "hwrng=64", "write=failed"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("guest output lacks %q", want)
		}
	}
	if got := fileSHA(t, img); got != sum {
		t.Errorf("read-only image changed: SHA-256 %s, want %s", got, sum)
	}
}

// TestLinuxVirtioConsole: with --console virtio the guest console is hvc0,
// the command and its exit status travel over the agent channel, and 10 MiB
// of stdout arrive byte for byte.
func TestLinuxVirtioConsole(t *testing.T) {
	linuxArtifacts(t)
	dir := t.TempDir()
	const size = 10 << 20
	data, sum := randomFile(t, dir, "data.img", size)
	r := microvmRunQuiet(t, []string{"--console", "virtio", "--disk", data + ",ro"}, "cat", "/dev/vda")
	if r.code != 0 {
		t.Fatalf("exit code %d; stderr:\n%s", r.code, r.stderr)
	}
	got := sha256.Sum256([]byte(r.stdout))
	if len(r.stdout) != size || hex.EncodeToString(got[:]) != sum {
		t.Fatalf("stdout: %d bytes with SHA-256 %x, want %d bytes with %s", len(r.stdout), got, size, sum)
	}
	r = microvmRun(t, []string{"--console", "virtio"}, "sh", "-c", "cat /proc/cmdline; readlink /sys/class/tty/console/active || cat /sys/class/tty/console/active; exit 9")
	if r.code != 9 {
		t.Errorf("exit code %d, want the command's 9", r.code)
	}
	if !strings.Contains(r.stdout, "console=hvc0") || !strings.Contains(r.stdout, "hvc0") || strings.Contains(r.stdout, "microvm.cmd=") {
		t.Errorf("want console=hvc0 and the command not on the command line; got %q", r.stdout)
	}
}

// microvmRunQuiet is microvmRun without logging stdout (which is large).
func microvmRunQuiet(t *testing.T, flags []string, argv ...string) result {
	t.Helper()
	kernel, initrd := linuxArtifacts(t)
	args := append([]string{"run", "--kernel", kernel, "--initrd", initrd, "--timeout", "4m"}, flags...)
	args = append(append(args, "--"), argv...)
	r := runMicrovm(t, linuxLimit+2*time.Minute, args...)
	t.Logf("microvm %s: exit %d in %v, %d bytes of stdout", strings.Join(args, " "), r.code, r.elapsed, len(r.stdout))
	return r
}

// TestLinuxNet: in a network namespace of its own with a TAP inside, the
// host pings the guest and receives 10 MiB over TCP from it, checksummed.
// Nothing leaves the namespace.
func TestLinuxNet(t *testing.T) {
	kernel, initrd := linuxArtifacts(t)
	// The namespace belongs to this OS thread, which is never unlocked: it
	// exits with the test goroutine and the namespace (and TAP) with it.
	runtime.LockOSThread()
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		t.Fatalf("unshare(CLONE_NEWNET): %v", err)
	}
	const tap = "mvtest0"
	hostIP, guestIP := net.IPv4(10, 11, 12, 1), net.IPv4(10, 11, 12, 2)
	makeTap(t, tap)
	ifaceUp(t, "lo", nil)
	ifaceUp(t, tap, hostIP)

	dir := t.TempDir()
	const size = 10 << 20
	data, sum := randomFile(t, dir, "data.img", size)
	ln, err := net.Listen("tcp4", hostIP.String()+":5000")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	script := fmt.Sprintf("ip addr add %s/24 dev eth0 && ip link set eth0 up || exit 10\n"+
		"nc %s 5000 < /dev/vda || exit 11\n", guestIP, hostIP)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, microvmBin(t), "run", "--kernel", kernel, "--initrd", initrd, "--timeout", "4m",
		"--net", "tap="+tap, "--disk", data+",ro", "--", "sh", "-c", script)
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	fail := func(format string, a ...any) {
		cancel()
		<-exited
		t.Fatalf(format+"\nstdout:\n%s\nstderr:\n%s", append(a, so.String(), se.String())...)
	}

	// The guest connects once its network is up; it then blocks sending
	// until we read, so it is alive for the ping.
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(4 * time.Minute))
	conn, err := ln.Accept()
	if err != nil {
		fail("no TCP connection from the guest: %v", err)
	}
	defer conn.Close()
	if rtt, err := ping(hostIP, guestIP); err != nil {
		fail("ping %s: %v", guestIP, err)
	} else {
		t.Logf("ping %s: reply in %v", guestIP, rtt)
	}
	conn.SetDeadline(time.Now().Add(4 * time.Minute))
	h := sha256.New()
	start := time.Now()
	n, err := io.Copy(h, conn)
	conn.Close() // the guest's nc exits when we close
	if err != nil {
		fail("TCP receive after %d bytes: %v", n, err)
	}
	el := time.Since(start)
	if n != size || hex.EncodeToString(h.Sum(nil)) != sum {
		fail("received %d bytes with SHA-256 %x, want %d bytes with %s", n, h.Sum(nil), size, sum)
	}
	t.Logf("TCP: %d bytes from the guest in %v (%.1f MiB/s), checksum matches", n, el, float64(n)/(1<<20)/el.Seconds())
	if err := <-exited; err != nil {
		t.Fatalf("microvm: %v\nstderr:\n%s", err, se.String())
	}
}

// makeTap creates a persistent TAP interface (in the current namespace).
func makeTap(t *testing.T, name string) {
	t.Helper()
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("open /dev/net/tun: %v", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		t.Fatal(err)
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		t.Fatalf("TUNSETIFF %s: %v", name, err)
	}
	if err := unix.IoctlSetInt(fd, unix.TUNSETPERSIST, 1); err != nil {
		t.Fatalf("TUNSETPERSIST %s: %v", name, err)
	}
}

// ifaceUp sets an IPv4 /24 address (if ip is not nil) and brings name up.
func ifaceUp(t *testing.T, name string, ip net.IP) {
	t.Helper()
	s, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(s)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		t.Fatal(err)
	}
	if ip != nil {
		if err := ifr.SetInet4Addr(ip.To4()); err != nil {
			t.Fatal(err)
		}
		if err := unix.IoctlIfreq(s, unix.SIOCSIFADDR, ifr); err != nil {
			t.Fatalf("SIOCSIFADDR %s: %v", name, err)
		}
		if err := ifr.SetInet4Addr(net.IPv4(255, 255, 255, 0).To4()); err != nil {
			t.Fatal(err)
		}
		if err := unix.IoctlIfreq(s, unix.SIOCSIFNETMASK, ifr); err != nil {
			t.Fatalf("SIOCSIFNETMASK %s: %v", name, err)
		}
	}
	if err := unix.IoctlIfreq(s, unix.SIOCGIFFLAGS, ifr); err != nil {
		t.Fatalf("SIOCGIFFLAGS %s: %v", name, err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(s, unix.SIOCSIFFLAGS, ifr); err != nil {
		t.Fatalf("SIOCSIFFLAGS %s: %v", name, err)
	}
}

// ping sends ICMP echo requests from src to dst until one is answered
// (up to 10 tries, 1 s apart).
func ping(src, dst net.IP) (time.Duration, error) {
	c, err := net.DialIP("ip4:icmp", &net.IPAddr{IP: src}, &net.IPAddr{IP: dst})
	if err != nil {
		return 0, err
	}
	defer c.Close()
	id := uint16(os.Getpid())
	for seq := uint16(1); seq <= 10; seq++ {
		msg := make([]byte, 16)
		msg[0] = 8 // echo request
		binary.BigEndian.PutUint16(msg[4:], id)
		binary.BigEndian.PutUint16(msg[6:], seq)
		copy(msg[8:], "microvm!")
		binary.BigEndian.PutUint16(msg[2:], icmpChecksum(msg))
		start := time.Now()
		if _, err := c.Write(msg); err != nil {
			return 0, err
		}
		c.SetReadDeadline(time.Now().Add(time.Second))
		buf := make([]byte, 1500)
		for {
			n, _, err := c.ReadFrom(buf) // ReadFrom strips the IPv4 header; Read does not
			if err != nil {
				break // timeout: next try
			}
			if n >= 8 && buf[0] == 0 && binary.BigEndian.Uint16(buf[4:]) == id && binary.BigEndian.Uint16(buf[6:]) == seq {
				return time.Since(start), nil
			}
		}
	}
	return 0, fmt.Errorf("no echo reply from %s to 10 requests", dst)
}

func icmpChecksum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}
