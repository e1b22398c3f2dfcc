package vmm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/microvm-dev/microvm/devices"
	"github.com/microvm-dev/microvm/internal/guard"
	"golang.org/x/sys/unix"
)

// runner drives one vCPU: it enters the guest with KVM_RUN, hands each port
// and MMIO access to its bus, and reports how its loop ended on exits. It
// knows nothing of the machine around it.
type runner struct {
	v         *vcpu
	pio, mmio *devices.Bus
	stopping  *atomic.Bool // set when the machine stops: the loop ends
	firstRun  func()       // called before the first KVM_RUN (BSP: the timeline mark)
	// halted is told, each time a kick or poke interrupts KVM_RUN, whether
	// the vCPU is stopped for good (halted with interrupts off).
	halted func(id int, halted bool)
	// park, on the same occasions, holds the vCPU outside KVM_RUN while
	// the machine is paused for a snapshot, and reports whether it did.
	park func(id int) bool
}

// run runs the loop on its own goroutine and sends its end on exits.
func (r *runner) run(wg *sync.WaitGroup, exits chan<- vcpuExit, ended func(vcpuExit)) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		e := r.guardedLoop()
		ended(e)
		exits <- e
	}()
}

// guardedLoop is loop with a panic in the VMM's own exit handling turned
// into an internal error that stops the machine, so the process can restore
// the terminal and exit 1. A panic in a device's register handler is caught
// by the bus, which names the device.
func (r *runner) guardedLoop() (e vcpuExit) {
	err := guard.Run(func() error { e = r.loop(); return nil })
	if err != nil {
		e = vcpuExit{reason: ExitError, err: guard.Internal(fmt.Sprintf("vcpu %d", r.v.id), err)}
	}
	return e
}

// loop runs the vCPU until the machine stops or the guest does something
// that ends it. It runs on its own locked OS thread for its whole life.
func (r *runner) loop() vcpuExit {
	v := r.v
	runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
	v.tid.Store(int32(unix.Gettid()))
	defer v.tid.Store(0)
	le := binary.LittleEndian
	fd := uintptr(v.fd())
	first := true
	var run kvmRunMode
	for !r.stopping.Load() {
		if first && r.firstRun != nil {
			r.firstRun()
		}
		first = false
		err := run.call(fd)
		if err != nil {
			if errors.Is(err, unix.EINTR) || errors.Is(err, unix.EAGAIN) {
				v.exits.Interrupted++
				if !r.stopping.Load() && (r.park == nil || !r.park(v.id)) {
					r.halted(v.id, v.stoppedForGood())
				}
				continue
			}
			return vcpuExit{reason: ExitError, err: fmt.Errorf("vcpu %d: KVM_RUN: %w", v.id, err)}
		}
		u := v.run[runExitUnion:]
		reason := le.Uint32(v.run[runExitReason:])
		v.exits.count(reason)
		switch reason {
		case exitIO:
			dir, size := u[0], int(u[1])
			port := uint64(le.Uint16(u[2:]))
			count := int(le.Uint32(u[4:]))
			off := le.Uint64(u[8:])
			if size == 0 || off+uint64(size*count) > uint64(len(v.run)) {
				return vcpuExit{reason: ExitError, err: fmt.Errorf("vcpu %d: malformed I/O exit", v.id)}
			}
			for i := 0; i < count; i++ {
				d := v.run[off+uint64(i*size) : off+uint64((i+1)*size)]
				if err := access(r.pio, dir == 1, port, d); err != nil {
					return vcpuExit{reason: ExitError, err: err}
				}
			}
		case exitMMIO:
			addr := le.Uint64(u[0:])
			n := le.Uint32(u[16:])
			if n > 8 {
				n = 8
			}
			if err := access(r.mmio, u[20] != 0, addr, u[8:8+n]); err != nil {
				return vcpuExit{reason: ExitError, err: err}
			}
		case exitHLT:
			// Only without an in-kernel LAPIC; nothing to do but re-enter.
		case exitIntr:
			// A signal interrupted the guest; the loop condition decides.
		case exitShutdown:
			return vcpuExit{reason: ExitCrash, detail: v.crashDetail("triple fault (KVM_EXIT_SHUTDOWN)")}
		case exitInternalError:
			sub := le.Uint32(u[0:])
			what := fmt.Sprintf("KVM internal error, suberror %d", sub)
			if sub == 1 {
				what = "emulation failure (KVM_INTERNAL_ERROR_EMULATION)"
			}
			return vcpuExit{reason: ExitCrash, detail: v.crashDetail(what)}
		case exitFailEntry:
			return vcpuExit{reason: ExitError, err: fmt.Errorf("vcpu %d: KVM_EXIT_FAIL_ENTRY, hardware reason %#x", v.id, le.Uint64(u[0:]))}
		case exitSystemEvent:
			switch le.Uint32(u[0:]) {
			case systemEventShutdown:
				return vcpuExit{reason: ExitPoweroff}
			case systemEventReset:
				return vcpuExit{reason: ExitReset}
			default:
				return vcpuExit{reason: ExitCrash, detail: v.crashDetail("guest reported a crash (KVM_SYSTEM_EVENT_CRASH)")}
			}
		default:
			return vcpuExit{reason: ExitError, err: fmt.Errorf("vcpu %d: unexpected KVM exit reason %d", v.id, reason)}
		}
	}
	return vcpuExit{reason: ExitStopped}
}

