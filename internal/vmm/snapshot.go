package vmm

import (
	"errors"
	"fmt"
	"time"

	"github.com/microvm-dev/microvm/internal/snapshot"
)

// SnapshotInfo describes a snapshot taken or restored.
type SnapshotInfo struct {
	Dir string
	// Restored: the machine started from Dir. Saved: a snapshot was
	// written to Dir (Err says why not, if one was asked for and failed).
	Restored, Saved bool
	Err             error
	// Pause is how long the guest was paused to take it; MemoryBytes the
	// memory file's allocated size (its holes take no space), StateBytes
	// the state file's size.
	Pause                   time.Duration
	MemoryBytes, StateBytes uint64
}

// inputIDs are the kernel's and initrd's identity when the machine was
// built (no hash: that is computed only if a snapshot is taken).
type inputIDs struct {
	kernel, initrd snapshot.FileID
	// diskPaths are Config.Disks' paths, made absolute in Build.
	diskPaths []string
}

// Snapshot pauses the running machine, saves it into dir (replacing a
// snapshot there, never anything else) and resumes it, or stops it if
// stop is set (Result.Reason ExitSnapshot). The guest is paused only
// while its state and memory are copied; the files are made durable after
// it runs again.
func (m *Machine) Snapshot(dir string, point snapshot.Point, stop bool) (SnapshotInfo, error) {
	m.snapMu.Lock()
	defer m.snapMu.Unlock()
	if !m.running.Load() || m.stopping.Load() {
		return SnapshotInfo{Dir: dir}, errors.New("snapshot: the machine is not running")
	}
	w := m.atReady
	if w != nil && dir == w.Dir() {
		m.atReady = nil
	} else {
		var err error
		if w, err = snapshot.Create(dir); err != nil {
			return SnapshotInfo{Dir: dir}, err
		}
	}
	return m.snapshotLocked(w, point, stop)
}

// snapshotLocked saves the machine into w, which it commits or aborts.
// The caller holds snapMu.
func (m *Machine) snapshotLocked(w *snapshot.Writer, point snapshot.Point, stop bool) (info SnapshotInfo, err error) {
	dir := w.Dir()
	info = SnapshotInfo{Dir: dir}
	if !m.running.Load() || m.stopping.Load() {
		w.Abort()
		return info, errors.New("snapshot: the machine is not running")
	}
	state, err := m.capture(w, point, &info, stop)
	if err != nil {
		w.Abort()
		return info, fmt.Errorf("snapshot %s: %w", dir, err)
	}
	if err := w.Commit(state); err != nil {
		return info, err
	}
	info.Saved, info.StateBytes = true, uint64(len(state))
	return info, nil
}

// prepareSnapshot, with Config.SnapshotAtReady, does in Build everything
// the snapshot at agent ready needs of the file system: the snapshot's
// directory and files are created and opened (snapshot.Create), and the
// kernel and initrd hashed. The process may be sandboxed between Build and
// Run, and then can open nothing by name. A target that is not ours to
// replace is bad input, reported before the guest boots.
func (b *builder) prepareSnapshot() error {
	m := b.m
	dir := m.cfg.SnapshotAtReady
	if dir == "" {
		return nil
	}
	var err error
	for _, id := range []*snapshot.FileID{&m.inputs.kernel, &m.inputs.initrd} {
		if id.Path != "" {
			if *id, err = hashedID(id.Path, *id); err != nil {
				return err
			}
		}
	}
	if _, err := m.hostFacts(); err != nil {
		return err
	}
	w, err := snapshot.Create(dir)
	if err != nil {
		return inputErr("SaveSnapshot", "%v", err)
	}
	m.atReady = w
	b.push(func() {
		// Close has taken snapMu: no snapshot is being written.
		if m.atReady != nil {
			m.atReady.Abort()
			m.atReady = nil
		}
	})
	return nil
}

// snapshotAtReady is the agent channel's BeforeReply with
// Config.SnapshotAtReady: the agent has sent "ready" and waits for its
// command, the point a restore resumes from. A failure is reported in the
// Result; the guest carries on either way.
//
// It is one-shot: it uses the writer Build made (m.atReady) and takes it,
// so only the boot's first "ready" saves. A later "ready" comes after the
// command was sent, from the guest (its command or kernel can write to the
// agent port): saving then would replace the clean snapshot with a guest
// of the guest's choosing, which every later restore would run. It is
// ignored, and never makes a snapshot by name.
func (m *Machine) snapshotAtReady() {
	m.snapMu.Lock()
	w := m.atReady
	m.atReady = nil
	if w == nil {
		m.snapMu.Unlock()
		return
	}
	info, err := m.snapshotLocked(w, snapshot.PointAgentReady, false)
	m.snapMu.Unlock()
	info.Err = err
	m.snapInfo.Store(&info)
	if err == nil {
		m.timeline.Mark(PhaseSnapshotSaved)
	}
}

