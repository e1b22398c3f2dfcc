package vmm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/microvm-dev/microvm/devices"
	"github.com/microvm-dev/microvm/devices/virtio"
	"github.com/microvm-dev/microvm/agentproto"
	"github.com/microvm-dev/microvm/internal/guard"
	"golang.org/x/sys/unix"
)

// ExitReason says how a machine stopped.
type ExitReason string

const (
	ExitReset    ExitReason = "reset"    // the guest reset (i8042 or KVM reset event)
	ExitPoweroff ExitReason = "poweroff" // the guest powered off
	ExitCrash    ExitReason = "crash"    // triple fault, emulation failure, kernel panic
	ExitTimeout  ExitReason = "timeout"  // the context's deadline passed
	ExitCanceled ExitReason = "canceled" // the context was canceled
	ExitError    ExitReason = "error"    // a VMM or KVM failure
	ExitStopped  ExitReason = "stopped"  // internal: a vCPU was told to stop
)

// Exit codes of the microvm command, one per reason.
const (
	CodeOK       = 0
	CodeInternal = 1
	CodeUsage    = 2
	CodeCrash    = 3
	CodeTimeout  = 124
)

// Config describes a machine to boot.
type Config struct {
	Kernel  string // bzImage or ELF64 path
	Initrd  string // optional initramfs path
	Cmdline string
	CPUs    int
	Memory  uint64 // bytes
	// Console receives the guest's serial output; nil discards it.
	Console io.Writer
	// Start is when the boot began, for the timeline (default: now).
	Start time.Time
	// OnMilestone, if set, sees every milestone: boot/debug port writes
	// (vCPU thread) and agent-channel messages (device goroutine).
	OnMilestone func(code uint8, value uint32)

	// Disks are attached as virtio-blk devices vda, vdb, ... in order.
	Disks []Disk
	// Nets are attached as virtio-net devices eth0, eth1, ... in order.
	Nets []NetIf
	// VirtioConsole adds a virtio-console whose port 0 (hvc0) writes to
	// Console and whose port 1 is the guest agent's channel. Put
	// console=hvc0 on the command line to make it the guest's console.
	VirtioConsole bool
	// Command, if set, is run by the guest agent: over the agent channel
	// with VirtioConsole, otherwise passed on the kernel command line.
	Command []string
	// DrainBy, if set, is when Close stops waiting for Console to take the
	// rest of the output (a slow reader); what is left is dropped and
	// counted. --timeout sets it so that a guest that ended in time is not
	// reported as timed out because of its reader.
	DrainBy time.Time
	// Logf receives VMM warnings such as a virtio device's driver error
	// (default: a "microvm: " line on stderr).
	Logf func(format string, a ...any)
}

// Result is how a run ended.
type Result struct {
	Reason ExitReason
	Detail string // e.g. the crash cause and RIP
	Err    error  // set when Reason is ExitError
	// GuestStatus is the exit status the guest agent reported with the
	// command-done milestone, or -1.
	GuestStatus int
	Timeline    []Mark
	// Start is the timeline's zero (Config.Start).
	Start time.Time
	// GuestTouched is how much guest RAM was resident at exit (mincore),
	// for the VMM-overhead measurement (peak RSS minus this).
	GuestTouched uint64
}

// ExitCode maps a result to the documented exit codes.
func (r Result) ExitCode() int {
	switch r.Reason {
	case ExitReset, ExitPoweroff:
		return CodeOK
	case ExitCrash:
		return CodeCrash
	case ExitTimeout:
		return CodeTimeout
	case ExitCanceled:
		return 130
	}
	return CodeInternal
}

