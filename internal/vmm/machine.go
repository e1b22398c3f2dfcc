package vmm

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/microvm-dev/microvm/agentproto"
	"github.com/microvm-dev/microvm/devices"
	"github.com/microvm-dev/microvm/devices/virtio"
	"github.com/microvm-dev/microvm/internal/guard"
	"github.com/microvm-dev/microvm/internal/sandbox"
	"github.com/microvm-dev/microvm/internal/snapshot"
)

// Machine is a built VM (see Build): memory, vCPUs, devices, loaded kernel.
// It runs once; Close releases it and may be called any number of times.
type Machine struct {
	cfg      Config
	kvm      *KVM
	vm       *vm
	mem      *Memory
	vcpus    []*vcpu
	devices  *DeviceManager
	consoles consoles
	// diskFiles are the open disk images, in Config.Disks' order;
	// cmdline is the kernel command line the guest booted with.
	diskFiles []virtio.DiskFile
	cmdline   string
	serial    *devices.Serial
	timeline  *Timeline
	out       *consoleOut // between the consoles and cfg.Stdout
	panics    *panicWatcher
	log       *rateLog      // every warning goes through it
	teardown  []func()      // pushed by the builder; Close runs it newest first
	needs     sandbox.Needs // what the devices' host backends do once running

	stopping    atomic.Bool
	guestExit   chan vcpuExit // exits a device or goroutine asked for
	guestStatus atomic.Int32
	runOnce     sync.Once
	closeOnce   sync.Once

	// inputMu orders SendInput against Close: input never reaches a device
	// whose VM is gone.
	inputMu sync.RWMutex
	closed  bool

	haltMu sync.Mutex
	halted []bool // per vCPU: stopped for good (see vcpu.stoppedForGood)

	// Snapshots (pause.go, snapshot.go). stopCh is closed by stop: a
	// paused vCPU waits on it as well as on its resume.
	stopCh   chan struct{}
	stopOnce sync.Once
	pausing  atomic.Pointer[pauseReq]
	running  atomic.Bool
	snapMu   sync.Mutex // one snapshot at a time, and none during Close
	inputs   inputIDs
	snapInfo atomic.Pointer[SnapshotInfo] // of the snapshot taken at agent ready, or the restore
	// atReady is Config.SnapshotAtReady's writer, made by Build: everything
	// the snapshot writes is opened then, before the process may be
	// sandboxed (see prepareSnapshot). Taken (nil) by the snapshot.
	atReady *snapshot.Writer
	host    *snapHost // hostFacts, under snapMu or in Build
}

// ErrClosed is returned by SendInput once the machine is closed.
var ErrClosed = errors.New("machine closed")

func newMachine(cfg Config) *Machine {
	m := &Machine{
		cfg:       cfg,
		timeline:  NewTimeline(cfg.Started),
		devices:   newDeviceManager(),
		guestExit: make(chan vcpuExit, 1),
		stopCh:    make(chan struct{}),
	}
	m.log = newRateLog(m.printLog, m.fatal)
	m.guestStatus.Store(-1)
	return m
}

// Devices returns the record of every device: name, bus, address and IRQ.
func (m *Machine) Devices() []DeviceInfo { return m.devices.Devices() }

// Timeline returns the boot timeline recorded so far.
func (m *Machine) Timeline() *Timeline { return m.timeline }

// logf reports a VMM warning, at most logBurst times per format string:
// most warnings are something a guest can repeat.
func (m *Machine) logf(format string, a ...any) { m.log.logf(format, format, a...) }

// deviceLogf is logf for one device: its warnings are limited on their own,
// so one misbehaving device does not hide another's.
func (m *Machine) deviceLogf(name string) func(string, ...any) {
	return func(format string, a ...any) { m.log.logf(name+"\x00"+format, format, a...) }
}

func (m *Machine) printLog(line string) {
	if m.cfg.Logf != nil {
		m.cfg.Logf("%s", line)
		return
	}
	fmt.Fprintf(os.Stderr, "microvm: %s\n", line)
}

// fatal ends the machine with an internal error (ExitError): a device or
// VMM goroutine panicked, a bug in the VMM rather than anything the guest
// did.
func (m *Machine) fatal(err error) {
	m.guestStopped(vcpuExit{reason: ExitError, err: err})
}

