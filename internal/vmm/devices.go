package vmm

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/microvm-dev/microvm/devices"
	"github.com/microvm-dev/microvm/devices/virtio"
	"github.com/microvm-dev/microvm/internal/guard"
	"github.com/microvm-dev/microvm/internal/snapshot"
	"github.com/microvm-dev/microvm/internal/vmm/layout"
	"golang.org/x/sys/unix"
)

// DeviceKind says how a device is reached and described to the guest.
type DeviceKind int

const (
	// PIODevice is a legacy device on I/O ports (COM1, i8042, debug port).
	PIODevice DeviceKind = iota
	// VirtioMMIODevice is a virtio-mmio transport window
	// (virtio 1.x spec, 4.2 "Virtio Over MMIO").
	VirtioMMIODevice
	// VMGenIDDevice is the VM generation ID (with ACPI): Base/Size its
	// identifier in guest memory, IRQ the generic event device's GSI that
	// announces a new one. The DSDT describes both (acpi.VMGenID).
	VMGenIDDevice
)

// DeviceInfo is the one record of a device: every description of it (the
// kernel command line or the ACPI DSDT, a snapshot's device list) is
// derived from this and nothing else.
type DeviceInfo struct {
	Name       string
	Kind       DeviceKind
	Base, Size uint64 // I/O ports or guest-physical window
	IRQ        uint32 // 0: none
	// VirtioID is the virtio device type (virtio 1.x spec, 5 "Device
	// Types") of a VirtioMMIODevice.
	VirtioID uint32
	// HID is the device's ACPI hardware ID (ACPI 6.5, 6.1.5 _HID) in the
	// DSDT; "" keeps it out of the DSDT (the i8042, whose only use is its
	// reset line; the debug port; the ACPI registers, which the FADT
	// describes).
	HID string
}

// ACPI hardware IDs of the devices in the DSDT.
const (
	// HIDSerial is a 16550A-compatible COM port.
	HIDSerial = "PNP0501"
	// HIDVirtioMMIO is a virtio-mmio window, which Linux's virtio_mmio
	// driver binds by this ID (drivers/virtio/virtio_mmio.c).
	HIDVirtioMMIO = "LNRO0005"
)

// DeviceManager is the only place that gives a device its address and IRQ.
// Legacy devices get the fixed ones from the layout table; virtio devices
// get the next free virtio-mmio slot in the order they are added.
type DeviceManager struct {
	pio, mmio *devices.Bus
	infos     []DeviceInfo
	// state is each device's snapshot state, in infos' order: the legacy
	// device itself, or its virtio transport once attached; nil for a
	// device that cannot be snapshotted.
	state  []snapshot.Stateful
	virtio []plannedVirtio
	owned  []io.Closer // the files and consoles the devices use

	transports []*virtio.MMIO // after attach
	eventfds   []*os.File
}

type plannedVirtio struct {
	info int // index into infos
	dev  virtio.Device
}

func newDeviceManager() *DeviceManager {
	return &DeviceManager{pio: devices.NewBus("pio"), mmio: devices.NewBus("mmio")}
}

// Legacy are the PC devices every machine has, each at its fixed place in
// the layout table: COM1 (a 16550A on IRQ 4), the i8042 (for its reset
// line) and the boot/debug port; and, with ACPI, the ACPI power registers.
type Legacy struct {
	COM1, I8042, Debug devices.Device
	ACPI               devices.Device // nil: no ACPI
}

// AddLegacy puts the legacy devices on the I/O port bus.
func (dm *DeviceManager) AddLegacy(l Legacy) error {
	for _, d := range []struct {
		name       string
		base, size uint64
		irq        uint32
		hid        string
		dev        devices.Device
	}{
		{"com1", layout.COM1Port, layout.COM1Size, layout.COM1IRQ, HIDSerial, l.COM1},
		{"i8042", layout.I8042Port, layout.I8042CmdPort - layout.I8042Port + 1, 0, "", l.I8042},
		{"debug", layout.DebugPort, layout.DebugPortSize, 0, "", l.Debug},
		{"acpi", layout.ACPIPMPort, devices.ACPIPMSize, 0, "", l.ACPI},
	} {
		if d.dev == nil {
			continue
		}
		if err := dm.pio.Register(d.name, d.base, d.size, d.dev); err != nil {
			return err
		}
		dm.infos = append(dm.infos, DeviceInfo{Name: d.name, Kind: PIODevice, Base: d.base, Size: d.size, IRQ: d.irq, HID: d.hid})
		st, _ := d.dev.(snapshot.Stateful)
		dm.state = append(dm.state, st)
	}
	return nil
}

