package vmm

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/microvm-dev/microvm/devices"
	"github.com/microvm-dev/microvm/internal/kimage"
	"github.com/microvm-dev/microvm/internal/vmm/boot"
	"github.com/microvm-dev/microvm/internal/vmm/layout"
)

// Build assembles a machine from cfg, step by step, ready to Run: every
// input is checked before KVM is touched, each step's error says which step
// failed, and a failed build undoes the steps before it (the teardown
// stack, the same one Close runs), so a caller never holds half a machine.
func Build(cfg Config) (m *Machine, err error) {
	if cfg.Started.IsZero() {
		cfg.Started = time.Now()
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	b := &builder{m: newMachine(cfg)}
	defer func() {
		b.closeInputs()
		if err != nil {
			b.m.Close() // the teardown stack, as far as the build got
			m = nil
		}
	}()
	steps := []step{
		{"open kernel", b.openKernel},
		{"open devices", b.openDevices},
		{"command line", b.cmdline},
		{"open initrd", b.openInitrd},
		{"open KVM", b.openKVM},
		{"create VM", b.createVM},
		{"guest memory", b.memory},
		{"load kernel", b.loadKernel},
		{"load initrd", b.loadInitrd},
		{"boot tables", b.bootTables},
		{"legacy devices", b.legacyDevices},
		{"ACPI tables", b.acpiTables},
		{"virtio devices", b.attachVirtio},
		{"vCPUs", b.vcpus},
		{"snapshot target", b.prepareSnapshot},
	}
	last := PhaseKernel
	if cfg.Restore != "" {
		steps, last = b.restoreSteps(), PhaseSnapshotLoaded
	}
	b.m.timeline.Mark(PhaseBuildStart)
	for _, s := range steps {
		err := s.do()
		b.m.timeline.Mark(StepPhase(s.name))
		if err != nil {
			if IsInputError(err) || IsNoKVM(err) {
				return nil, err // already says what is wrong with what
			}
			return nil, fmt.Errorf("%s: %w", s.name, err)
		}
	}
	b.m.timeline.Mark(last)
	return b.m, nil
}

// step is one named step of Build; its name prefixes its errors.
type step struct {
	name string
	do   func() error
}

// builder holds what the steps share; the finished parts live in m.
type builder struct {
	m          *Machine
	kernel     *Kernel
	initrd     *os.File
	initrdSize uint64
	initrdAddr uint64
	cmdlineStr string
	bp         *boot.BootParams // from loadKernel, written by bootTables
	snap       *restoreInput    // with Config.Restore
}

// push adds a step to the machine's teardown stack, which Close runs newest
// first, for a built machine or for as much of one as a failed build made.
func (b *builder) push(f func()) { b.m.teardown = append(b.m.teardown, f) }

// closeInputs releases the kernel and initrd files: once loaded, the guest
// has its own copy.
func (b *builder) closeInputs() {
	if b.kernel != nil {
		b.kernel.Close()
		b.kernel = nil
	}
	if b.initrd != nil {
		b.initrd.Close()
		b.initrd = nil
	}
}

func (b *builder) openKernel() (err error) {
	b.kernel, err = OpenKernel(b.m.cfg.Kernel)
	// A snapshot names the kernel it was taken of; one read from a pipe
	// has no name to give (statID fails, and so would the snapshot).
	b.m.inputs.kernel, _ = statID(b.m.cfg.Kernel)
	return err
}

func (b *builder) openDevices() error {
	m := b.m
	b.push(m.devices.close)
	var err error
	m.consoles, m.diskFiles, err = addVirtio(&m.cfg, m.devices, &m.needs)
	for _, d := range m.cfg.Disks {
		abs, aerr := filepath.Abs(d.Path)
		if aerr != nil {
			abs = d.Path
		}
		m.inputs.diskPaths = append(m.inputs.diskPaths, abs)
	}
	return err
}

// cmdline is the config's command line plus, without ACPI, the devices'
// part (with ACPI the DSDT announces them), which must fit what the kernel
// accepts.
func (b *builder) cmdline() error {
	cfg := &b.m.cfg
	s := b.fullCmdline()
	if max := b.kernel.CmdlineMax; len(s) > max {
		if len(cfg.Cmdline) <= max {
			return inputErr("Cmdline", "with the devices' parameters it is %d bytes; this kernel accepts at most %d", len(s), max)
		}
		return inputErr("Cmdline", "is %d bytes; this kernel accepts at most %d", len(cfg.Cmdline), max)
	}
	b.cmdlineStr, b.m.cmdline = s, s
	if err := b.kernel.CheckFits(cfg.Memory); err != nil {
		return inputErr("Memory", "%v", err)
	}
	return nil
}

// fullCmdline is the command line the guest gets: the config's, plus the
// devices' without ACPI. A restore compares it with the snapshot's.
func (b *builder) fullCmdline() string {
	s := b.m.cfg.Cmdline
	if !b.m.cfg.ACPI {
		s += b.m.devices.Cmdline()
	}
	return strings.TrimSpace(s)
}

func (b *builder) openInitrd() error {
	cfg := &b.m.cfg
	if cfg.Initrd == "" {
		return nil
	}
	f, size, err := openInput("Initrd", cfg.Initrd)
	if err != nil {
		return err
	}
	b.initrd, b.initrdSize = f, uint64(size)
	b.m.inputs.initrd, _ = statID(cfg.Initrd)
	// Placed, and one larger than RAM refused, before it is read.
	if b.initrdAddr, err = b.kernel.InitrdAddr(cfg.Memory, b.initrdSize); err != nil {
		return inputErr("Initrd", "%s: %v", cfg.Initrd, err)
	}
	if _, err := kimage.InitrdFormat(f, size); err != nil {
		return inputErr("Initrd", "%s: %v", cfg.Initrd, err)
	}
	return nil
}

func (b *builder) openKVM() error {
	m := b.m
	k, err := OpenKVM()
	if err != nil {
		return err
	}
	m.kvm = k
	b.push(func() { k.Close() })
	if max := k.MaxVCPUs(); m.cfg.CPUs > max {
		return inputErr("CPUs", "%d exceeds this host's KVM limit of %d", m.cfg.CPUs, max)
	}
	return nil
}

func (b *builder) createVM() error {
	v, err := createVM(b.m.kvm)
	if err != nil {
		return err
	}
	b.m.vm = v
	b.push(v.close)
	return nil
}

func (b *builder) memory() error {
	mem, err := NewMemory(b.m.cfg.Memory)
	if err != nil {
		return err
	}
	return b.useMemory(mem)
}

// useMemory makes mem the machine's RAM (Close unmaps it) and maps it
// into the VM.
func (b *builder) useMemory(mem *Memory) error {
	m := b.m
	m.mem = mem
	b.push(func() { mem.Close() })
	if err := m.vm.mapMemory(mem); err != nil {
		return err
	}
	m.timeline.Mark(PhaseVMReady)
	return nil
}

// load places the kernel, initrd, command line, zero page and the boot-time
// tables in guest memory. The kernel and initrd are read straight into guest
// memory, never into the heap: they would count as VMM overhead.
// loadKernel copies the kernel's segments into guest memory. It and
// loadInitrd are separate steps so that the timeline shows which copy the
// time before the first KVM_RUN goes to (issue 17).
func (b *builder) loadKernel() error {
	if err := b.kernel.Load(b.m.mem); err != nil {
		return err
	}
	b.bp = b.kernel.BootParams()
	return nil
}

// loadInitrd copies the initrd to its place at the top of low RAM.
func (b *builder) loadInitrd() error {
	mem, bp := b.m.mem, b.bp
	if b.initrd != nil {
		// Copied, not mapped from the file: mapped, the first KVM_RUN
		// came 2-3x sooner nested but init 0.6-1.9 s later, since the
		// guest's later writes to the freed initramfs pages each cost a
		// copy-on-write fault and a nested exit (README, "Where a cold
		// boot goes").
		dst, err := mem.Slice(b.initrdAddr, b.initrdSize)
		if err == nil {
			_, err = b.initrd.ReadAt(dst, 0)
		}
		if err != nil {
			return fmt.Errorf("initrd %s: %w", b.m.cfg.Initrd, err)
		}
		bp.SetRamdisk(b.initrdAddr, b.initrdSize)
	}
	return nil
}

// bootTables writes what the kernel reads at entry: its command line,
// boot_params with the e820 map, the GDT, the identity-mapping page tables
// and the MP table.
func (b *builder) bootTables() error {
	mem, bp := b.m.mem, b.bp
	if err := mem.Write(layout.CmdlineAddr, append([]byte(b.cmdlineStr), 0)); err != nil {
		return fmt.Errorf("write cmdline: %w", err)
	}
	bp.SetCmdline(layout.CmdlineAddr)
	bp.SetE820(boot.E820(mem.Ranges(), b.m.cfg.ACPI))
	if b.m.cfg.ACPI {
		bp.SetACPIRSDP(layout.ACPITablesAddr) // written by acpiTables
	}
	if err := mem.Write(layout.ZeroPageAddr, bp[:]); err != nil {
		return fmt.Errorf("write boot_params: %w", err)
	}
	if err := boot.WriteGDT(mem); err != nil {
		return fmt.Errorf("write GDT: %w", err)
	}
	if err := boot.WritePageTables(mem, mem.Top()); err != nil {
		return err
	}
	if err := mem.Write(layout.MPTableAddr, boot.MPTable(layout.MPTableAddr, b.m.cfg.CPUs)); err != nil {
		return fmt.Errorf("write MP table: %w", err)
	}
	return nil
}

// legacyDevices puts COM1, the i8042 (for its reset line), the boot/debug
// port and, with ACPI, the ACPI power registers on the I/O bus, and the
// console writers in front of Stdout.
func (b *builder) legacyDevices() error {
	m := b.m
	out := m.cfg.Stdout
	if out == nil {
		out = io.Discard
	}
	m.out = newConsoleOut(out, m.fatal)
	m.panics = &panicWatcher{w: m.out}
	m.serial = devices.NewSerial(m.panics, irqLine{vm: m.vm, irq: layout.COM1IRQ})
	m.serial.OnFirstByte = func() { m.timeline.Mark(PhaseFirstOutput) }
	i8042 := &devices.I8042{OnReset: func() { m.guestStopped(vcpuExit{reason: ExitReset}) }}
	debug := &devices.DebugPort{OnMilestone: m.milestone}
	l := Legacy{COM1: m.serial, I8042: i8042, Debug: debug}
	if m.cfg.ACPI {
		l.ACPI = m.newACPIPM()
	}
	if err := m.devices.AddLegacy(l); err != nil {
		return err
	}
	if m.cfg.ACPI {
		g := &vmGenID{mem: m.mem, irq: irqLine{vm: m.vm, irq: layout.GEDIRQ}}
		m.devices.AddVMGenID(g)
		if b.snap == nil { // a restore makes its own in RestoreState
			if err := g.generate(); err != nil {
				return err
			}
		}
	}
	if c := m.consoles.console; c != nil {
		c.OnFirstByte = func() { m.timeline.Mark(PhaseFirstOutput) }
		c.Ports[0].Out = m.panics
	}
	if ch := m.consoles.channel; ch != nil {
		p := ch.Ports[0]
		end := ChannelEnd{Port: p, Milestone: m.milestone, Logf: m.logf, Fatal: m.fatal, Waiting: b.snap != nil && b.snap.atReady()}
		if m.cfg.SnapshotAtReady != "" {
			end.BeforeReply = m.snapshotAtReady
		}
		w := m.cfg.Channel.Open(end)
		p.Out = w
		if c, ok := w.(io.Closer); ok {
			m.devices.Own(c)
		}
	}
	return nil
}

func (b *builder) attachVirtio() error {
	return b.m.devices.attach(b.m.vm, b.m.mem, b.m.deviceLogf, b.m.fatal)
}

// createVCPUs creates the machine's vCPUs, which Close then closes.
func (b *builder) createVCPUs() error {
	m := b.m
	b.push(func() {
		for _, v := range m.vcpus {
			v.close()
		}
	})
	size, err := m.kvm.vcpuMmapSize()
	if err != nil {
		return fmt.Errorf("KVM_GET_VCPU_MMAP_SIZE: %w", err)
	}
	for i := 0; i < m.cfg.CPUs; i++ {
		v, err := m.vm.createVCPU(i, size)
		if err != nil {
			return err
		}
		m.vcpus = append(m.vcpus, v)
	}
	return nil
}

func (b *builder) vcpus() error {
	m := b.m
	if err := b.createVCPUs(); err != nil {
		return err
	}
	supported, err := m.kvm.SupportedCPUID()
	if err != nil {
		return err
	}
	tscDeadline := m.kvm.CheckExtension(capTSCDeadline) > 0
	for _, v := range m.vcpus {
		if err := v.setupCPU(supported, m.cfg.CPUs, tscDeadline); err != nil {
			return err
		}
	}
	// Only the BSP gets boot state; APs wait in the in-kernel LAPIC for the
	// guest's INIT/SIPI.
	return m.vcpus[0].setupBoot(b.kernel.Entry)
}
