package vmm

import (
	"encoding/binary"
	"fmt"
	"os"
	"unsafe"

	"github.com/microvm-dev/microvm/internal/vmm/layout"
	"golang.org/x/sys/unix"
)

// vm is one KVM VM: its fd, with guest RAM mapped into it, an in-kernel IRQ
// chip and PIT. It knows nothing of devices; the device manager wires them
// to it through irqLine, irqfd and ioeventfd.
type vm struct {
	f *os.File
}

// createVM creates the VM with an in-kernel IRQ chip and PIT, as
// Documentation/virt/kvm/api.rst orders it: TSS and identity map first.
func createVM(k *KVM) (*vm, error) {
	fd, err := ioctl(k.fd(), kvmCreateVM, 0)
	if err != nil {
		return nil, fmt.Errorf("KVM_CREATE_VM: %w", err)
	}
	unix.CloseOnExec(int(fd))
	v := &vm{f: os.NewFile(fd, "kvm-vm")}
	idmap := uint64(layout.IdentityMapAddr)
	pit := pitConfig{Flags: pitSpeakerDummy}
	for _, s := range []struct {
		name     string
		req, arg uintptr
	}{
		{"KVM_SET_TSS_ADDR", kvmSetTSSAddr, layout.TSSAddr},
		{"KVM_SET_IDENTITY_MAP_ADDR", kvmSetIdentityMapAddr, uintptr(unsafe.Pointer(&idmap))},
		{"KVM_CREATE_IRQCHIP", kvmCreateIRQChip, 0},
		{"KVM_CREATE_PIT2", kvmCreatePIT2, uintptr(unsafe.Pointer(&pit))},
	} {
		if err := v.ioctl(s.name, s.req, s.arg); err != nil {
			v.close()
			return nil, err
		}
	}
	return v, nil
}

func (v *vm) ioctl(name string, req, arg uintptr) error {
	if _, err := ioctl(int(v.f.Fd()), req, arg); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

func (v *vm) close() { v.f.Close() }

// mapMemory gives each RAM region a KVM memory slot.
func (v *vm) mapMemory(mem *Memory) error {
	for i, r := range mem.Regions {
		reg := userspaceMemoryRegion{
			Slot:          uint32(i),
			GuestPhysAddr: r.GPA,
			MemorySize:    r.Size,
			UserspaceAddr: uint64(uintptr(unsafe.Pointer(&r.host[0]))),
		}
		if err := v.ioctl("KVM_SET_USER_MEMORY_REGION", kvmSetUserMemoryRegion, uintptr(unsafe.Pointer(&reg))); err != nil {
			return fmt.Errorf("map guest RAM at %#x: %w", r.GPA, err)
		}
	}
	return nil
}

// irqLine drives one in-kernel IRQ chip input with KVM_IRQ_LINE.
type irqLine struct {
	vm  *vm
	irq uint32
}

func (l irqLine) SetLevel(high bool) error {
	lv := irqLevel{IRQ: l.irq}
	if high {
		lv.Level = 1
	}
	return l.vm.ioctl("KVM_IRQ_LINE", kvmIRQLine, uintptr(unsafe.Pointer(&lv)))
}

// eventFD returns a non-blocking eventfd as a pollable *os.File.
func eventFD(name string) (*os.File, error) {
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	return os.NewFile(uintptr(fd), name), nil
}

// irqfd makes a write to efd pulse GSI gsi in the in-kernel IOAPIC without
// a vCPU exit (KVM_IRQFD).
func (v *vm) irqfd(efd *os.File, gsi uint32) error {
	req := irqfdReq{FD: uint32(efd.Fd()), GSI: gsi}
	return v.ioctl("KVM_IRQFD", kvmIRQFD, uintptr(unsafe.Pointer(&req)))
}

// ioeventfd makes a 4-byte guest write of value to addr signal efd instead
// of exiting to userspace (KVM_IOEVENTFD with datamatch).
func (v *vm) ioeventfd(efd *os.File, addr, value uint64) error {
	req := ioeventfdReq{Datamatch: value, Addr: addr, Len: 4, FD: int32(efd.Fd()), Flags: IOEventFDDatamatch}
	return v.ioctl("KVM_IOEVENTFD", kvmIOEventFD, uintptr(unsafe.Pointer(&req)))
}

// irqFD injects a device interrupt through an irqfd's eventfd.
type irqFD struct{ f *os.File }

func (i irqFD) Trigger() error {
	var one [8]byte
	binary.NativeEndian.PutUint64(one[:], 1)
	_, err := i.f.Write(one[:])
	return err
}

// createVCPU creates vCPU id with its kvm_run mapping of mmapSize bytes.
func (v *vm) createVCPU(id, mmapSize int) (*vcpu, error) {
	fd, err := ioctl(int(v.f.Fd()), kvmCreateVCPU, uintptr(id))
	if err != nil {
		return nil, fmt.Errorf("KVM_CREATE_VCPU %d: %w", id, err)
	}
	unix.CloseOnExec(int(fd))
	c := &vcpu{id: id, f: os.NewFile(fd, fmt.Sprintf("kvm-vcpu-%d", id))}
	if c.run, err = unix.Mmap(int(fd), 0, mmapSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED); err != nil {
		c.close()
		return nil, fmt.Errorf("mmap kvm_run of vcpu %d: %w", id, err)
	}
	return c, nil
}