// AddVMGenID records the VM generation ID at its layout address and IRQ;
// st is its snapshot state (a restore gives the guest a new identifier).
func (dm *DeviceManager) AddVMGenID(st snapshot.Stateful) {
	dm.infos = append(dm.infos, DeviceInfo{Name: "vmgenid", Kind: VMGenIDDevice,
		Base: layout.VMGenIDAddr, Size: layout.VMGenIDSize, IRQ: layout.GEDIRQ})
	dm.state = append(dm.state, st)
}

// AddVirtio gives a virtio device the next virtio-mmio slot: window
// VirtioMMIOBase + i*VirtioMMIOSize and IRQ VirtioIRQBase + i. The device
// goes live in attach, once the VM and its memory exist.
func (dm *DeviceManager) AddVirtio(name string, dev virtio.Device) (DeviceInfo, error) {
	i := len(dm.virtio)
	if i >= layout.MaxVirtioDevices {
		return DeviceInfo{}, inputErr("Disks/Nets", "more than %d virtio devices do not fit", layout.MaxVirtioDevices)
	}
	info := DeviceInfo{
		Name:     name,
		Kind:     VirtioMMIODevice,
		Base:     layout.VirtioMMIOBase + uint64(i)*layout.VirtioMMIOSize,
		Size:     layout.VirtioMMIOSize,
		IRQ:      layout.VirtioIRQBase + uint32(i),
		VirtioID: dev.Type(),
		HID:      HIDVirtioMMIO,
	}
	dm.virtio = append(dm.virtio, plannedVirtio{info: len(dm.infos), dev: dev})
	dm.infos = append(dm.infos, info)
	dm.state = append(dm.state, nil)
	return info, nil
}

// Own makes the manager close c with the machine.
func (dm *DeviceManager) Own(c io.Closer) { dm.owned = append(dm.owned, c) }

// Devices returns every device's record, in the order they were added.
func (dm *DeviceManager) Devices() []DeviceInfo { return append([]DeviceInfo(nil), dm.infos...) }

// Cmdline returns the virtio_mmio.device= parameters announcing the virtio
// devices (drivers/virtio/virtio_mmio.c, "Device parameters"), for a
// machine without ACPI; with ACPI the DSDT announces them (acpi.go), never
// both, or a kernel with both mechanisms would probe each device twice.
func (dm *DeviceManager) Cmdline() string {
	var b strings.Builder
	for _, d := range dm.infos {
		if d.Kind == VirtioMMIODevice {
			fmt.Fprintf(&b, " virtio_mmio.device=%dK@%#x:%d", d.Size/layout.KiB, d.Base, d.IRQ)
		}
	}
	return b.String()
}

// attach puts the virtio devices on the MMIO bus, with an irqfd per device
// and an ioeventfd per queue (Documentation/virt/kvm/api.rst, KVM_IRQFD and
// KVM_IOEVENTFD), so that notifications and interrupts never stop a vCPU in
// userspace.
func (dm *DeviceManager) attach(v *vm, mem *Memory, logf func(name string) func(string, ...any), fatal func(error)) error {
	for _, p := range dm.virtio {
		d := dm.infos[p.info]
		irqf, err := eventFD("irqfd-" + d.Name)
		if err != nil {
			return err
		}
		dm.eventfds = append(dm.eventfds, irqf)
		if err := v.irqfd(irqf, d.IRQ); err != nil {
			return fmt.Errorf("%s: %w", d.Name, err)
		}
		t := virtio.NewMMIO(d.Name, p.dev, mem, irqFD{irqf}, logf(d.Name), fatal)
		dm.transports = append(dm.transports, t)
		dm.state[p.info] = t
		if err := dm.mmio.Register(d.Name, d.Base, d.Size, t); err != nil {
			return err
		}
		for q := 0; q < t.NumQueues(); q++ {
			efd, err := eventFD(fmt.Sprintf("ioeventfd-%s-%d", d.Name, q))
			if err != nil {
				return err
			}
			dm.eventfds = append(dm.eventfds, efd)
			if err := v.ioeventfd(efd, d.Base+virtio.QueueNotifyOffset, uint64(q)); err != nil {
				return fmt.Errorf("%s queue %d: %w", d.Name, q, err)
			}
			guard.Go(fmt.Sprintf("device %s queue %d notify", d.Name, q), fatal, func() { forwardNotify(efd, t, q) })
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

// stop ends the device goroutines; they use guest memory, so this comes
// before it is unmapped.
func (dm *DeviceManager) stop() {
	for _, t := range dm.transports {
		t.Close()
	}
	dm.transports = nil
}

// close stops the devices and releases everything they hold.
func (dm *DeviceManager) close() {
	dm.stop()
	for _, f := range dm.eventfds {
		f.Close()
	}
	dm.eventfds = nil
	for _, c := range dm.owned {
		c.Close()
	}
	dm.owned = nil
}