// capture pauses the machine, writes its memory into w and returns the
// encoded state; the machine runs again when it returns (unless it is
// stopping). The order: vCPUs parked (no more register writes), devices
// paused (no more DMA or interrupts), then the vCPUs' state, the VM-wide
// state (the interrupt controllers now hold every interrupt a device
// raised), the devices', the disks flushed, and the memory last.
//
// With stop, the machine is stopped before the vCPUs are let go, so that
// the guest runs not one instruction past its snapshot.
func (m *Machine) capture(w *snapshot.Writer, point snapshot.Point, info *SnapshotInfo, stop bool) ([]byte, error) {
	// What needs no pause comes first: hashing the inputs reads them.
	host, err := m.hostFacts()
	if err != nil {
		return nil, err
	}
	meta, err := m.meta(point, host.cpuid)
	if err != nil {
		return nil, err
	}
	msrs, xsave := host.msrs, host.xsave
	t0 := time.Now()
	resume, err := m.pauseVCPUs()
	if err != nil {
		return nil, err
	}
	defer func() { info.Pause = time.Since(t0) }()
	defer resume()
	// With the vCPUs parked the guest sends no new request. One it queued
	// just before may still reach a device before the pause; SaveState
	// checks again for that.
	if err := m.devices.canSnapshot(); err != nil {
		return nil, err
	}
	m.devices.pause()
	defer m.devices.resume()

	f := &snapshot.File{Meta: meta}
	for _, v := range m.vcpus {
		s, err := v.saveState(msrs, xsave)
		if err != nil {
			return nil, err
		}
		f.VCPUs = append(f.VCPUs, s)
	}
	// The KVM clock right after the TSCs, and restored right after them
	// too: the guest's kvm-clock and TSC then disagree by the difference
	// of the two gaps, not their sum (Linux's clocksource watchdog marks
	// the TSC unstable when they drift apart).
	if f.VM, err = m.vm.saveState(); err != nil {
		return nil, err
	}
	if f.Devices, err = m.devices.saveState(); err != nil {
		return nil, err
	}
	if f.Meta.Disks, err = m.flushDisks(); err != nil {
		return nil, err
	}
	f.Memory = snapshot.Memory{Size: m.mem.Size()}
	off := uint64(0)
	for _, r := range m.mem.Regions {
		f.Memory.Regions = append(f.Memory.Regions, snapshot.Region{GPA: r.GPA, Size: r.Size, Offset: off})
		off += r.Size
	}
	runs, err := m.mem.touched()
	if err != nil {
		return nil, err
	}
	if _, err := snapshot.WriteMemory(w.Memory(), m.mem.mapping, runs); err != nil {
		return nil, fmt.Errorf("memory file: %w", err)
	}
	info.MemoryBytes = snapshot.Allocated(w.Memory())
	if stop {
		m.guestStopped(vcpuExit{reason: ExitSnapshot, detail: "stopped after a snapshot to " + w.Dir()})
	}
	return snapshot.Encode(f), nil
}

// snapHost is what a snapshot asks of KVM itself (not of the VM or its
// vCPUs): the host's CPUID, the MSRs to save and the XSAVE size. They do
// not change while the process runs.
type snapHost struct {
	cpuid []cpuidEntry
	msrs  []uint32
	xsave int
}

// hostFacts returns snapHost, asked once: prepareSnapshot asks in Build,
// so that a sandboxed process needs no ioctl on /dev/kvm to snapshot.
func (m *Machine) hostFacts() (*snapHost, error) {
	if m.host != nil {
		return m.host, nil
	}
	cpuid, err := m.kvm.SupportedCPUID()
	if err != nil {
		return nil, err
	}
	msrs, err := m.kvm.MSRIndexList()
	if err != nil {
		return nil, err
	}
	m.host = &snapHost{cpuid: cpuid, msrs: msrs, xsave: m.vm.xsaveSize()}
	return m.host, nil
}

// meta describes the machine; the kernel and initrd are hashed, and must
// be unchanged since the machine was built from them.
func (m *Machine) meta(point snapshot.Point, cpuid []cpuidEntry) (snapshot.Meta, error) {
	meta := snapshot.Meta{
		CreatedUnixNS: time.Now().UnixNano(),
		Producer:      m.cfg.Producer,
		Point:         point,
		Cmdline:       m.cmdline,
		CPUs:          uint32(len(m.vcpus)),
		MemSize:       m.mem.Size(),
	}
	// Hashed already by prepareSnapshot, for a snapshot at agent ready;
	// else now (VM.Snapshot, in a process that may open files).
	var err error
	for _, in := range []struct{ id, out *snapshot.FileID }{{&m.inputs.kernel, &meta.Kernel}, {&m.inputs.initrd, &meta.Initrd}} {
		switch {
		case in.id.Path == "":
		case in.id.SHA256 != [32]byte{}:
			*in.out = *in.id
		default:
			if *in.out, err = hashedID(in.id.Path, *in.id); err != nil {
				return meta, err
			}
		}
	}
	meta.HostCPUID = toSnapshotCPUID(cpuid)
	return meta, nil
}

// flushDisks makes every writable disk durable (fdatasync, as a guest
// FLUSH does) and records each disk's identity after it: a restore checks
// that the image is still exactly this one.
func (m *Machine) flushDisks() ([]snapshot.Disk, error) {
	out := make([]snapshot.Disk, 0, len(m.cfg.Disks))
	for i, d := range m.cfg.Disks {
		if f := m.diskFiles[i]; !d.ReadOnly {
			if err := f.Sync(); err != nil {
				return nil, fmt.Errorf("flush disk %s: %w", d.Path, err)
			}
		}
		// The open image, not the path: no file is opened by name here.
		id, err := fileID(m.diskFiles[i].File, m.inputs.diskPaths[i])
		if err != nil {
			return nil, err
		}
		out = append(out, snapshot.Disk{ID: id, ReadOnly: d.ReadOnly})
	}
	return out, nil
}

func toSnapshotCPUID(ents []cpuidEntry) []snapshot.CPUIDEntry {
	out := make([]snapshot.CPUIDEntry, len(ents))
	for i, e := range ents {
		out[i] = snapshot.CPUIDEntry{Function: e.Function, Index: e.Index, Flags: e.Flags, EAX: e.Eax, EBX: e.Ebx, ECX: e.Ecx, EDX: e.Edx}
	}
	return out
}
