package vmm

import (
	"errors"
	"os"
	"slices"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/microvm-dev/microvm/internal/snapshot"
)

// A restored guest's memory loads on demand: each page it touches first
// costs a host page fault on the memory file and a stage-2 (NPT/EPT) fault
// in KVM. On bare metal those cost microseconds and on-demand loading is
// what makes a restore fast and cheap. On a host that is itself a VM the
// stage-2 fault is a nested one, and the guest's first second after a
// restore went to them: in the nested harness a restored `run -- true`
// took 1.2-3.2 s, and 0.75-1.2 s with the pages that hold data in the
// memory file mapped beforehand (2026-12-02). So there, and only there,
// they are: MADV_POPULATE_READ maps them read-only in this process (the
// page cache pages, shared with every guest restored from the same file),
// and KVM_PRE_FAULT_MEMORY (api.rst; Linux 6.10) maps them read-only in
// KVM's stage-2 tables; a write still copies the page, as on demand.

const (
	kvmPreFaultMemory = 0xC040AED5 // _IOWR(KVMIO, 0xd5, struct kvm_pre_fault_memory)
	capPreFaultMemory = 236
)

// preFaultMemory mirrors struct kvm_pre_fault_memory.
type preFaultMemory struct {
	GPA, Size, Flags uint64
	_                [5]uint64
}

// nestedHost reports whether this host is a VM (the "hypervisor" CPU
// flag, CPUID.1:ECX[31]): its KVM then runs guests nested.
func nestedHost() bool {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return false
	}
	for _, l := range strings.Split(string(b), "\n") {
		if name, flags, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(name) == "flags" {
			return slices.Contains(strings.Fields(flags), "hypervisor")
		}
	}
	return false
}

// prefault maps the memory file's data pages ahead of the guest (see
// above). It is best effort: a guest whose pages are not prefaulted only
// starts slower.
func (m *Machine) prefault() {
	if m.mem.backing == nil || len(m.vcpus) == 0 {
		return
	}
	runs, err := snapshot.DataRuns(m.mem.backing)
	if err != nil {
		return
	}
	kvm := m.kvm.CheckExtension(capPreFaultMemory) > 0
	ps := snapshot.PageSize
	for _, r := range runs {
		off, end := r.First*ps, min((r.First+r.N)*ps, m.mem.Size())
		_ = unix.Madvise(m.mem.mapping[off:end], unix.MADV_POPULATE_READ)
		if !kvm {
			continue
		}
		// The memory file is laid out as the mapping: region by region.
		base := uint64(0)
		for _, reg := range m.mem.Regions {
			lo, hi := max(off, base), min(end, base+reg.Size)
			if lo < hi {
				m.vcpus[0].preFault(reg.GPA+lo-base, hi-lo)
			}
			base += reg.Size
		}
	}
}

// preFault runs KVM_PRE_FAULT_MEMORY over [gpa, gpa+size), which KVM may
// do in parts (it updates gpa and size as it goes).
func (v *vcpu) preFault(gpa, size uint64) {
	p := preFaultMemory{GPA: gpa, Size: size}
	for p.Size > 0 {
		if _, err := ioctl(v.fd(), kvmPreFaultMemory, uintptr(unsafe.Pointer(&p))); err != nil && !errors.Is(err, unix.EINTR) && !errors.Is(err, unix.EAGAIN) {
			return
		}
	}
}
