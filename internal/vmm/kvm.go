package vmm

// A thin, typed layer over the KVM ioctl API (Documentation/virt/kvm/api.rst).
// Unlike a retry-forever wrapper, EINTR is returned to the caller: a vCPU must be
// kickable out of KVM_RUN (immediate_exit plus a signal).

import (
	"errors"
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

const kvmAPIVersion = 12

// ioctl request numbers, computed as _IO/_IOR/_IOW/_IOWR(KVMIO=0xAE, nr, size).
const (
	kvmGetAPIVersion       = 0xAE00
	kvmCreateVM            = 0xAE01
	kvmCheckExtension      = 0xAE03
	kvmGetVCPUMmapSize     = 0xAE04
	kvmGetSupportedCPUID   = 0xC008AE05
	kvmCreateVCPU          = 0xAE41
	kvmSetUserMemoryRegion = 0x4020AE46
	kvmSetTSSAddr          = 0xAE47
	kvmSetIdentityMapAddr  = 0x4008AE48
	kvmCreateIRQChip       = 0xAE60
	kvmIRQLine             = 0x4008AE61
	kvmIRQFD               = 0x4020AE76
	kvmCreatePIT2          = 0x4040AE77
	kvmIOEventFD           = 0x4040AE79
	kvmRun                 = 0xAE80
	kvmGetMPState          = 0x8004AE98
	kvmGetRegs             = 0x8090AE81
	kvmSetRegs             = 0x4090AE82
	kvmGetSregs            = 0x8138AE83
	kvmSetSregs            = 0x4138AE84
	kvmSetMSRs             = 0x4008AE89
	kvmSetCPUID2           = 0x4008AE90
	kvmSetFPU              = 0x41A0AE8D
	kvmGetLAPIC            = 0x8400AE8E
	kvmSetLAPIC            = 0x4400AE8F
)

// Capabilities the VMM needs (KVM_CAP_*).
const (
	capIRQChip       = 0
	capUserMemory    = 3
	capSetTSSAddr    = 4
	capExtCPUID      = 7
	capNrVCPUs       = 9
	capMaxVCPUs      = 66
	capPIT2          = 33
	capIOEventFD     = 36
	capIRQFD         = 32
	capImmediateExit = 136
	capTSCDeadline   = 72
)

// RequiredCaps lists capabilities a host must offer, by name, for `check`.
var RequiredCaps = []struct {
	Name string
	Cap  uintptr
}{
	{"KVM_CAP_IRQCHIP", capIRQChip},
	{"KVM_CAP_USER_MEMORY", capUserMemory},
	{"KVM_CAP_SET_TSS_ADDR", capSetTSSAddr},
	{"KVM_CAP_EXT_CPUID", capExtCPUID},
	{"KVM_CAP_PIT2", capPIT2},
	{"KVM_CAP_IOEVENTFD", capIOEventFD},
	{"KVM_CAP_IRQFD", capIRQFD},
	{"KVM_CAP_IMMEDIATE_EXIT", capImmediateExit},
}

func ioctl(fd int, req uintptr, arg uintptr) (uintptr, error) {
	r, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, arg)
	if errno != 0 {
		return r, errno
	}
	return r, nil
}

// KVM is an open /dev/kvm.
type KVM struct {
	f *os.File
}

// ErrNoKVM wraps failures to open /dev/kvm, with a hint on how to fix them.
type ErrNoKVM struct{ Err error }

func (e *ErrNoKVM) Error() string {
	switch {
	case errors.Is(e.Err, os.ErrNotExist), errors.Is(e.Err, unix.ENODEV), errors.Is(e.Err, unix.ENXIO):
		return "/dev/kvm: not present: enable virtualization (load kvm_intel or kvm_amd, or enable nested virtualization for this VM)"
	case errors.Is(e.Err, os.ErrPermission):
		return "/dev/kvm: permission denied: add your user to the kvm group (sudo usermod -aG kvm $USER, then log in again) or run as root"
	}
	return fmt.Sprintf("/dev/kvm: %v", e.Err)
}

func (e *ErrNoKVM) Unwrap() error { return e.Err }

// OpenKVM opens /dev/kvm and checks the API version.
func OpenKVM() (*KVM, error) {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &ErrNoKVM{Err: err}
	}
	k := &KVM{f: f}
	v, err := ioctl(k.fd(), kvmGetAPIVersion, 0)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("KVM_GET_API_VERSION: %w", err)
	}
	if v != kvmAPIVersion {
		f.Close()
		return nil, fmt.Errorf("KVM API version %d, want %d", v, kvmAPIVersion)
	}
	return k, nil
}

func (k *KVM) fd() int { return int(k.f.Fd()) }

// Close closes /dev/kvm.
func (k *KVM) Close() error { return k.f.Close() }

// CheckExtension returns the KVM_CHECK_EXTENSION value for cap (0: absent).
func (k *KVM) CheckExtension(cap uintptr) int {
	r, err := ioctl(k.fd(), kvmCheckExtension, cap)
	if err != nil {
		return 0
	}
	return int(r)
}

// APIVersion returns KVM_GET_API_VERSION.
func (k *KVM) APIVersion() (int, error) {
	v, err := ioctl(k.fd(), kvmGetAPIVersion, 0)
	return int(v), err
}

// MaxVCPUs is the largest vCPU count this host's KVM accepts.
func (k *KVM) MaxVCPUs() int {
	if n := k.CheckExtension(capMaxVCPUs); n > 0 {
		return n
	}
	if n := k.CheckExtension(capNrVCPUs); n > 0 {
		return n
	}
	return 4
}

