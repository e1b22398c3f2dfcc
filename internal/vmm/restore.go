package vmm

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/microvm-dev/microvm/internal/snapshot"
)

// Building a machine from a snapshot (Config.Restore). Everything that can
// be checked without KVM is, first: a snapshot made for another machine
// is refused with one line saying what differs (an InputError; Stale when
// making the snapshot again would fix it) before anything is created.
// Then the machine is built as for a boot, minus the kernel, and each part
// gets its saved state, in the order Firecracker restores them: vCPUs, the
// VM-wide state, then the devices (which may raise interrupts).

// restoreInput is the snapshot being restored.
type restoreInput struct {
	file *snapshot.File
	mem  *os.File // the memory file; Memory owns it once mapped
}

func (r *restoreInput) atReady() bool { return r.file.Meta.Point == snapshot.PointAgentReady }

func (b *builder) restoreSteps() []step {
	return []step{
		{"read snapshot", b.readSnapshot},
		{"open devices", b.openDevices},
		{"check snapshot", b.checkSnapshot},
		{"open KVM", b.openKVM},
		{"check CPU", b.checkCPU},
		{"create VM", b.createVM},
		{"guest memory", b.restoreMemory},
		{"legacy devices", b.legacyDevices},
		{"virtio devices", b.attachVirtio},
		{"vCPUs", b.restoreVCPUs},
		{"VM state", b.restoreVM},
		{"device state", b.restoreDevices},
	}
}

// readSnapshot reads the state and checks what needs only the config.
func (b *builder) readSnapshot() error {
	cfg := &b.m.cfg
	dir := cfg.Restore
	f, mem, err := snapshot.Open(dir)
	var fe *snapshot.FormatError
	switch {
	case errors.Is(err, snapshot.ErrNoSnapshot):
		return staleErr("%s: no snapshot there", dir)
	case errors.As(err, &fe):
		return &InputError{What: "Restore", Msg: fe.Msg, Stale: fe.Outdated}
	case err != nil:
		return &InputError{What: "Restore", Msg: err.Error()}
	}
	b.snap = &restoreInput{file: f, mem: mem}
	b.push(func() {
		if b.snap.mem != nil {
			b.snap.mem.Close()
		}
	})
	meta := &f.Meta
	if cfg.RestoreAtReady && !b.snap.atReady() {
		return inputErr("Restore", "%s was taken while the guest ran, not with its agent waiting for a command: restore it without one", dir)
	}
	if int(meta.CPUs) != cfg.CPUs {
		return staleErr("%s has %d vCPUs; this machine has %d", dir, meta.CPUs, cfg.CPUs)
	}
	if meta.MemSize != cfg.Memory {
		return staleErr("%s has %d MiB of memory; this machine has %d MiB", dir, meta.MemSize>>20, cfg.Memory>>20)
	}
	if err := checkInput("Kernel", cfg.Kernel, meta.Kernel, dir); err != nil {
		return err
	}
	if err := checkInput("Initrd", cfg.Initrd, meta.Initrd, dir); err != nil {
		return err
	}
	if err := checkDisks(cfg.Disks, meta.Disks, dir); err != nil {
		return err
	}
	b.m.inputs.kernel, _ = statID(cfg.Kernel)
	b.m.inputs.initrd, _ = statID(cfg.Initrd)
	b.m.cmdline = meta.Cmdline
	return nil
}

// checkInput checks that the kernel or initrd at path (if the config names
// one) is the one the snapshot was made from.
func checkInput(what, path string, saved snapshot.FileID, dir string) error {
	switch {
	case path == "":
		return nil
	case saved.Path == "":
		return staleErr("%s was made without %s; this machine has %s", dir, strings.ToLower(what), path)
	}
	err := matchesID(path, saved)
	if errors.Is(err, errChanged) {
		return staleErr("%s was made from another %s (%s, %s)", dir, strings.ToLower(what), saved.Path, fmt.Sprintf("sha256 %x", saved.SHA256[:6]))
	}
	if err != nil {
		return inputErr(what, "%v", err)
	}
	return nil
}

// checkDisks checks that every disk is the image the snapshot was made
// with, unchanged since: the guest's page cache holds what it read of it.
func checkDisks(disks []Disk, saved []snapshot.Disk, dir string) error {
	if len(disks) != len(saved) {
		return staleErr("%s has %d disks; this machine has %d", dir, len(saved), len(disks))
	}
	for i, d := range disks {
		s := saved[i]
		id, err := statID(d.Path)
		if err != nil {
			return inputErr("Disks", "%v", err)
		}
		if abs, _ := filepath.Abs(d.Path); abs != s.ID.Path || d.ReadOnly != s.ReadOnly {
			return staleErr("%s has disk %d = %s (read-only %v); this machine has %s (read-only %v)", dir, i, s.ID.Path, s.ReadOnly, abs, d.ReadOnly)
		}
		if !sameStat(id, s.ID) {
			return staleErr("disk %s changed since the snapshot %s was taken (size, mtime or inode)", d.Path, dir)
		}
	}
	return nil
}

