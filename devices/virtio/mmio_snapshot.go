package virtio

import (
	"fmt"

	"github.com/microvm-dev/microvm/internal/snapshot"
)

// Snapshots of the transport (issue 15): Pause stops the device goroutine
// with every chain it took answered (serveQueue and the console push each
// chain they pop before looking at their context again), SaveState records
// the registers and where each queue is, and Resume, or RestoreState in
// another process, carries on from there.

const mmioStateVersion = 1

// queueIndices is where a live queue is: the next available entry the
// device will take, the next used entry it will fill, and the flags it
// last wrote to the used ring.
type queueIndices struct {
	lastAvail, usedIdx uint16
	noNotify           uint32
}

// Pause stops the device goroutine, if one runs, and ignores register
// writes until Resume. The machine's vCPUs are paused first, so none comes.
func (t *MMIO) Pause() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.paused {
		return
	}
	t.paused = true
	if a := t.run; a != nil {
		t.stopLocked()
		if t.status&StatusNeedsReset == 0 {
			t.resume = a.qs // else it failed meanwhile: the driver must reset it
		}
	}
}

// Resume restarts a paused device where it stopped.
func (t *MMIO) Resume() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.paused {
		return
	}
	t.paused = false
	qs := t.resume
	t.resume = nil
	if qs == nil || t.closed {
		return
	}
	qs.Resumed = true
	t.startLocked(qs)
	t.notifyAll()
}

// notifyAll wakes the device on every queue: a notification taken by a
// goroutine that Pause stopped is lost, and a spurious one costs a look at
// the ring.
func (t *MMIO) notifyAll() {
	for i := range t.notify {
		t.Notify(i)
	}
}

// CanSnapshot passes on the device's refusal, if it can refuse (see
// snapshot.Refuser).
func (t *MMIO) CanSnapshot() error {
	if r, ok := t.dev.(snapshot.Refuser); ok {
		if err := r.CanSnapshot(); err != nil {
			return fmt.Errorf("%s: %w", t.name, err)
		}
	}
	return nil
}

// SaveState saves the transport's registers, each queue's configuration
// and indices, and the device's own state. The device must be paused.
func (t *MMIO) SaveState() (snapshot.DeviceState, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.run != nil {
		return snapshot.DeviceState{}, fmt.Errorf("%s: saved while it runs", t.name)
	}
	sd, ok := t.dev.(snapshot.Stateful)
	if !ok {
		return snapshot.DeviceState{}, fmt.Errorf("%s: this device cannot be snapshotted", t.name)
	}
	ds, err := sd.SaveState()
	if err != nil {
		return snapshot.DeviceState{}, fmt.Errorf("%s: %w", t.name, err)
	}
	var e snapshot.Encoder
	e.U32(t.status)
	e.U32(t.devFeatSel)
	e.U32(t.drvFeatSel)
	e.U64(t.drvFeatures)
	e.U32(t.queueSel)
	e.Bool(t.live)
	e.U32(t.isr.Load())
	e.Bool(t.resume != nil)
	e.U32(uint32(len(t.queues)))
	for i, q := range t.queues {
		e.U16(q.Size)
		e.Bool(q.Ready)
		e.U64(q.DescAddr)
		e.U64(q.AvailAddr)
		e.U64(q.UsedAddr)
		var ix queueIndices
		if t.resume != nil {
			r := t.resume.Q[i]
			ix = queueIndices{r.lastAvail, r.usedIdx, r.noNotify}
		}
		e.U16(ix.lastAvail)
		e.U16(ix.usedIdx)
		e.U32(ix.noNotify)
	}
	e.U32(ds.Version)
	e.Blob(ds.Data)
	return snapshot.DeviceState{Version: mmioStateVersion, Data: e.Bytes()}, nil
}

// RestoreState gives a new transport (reset, never activated) a saved
// state and, if the device was running, activates it on the saved queues.
// The state is untrusted: the rings go through the same checks as the
// guest's own activation (a bad one puts the device in NEEDS_RESET, as it
// would for the guest), and anything inconsistent is an error.
func (t *MMIO) RestoreState(st snapshot.DeviceState) error {
	d, err := st.Decoder(mmioStateVersion, t.name)
	if err != nil {
		return err
	}
	status, devSel, drvSel, feats, qsel := d.U32(), d.U32(), d.U32(), d.U64(), d.U32()
	live, isr, running := d.Bool(), d.U32(), d.Bool()
	n := d.Count(len(t.queues), 0)
	if d.Err() == nil && n != len(t.queues) {
		d.Fail("%d queues saved, the device has %d", n, len(t.queues))
	}
	cfg := make([]Queue, n)
	ix := make([]queueIndices, n)
	for i := range cfg {
		cfg[i] = Queue{Size: d.U16(), Ready: d.Bool(), DescAddr: d.U64(), AvailAddr: d.U64(), UsedAddr: d.U64()}
		ix[i] = queueIndices{d.U16(), d.U16(), d.U32() & 1}
	}
	ds := snapshot.DeviceState{Version: d.U32(), Data: d.Blob(1 << 20)}
	if err := d.Finish(); err != nil {
		return fmt.Errorf("%s: %w", t.name, err)
	}
	if running && (!live || status&(StatusDriverOK|StatusFeaturesOK) != StatusDriverOK|StatusFeaturesOK || status&StatusNeedsReset != 0) {
		return fmt.Errorf("%s: saved running with status %#x", t.name, status)
	}
	sd, ok := t.dev.(snapshot.Stateful)
	if !ok {
		return fmt.Errorf("%s: this device cannot be restored", t.name)
	}
	if err := sd.RestoreState(ds); err != nil {
		return fmt.Errorf("%s: %w", t.name, err)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.run != nil || t.live || t.closed {
		return fmt.Errorf("%s: restored into a device in use", t.name)
	}
	t.status, t.devFeatSel, t.drvFeatSel, t.drvFeatures, t.queueSel = status, devSel, drvSel, feats, qsel
	t.live = live
	t.isr.Store(isr & (intUsedBuffer | intConfigChange))
	for i := range cfg {
		*t.queues[i] = cfg[i]
	}
	if running {
		t.activateLocked(ix)
		t.notifyAll()
	}
	return nil
}
