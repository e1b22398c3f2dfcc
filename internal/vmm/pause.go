package vmm

import (
	"errors"
	"time"
)

// Pausing a running machine for a snapshot: every vCPU out of KVM_RUN and
// parked on its own thread, then every device goroutine stopped.
//
// A vCPU is asked to park by poking it (a signal, without immediate_exit)
// until it does. KVM_RUN returns EINTR on a signal only between guest
// instructions: an I/O or MMIO exit's instruction is completed by the next
// KVM_RUN before it looks for signals (api.rst, KVM_RUN, "the corresponding
// operations are complete (and guest state is consistent) only after
// userspace has re-entered the kernel with KVM_RUN"), so a vCPU that parks
// on EINTR has no half-done instruction in its state.

// pauseTimeout bounds the wait for the vCPUs to park; a vCPU stuck in a
// device handler (a console write waiting for a stalled stdout) makes the
// snapshot fail instead of waiting for ever.
const pauseTimeout = 10 * time.Second

type pauseReq struct {
	parked chan int
	resume chan struct{}
}

// park holds vCPU id while a pause is requested; it reports whether it
// did. Called by the runner between KVM_RUNs on the vCPU's thread.
func (m *Machine) park(id int) bool {
	p := m.pausing.Load()
	if p == nil {
		return false
	}
	p.parked <- id
	select {
	case <-p.resume:
	case <-m.stopCh:
	}
	return true
}

// pauseVCPUs parks every vCPU and returns the function that lets them go.
func (m *Machine) pauseVCPUs() (func(), error) {
	p := &pauseReq{parked: make(chan int, len(m.vcpus)), resume: make(chan struct{})}
	m.pausing.Store(p)
	resume := func() {
		m.pausing.Store(nil)
		close(p.resume)
	}
	deadline := time.After(pauseTimeout)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for n := 0; n < len(m.vcpus); {
		for _, v := range m.vcpus {
			v.poke()
		}
		select {
		case <-p.parked:
			n++
		case <-tick.C:
		case <-m.stopCh:
			resume()
			return nil, errors.New("the machine stopped")
		case <-deadline:
			resume()
			return nil, errors.New("a vCPU did not pause within 10s (is it writing to a console nobody reads?)")
		}
	}
	return resume, nil
}
