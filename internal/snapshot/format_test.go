package snapshot

import (
	"bytes"
	"encoding/binary"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// sample is a File with every field set, the shape a real machine has.
func sample() *File {
	f := &File{
		Meta: Meta{
			CreatedUnixNS: 1700000000123456789,
			Producer:      "microvm test",
			Point:         PointAgentReady,
			Kernel:        FileID{Path: "/k/bzImage", Size: 2 << 20, MtimeNS: 42, Dev: 7, Ino: 9, SHA256: [32]byte{1, 2, 3}},
			Initrd:        FileID{Path: "/k/initrd.cpio", Size: 5 << 20, SHA256: [32]byte{4}},
			Cmdline:       "console=hvc0 quiet",
			CPUs:          2,
			MemSize:       256 << 20,
			Disks:         []Disk{{ID: FileID{Path: "/d/a.img", Size: 1 << 30, MtimeNS: 5, Dev: 1, Ino: 2}, ReadOnly: true}},
			HostCPUID:     []CPUIDEntry{{Function: 1, EAX: 0x800f12, ECX: 0xfed83203}, {Function: 7, Index: 0, EBX: 0x219c91a9}},
		},
		VM: VM{IRQChips: [3][]byte{bytes.Repeat([]byte{1}, 520), bytes.Repeat([]byte{2}, 520), bytes.Repeat([]byte{3}, 520)},
			PIT: make([]byte, 112), Clock: make([]byte, 48)},
		Memory: Memory{Size: 256 << 20, Regions: []Region{{GPA: 0, Size: 256 << 20}}},
	}
	for i := range 2 {
		f.VCPUs = append(f.VCPUs, VCPU{
			ID: uint32(i), MPState: 3,
			Regs: make([]byte, 144), Sregs: make([]byte, 312), XSave: make([]byte, 4096),
			XCRs: make([]byte, 392), DebugRegs: make([]byte, 128), LAPIC: make([]byte, 1024), Events: make([]byte, 64),
			CPUID:  []CPUIDEntry{{Function: 0, EAX: 0xd}},
			MSRs:   []MSR{{Index: 0x10, Data: 12345}, {Index: 0x6e0, Data: 99}},
			TSCKHz: 2_000_000,
		})
	}
	f.Devices = []Device{
		{Name: "com1", Kind: 0, Base: 0x3f8, Size: 8, IRQ: 4, State: DeviceState{Version: 1, Data: []byte("uart")}},
		{Name: "virtio-rng", Kind: 1, Base: 0xd0000000, Size: 4096, IRQ: 5, VirtioID: 4, State: DeviceState{Version: 1}},
	}
	return f
}

func TestRoundTrip(t *testing.T) {
	want := sample()
	b := Encode(want)
	got, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	// Decode gives empty, not nil, slices for empty fields.
	want.Devices[1].State.Data = []byte{}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("round trip differs:\n got %+v\nwant %+v", got, want)
	}
	if !bytes.Equal(Encode(got), b) {
		t.Error("re-encoding the decoded state gives other bytes")
	}
}

func TestChecksum(t *testing.T) {
	b := Encode(sample())
	for _, off := range []int{headerLen, headerLen + 100, len(b) - sumLen - 1, len(b) - 1} {
		c := bytes.Clone(b)
		c[off] ^= 0x20
		_, err := Decode(c)
		if err == nil || !strings.Contains(err.Error(), "checksum") {
			t.Errorf("bit flip at %d: %v, want a checksum error", off, err)
		}
	}
}

// TestTruncated: every prefix of a state file is refused, none panics.
func TestTruncated(t *testing.T) {
	b := Encode(sample())
	for n := 0; n < len(b); n++ {
		if _, err := Decode(b[:n]); err == nil {
			t.Fatalf("a %d-byte prefix of %d decoded", n, len(b))
		}
	}
	if _, err := Decode(append(bytes.Clone(b), 0)); err == nil {
		t.Error("a state with a trailing byte decoded")
	}
}

func TestVersion(t *testing.T) {
	b := Encode(sample())
	binary.LittleEndian.PutUint32(b[16:], FormatVersion+1)
	_, err := Decode(b)
	if !IsOutdated(err) || !strings.Contains(err.Error(), "version 2") {
		t.Fatalf("another version: %v, want an outdated FormatError naming it", err)
	}
	if _, err := Decode([]byte("#!/bin/sh\necho not a snapshot\n")); err == nil || IsOutdated(err) {
		t.Errorf("a foreign file: %v", err)
	}
}

// TestInconsistent: a well-formed payload whose parts disagree (the
// checksum recomputed, as a crafted file would be) is refused.
func TestInconsistent(t *testing.T) {
	for name, mutate := range map[string]func(*File){
		"vcpu count":   func(f *File) { f.Meta.CPUs = 3 },
		"memory size":  func(f *File) { f.Memory.Size = 1 << 20 },
		"regions":      func(f *File) { f.Memory.Regions[0].Size = 4096 },
		"vcpu id":      func(f *File) { f.VCPUs[1].ID = 0 },
		"point":        func(f *File) { f.Meta.Point = 9 },
		"region wraps": func(f *File) { f.Memory.Regions[0].GPA = ^uint64(0) },
	} {
		f := sample()
		mutate(f)
		if _, err := Decode(Encode(f)); err == nil {
			t.Errorf("%s: decoded", name)
		}
	}
}

func TestDecoderLimits(t *testing.T) {
	var e Encoder
	e.U32(1 << 30) // a blob "of 1 GiB" with nothing behind it
	d := NewDecoder(e.Bytes())
	if b := d.Blob(1 << 20); b != nil || d.Err() == nil {
		t.Error("an over-limit blob was accepted")
	}
	d = NewDecoder(e.Bytes())
	if n := d.Count(1<<31, 8); n != 0 || !errors.Is(d.Err(), ErrTruncated) {
		t.Errorf("count of 2^30 8-byte items in 4 bytes: %d, %v", n, d.Err())
	}
	d = NewDecoder([]byte{2})
	if d.Bool(); d.Err() == nil {
		t.Error("boolean byte 2 accepted")
	}
}