// Machine is a configured VM: memory, vCPUs, devices, loaded kernel.
type Machine struct {
	cfg      Config
	kvm      *KVM
	vm       *os.File
	mem      *Memory
	vcpus    []*vcpu
	pio      *devices.Bus
	mmio     *devices.Bus
	serial   *devices.Serial
	timeline *Timeline

	stopping    atomic.Bool
	guestExit   chan vcpuExit // device-initiated exits (i8042 reset)
	guestStatus atomic.Int32
	panicWatch  *panicWatcher
	out         *consoleOut // between the consoles and cfg.Console
	log         *rateLog    // every warning goes through it
	agent       *agentConn  // with VirtioConsole
	runOnce     sync.Once

	haltMu sync.Mutex
	halted []bool // per vCPU: stopped for good (see vcpu.stoppedForGood)

	cmdline    string // cfg.Cmdline plus what the VMM appends
	plan       *virtioPlan
	transports []*virtio.MMIO
	files      []*os.File // eventfds
}

// Validate checks the parts of a config that need no KVM.
func (c *Config) Validate() error {
	if c.CPUs < 1 || c.CPUs > 254 {
		return inputErr("--cpus", "%d is out of range: need 1 to 254", c.CPUs)
	}
	if c.Memory < MinMemory {
		return inputErr("--memory", "%d MiB is below the minimum of %d MiB", c.Memory/MiB, MinMemory/MiB)
	}
	if c.Memory > MaxMemory {
		return inputErr("--memory", "%d GiB is above the maximum of %d GiB", c.Memory/GiB, MaxMemory/GiB)
	}
	if c.Kernel == "" {
		return inputErr("--kernel", "no kernel given")
	}
	return nil
}

