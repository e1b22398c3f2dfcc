package vmm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"unsafe"

	"github.com/microvm-dev/microvm/devices/virtio"
	"github.com/microvm-dev/microvm/agentproto"
	"github.com/microvm-dev/microvm/internal/guard"
	"golang.org/x/sys/unix"
)

// Disk is a raw image attached as virtio-blk (/dev/vda, /dev/vdb, ...).
type Disk struct {
	Path     string
	ReadOnly bool
}

// NetIf is a virtio-net interface backed by a host TAP device.
type NetIf struct {
	Tap string
	MAC net.HardwareAddr // nil: derived from the TAP name
}

// AgentPortName is the name of the virtio-console port that carries the
// guest agent's control messages (/sys/class/virtio-ports/*/name).
const AgentPortName = agentproto.ChannelName

// virtioPlan is the list of virtio devices a config asks for, opened before
// KVM is touched so that bad paths and names are input errors.
type virtioPlan struct {
	console  *virtio.Console // hvc0
	channels *virtio.Console // the agent channel port
	disks    []virtio.DiskFile
	taps     []*os.File
	devs     []plannedDev
}

type plannedDev struct {
	name string
	dev  virtio.Device
}

func (p *virtioPlan) close() {
	for _, d := range p.disks {
		d.Close()
	}
	for _, t := range p.taps {
		t.Close()
	}
	for _, c := range []*virtio.Console{p.console, p.channels} {
		if c != nil {
			c.Close()
		}
	}
}

// cmdline returns the virtio_mmio.device= parameters announcing the devices
// (drivers/virtio/virtio_mmio.c, "Device parameters").
func (p *virtioPlan) cmdline() string {
	var b strings.Builder
	for i := range p.devs {
		base, irq := VirtioSlot(i)
		fmt.Fprintf(&b, " virtio_mmio.device=4K@%#x:%d", base, irq)
	}
	return b.String()
}

// DefaultMAC derives a stable, locally administered MAC from a TAP name.
func DefaultMAC(tap string) net.HardwareAddr {
	h := uint32(2166136261) // FNV-1a
	for i := 0; i < len(tap); i++ {
		h = (h ^ uint32(tap[i])) * 16777619
	}
	mac := net.HardwareAddr{0x02, 0x4d, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(mac[2:], h)
	return mac
}

func planVirtio(cfg *Config) (_ *virtioPlan, err error) {
	p := &virtioPlan{}
	defer func() {
		if err != nil {
			p.close()
		}
	}()
	if cfg.VirtioConsole {
		// Outputs are set in addDevices.
		p.console = virtio.NewConsole(nil)
		p.channels = virtio.NewChannels(AgentPortName)
		p.devs = append(p.devs, plannedDev{"virtio-console", p.console}, plannedDev{"virtio-console agent", p.channels})
	}
	for i, d := range cfg.Disks {
		f, err := virtio.OpenDisk(d.Path, d.ReadOnly)
		if err != nil {
			return nil, inputErr("--disk", "%v", err)
		}
		p.disks = append(p.disks, f)
		name := "vd" + string(rune('a'+i))
		id := filepath.Base(d.Path)
		p.devs = append(p.devs, plannedDev{"virtio-blk " + name, virtio.NewBlock(f, f.Size, d.ReadOnly, id)})
	}
	for _, n := range cfg.Nets {
		if n.Tap == "" || len(n.Tap) > virtio.MaxTapName {
			return nil, inputErr("--net", "tap=%q: a TAP name is 1 to %d bytes", n.Tap, virtio.MaxTapName)
		}
		mac := n.MAC
		if mac == nil {
			mac = DefaultMAC(n.Tap)
		}
		if len(mac) != 6 || mac[0]&1 != 0 {
			return nil, inputErr("--net", "mac=%s: need a 6-byte unicast MAC", mac)
		}
		tap, err := virtio.OpenTap(n.Tap)
		if err != nil {
			return nil, fmt.Errorf("--net: %w", err)
		}
		p.taps = append(p.taps, tap)
		p.devs = append(p.devs, plannedDev{"virtio-net " + n.Tap, virtio.NewNet(tap, mac)})
	}
	p.devs = append(p.devs, plannedDev{"virtio-rng", virtio.RNG{}})
	if len(p.devs) > MaxVirtioDevices {
		return nil, inputErr("--disk/--net", "%d virtio devices; at most %d fit", len(p.devs), MaxVirtioDevices)
	}
	return p, nil
}

// eventFD returns a non-blocking eventfd as a pollable *os.File.
func eventFD(name string) (*os.File, error) {
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	return os.NewFile(uintptr(fd), name), nil
}

// irqFD injects a device interrupt through KVM_IRQFD: a write to the
// eventfd pulses the GSI in the in-kernel IOAPIC without a vCPU exit.
type irqFD struct{ f *os.File }

func (i irqFD) Trigger() error {
	var one [8]byte
	binary.NativeEndian.PutUint64(one[:], 1)
	_, err := i.f.Write(one[:])
	return err
}

// attachVirtio puts the planned devices on the MMIO bus, with an irqfd per
// device and an ioeventfd per queue (Documentation/virt/kvm/api.rst,
// KVM_IRQFD and KVM_IOEVENTFD), so that notifications and interrupts never
// stop a vCPU in userspace.
func (m *Machine) attachVirtio() error {
	for i, d := range m.plan.devs {
		base, irq := VirtioSlot(i)
		irqf, err := eventFD("irqfd-" + d.name)
		if err != nil {
			return err
		}
		m.files = append(m.files, irqf)
		req := irqfdReq{FD: uint32(irqf.Fd()), GSI: irq}
		if err := m.vmIoctl("KVM_IRQFD", kvmIRQFD, uintptr(unsafe.Pointer(&req))); err != nil {
			return fmt.Errorf("%s: %w", d.name, err)
		}
		t := virtio.NewMMIO(d.name, d.dev, m.mem, irqFD{irqf}, m.deviceLogf(d.name), m.fatal)
		m.transports = append(m.transports, t)
		if err := m.mmio.Register(d.name, base, VirtioMMIOSize, t); err != nil {
			return err
		}
		for q := 0; q < t.NumQueues(); q++ {
			efd, err := eventFD(fmt.Sprintf("ioeventfd-%s-%d", d.name, q))
			if err != nil {
				return err
			}
			m.files = append(m.files, efd)
			req := ioeventfdReq{
				Datamatch: uint64(q),
				Addr:      base + virtio.QueueNotifyOffset,
				Len:       4,
				FD:        int32(efd.Fd()),
				Flags:     IOEventFDDatamatch,
			}
			if err := m.vmIoctl("KVM_IOEVENTFD", kvmIOEventFD, uintptr(unsafe.Pointer(&req))); err != nil {
				return fmt.Errorf("%s queue %d: %w", d.name, q, err)
			}
			guard.Go(fmt.Sprintf("device %s queue %d notify", d.name, q), m.fatal, func() { forwardNotify(efd, t, q) })
		}
	}
	return nil
}

// forwardNotify turns ioeventfd signals into queue notifications until the
// eventfd is closed.
func forwardNotify(efd *os.File, t *virtio.MMIO, q int) {
	var b [8]byte
	for {
		if _, err := efd.Read(b[:]); err != nil {
			if errors.Is(err, unix.EINTR) || errors.Is(err, unix.EAGAIN) {
				continue
			}
			return // closed with the machine
		}
		t.Notify(q)
	}
}
