package vmm

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/microvm-dev/microvm/devices/virtio"
	"github.com/microvm-dev/microvm/devices/virtio/p9fs"
	"github.com/microvm-dev/microvm/internal/sandbox"
)

// consoles are the virtio-console devices of a machine with VirtioConsole.
type consoles struct {
	console *virtio.Console // hvc0
	channel *virtio.Console // Config.Channel's port, or nil
}

// close closes the consoles' ports: a writer waiting for the guest to read
// returns. The device manager closes them again with the rest; that is a
// no-op.
func (c consoles) close() {
	for _, d := range []*virtio.Console{c.console, c.channel} {
		if d != nil {
			d.Close()
		}
	}
}

// closeFunc makes a func an io.Closer.
type closeFunc func()

func (f closeFunc) Close() error { f(); return nil }

// addVirtio opens what cfg's virtio devices need and adds them to dm, in
// slot order: consoles, disks, NICs, shares, then the RNG. Everything is opened
// before KVM is touched, so bad paths and names are input errors. What the
// devices' host backends will do once the guest runs goes into needs.
func addVirtio(cfg *Config, dm *DeviceManager, needs *sandbox.Needs) (c consoles, disks []virtio.DiskFile, err error) {
	if cfg.VirtioConsole {
		// Outputs are set once the machine's console writer exists.
		c.console = virtio.NewConsole(nil)
		dm.Own(closeFunc(c.console.Close))
		if _, err := dm.AddVirtio("virtio-console", c.console); err != nil {
			return c, disks, err
		}
		if cfg.Channel != nil {
			c.channel = virtio.NewChannels(cfg.Channel.Name)
			dm.Own(closeFunc(c.channel.Close))
			if _, err := dm.AddVirtio("virtio-console "+cfg.Channel.Name, c.channel); err != nil {
				return c, disks, err
			}
		}
	}
	for i, d := range cfg.Disks {
		f, err := virtio.OpenDisk(d.Path, d.ReadOnly)
		if err != nil {
			return c, disks, inputErr("Disks", "%v", err)
		}
		dm.Own(f)
		if !d.ReadOnly {
			needs.WritableDisks = true
			needs.MaxFileSize = max(needs.MaxFileSize, uint64(f.Size))
		}
		disks = append(disks, f)
		name := "vd" + string(rune('a'+i))
		if _, err := dm.AddVirtio("virtio-blk "+name, virtio.NewBlock(f, f.Size, d.ReadOnly, filepath.Base(d.Path))); err != nil {
			return c, disks, err
		}
	}
	for _, n := range cfg.Nets {
		if n.Tap == "" || len(n.Tap) > virtio.MaxTapName {
			return c, disks, inputErr("Nets", "tap=%q: a TAP name is 1 to %d bytes", n.Tap, virtio.MaxTapName)
		}
		mac := n.MAC
		if mac == nil {
			mac = DefaultMAC(n.Tap)
		}
		if len(mac) != 6 || mac[0]&1 != 0 {
			return c, disks, inputErr("Nets", "mac=%s: need a 6-byte unicast MAC", mac)
		}
		tap, err := virtio.OpenTap(n.Tap)
		if err != nil {
			return c, disks, fmt.Errorf("TAP %s: %w", n.Tap, err)
		}
		dm.Own(tap)
		if _, err := dm.AddVirtio("virtio-net "+n.Tap, virtio.NewNet(tap, mac)); err != nil {
			return c, disks, err
		}
	}
	for _, sh := range cfg.Shares {
		if sh.Tag == "" || len(sh.Tag) > virtio.P9MaxTag {
			return c, disks, inputErr("Shares", "tag %q: a mount tag is 1 to %d bytes", sh.Tag, virtio.P9MaxTag)
		}
		s, err := p9fs.Open(sh.Dir, sh.ReadOnly)
		if err != nil {
			return c, disks, inputErr("Shares", "%v", err)
		}
		dm.Own(s)
		needs.Shares = true
		if !sh.ReadOnly {
			needs.WritableShares = true
			needs.MaxFileSize = sandbox.NoFileSizeLimit
		}
		needs.ExtraFiles += p9fs.MaxFiles
		dev := virtio.NewNineP(sh.Tag, s)
		if os.Getenv("MICROVM_9P_TRACE") != "" {
			tag := sh.Tag
			dev.Trace = func(format string, a ...any) {
				fmt.Fprintf(os.Stderr, "microvm: 9p %s: "+format+"\n", append([]any{tag}, a...)...)
			}
		}
		if _, err := dm.AddVirtio("virtio-9p "+sh.Tag, dev); err != nil {
			return c, disks, err
		}
	}
	_, err = dm.AddVirtio("virtio-rng", virtio.RNG{})
	return c, disks, err
}