// New validates cfg, creates the VM and loads the kernel, ready to Run.
func New(cfg Config) (m *Machine, err error) {
	if cfg.Start.IsZero() {
		cfg.Start = time.Now()
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	// The kernel and initrd are read straight into guest memory (Load,
	// loadKernel), never into the heap: they would count as VMM overhead.
	k, err := OpenKernel(cfg.Kernel)
	if err != nil {
		return nil, err
	}
	defer k.Close()
	if bytes.IndexByte([]byte(cfg.Cmdline), 0) >= 0 {
		return nil, inputErr("--cmdline", "contains a NUL byte")
	}
	if len(cfg.Command) > 0 && cfg.Command[0] == "" {
		return nil, inputErr("command", "empty program name")
	}
	plan, err := planVirtio(&cfg)
	if err != nil {
		return nil, err
	}
	defer func() {
		if m == nil {
			plan.close()
		}
	}()
	cmdline := cfg.Cmdline + plan.cmdline()
	switch {
	case cfg.VirtioConsole:
		cmdline += " " + agentproto.ChannelParam + "=1"
	case cfg.Command != nil:
		cmdline += " " + agentproto.CmdParam + "=" + agentproto.EncodeCmd(cfg.Command)
	}
	cmdline = strings.TrimSpace(cmdline)
	if len(cmdline) > k.CmdlineMax {
		what := "--cmdline"
		if len(cfg.Cmdline) <= k.CmdlineMax {
			what = "--cmdline plus devices and command"
		}
		return nil, inputErr(what, "is %d bytes; this kernel accepts at most %d", len(cmdline), k.CmdlineMax)
	}
	// Everything about the input is checked before KVM is touched.
	if err := k.CheckFits(cfg.Memory); err != nil {
		return nil, err
	}
	var initrd *os.File
	var initrdSize int64
	initrdAddr := uint64(0)
	if cfg.Initrd != "" {
		if initrd, initrdSize, err = openInput("--initrd", cfg.Initrd); err != nil {
			return nil, err
		}
		defer initrd.Close()
		// Placed, and one larger than RAM refused, before it is read.
		if initrdAddr, err = k.InitrdAddr(cfg.Memory, uint64(initrdSize)); err != nil {
			return nil, inputErr("--initrd", "%s: %v", cfg.Initrd, err)
		}
	}

	mc := &Machine{
		cfg:       cfg,
		timeline:  NewTimeline(cfg.Start),
		pio:       devices.NewBus("pio"),
		mmio:      devices.NewBus("mmio"),
		guestExit: make(chan vcpuExit, 1),
		cmdline:   cmdline,
		plan:      plan,
	}
	mc.log = newRateLog(mc.printLog, mc.fatal)
	m = mc
	m.guestStatus.Store(-1)
	// Not m: every error return below sets m to nil.
	built := mc
	defer func() {
		if err != nil {
			built.Close()
			m = nil
		}
	}()
	if m.kvm, err = OpenKVM(); err != nil {
		return nil, err
	}
	if max := m.kvm.MaxVCPUs(); cfg.CPUs > max {
		return nil, inputErr("--cpus", "%d exceeds this host's KVM limit of %d", cfg.CPUs, max)
	}
	if err = m.createVM(); err != nil {
		return nil, err
	}
	if m.mem, err = NewMemory(cfg.Memory); err != nil {
		return nil, err
	}
	if err = m.mapMemory(); err != nil {
		return nil, err
	}
	m.timeline.Mark(PhaseVMReady)
	if err = m.loadKernel(k, initrd, initrdSize, initrdAddr); err != nil {
		return nil, err
	}
	if err = m.addDevices(); err != nil {
		return nil, err
	}
	if err = m.createVCPUs(k.Entry); err != nil {
		return nil, err
	}
	m.timeline.Mark(PhaseKernel)
	return m, nil
}

func (m *Machine) vmIoctl(name string, req, arg uintptr) error {
	if _, err := ioctl(int(m.vm.Fd()), req, arg); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// createVM creates the VM with an in-kernel IRQ chip and PIT, as
// Documentation/virt/kvm/api.rst orders it: TSS and identity map first.
func (m *Machine) createVM() error {
	fd, err := ioctl(m.kvm.fd(), kvmCreateVM, 0)
	if err != nil {
		return fmt.Errorf("KVM_CREATE_VM: %w", err)
	}
	m.vm = os.NewFile(fd, "kvm-vm")
	unix.CloseOnExec(int(fd))
	idmap := uint64(IdentityMapAddr)
	pit := pitConfig{Flags: pitSpeakerDummy}
	for _, s := range []struct {
		name     string
		req, arg uintptr
	}{
		{"KVM_SET_TSS_ADDR", kvmSetTSSAddr, TSSAddr},
		{"KVM_SET_IDENTITY_MAP_ADDR", kvmSetIdentityMapAddr, uintptr(unsafe.Pointer(&idmap))},
		{"KVM_CREATE_IRQCHIP", kvmCreateIRQChip, 0},
		{"KVM_CREATE_PIT2", kvmCreatePIT2, uintptr(unsafe.Pointer(&pit))},
	} {
		if err := m.vmIoctl(s.name, s.req, s.arg); err != nil {
			return err
		}
	}
	return nil
}

func (m *Machine) mapMemory() error {
	for i, r := range m.mem.Regions {
		reg := userspaceMemoryRegion{
			Slot:          uint32(i),
			GuestPhysAddr: r.GPA,
			MemorySize:    r.Size,
			UserspaceAddr: uint64(uintptr(unsafe.Pointer(&r.host[0]))),
		}
		if err := m.vmIoctl("KVM_SET_USER_MEMORY_REGION", kvmSetUserMemoryRegion, uintptr(unsafe.Pointer(&reg))); err != nil {
			return fmt.Errorf("map guest RAM at %#x: %w", r.GPA, err)
		}
	}
	return nil
}

// loadKernel places the kernel, initrd, command line, zero page and the
// boot-time tables in guest memory.
func (m *Machine) loadKernel(k *Kernel, initrd *os.File, size int64, addr uint64) error {
	if err := k.Load(m.mem); err != nil {
		return err
	}
	bp := k.BootParams()
	if size > 0 {
		dst, err := m.mem.Slice(addr, uint64(size))
		if err == nil {
			_, err = initrd.ReadAt(dst, 0)
		}
		if err != nil {
			return fmt.Errorf("load initrd %s: %w", m.cfg.Initrd, err)
		}
		bp.SetRamdisk(addr, uint64(size))
	}
	if err := m.mem.Write(CmdlineAddr, append([]byte(m.cmdline), 0)); err != nil {
		return fmt.Errorf("write cmdline: %w", err)
	}
	bp.SetCmdline(CmdlineAddr)
	bp.SetE820(E820(m.mem.Regions))
	if err := m.mem.Write(ZeroPageAddr, bp[:]); err != nil {
		return fmt.Errorf("write boot_params: %w", err)
	}
	if err := writeGDT(m.mem); err != nil {
		return fmt.Errorf("write GDT: %w", err)
	}
	if err := writePageTables(m.mem); err != nil {
		return err
	}
	if err := m.mem.Write(MPTableAddr, buildMPTable(MPTableAddr, m.cfg.CPUs)); err != nil {
		return fmt.Errorf("write MP table: %w", err)
	}
	return nil
}

// irqLine drives one in-kernel IRQ chip input with KVM_IRQ_LINE.
type irqLine struct {
	vm  *os.File
	irq uint32
}

func (l irqLine) SetLevel(high bool) error {
	lv := irqLevel{IRQ: l.irq}
	if high {
		lv.Level = 1
	}
	_, err := ioctl(int(l.vm.Fd()), kvmIRQLine, uintptr(unsafe.Pointer(&lv)))
	return err
}

func (m *Machine) addDevices() error {
	out := m.cfg.Console
	if out == nil {
		out = io.Discard
	}
	m.out = newConsoleOut(out, m.fatal)
	m.panicWatch = &panicWatcher{w: m.out}
	m.serial = devices.NewSerial(m.panicWatch, irqLine{vm: m.vm, irq: COM1IRQ})
	m.serial.OnFirstByte = func() { m.timeline.Mark(PhaseFirstOutput) }
	i8042 := &devices.I8042{OnReset: func() { m.guestStopped(vcpuExit{reason: ExitReset}) }}
	debug := &devices.DebugPort{OnMilestone: m.milestone}
	for _, d := range []struct {
		name       string
		base, size uint64
		dev        devices.Device
	}{
		{"com1", COM1Port, COM1Size, m.serial},
		{"i8042", I8042Port, I8042CmdPort - I8042Port + 1, i8042},
		{"debug", DebugPort, DebugPortSize, debug},
	} {
		if err := m.pio.Register(d.name, d.base, d.size, d.dev); err != nil {
			return err
		}
	}
	if c := m.plan.console; c != nil {
		c.OnFirstByte = func() { m.timeline.Mark(PhaseFirstOutput) }
		c.Ports[0].Out = m.panicWatch
		ch := m.plan.channels.Ports[0]
		m.agent = &agentConn{m: m, port: ch}
		ch.Out = m.agent
	}
	return m.attachVirtio()
}

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

func (m *Machine) milestone(code uint8, value uint32) {
	switch code {
	case MilestoneInit:
		m.timeline.Mark(PhaseInit)
	case MilestoneAgentReady:
		m.timeline.Mark(PhaseAgentReady)
	case MilestoneCommandDone:
		m.guestStatus.Store(int32(value & 0xff))
		m.timeline.Mark(PhaseCommandDone)
	}
	if m.cfg.OnMilestone != nil {
		m.cfg.OnMilestone(code, value)
	}
}

func (m *Machine) createVCPUs(entry uint64) error {
	size, err := m.kvm.vcpuMmapSize()
	if err != nil {
		return fmt.Errorf("KVM_GET_VCPU_MMAP_SIZE: %w", err)
	}
	supported, err := m.kvm.SupportedCPUID()
	if err != nil {
		return err
	}
	tscDeadline := m.kvm.CheckExtension(capTSCDeadline) > 0
	for i := 0; i < m.cfg.CPUs; i++ {
		fd, err := ioctl(int(m.vm.Fd()), kvmCreateVCPU, uintptr(i))
		if err != nil {
			return fmt.Errorf("KVM_CREATE_VCPU %d: %w", i, err)
		}
		unix.CloseOnExec(int(fd))
		v := &vcpu{id: i, f: os.NewFile(fd, fmt.Sprintf("kvm-vcpu-%d", i))}
		m.vcpus = append(m.vcpus, v)
		if v.run, err = unix.Mmap(int(fd), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED); err != nil {
			return fmt.Errorf("mmap kvm_run of vcpu %d: %w", i, err)
		}
		if err := v.setupCPU(supported, m.cfg.CPUs, tscDeadline); err != nil {
			return err
		}
	}
	// Only the BSP gets boot state; APs wait in the in-kernel LAPIC for the
	// guest's INIT/SIPI.
	return m.vcpus[0].setupBoot(entry)
}

// haltPollInterval is how often the vCPUs are poked to check whether the
// guest has halted every CPU with interrupts off.
const haltPollInterval = 250 * time.Millisecond

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

// guestStopped records a device-initiated exit and stops the vCPUs.
func (m *Machine) guestStopped(e vcpuExit) {
	select {
	case m.guestExit <- e:
	default:
	}
	m.stop()
}

func (m *Machine) stop() {
	m.stopping.Store(true)
	// A vCPU or device goroutine may be waiting for a stalled stdout to
	// take console output: it must not keep the machine from stopping.
	if m.out != nil {
		m.out.release()
	}
	for _, v := range m.vcpus {
		v.kick()
	}
}

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
		wg.Add(1)
		go func() {
			defer wg.Done()
			e := v.guardedLoop(m)
			if e.reason != ExitStopped {
				m.stop()
			}
			exits <- e
		}()
	}
	pollDone := make(chan struct{})
	defer close(pollDone)
	guard.Go("halt poll", m.fatal, func() {
		t := time.NewTicker(haltPollInterval)
		defer t.Stop()
		for {
			select {
			case <-pollDone:
				return
			case <-t.C:
				for _, v := range m.vcpus {
					v.poke()
				}
			}
		}
	})

	var first vcpuExit
	select {
	case <-ctx.Done():
		first = vcpuExit{reason: ExitCanceled}
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			first.reason = ExitTimeout
		}
		m.stop()
	case first = <-exits:
	case first = <-m.guestExit:
	}
	wg.Wait()
	close(exits)
	// A device-initiated exit (reset) beats the "stopped" it caused; a real
	// vCPU exit beats a plain stop.
	if first.reason == ExitStopped {
		select {
		case e := <-m.guestExit:
			first = e
		default:
		}
		for e := range exits {
			if e.reason != ExitStopped {
				first = e
				break
			}
		}
	}
	if first.reason == ExitTimeout || first.reason == ExitCanceled {
		// Where the guest was is the first thing one asks about a hang.
		var where []string
		for _, v := range m.vcpus {
			if r, err := v.regs(); err == nil {
				where = append(where, fmt.Sprintf("vcpu %d at RIP %#x", v.id, r.RIP))
			}
		}
		first.detail = strings.Join(where, ", ")
	}
	if (first.reason == ExitReset || first.reason == ExitPoweroff) && m.panicWatch.panicked() {
		first = vcpuExit{reason: ExitCrash, detail: "guest kernel panic: " + m.panicWatch.line()}
	}
	m.timeline.Mark(PhaseExit)
	return Result{
		Reason:       first.reason,
		Detail:       first.detail,
		Err:          first.err,
		GuestStatus:  int(m.guestStatus.Load()),
		Timeline:     m.timeline.Marks(),
		Start:        m.cfg.Start,
		GuestTouched: m.mem.TouchedBytes(),
	}
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
// kernel, not running Go code, so the extra Ps cost nothing.
func ensureProcs(n int) {
	procsMu.Lock()
	defer procsMu.Unlock()
	if runtime.GOMAXPROCS(0) < n {
		runtime.GOMAXPROCS(n)
	}
}

