package virtio

import (
	"context"
	"encoding/binary"
	"sync"
	"sync/atomic"
)

// virtio-mmio register offsets (spec 4.2.2, version 2 "modern" layout).
const (
	regMagic            = 0x000
	regVersion          = 0x004
	regDeviceID         = 0x008
	regVendorID         = 0x00c
	regDeviceFeatures   = 0x010
	regDeviceFeatSel    = 0x014
	regDriverFeatures   = 0x020
	regDriverFeatSel    = 0x024
	regQueueSel         = 0x030
	regQueueNumMax      = 0x034
	regQueueNum         = 0x038
	regQueueReady       = 0x044
	regQueueNotify      = 0x050
	regInterruptStatus  = 0x060
	regInterruptACK     = 0x064
	regStatus           = 0x070
	regQueueDescLow     = 0x080
	regQueueDescHigh    = 0x084
	regQueueDriverLow   = 0x090
	regQueueDriverHigh  = 0x094
	regQueueDeviceLow   = 0x0a0
	regQueueDeviceHigh  = 0x0a4
	regConfigGeneration = 0x0fc
	regConfig           = 0x100

	// QueueNotifyOffset is where the driver writes a queue index to notify
	// the device; the VMM attaches an ioeventfd here.
	QueueNotifyOffset = regQueueNotify

	mmioMagic   = 0x74726976 // "virt"
	mmioVersion = 2
	vendorID    = 0x4d564d55 // "UMVM"
)

// Device status bits (spec 2.1).
const (
	StatusAcknowledge = 1
	StatusDriver      = 2
	StatusDriverOK    = 4
	StatusFeaturesOK  = 8
	StatusNeedsReset  = 64
	StatusFailed      = 128
)

// Feature bits the transport itself offers (spec 6).
const (
	FeatureIndirectDesc = 1 << 28
	FeatureVersion1     = 1 << 32
)

// Interrupt status bits (spec 4.2.2, InterruptStatus).
const (
	intUsedBuffer   = 1
	intConfigChange = 2
)

// Interrupt signals the device's interrupt line (an irqfd in the VMM).
type Interrupt interface {
	Trigger() error
}

// Device is a virtio device behind a transport.
type Device interface {
	// Type is the virtio device ID (spec 5): 1 net, 2 block, 3 console, 4 rng.
	Type() uint32
	// Features are the device-specific feature bits offered.
	Features() uint64
	// QueueSizes gives each queue's maximum size; its length is the number
	// of queues.
	QueueSizes() []uint16
	// ReadConfig and WriteConfig access the device configuration space.
	ReadConfig(off uint64, data []byte)
	WriteConfig(off uint64, data []byte)
	// Run serves the activated queues until ctx ends. It returns a
	// *QueueError for a driver error (the transport then sets
	// DEVICE_NEEDS_RESET) or another error for a host failure.
	Run(ctx context.Context, q *Queues) error
}

// Queues is what an active device works with.
type Queues struct {
	Mem      Memory
	Q        []*Queue
	Features uint64 // negotiated
	// Resumed is set when this activation continues one that a snapshot
	// paused (or that a restored snapshot recorded): the queues carry on
	// from their saved indices, and a device keeps what it held between
	// requests (console control replies, port state) instead of starting
	// afresh as after a reset.
	Resumed bool
	notify  []chan struct{}
	t       *MMIO
}

// Notify returns the channel that receives queue i's driver notifications.
func (qs *Queues) Notify(i int) <-chan struct{} { return qs.notify[i] }

// Signal tells the driver that used buffers are ready (unless it asked not
// to be interrupted for queue i).
func (qs *Queues) Signal(i int) {
	if qs.Q[i].NoInterrupt() {
		return
	}
	qs.t.interrupt(intUsedBuffer)
}

// ConfigChanged raises a configuration-change interrupt.
func (qs *Queues) ConfigChanged() { qs.t.interrupt(intConfigChange) }

// MMIO is the virtio-mmio transport for one device: a 4 KiB register window.
//
// It follows the device status state machine of spec 2.1 and 3.1.1: the
// driver only ever adds status bits, and once DRIVER_OK is set only a reset
// (status 0) makes the queue registers writable again. Clearing a bit
// without a reset is a driver error (NEEDS_RESET). Each activation runs at
// most one device goroutine, on its own copy of the queue configuration, and
// a reset waits for it before the registers return to their initial values.
type MMIO struct {
	name  string
	dev   Device
	mem   Memory
	irq   Interrupt
	logf  func(format string, a ...any)
	fatal func(error)

	mu          sync.Mutex // register state; vCPU threads and the device's failure path
	status      uint32
	devFeatSel  uint32
	drvFeatSel  uint32
	drvFeatures uint64
	queueSel    uint32
	queues      []*Queue // configuration as the driver wrote it; never used by Run
	live        bool     // DRIVER_OK was set since the last reset: queue registers are frozen
	stopping    bool     // a reset or Close waits for the device goroutine: writes are ignored
	closed      bool
	run         *activation // the current activation's goroutine, nil if none
	// paused is set between Pause and Resume; resume holds the queues of
	// the activation Pause stopped (nil if none ran), with their indices.
	paused bool
	resume *Queues
	notify []chan struct{}
	isr    atomic.Uint32
}

