package virtio

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"unsafe"

	"github.com/microvm-dev/microvm/internal/guard"
)

// The device status state machine of the MMIO transport (spec 2.1, 3.1.1):
// the status register's transitions, activating the device on a frozen
// copy of the queue configuration, its goroutine, failure into
// DEVICE_NEEDS_RESET, and reset.

// activation is one device goroutine: its cancel and the channel closed when
// it has returned.
type activation struct {
	cancel context.CancelFunc
	done   chan struct{}
	qs     *Queues
}

// setStatus follows the initialization sequence of spec 3.1.1 and the
// rules of spec 2.1.1: "The driver MUST NOT clear a device status bit", so
// the only way back is a reset (0). Called with t.mu held.
func (t *MMIO) setStatus(v uint32) {
	if v == 0 {
		t.resetLocked()
		return
	}
	old := t.status
	// NEEDS_RESET is the device's bit: Linux writes back what it read (the
	// driver ORs in its new bit), so it is neither set nor cleared here.
	v &^= StatusNeedsReset
	if cleared := old &^ v &^ StatusNeedsReset; cleared != 0 {
		t.failLocked(fmt.Sprintf("status %#x clears %#x without a reset", v, cleared))
		return
	}
	if v&StatusFeaturesOK != 0 && old&StatusFeaturesOK == 0 {
		// Accept only a subset of what was offered, only from modern
		// drivers, and only after DRIVER (spec 3.1.1 steps 2-5).
		if t.drvFeatures&^t.offered() != 0 || t.drvFeatures&FeatureVersion1 == 0 || v&StatusDriver == 0 {
			v &^= StatusFeaturesOK
		}
	}
	t.status = v | old&StatusNeedsReset
	if v&StatusDriverOK != 0 && old&StatusDriverOK == 0 {
		// From here on the queue configuration is frozen until a reset,
		// whether or not the activation succeeds.
		t.live = true
		if v&StatusFeaturesOK == 0 {
			t.failLocked("DRIVER_OK without FEATURES_OK")
			return
		}
		t.activateLocked(nil)
	}
}

// activateLocked starts the device on a copy of the queue configuration,
// so that no later register write can change the geometry it runs on.
// saved, from a restored snapshot, gives each queue's indices to carry on
// from; the rings are checked against guest memory as for any activation.
func (t *MMIO) activateLocked(saved []queueIndices) {
	if t.run != nil {
		// Unreachable while status bits only grow; a second goroutine on
		// the same queues would corrupt them, so refuse loudly.
		t.failLocked("activated twice without a reset")
		return
	}
	qs := t.newQueues()
	for i, cfg := range t.queues {
		q := &Queue{Size: cfg.Size, Ready: cfg.Ready, DescAddr: cfg.DescAddr, AvailAddr: cfg.AvailAddr, UsedAddr: cfg.UsedAddr}
		qs.Q[i] = q
		if !q.Ready {
			continue // a driver may leave queues it does not use unset
		}
		if err := q.activate(t.mem, t.drvFeatures&FeatureIndirectDesc != 0); err != nil {
			t.failLocked(fmt.Sprintf("queue %d: %v", i, err))
			return
		}
		if saved != nil {
			q.lastAvail, q.usedIdx, q.noNotify = saved[i].lastAvail, saved[i].usedIdx, saved[i].noNotify
			qs.Resumed = true
		}
	}
	if err := checkOverlap(qs.Q); err != nil {
		t.failLocked(err.Error())
		return
	}
	t.startLocked(qs)
}

// startLocked runs the device goroutine on qs.
func (t *MMIO) startLocked(qs *Queues) {
	ctx, cancel := context.WithCancel(context.Background())
	a := &activation{cancel: cancel, done: make(chan struct{}), qs: qs}
	t.run = a
	go t.serve(ctx, a, qs)
}

