package vmm

import (
	"encoding/binary"
	"fmt"
	"slices"
	"unsafe"

	"github.com/microvm-dev/microvm/internal/snapshot"
)

// saveState reads the VM-wide state: the in-kernel PIT, the KVM clock and
// the three interrupt controllers, as Firecracker does
// (src/vmm/src/arch/x86_64/vm.rs, save_state).
//
// The clock is saved with its flags cleared. KVM_CLOCK_TSC_STABLE is not
// accepted by KVM_SET_CLOCK, and KVM_CLOCK_REALTIME would make KVM advance
// the restored clock by the wall time since the snapshot (api.rst,
// KVM_SET_CLOCK): the guest's monotonic clock then jumps while its TSC,
// restored from the MSRs, does not. Without it a restored guest's clocks
// continue from the instant of the snapshot, consistently; the agent then
// sets its wall clock from the host's.
func (v *vm) saveState() (snapshot.VM, error) {
	var s snapshot.VM
	fd := int(v.f.Fd())
	var err error
	if s.PIT, err = getRaw(fd, "KVM_GET_PIT2", kvmGetPIT2, sizePIT2); err != nil {
		return s, err
	}
	if s.Clock, err = getRaw(fd, "KVM_GET_CLOCK", kvmGetClock, sizeClock); err != nil {
		return s, err
	}
	clearClockFlags(s.Clock)
	for i, id := range irqChipIDs {
		b := make([]byte, sizeIRQChip)
		binary.LittleEndian.PutUint32(b, id)
		if err := v.ioctlBuf("KVM_GET_IRQCHIP", kvmGetIRQChip, b); err != nil {
			return s, err
		}
		s.IRQChips[i] = b
	}
	return s, nil
}

func clearClockFlags(clock []byte) {
	if len(clock) >= 12 {
		binary.LittleEndian.PutUint32(clock[8:], 0)
	}
}

// restoreState puts saved VM-wide state back, after the vCPUs' (as
// Firecracker's builder does: the vCPUs' TSCs are in place when the clock
// is set) and before the devices', which may raise interrupts in the
// restored controllers.
func (v *vm) restoreState(s *snapshot.VM) error {
	fd := int(v.f.Fd())
	if err := setRaw(fd, "KVM_SET_PIT2", kvmSetPIT2, s.PIT, sizePIT2); err != nil {
		return err
	}
	clock := slices.Clone(s.Clock)
	clearClockFlags(clock)
	if err := setRaw(fd, "KVM_SET_CLOCK", kvmSetClock, clock, sizeClock); err != nil {
		return err
	}
	for i, id := range irqChipIDs {
		b := s.IRQChips[i]
		if len(b) != sizeIRQChip || binary.LittleEndian.Uint32(b) != id {
			return fmt.Errorf("KVM_SET_IRQCHIP: interrupt controller %d of the snapshot is malformed", i)
		}
		if err := setRaw(fd, "KVM_SET_IRQCHIP", kvmSetIRQChip, b, sizeIRQChip); err != nil {
			return err
		}
	}
	return nil
}

func (v *vm) ioctlBuf(name string, req uintptr, b []byte) error {
	return v.ioctl(name, req, uintptr(unsafe.Pointer(&b[0])))
}
