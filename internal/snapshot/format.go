// Package snapshot is the on-disk form of a paused machine (issue 15): a
// small versioned state file and a sparse memory file, written atomically
// into a directory. It knows nothing of KVM: the engine (internal/vmm)
// fills File with the raw KVM structures and device states, and checks on
// restore that each has the size its ioctl wants.
//
// The state file is
//
//	magic    16 bytes  "microvm-snapshot"
//	version  u32       FormatVersion
//	flags    u32       0
//	length   u64       of the payload
//	payload            File, as Encoder writes it
//	sha256   32 bytes  of everything before it
//
// and is read back only whole: a short, long, damaged or foreign file is an
// error naming what is wrong, never a panic (FuzzDecode).
package snapshot

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
)

// FormatVersion is the version this package writes and the only one it
// reads. Bump it whenever the payload's layout changes.
const FormatVersion = 1

const (
	magic     = "microvm-snapshot"
	headerLen = len(magic) + 4 + 4 + 8
	sumLen    = sha256.Size
	// MaxStateSize bounds the state file: a few KiB per vCPU and device.
	MaxStateSize = 64 << 20
)

// Limits on what one state may hold, far above any real machine's.
const (
	MaxVCPUs      = 254
	MaxDevices    = 64
	maxCPUID      = 256
	maxMSRs       = 4096
	maxKVMStruct  = 64 << 10 // one KVM structure (kvm_lapic_state is 1 KiB)
	maxXSave      = 1 << 20  // KVM_CAP_XSAVE2's size, 4 KiB to a few tens
	maxDeviceData = 1 << 20
	maxString     = 4096
	maxRegions    = 8
)

// Point says where the guest was when the snapshot was taken.
type Point uint8

const (
	// PointAgentReady: the guest agent had sent "ready" and waits for its
	// command on the agent channel; a restore hands it one.
	PointAgentReady Point = 1
	// PointRunning: anywhere else (VM.Snapshot of a running guest).
	PointRunning Point = 2
)

// File is one snapshot's state.
type File struct {
	Meta    Meta
	VM      VM
	VCPUs   []VCPU
	Devices []Device
	Memory  Memory
}

// Meta says what machine the snapshot is of: a restore refuses a machine
// configured differently.
type Meta struct {
	CreatedUnixNS int64
	Producer      string // microvm's version
	Point         Point
	Kernel        FileID
	Initrd        FileID // Path "" for none
	Cmdline       string // the whole kernel command line the guest booted with
	CPUs          uint32
	MemSize       uint64
	// Disks are the guest's disk images, flushed when the snapshot was
	// taken: a restore refuses an image that changed since (its SHA256 is
	// not kept: a disk is identified by file, size and mtime).
	Disks []Disk
	// HostCPUID is the host's KVM_GET_SUPPORTED_CPUID at snapshot time:
	// what the CPU it was taken on offered, for the message when a later
	// host lacks a feature the guest was given.
	HostCPUID []CPUIDEntry
}

// FileID identifies an input file by content (SHA256) and, to avoid
// hashing it again on every restore, by where and when it was
// (Size, MtimeNS, Dev, Ino).
type FileID struct {
	Path     string
	Size     uint64
	MtimeNS  int64
	Dev, Ino uint64
	SHA256   [32]byte
}

// Disk is one disk image of the guest.
type Disk struct {
	ID       FileID
	ReadOnly bool
}

// VM is the VM-wide KVM state: struct kvm_irqchip for the PIC master, the
// PIC slave and the IOAPIC (KVM_GET_IRQCHIP), struct kvm_pit_state2
// (KVM_GET_PIT2) and struct kvm_clock_data (KVM_GET_CLOCK), as raw bytes.
type VM struct {
	IRQChips [3][]byte
	PIT      []byte
	Clock    []byte
}

// VCPU is one vCPU's KVM state, each KVM structure as raw bytes.
type VCPU struct {
	ID        uint32
	MPState   uint32
	Regs      []byte // struct kvm_regs
	Sregs     []byte // struct kvm_sregs
	XSave     []byte // struct kvm_xsave (KVM_GET_XSAVE2's size)
	XCRs      []byte // struct kvm_xcrs
	DebugRegs []byte // struct kvm_debugregs
	LAPIC     []byte // struct kvm_lapic_state
	Events    []byte // struct kvm_vcpu_events
	CPUID     []CPUIDEntry
	MSRs      []MSR
	TSCKHz    uint32
}

// CPUIDEntry is the part of struct kvm_cpuid_entry2 that carries meaning.
type CPUIDEntry struct {
	Function, Index, Flags uint32
	EAX, EBX, ECX, EDX     uint32
}

// MSR is one model-specific register's value.
type MSR struct {
	Index uint32
	Data  uint64
}

