package vmm

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/microvm-dev/microvm/internal/guard"
)

// haltPollInterval is how often the vCPUs are poked to check whether the
// guest has halted every CPU with interrupts off.
const haltPollInterval = 250 * time.Millisecond

// Run runs the guest until it resets, powers off, crashes, or ctx ends. A
// machine runs once.
func (m *Machine) Run(ctx context.Context) Result {
	res := Result{Reason: ExitError, Err: errors.New("machine already ran"), GuestStatus: -1}
	m.runOnce.Do(func() { res = m.run(ctx) })
	return res
}

func (m *Machine) run(ctx context.Context) Result {
	ensureProcs(len(m.vcpus) + 1)
	m.halted = make([]bool, len(m.vcpus))
	exits := make(chan vcpuExit, len(m.vcpus))
	var wg sync.WaitGroup
	for _, v := range m.vcpus {
		r := &runner{v: v, pio: m.devices.pio, mmio: m.devices.mmio, stopping: &m.stopping, halted: m.noteHalted, park: m.park}
		if v.id == 0 {
			r.firstRun = func() { m.timeline.Mark(PhaseFirstRun) }
		}
		r.run(&wg, exits, func(e vcpuExit) {
			if e.reason != ExitStopped {
				m.stop()
			}
		})
	}
	pollDone := make(chan struct{})
	defer close(pollDone)
	guard.Go("halt poll", m.fatal, func() { m.pollHalted(pollDone) })

	m.running.Store(true)
	var o observed
	select {
	case <-ctx.Done():
		e := vcpuExit{reason: ExitCanceled}
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			e.reason = ExitTimeout
		}
		o.events = append(o.events, e)
		m.stop()
	case e := <-exits:
		o.events = append(o.events, e)
	case e := <-m.guestExit:
		o.events = append(o.events, e)
	}
	wg.Wait()
	m.running.Store(false)
	close(exits)
	select {
	case e := <-m.guestExit:
		o.events = append(o.events, e)
	default:
	}
	for e := range exits {
		o.events = append(o.events, e)
	}
	for _, v := range m.vcpus {
		if r, err := v.regs(); err == nil {
			o.where = append(o.where, fmt.Sprintf("vcpu %d at RIP %#x", v.id, r.RIP))
		}
	}
	o.panicLine = m.panics.line()
	var ex Exits
	for _, v := range m.vcpus {
		ex.add(v.exits)
	}
	ex.PIO, ex.MMIOBus = m.devices.pio.Accesses(), m.devices.mmio.Accesses()
	end := decide(o)
	m.timeline.Mark(PhaseExit)
	return Result{
		Reason:        end.reason,
		Detail:        end.detail,
		Err:           end.err,
		GuestStatus:   int(m.guestStatus.Load()),
		Timeline:      m.timeline.Marks(),
		Start:         m.cfg.Started,
		GuestResident: m.mem.Resident(),
		Snapshot:      m.snapInfo.Load(),
		Exits:         ex,
	}
}

// pollHalted pokes every vCPU each haltPollInterval until done, so that
// each looks at whether it is stopped for good: how a poweroff without ACPI
// is noticed.
func (m *Machine) pollHalted(done <-chan struct{}) {
	t := time.NewTicker(haltPollInterval)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
			for _, v := range m.vcpus {
				v.poke()
			}
		}
	}
}