// RecommendedVCPUs is KVM_CAP_NR_VCPUS: the vCPU count the host KVM
// recommends (usually the host's CPU count).
func (k *KVM) RecommendedVCPUs() int { return k.CheckExtension(capNrVCPUs) }

// ProbeVM creates and destroys an empty VM: the cheapest proof that this
// /dev/kvm can run a guest at all.
func (k *KVM) ProbeVM() error {
	fd, err := ioctl(k.fd(), kvmCreateVM, 0)
	if err != nil {
		return fmt.Errorf("KVM_CREATE_VM: %w", err)
	}
	return unix.Close(int(fd))
}

func (k *KVM) vcpuMmapSize() (int, error) {
	r, err := ioctl(k.fd(), kvmGetVCPUMmapSize, 0)
	return int(r), err
}

// cpuidEntry mirrors struct kvm_cpuid_entry2.
type cpuidEntry struct {
	Function uint32
	Index    uint32
	Flags    uint32
	Eax      uint32
	Ebx      uint32
	Ecx      uint32
	Edx      uint32
	_        [3]uint32
}

const maxCPUIDEntries = 256

// cpuid2 mirrors struct kvm_cpuid2 with a fixed-size entry array.
type cpuid2 struct {
	Nent    uint32
	_       uint32
	Entries [maxCPUIDEntries]cpuidEntry
}

// SupportedCPUID returns KVM_GET_SUPPORTED_CPUID.
func (k *KVM) SupportedCPUID() ([]cpuidEntry, error) {
	c := &cpuid2{Nent: maxCPUIDEntries}
	if _, err := ioctl(k.fd(), kvmGetSupportedCPUID, uintptr(unsafe.Pointer(c))); err != nil {
		return nil, fmt.Errorf("KVM_GET_SUPPORTED_CPUID: %w", err)
	}
	return append([]cpuidEntry(nil), c.Entries[:c.Nent]...), nil
}

// userspaceMemoryRegion mirrors struct kvm_userspace_memory_region.
type userspaceMemoryRegion struct {
	Slot          uint32
	Flags         uint32
	GuestPhysAddr uint64
	MemorySize    uint64
	UserspaceAddr uint64
}

type irqLevel struct {
	IRQ   uint32
	Level uint32
}

type pitConfig struct {
	Flags uint32
	_     [15]uint32
}

const pitSpeakerDummy = 1

type irqfdReq struct {
	FD         uint32
	GSI        uint32
	Flags      uint32
	ResampleFD uint32
	_          [16]byte
}

type ioeventfdReq struct {
	Datamatch uint64
	Addr      uint64
	Len       uint32
	FD        int32
	Flags     uint32
	_         [36]byte
}

// ioeventfd flags.
const (
	IOEventFDDatamatch = 1 << 0
	IOEventFDPIO       = 1 << 1
)

// Regs mirrors struct kvm_regs.
type Regs struct {
	RAX, RBX, RCX, RDX, RSI, RDI, RSP, RBP uint64
	R8, R9, R10, R11, R12, R13, R14, R15   uint64
	RIP, RFLAGS                            uint64
}

// Segment mirrors struct kvm_segment.
type Segment struct {
	Base     uint64
	Limit    uint32
	Selector uint16
	Type     uint8
	Present  uint8
	DPL      uint8
	DB       uint8
	S        uint8
	L        uint8
	G        uint8
	AVL      uint8
	Unusable uint8
	_        uint8
}

// DTable mirrors struct kvm_dtable.
type DTable struct {
	Base  uint64
	Limit uint16
	_     [3]uint16
}

// Sregs mirrors struct kvm_sregs.
type Sregs struct {
	CS, DS, ES, FS, GS, SS Segment
	TR, LDT                Segment
	GDT, IDT               DTable
	CR0, CR2, CR3, CR4     uint64
	CR8                    uint64
	EFER                   uint64
	APICBase               uint64
	InterruptBitmap        [4]uint64
}

type msrEntry struct {
	Index uint32
	_     uint32
	Data  uint64
}

type msrs struct {
	N       uint32
	_       uint32
	Entries [16]msrEntry
}

// fpu mirrors struct kvm_fpu.
type fpu struct {
	FPR        [8][16]byte
	FCW        uint16
	FSW        uint16
	FTWX       uint8
	_          uint8
	LastOpcode uint16
	LastIP     uint64
	LastDP     uint64
	XMM        [16][16]byte
	MXCSR      uint32
	_          uint32
}

type lapicState struct {
	Regs [1024]byte
}

// KVM_MP_STATE_* values.
const (
	mpStateRunnable      = 0
	mpStateUninitialized = 1
	mpStateInitReceived  = 2
	mpStateHalted        = 3
)

// kvm_run exit reasons (KVM_EXIT_*).
const (
	exitUnknown       = 0
	exitException     = 1
	exitIO            = 2
	exitHypercall     = 3
	exitDebug         = 4
	exitHLT           = 5
	exitMMIO          = 6
	exitIRQWindowOpen = 7
	exitShutdown      = 8
	exitFailEntry     = 9
	exitIntr          = 10
	exitInternalError = 17
	exitSystemEvent   = 24
)

// KVM_SYSTEM_EVENT_* types.
const (
	systemEventShutdown = 1
	systemEventReset    = 2
	systemEventCrash    = 3
)

// Offsets into struct kvm_run (include/uapi/linux/kvm.h, x86-64).
const (
	runImmediateExit = 1
	runExitReason    = 8
	runExitUnion     = 32
)

// IsNoKVM reports whether err is (or wraps) a missing or forbidden /dev/kvm.
func IsNoKVM(err error) bool {
	var e *ErrNoKVM
	return errors.As(err, &e)
}
