package vmm

import (
	"encoding/binary"
	"io"
	"net"
	"strings"
	"time"

	"github.com/microvm-dev/microvm/internal/vmm/layout"
)

// Config describes a machine to boot. Package microvm fills it from its
// public Config with every default applied; InputErrors name these fields.
type Config struct {
	Kernel string // bzImage or ELF64 path
	Initrd string // optional initramfs path
	// Cmdline is the kernel command line; the device manager appends what
	// announces the devices.
	Cmdline string
	CPUs    int
	Memory  uint64 // bytes
	// ACPI gives the guest ACPI tables (RSDP, XSDT, FADT, MADT, DSDT) and
	// the ACPI power registers, and announces the virtio devices in the
	// DSDT instead of on the command line (virtio_mmio.device=), which
	// is for kernels without ACPI. The MP table is there either way.
	ACPI bool
	// Stdout receives the guest's console output; nil discards it.
	Stdout io.Writer
	// Started is when the boot began, for the timeline (default: now).
	Started time.Time
	// OnMilestone, if set, sees every milestone: boot/debug port writes
	// (vCPU thread) and channel milestones (device goroutine).
	OnMilestone func(code uint8, value uint32)

	// Disks are attached as virtio-blk devices vda, vdb, ... in order.
	Disks []Disk
	// Nets are attached as virtio-net devices eth0, eth1, ... in order.
	Nets []NetIf
	// Shares are host directories attached as virtio-9p devices, each
	// mounted in the guest by its tag.
	Shares []Share
	// VirtioConsole adds a virtio-console whose port 0 (hvc0) writes to
	// Stdout. Put console=hvc0 on the command line to make it the guest's
	// console.
	VirtioConsole bool
	// Channel, with VirtioConsole, adds a second virtio-console device with
	// one named port (a virtio-serial channel) for a host program to talk
	// to the guest over.
	Channel *Channel
	// DrainBy, if set, is when Close stops waiting for Stdout to take the
	// rest of the output (a slow reader); what is left is dropped and
	// counted, so a guest that ended in time is not held up by its reader.
	DrainBy time.Time
	// Logf receives VMM warnings such as a virtio device's driver error
	// (default: a "microvm: " line on stderr).
	Logf func(format string, a ...any)

	// Restore, if set, starts the machine from the snapshot in this
	// directory instead of booting Kernel. Kernel and Initrd, if set, must
	// be the files it was made from, and CPUs, Memory, Cmdline and the
	// devices the ones it was made with (restore.go).
	Restore string
	// RestoreAtReady, with Restore, requires a snapshot taken at agent
	// ready: Channel's host end then answers the "ready" the agent sent
	// before it.
	RestoreAtReady bool
	// SnapshotAtReady, with Channel, saves a snapshot into this directory
	// when the guest agent is ready, before its command is handed to it.
	SnapshotAtReady string
	// Producer names the program in the snapshots it writes.
	Producer string
}

// Channel is a named virtio-console port and the host program on its end.
type Channel struct {
	Name string // /sys/class/virtio-ports/*/name in the guest
	// Open is called once while the machine is built; what the guest
	// writes to the port goes to the returned writer, on the device's
	// goroutine. If it is an io.Closer it is closed with the machine.
	Open func(ChannelEnd) io.Writer
}

// ChannelEnd is what the host end of a Channel gets from the machine.
type ChannelEnd struct {
	// Port writes to the guest; Unread is how much it has not read yet.
	Port interface {
		Write([]byte) (int, error)
		Unread() int
	}
	// Milestone records a milestone as if written to the debug port.
	Milestone func(code uint8, value uint32)
	// Logf is the machine's rate-limited warning log.
	Logf func(format string, a ...any)
	// Fatal ends the machine with an internal error (a goroutine of the
	// host end panicked).
	Fatal func(error)
	// Waiting is set on a machine restored from a snapshot taken at agent
	// ready: the agent sent "ready" before the snapshot and waits for the
	// reply, which the host end sends without waiting for another.
	Waiting bool
	// BeforeReply, if set, is run by the host end, on a goroutine of its
	// own, before it replies to "ready": with Config.SnapshotAtReady the
	// machine snapshots itself there.
	BeforeReply func()
}

// Disk is a raw image attached as virtio-blk (/dev/vda, /dev/vdb, ...).
type Disk struct {
	Path     string
	ReadOnly bool
}

// Share is a host directory served over virtio-9p under a mount tag.
type Share struct {
	Tag      string
	Dir      string
	ReadOnly bool
}

// NetIf is a virtio-net interface backed by a host TAP device.
type NetIf struct {
	Tap string
	MAC net.HardwareAddr // nil: derived from the TAP name
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

// MaxCPUs is the most vCPUs a machine may have: APIC IDs 0-253, with the
// IOAPIC's ID after them below the broadcast ID 0xff.
const MaxCPUs = 254

// validate checks the parts of a config that need no file and no KVM.
func (c *Config) validate() error {
	switch {
	case c.CPUs < 1 || c.CPUs > MaxCPUs:
		return inputErr("CPUs", "%d is out of range: need 1 to %d", c.CPUs, MaxCPUs)
	case c.Memory < layout.MinMemory:
		return inputErr("Memory", "%d MiB is below the minimum of %d MiB", c.Memory/layout.MiB, layout.MinMemory/layout.MiB)
	case c.Memory > layout.MaxMemory:
		return inputErr("Memory", "%d GiB is above the maximum of %d GiB", c.Memory/layout.GiB, layout.MaxMemory/layout.GiB)
	case c.Kernel == "" && c.Restore == "":
		return inputErr("Kernel", "no kernel given")
	case c.Restore != "" && c.SnapshotAtReady != "":
		return inputErr("Restore", "a machine restores a snapshot or saves one at agent ready, not both")
	case c.SnapshotAtReady != "" && c.Channel == nil:
		return inputErr("SnapshotAtReady", "needs the agent channel (VirtioConsole and Channel)")
	case strings.IndexByte(c.Cmdline, 0) >= 0:
		return inputErr("Cmdline", "contains a NUL byte")
	case c.Channel != nil && !c.VirtioConsole:
		return inputErr("Channel", "needs VirtioConsole")
	}
	return nil
}