var procsMu sync.Mutex

// SendInput feeds host bytes to the guest's serial port, waiting while the
// receive FIFO is full, until ctx ends.
//
// A panic in the device that takes the input ends the machine with an
// internal error, and is returned.
func (m *Machine) SendInput(ctx context.Context, b []byte) error {
	return guard.Call("console input", m.fatal, func() error { return m.sendInput(ctx, b) })
}

func (m *Machine) sendInput(ctx context.Context, b []byte) error {
	if c := m.plan.console; c != nil {
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

// Timeline returns the boot timeline recorded so far.
func (m *Machine) Timeline() *Timeline { return m.timeline }

// Memory returns guest memory (e.g. to report how much the guest touched).
func (m *Machine) Memory() *Memory { return m.mem }

// Close releases the VM. Call it after Run returns.
func (m *Machine) Close() {
	if m.out != nil {
		m.out.release() // a device goroutine may wait on a stalled stdout
	}
	// Device goroutines use guest memory: stop them before it is unmapped.
	for _, t := range m.transports {
		t.Close()
	}
	m.transports = nil
	if m.out != nil {
		if n := m.out.close(m.cfg.DrainBy); n > 0 {
			m.logf("%d bytes of console output dropped: the console's reader did not take them", n)
		}
		m.out = nil
	}
	m.reportDropped()
	if m.log != nil {
		m.log.close()
	}
	for _, f := range m.files {
		f.Close()
	}
	m.files = nil
	if m.plan != nil {
		m.plan.close()
		m.plan = nil
	}
	for _, v := range m.vcpus {
		v.close()
	}
	m.vcpus = nil
	if m.vm != nil {
		m.vm.Close()
		m.vm = nil
	}
	if m.mem != nil {
		m.mem.Close()
		m.mem = nil
	}
	if m.kvm != nil {
		m.kvm.Close()
		m.kvm = nil
	}
}

// reportDropped says, once, what the guest asked for beyond the bounds on
// what the host keeps for it.
func (m *Machine) reportDropped() {
	if m.plan != nil && m.plan.channels != nil {
		if n := m.plan.channels.CtrlDropped(); n > 0 {
			m.logf("virtio-console agent: %d control replies dropped: the driver gave no buffers for them", n)
		}
	}
	if m.agent != nil {
		if n := m.agent.dropped.Swap(0); n > 0 {
			m.logf("agent channel: %d repeated \"ready\" messages answered by the pending reply", n)
		}
	}
}

// panicWatcher passes console output through and notices a Linux
// "Kernel panic - not syncing" line, so that a panic followed by the reboot
// that panic=N triggers is reported as a crash, not a clean reset.
type panicWatcher struct {
	w    io.Writer
	mu   sync.Mutex
	tail []byte
	hit  []byte
}

var panicMarker = []byte("Kernel panic - not syncing")

func (p *panicWatcher) Write(b []byte) (int, error) {
	p.mu.Lock()
	switch {
	case p.hit == nil:
		p.tail = append(p.tail, b...)
		if i := bytes.Index(p.tail, panicMarker); i >= 0 {
			p.hit = append([]byte(nil), p.tail[i:]...)
			p.tail = nil
		} else if len(p.tail) > 256 {
			p.tail = append(p.tail[:0], p.tail[len(p.tail)-len(panicMarker)+1:]...)
		}
	case len(p.hit) < 200 && bytes.IndexByte(p.hit, '\n') < 0:
		p.hit = append(p.hit, b...)
	}
	p.mu.Unlock()
	return p.w.Write(b)
}

func (p *panicWatcher) panicked() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.hit != nil
}

func (p *panicWatcher) line() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	l, _, _ := bytes.Cut(p.hit, []byte("\n"))
	return string(bytes.TrimSpace(l))
}