// checkSnapshot compares what the devices make of the machine: its
// command line (which, without ACPI, announces the devices; with it, it
// does not, so ACPI on and off differ here too) and its device list.
func (b *builder) checkSnapshot() error {
	m, dir := b.m, b.m.cfg.Restore
	cmdline := b.fullCmdline()
	if cmdline != b.snap.file.Meta.Cmdline {
		return staleErr("%s booted with another kernel command line: %q, not %q", dir, b.snap.file.Meta.Cmdline, cmdline)
	}
	if err := m.devices.sameDevices(b.snap.file.Devices, VirtioMMIODevice); err != nil {
		return staleErr("%s: %v", dir, err)
	}
	return nil
}

// checkCPU refuses a host whose CPU lacks a feature the guest was given.
func (b *builder) checkCPU() error {
	host, err := b.m.kvm.SupportedCPUID()
	if err != nil {
		return err
	}
	tscDeadline := b.m.kvm.CheckExtension(capTSCDeadline) > 0
	if err := cpuidCompatible(b.snap.file.VCPUs[0].CPUID, toSnapshotCPUID(host), tscDeadline); err != nil {
		return inputErr("Restore", "%s cannot run on this host: %v", b.m.cfg.Restore, err)
	}
	return nil
}

func (b *builder) restoreMemory() error {
	m, f := b.m, b.snap.file
	want := ramLayout(m.cfg.Memory)
	if len(want) != len(f.Memory.Regions) {
		return inputErr("Restore", "%s: memory regions do not match %d MiB of RAM", m.cfg.Restore, m.cfg.Memory>>20)
	}
	for i, r := range f.Memory.Regions {
		if r.GPA != want[i].GPA || r.Size != want[i].Size {
			return inputErr("Restore", "%s: memory region %d at %#x+%#x, want %#x+%#x", m.cfg.Restore, i, r.GPA, r.Size, want[i].GPA, want[i].Size)
		}
	}
	mem, err := MemoryFromFile(b.snap.mem, m.cfg.Memory)
	if err != nil {
		return err
	}
	b.snap.mem = nil // mem owns it now
	return b.useMemory(mem)
}

func (b *builder) restoreVCPUs() error {
	m := b.m
	if err := b.createVCPUs(); err != nil {
		return err
	}
	host, err := m.kvm.SupportedCPUID()
	if err != nil {
		return err
	}
	if nestedHost() {
		m.prefault()
	}
	xsave := m.vm.xsaveSize()
	amd := isAMD(host)
	for i, v := range m.vcpus {
		s := &b.snap.file.VCPUs[i]
		if err := v.setTSCKHz(s.TSCKHz); err != nil {
			return inputErr("Restore", "%v", err)
		}
		if err := v.restoreState(s, xsave, amd); err != nil {
			return b.badState(err)
		}
	}
	return nil
}

func (b *builder) restoreVM() error { return b.badState(b.m.vm.restoreState(&b.snap.file.VM)) }

// badState reports an error from putting the decoded state into KVM or a
// device (a blob of the wrong size, CPUID, an interrupt controller, a
// device's state, a value KVM refuses) as bad input naming the state file:
// its checksum is no MAC, anyone can recompute it, so an intact file may
// still hold what this host cannot take. That is the file's fault, exit 2
// like checkCPU's refusals, not an internal error.
func (b *builder) badState(err error) error {
	if err == nil || IsInputError(err) {
		return err
	}
	return &InputError{What: "Restore", Msg: filepath.Join(b.m.cfg.Restore, snapshot.StateName) + ": " + err.Error()}
}

// isAMD reports whether the CPUID vendor (leaf 0) is AMD's or Hygon's,
// whose KVM runs guests with SVM.
func isAMD(host []cpuidEntry) bool {
	for _, e := range host {
		if e.Function == 0 {
			return e.Ebx == 0x68747541 || e.Ebx == 0x6f677948 // "Auth", "Hygo"
		}
	}
	return false
}

func (b *builder) restoreDevices() error {
	// Another device list (a legacy device more or less: the VM generation
	// ID joined ACPI machines after some snapshots were made) is a stale
	// snapshot, which `run --snapshot` makes again, not a damaged one.
	if err := b.m.devices.sameDevices(b.snap.file.Devices); err != nil {
		return staleErr("%s: %v", b.m.cfg.Restore, err)
	}
	if err := b.m.devices.restoreState(b.snap.file.Devices); err != nil {
		return b.badState(err)
	}
	b.m.snapInfo.Store(&SnapshotInfo{Dir: b.m.cfg.Restore, Restored: true})
	return nil
}