// access performs one guest read or write of d at addr on bus b.
func access(b *devices.Bus, write bool, addr uint64, d []byte) error {
	var err error
	if write {
		_, err = b.Write(addr, d)
	} else {
		_, err = b.Read(addr, d)
	}
	return err
}

// kvmRunMode picks, for each KVM_RUN, kvmRunRaw or kvmRunSyscall.
//
// The raw call is the fast one while the guest exits often, but to the
// runtime the goroutine never stops running, so sysmon preempts it by
// signal every 10 ms (forcePreemptNS), and each signal is an exit and a
// re-entry even when the guest had nothing to do. Measured 2026-12-02 in
// the nested harness (one L1, alternating): the PIO loop took 116 us per
// exit raw and 167 with Syscall; a guest running `sleep` cost its VMM 88
// ms of CPU a second raw and 23 with Syscall. So: raw while exits come
// quickly; once a KVM_RUN ends in EINTR (a preemption or a kick: the guest
// ran without exiting), Syscall, until rawAfter exits in a row without an
// EINTR show the guest exiting often again.
type kvmRunMode struct {
	quick int // exits in a row that were not EINTR
}

// rawAfter is how many exits in a row switch back to the raw call: small,
// since a busy guest in raw mode is preempted every 10 ms and then spends
// rawAfter exits in the slower mode.
const rawAfter = 4

func (k *kvmRunMode) call(fd uintptr) error {
	var err error
	if k.raw() {
		err = kvmRunRaw(fd)
	} else {
		err = kvmRunSyscall(fd)
	}
	k.ended(err)
	return err
}

// raw reports whether the next KVM_RUN is the raw call.
func (k *kvmRunMode) raw() bool { return k.quick >= rawAfter }

// ended takes the result of a KVM_RUN.
func (k *kvmRunMode) ended(err error) {
	if err == unix.EINTR {
		k.quick = 0
	} else if k.quick < rawAfter {
		k.quick++
	}
}

// kvmRunSyscall is KVM_RUN with the runtime's syscall bookkeeping: the
// goroutine is in a syscall, so the runtime lets it block (it may hand
// the P to another thread; ensureProcs leaves spare Ps, so getting one
// back is cheap).
func kvmRunSyscall(fd uintptr) error {
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, fd, kvmRun, 0)
	if errno != 0 {
		return errno
	}
	return nil
}

// kvmRunRaw is KVM_RUN without the Go runtime's syscall bookkeeping
// (RawSyscall, no entersyscall/exitsyscall). With the bookkeeping, a vCPU
// thread that lives in KVM_RUN looks to the runtime like a goroutine stuck in
// a syscall: sysmon keeps retaking its P and polling at 20 µs, which on a
// 1-CPU host costs a context switch per guest exit (measured 2.5x the C
// loop's PIO round trip in the nested harness). Without it the goroutine
// looks busy: it keeps its P (ensureProcs leaves one spare for the other
// goroutines), and the runtime's preemption signal makes KVM_RUN return
// EINTR like any other kick, so GC and the scheduler still get it back.
func kvmRunRaw(fd uintptr) error {
	_, _, errno := unix.RawSyscall(unix.SYS_IOCTL, fd, kvmRun, 0)
	if errno != 0 {
		return errno
	}
	return nil
}

func (v *vcpu) crashDetail(what string) string {
	r, err := v.regs()
	if err != nil {
		return fmt.Sprintf("vcpu %d: %s", v.id, what)
	}
	return fmt.Sprintf("vcpu %d: %s at RIP %#x", v.id, what, r.RIP)
}

// ensureProcs raises GOMAXPROCS to at least n; it never lowers it, so
// machines running side by side cannot undo each other.
//
// A vCPU goroutine spends the guest's running time inside the KVM_RUN
// syscall. When no P is idle (GOMAXPROCS 1 on a 1-CPU host, or fewer Ps than
// vCPUs), the runtime's sysmon takes the P away from every syscall older than
// one 20 µs tick and keeps polling at that rate, so each exit pays a P
// handoff plus sysmon wakeups: measured 2.4x the C loop's PIO round trip in
// the nested harness (1 CPU). With a spare P, sysmon leaves syscalls alone
// for 10 ms and backs off. The vCPU threads themselves are blocked in the
// kernel, not running Go code, so the extra Ps cost nothing. GOMAXPROCS is
// process-wide by nature; procsMu only serialises the check-and-raise.
func ensureProcs(n int) {
	procsMu.Lock()
	defer procsMu.Unlock()
	if runtime.GOMAXPROCS(0) < n {
		runtime.GOMAXPROCS(n)
	}
}

var procsMu sync.Mutex
