package vmm

import "github.com/microvm-dev/microvm/internal/sandbox"

// RunIoctls are the ioctls a machine makes once it runs, the hottest
// first: KVM_RUN on every exit, KVM_IRQ_LINE for the UART's interrupt,
// KVM_GET_MP_STATE and KVM_GET_REGS for the halt poll and crash reports.
// Every other ioctl is made while the machine is built. The sandbox admits
// only these by number (internal/sandbox): a new ioctl on the run path
// belongs here, or a sandboxed VMM dies of SIGSYS at it.
func RunIoctls() []uint64 {
	return []uint64{kvmRun, kvmIRQLine, kvmGetMPState, kvmGetRegs}
}

// SandboxNeeds is what the built machine will ask of the host once it
// runs, for the sandbox's allowlist and limits. A device whose host
// backend makes calls of its own sets them in the builder (addVirtio).
func (m *Machine) SandboxNeeds() sandbox.Needs {
	n := m.needs
	n.Ioctls = RunIoctls()
	if m.atReady != nil {
		// The snapshot at agent ready runs sandboxed: it reads every
		// vCPU's and the VM's state, and writes the files Build opened.
		n.Snapshot = true
		n.Ioctls = append(n.Ioctls, saveIoctls...)
		if n.MaxFileSize != sandbox.NoFileSizeLimit {
			n.MaxFileSize = max(n.MaxFileSize, m.cfg.Memory)
		}
	}
	return n
}

// saveIoctls are what a snapshot of a running machine asks of KVM
// (vcpustate.go, vmstate.go, pause.go): only reads of its state, and
// KVM_KVMCLOCK_CTRL, which tells the guest it was paused.
var saveIoctls = []uint64{
	kvmGetSregs, kvmGetXSave, kvmGetXSave2, kvmGetXCRs, kvmGetDebugRegs, kvmGetLAPIC,
	kvmGetMSRs, kvmGetVCPUEvents, kvmGetTSCKHz, kvmGetCPUID2, kvmGetClock, kvmGetIRQChip,
	kvmGetPIT2, kvmGetMSRIndexList, kvmCheckExtension, kvmKVMClockCtrl,
}

// GuestDontDump reports whether guest RAM is kept out of core dumps
// (MADV_DONTDUMP).
func (m *Machine) GuestDontDump() bool { return m.mem != nil && m.mem.DontDump() }
