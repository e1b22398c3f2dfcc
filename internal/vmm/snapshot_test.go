package vmm

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unsafe"

	"github.com/microvm-dev/microvm/internal/snapshot"
)

func TestCPUIDCompatible(t *testing.T) {
	host := []snapshot.CPUIDEntry{
		{Function: 1, ECX: 1<<0 | 1<<28, EDX: 1 << 25},
		{Function: 7, Index: 0, Flags: 1, EBX: 1 << 3},
	}
	guest := []snapshot.CPUIDEntry{
		{Function: 1, ECX: 1<<0 | 1<<28 | 1<<31, EDX: 1<<25 | 1<<28}, // + hypervisor, HTT: ours
		{Function: 7, Index: 0, Flags: 1, EBX: 1 << 3},
	}
	if err := cpuidCompatible(guest, host, false); err != nil {
		t.Fatalf("the host's own features refused: %v", err)
	}
	guest[1].EBX |= 1 << 5 // avx2
	guest[0].ECX |= 1 << 24
	err := cpuidCompatible(guest, host, false)
	if err == nil || !strings.Contains(err.Error(), "CPUID.0x7.0:EBX[5] (avx2)") || !strings.Contains(err.Error(), "tsc-deadline") {
		t.Fatalf("a guest with avx2 and the TSC deadline on a host without: %v", err)
	}
}

func TestDeferMSRs(t *testing.T) {
	got := deferMSRs([]snapshot.MSR{{Index: msrIA32TSCDeadline, Data: 0}, {Index: msrIA32TSC, Data: 777}, {Index: msrSTAR, Data: 1}})
	want := []snapshot.MSR{{Index: msrIA32TSC, Data: 777}, {Index: msrSTAR, Data: 1}, {Index: msrIA32TSCDeadline, Data: 777}}
	if len(got) != len(want) {
		t.Fatalf("%v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("%v, want %v", got, want)
		}
	}
}

func TestAvailableTR(t *testing.T) {
	var s Sregs
	s.TR.Type, s.CS.Type = 11, 11
	b := unsafe.Slice((*byte)(unsafe.Pointer(&s)), sizeSregs)
	got := availableTR(b)
	var r Sregs
	copy(unsafe.Slice((*byte)(unsafe.Pointer(&r)), sizeSregs), got)
	if r.TR.Type != 9 || r.CS.Type != 11 || s.TR.Type != 11 {
		t.Errorf("TR type %d, CS type %d, original TR %d: want 9, 11, 11", r.TR.Type, r.CS.Type, s.TR.Type)
	}
}

// TestSnapshotAtReadyOneShot: only the first "ready" of a boot may save;
// later ones (the guest can send "ready" whenever it likes) change nothing,
// and never make a snapshot by name.
func TestSnapshotAtReadyOneShot(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "snap")
	w, err := snapshot.Create(dir)
	if err != nil {
		t.Fatal(err)
	}
	m := &Machine{}
	m.cfg.SnapshotAtReady = dir
	m.atReady = w
	// The first save fails (the machine is not running: no VM here), but
	// it uses up the boot's one shot.
	m.snapshotAtReady()
	first := m.snapInfo.Load()
	if first == nil || first.Err == nil || m.atReady != nil {
		t.Fatalf("first ready: info %+v, writer %v: want an error and the writer taken", first, m.atReady)
	}
	// Running now: a second save by name would reach Create and capture.
	m.running.Store(true)
	for i, name := range []string{"second ready", "third ready"} {
		m.snapshotAtReady()
		if got := m.snapInfo.Load(); got != first {
			t.Fatalf("%s (%d): info replaced by %+v", name, i, got)
		}
		if ents, _ := os.ReadDir(parent); len(ents) != 0 {
			t.Fatalf("%s: %s holds %v, want nothing", name, parent, ents)
		}
	}
}

// TestBadStateIsInput: a state that decodes (its checksum can be
// recomputed) but holds what KVM or a device refuses is bad input naming
// the state file, not an internal error. Another device list is a stale
// snapshot (made by a microvm with other legacy devices), which `run
// --snapshot` makes again.
func TestBadStateIsInput(t *testing.T) {
	dir := "/var/tmp/snap"
	tests := []struct {
		name   string
		file   snapshot.File
		step   func(b *builder) error
		prefix string
		want   string
		stale  bool
	}{
		{"PIT of 0 bytes", snapshot.File{}, (*builder).restoreVM, dir + "/state: ", "KVM_SET_PIT2: 0 bytes in the snapshot", false},
		{"a device this machine lacks", snapshot.File{Devices: []snapshot.Device{{Name: "virtio-blk"}}}, (*builder).restoreDevices, dir + ": ", "the snapshot has 1 devices", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := &Machine{vm: &vm{}, devices: &DeviceManager{}}
			m.cfg.Restore = dir
			b := &builder{m: m, snap: &restoreInput{file: &tt.file}}
			err := tt.step(b)
			var ie *InputError
			if !errors.As(err, &ie) || ie.What != "Restore" || ie.Stale != tt.stale || !strings.HasPrefix(ie.Msg, tt.prefix) || !strings.Contains(ie.Msg, tt.want) {
				t.Fatalf("%v (%T): want a Restore InputError, stale %v, starting %q and saying %q", err, err, tt.stale, tt.prefix, tt.want)
			}
		})
	}
	// An InputError is passed on as it is.
	b := &builder{m: &Machine{}}
	if in := inputErr("Restore", "x"); b.badState(in) != in || b.badState(nil) != nil {
		t.Error("badState rewrapped an InputError or nil")
	}
}