func (t *MMIO) newQueues() *Queues {
	return &Queues{Mem: t.mem, Q: make([]*Queue, len(t.queues)), Features: t.drvFeatures, notify: t.notify, t: t}
}

// checkOverlap refuses a used ring that overlaps any ring of a ready
// queue: the device would be writing the driver's own structures, and a
// used index laid over an available index makes a ring that never drains.
func checkOverlap(qs []*Queue) error {
	for i, q := range qs {
		if q.used == nil {
			continue
		}
		for j, o := range qs {
			for k, r := range [][]byte{o.desc, o.avail, o.used} {
				if r != nil && (i != j || k != 2) && overlaps(q.used, r) {
					return qerr("queue %d: used ring at %#x overlaps a ring of queue %d", i, q.UsedAddr, j)
				}
			}
		}
	}
	return nil
}

// overlaps reports whether two views of guest memory share a byte.
func overlaps(a, b []byte) bool {
	pa, pb := uintptr(unsafe.Pointer(&a[0])), uintptr(unsafe.Pointer(&b[0]))
	return pa < pb+uintptr(len(b)) && pb < pa+uintptr(len(a))
}

// serve is the device goroutine of activation a.
func (t *MMIO) serve(ctx context.Context, a *activation, qs *Queues) {
	defer close(a.done)
	// A panic, in Run or in one of its helpers (runAll), is a VMM bug, not
	// the driver's: it ends the machine rather than the device.
	err := guard.Call("device "+t.name, t.fatal, func() error { return t.dev.Run(ctx, qs) })
	if err == nil || ctx.Err() != nil || guard.Of(err) != nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.run != a || ctx.Err() != nil {
		return // stopped meanwhile: the error is about a queue that is gone
	}
	var qe *QueueError
	if !errors.As(err, &qe) {
		err = fmt.Errorf("host: %w", err)
	}
	t.failLocked(err.Error())
}

// runAll runs each of fs on its own goroutine and returns, once all have
// returned, their errors joined. A panic becomes its goroutine's error, for
// serve to report like one in Run; the first error calls cancel, which must
// make the others return: a device's helpers stop with it.
func runAll(cancel context.CancelFunc, fs ...func() error) error {
	var wg sync.WaitGroup
	errs := make([]error, len(fs))
	for i, f := range fs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if errs[i] = guard.Run(f); errs[i] != nil {
				cancel()
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// failLocked puts the device into DEVICE_NEEDS_RESET (spec 2.1.2), stops
// serving its queues, and tells the driver through a configuration-change
// interrupt. The VMM and other devices carry on; a reset recovers it.
func (t *MMIO) failLocked(reason string) {
	t.logf("%s: device needs reset: %s", t.name, reason)
	t.status |= StatusNeedsReset
	if t.run != nil {
		t.run.cancel() // the reset waits for it
	}
	t.interrupt(intConfigChange)
}

// resetLocked stops the device and returns every register to its initial
// value (spec 2.4). Called with t.mu held.
func (t *MMIO) resetLocked() {
	t.stopLocked()
	t.status, t.devFeatSel, t.drvFeatSel, t.drvFeatures, t.queueSel = 0, 0, 0, 0, 0
	t.live = false
	for _, q := range t.queues {
		q.reset()
	}
	t.isr.Store(0)
	for _, c := range t.notify {
		select {
		case <-c:
		default:
		}
	}
}

// Close stops the device for good.
func (t *MMIO) Close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closed = true
	t.stopLocked()
}

// stopLocked cancels the device goroutine and waits for it. t.mu is dropped
// meanwhile, because a failing device takes it to record the failure;
// t.stopping makes other vCPUs' writes wait out that window as no-ops.
func (t *MMIO) stopLocked() {
	a := t.run
	if a == nil {
		return
	}
	a.cancel()
	t.stopping = true
	t.mu.Unlock()
	<-a.done
	t.mu.Lock()
	t.stopping = false
	t.run = nil
}