// NewMMIO wraps dev in a virtio-mmio transport. logf receives one line per
// driver error (the device is then marked DEVICE_NEEDS_RESET). fatal
// receives a panic of the device's goroutines: a bug in the VMM, not
// something the guest did, so the VMM must stop (it is called at most once
// per activation, on the device goroutine).
func NewMMIO(name string, dev Device, mem Memory, irq Interrupt, logf func(string, ...any), fatal func(error)) *MMIO {
	t := &MMIO{name: name, dev: dev, mem: mem, irq: irq, logf: logf, fatal: fatal}
	for range dev.QueueSizes() {
		t.queues = append(t.queues, &Queue{})
		t.notify = append(t.notify, make(chan struct{}, 1))
	}
	return t
}

// Name is the device's name in logs ("virtio-blk vda").
func (t *MMIO) Name() string { return t.name }

// NumQueues is how many queues the device has.
func (t *MMIO) NumQueues() int { return len(t.queues) }

// Notify delivers a driver notification for queue i (from an ioeventfd, or
// from a QueueNotify write when there is none). It never blocks.
func (t *MMIO) Notify(i int) {
	if i < 0 || i >= len(t.notify) {
		return
	}
	select {
	case t.notify[i] <- struct{}{}:
	default:
	}
}

func (t *MMIO) offered() uint64 {
	return t.dev.Features() | FeatureVersion1 | FeatureIndirectDesc
}

func (t *MMIO) interrupt(bit uint32) {
	t.isr.Or(bit)
	if err := t.irq.Trigger(); err != nil {
		t.logf("%s: interrupt: %v", t.name, err)
	}
}

// Read handles a register read from a vCPU.
func (t *MMIO) Read(off uint64, data []byte) {
	if off >= regConfig {
		t.dev.ReadConfig(off-regConfig, data)
		return
	}
	clear(data)
	if len(data) != 4 {
		return // registers are 32-bit (spec 4.2.2.2)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	var v uint32
	switch off {
	case regMagic:
		v = mmioMagic
	case regVersion:
		v = mmioVersion
	case regDeviceID:
		v = t.dev.Type()
	case regVendorID:
		v = vendorID
	case regDeviceFeatures:
		if t.devFeatSel < 2 {
			v = uint32(t.offered() >> (32 * t.devFeatSel))
		}
	case regQueueNumMax:
		if q := int(t.queueSel); q < len(t.queues) {
			v = uint32(t.dev.QueueSizes()[q])
		}
	case regQueueReady:
		if q := t.sel(); q != nil && q.Ready {
			v = 1
		}
	case regInterruptStatus:
		v = t.isr.Load()
	case regStatus:
		v = t.status
	case regConfigGeneration:
		v = 0 // configuration never changes under the driver
	}
	binary.LittleEndian.PutUint32(data, v)
}

func (t *MMIO) sel() *Queue {
	if int(t.queueSel) < len(t.queues) {
		return t.queues[t.queueSel]
	}
	return nil
}

// Write handles a register write from a vCPU.
func (t *MMIO) Write(off uint64, data []byte) {
	if off >= regConfig {
		t.dev.WriteConfig(off-regConfig, data)
		return
	}
	if len(data) != 4 {
		return
	}
	v := binary.LittleEndian.Uint32(data)
	if off == regQueueNotify {
		t.Notify(int(v))
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopping || t.closed || t.paused {
		return // a second vCPU racing a reset, or a paused machine: nothing may change under it
	}
	// Queue registers may only change before the device is live (spec
	// 4.2.3.2); later writes are ignored until a reset.
	live := t.live
	q := t.sel()
	setLow := func(p *uint64) { *p = *p&^0xffffffff | uint64(v) }
	setHigh := func(p *uint64) { *p = *p&0xffffffff | uint64(v)<<32 }
	switch off {
	case regDeviceFeatSel:
		t.devFeatSel = v
	case regDriverFeatSel:
		t.drvFeatSel = v
	case regDriverFeatures:
		if t.drvFeatSel < 2 && t.status&StatusFeaturesOK == 0 {
			shift := 32 * t.drvFeatSel
			t.drvFeatures = t.drvFeatures&^(0xffffffff<<shift) | uint64(v)<<shift
		}
	case regQueueSel:
		t.queueSel = v
	case regInterruptACK:
		t.isr.And(^v)
	case regStatus:
		t.setStatus(v)
	}
	if q == nil || live {
		return
	}
	switch off {
	case regQueueNum:
		q.Size = uint16(v)
		if v > 0xffff {
			q.Size = 0 // refused at activation
		}
	case regQueueReady:
		q.Ready = v == 1
	case regQueueDescLow:
		setLow(&q.DescAddr)
	case regQueueDescHigh:
		setHigh(&q.DescAddr)
	case regQueueDriverLow:
		setLow(&q.AvailAddr)
	case regQueueDriverHigh:
		setHigh(&q.AvailAddr)
	case regQueueDeviceLow:
		setLow(&q.UsedAddr)
	case regQueueDeviceHigh:
		setHigh(&q.UsedAddr)
	}
}