// Device is one device's record (as the device manager describes it) and
// its own versioned state.
type Device struct {
	Name       string
	Kind       uint8
	Base, Size uint64
	IRQ        uint32
	VirtioID   uint32
	State      DeviceState
}

// DeviceState is what a device saves: its own format version and bytes.
type DeviceState struct {
	Version uint32
	Data    []byte
}

// Memory describes the memory file: guest RAM region by region, each at
// its offset in the file, the file exactly Size bytes long.
type Memory struct {
	Size    uint64
	Regions []Region
}

// Region is one stretch of guest RAM in the memory file.
type Region struct {
	GPA, Size, Offset uint64
}

// FormatError is a state file that cannot be used. Outdated is set for one
// that is intact but of another format version: a newer microvm may read
// it, or a snapshot can be made again.
type FormatError struct {
	Msg      string
	Outdated bool
}

func (e *FormatError) Error() string { return e.Msg }

// IsOutdated reports whether err is a FormatError for another version.
func IsOutdated(err error) bool {
	var fe *FormatError
	return errors.As(err, &fe) && fe.Outdated
}

// Encode returns the state file for f.
func Encode(f *File) []byte {
	var e Encoder
	e.b = make([]byte, headerLen, 64<<10)
	copy(e.b, magic)
	binary.LittleEndian.PutUint32(e.b[16:], FormatVersion)
	f.encode(&e)
	binary.LittleEndian.PutUint64(e.b[24:], uint64(len(e.b)-headerLen))
	sum := sha256.Sum256(e.b)
	return append(e.b, sum[:]...)
}

// Decode checks and decodes a state file.
func Decode(b []byte) (*File, error) {
	if len(b) < len(magic) || !bytes.Equal(b[:len(magic)], []byte(magic)) {
		return nil, &FormatError{Msg: "not a microvm snapshot state file"}
	}
	if len(b) < headerLen+sumLen {
		return nil, &FormatError{Msg: fmt.Sprintf("truncated: %d bytes", len(b))}
	}
	if v := binary.LittleEndian.Uint32(b[16:]); v != FormatVersion {
		return nil, &FormatError{Msg: fmt.Sprintf("snapshot format version %d; this microvm reads version %d", v, FormatVersion), Outdated: true}
	}
	if fl := binary.LittleEndian.Uint32(b[20:]); fl != 0 {
		return nil, &FormatError{Msg: fmt.Sprintf("unknown flags %#x", fl)}
	}
	n := binary.LittleEndian.Uint64(b[24:])
	if have := uint64(len(b) - headerLen - sumLen); n != have {
		if n > have {
			return nil, &FormatError{Msg: fmt.Sprintf("truncated: payload of %d bytes, %d present", n, have)}
		}
		return nil, &FormatError{Msg: fmt.Sprintf("%d bytes after the end of the state", have-n)}
	}
	body := b[:len(b)-sumLen]
	if sum := sha256.Sum256(body); !bytes.Equal(sum[:], b[len(body):]) {
		return nil, &FormatError{Msg: "checksum mismatch: the state file is damaged"}
	}
	d := NewDecoder(body[headerLen:])
	f := &File{}
	f.decode(d)
	if err := d.Finish(); err != nil {
		return nil, &FormatError{Msg: "malformed state: " + err.Error()}
	}
	if err := f.check(); err != nil {
		return nil, &FormatError{Msg: "inconsistent state: " + err.Error()}
	}
	return f, nil
}

// check holds what decoding alone cannot: the parts must agree.
func (f *File) check() error {
	m := &f.Meta
	switch {
	case m.Point != PointAgentReady && m.Point != PointRunning:
		return fmt.Errorf("unknown snapshot point %d", m.Point)
	case m.CPUs == 0 || int(m.CPUs) != len(f.VCPUs):
		return fmt.Errorf("%d vCPUs recorded, %d vCPU states", m.CPUs, len(f.VCPUs))
	case m.MemSize == 0 || m.MemSize != f.Memory.Size:
		return fmt.Errorf("memory size %d, memory file %d", m.MemSize, f.Memory.Size)
	}
	for i, v := range f.VCPUs {
		if v.ID != uint32(i) {
			return fmt.Errorf("vCPU state %d has ID %d", i, v.ID)
		}
	}
	var sum uint64
	for _, r := range f.Memory.Regions {
		if r.Size == 0 || r.Offset != sum || r.GPA+r.Size < r.GPA {
			return fmt.Errorf("memory region at %#x+%#x, file offset %#x", r.GPA, r.Size, r.Offset)
		}
		sum += r.Size
	}
	if sum != f.Memory.Size {
		return fmt.Errorf("memory regions sum to %d, memory is %d", sum, f.Memory.Size)
	}
	return nil
}