// milestone timestamps a boot/debug-port milestone (agentproto.DebugPort).
func (m *Machine) milestone(code uint8, value uint32) {
	switch code {
	case agentproto.MilestoneInit:
		m.timeline.Mark(PhaseInit)
	case agentproto.MilestoneReady:
		m.timeline.Mark(PhaseAgentReady)
	case agentproto.MilestoneCmdDone:
		m.guestStatus.Store(int32(value & 0xff))
		m.timeline.Mark(PhaseCommandDone)
	}
	if m.cfg.OnMilestone != nil {
		// After the console output before it: see consoleOut.after.
		if m.out != nil {
			m.out.after(func() { m.cfg.OnMilestone(code, value) })
		} else {
			m.cfg.OnMilestone(code, value)
		}
	}
}

// noteHalted records whether vCPU id is stopped for good; when all are, the
// guest has powered off.
func (m *Machine) noteHalted(id int, halted bool) {
	m.haltMu.Lock()
	m.halted[id] = halted
	all := true
	for _, h := range m.halted {
		all = all && h
	}
	m.haltMu.Unlock()
	if all {
		m.guestStopped(vcpuExit{reason: ExitPoweroff, detail: "all vCPUs halted with interrupts disabled"})
	}
}

// guestStopped records an exit a device or goroutine asked for and stops
// the vCPUs. The first one is kept.
func (m *Machine) guestStopped(e vcpuExit) {
	select {
	case m.guestExit <- e:
	default:
	}
	m.stop()
}

func (m *Machine) stop() {
	m.stopping.Store(true)
	m.stopOnce.Do(func() { close(m.stopCh) })
	// A vCPU or device goroutine may be waiting for a stalled stdout to
	// take console output: it must not keep the machine from stopping.
	if m.out != nil {
		m.out.release()
	}
	for _, v := range m.vcpus {
		v.kick()
	}
}

// SendInput feeds host bytes to the guest's console (hvc0 with
// VirtioConsole, else COM1), waiting while the guest does not take them,
// until ctx ends or the guest stops. After Close it returns ErrClosed.
//
// A panic in the device that takes the input ends the machine with an
// internal error, and is returned.
func (m *Machine) SendInput(ctx context.Context, b []byte) error {
	m.inputMu.RLock()
	defer m.inputMu.RUnlock()
	if m.closed {
		return ErrClosed
	}
	return guard.Call("console input", m.fatal, func() error { return m.sendInput(ctx, b) })
}

func (m *Machine) sendInput(ctx context.Context, b []byte) error {
	if c := m.consoles.console; c != nil {
		_, err := c.Ports[0].Write(b)
		return err
	}
	for len(b) > 0 {
		n := m.serial.Enqueue(b)
		b = b[n:]
		if len(b) == 0 {
			return nil
		}
		select {
		case <-m.serial.Space():
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
			if m.stopping.Load() {
				return errors.New("guest stopped")
			}
		}
	}
	return nil
}

// Close releases the machine. It stops a machine still running first, and
// may be called more than once and concurrently with SendInput.
func (m *Machine) Close() {
	m.closeOnce.Do(m.close)
}

func (m *Machine) close() {
	m.stop()
	// A snapshot in progress uses the vCPU and VM fds: let it finish.
	m.snapMu.Lock()
	defer m.snapMu.Unlock()
	// Device goroutines use guest memory: stop them before it is unmapped.
	m.devices.stop()
	// Unblocks a SendInput waiting for the guest to read hvc0.
	m.consoles.close()
	m.inputMu.Lock()
	m.closed = true
	m.inputMu.Unlock()
	if m.out != nil {
		if n := m.out.close(m.cfg.DrainBy); n > 0 {
			m.logf("%d bytes of console output dropped: the console's reader did not take them", n)
		}
	}
	if ch := m.consoles.channel; ch != nil {
		if n := ch.CtrlDropped(); n > 0 {
			m.logf("virtio-console %s: %d control replies dropped: the driver gave no buffers for them", m.cfg.Channel.Name, n)
		}
	}
	for i := len(m.teardown) - 1; i >= 0; i-- {
		m.teardown[i]()
	}
	m.teardown = nil
	m.log.close()
}
