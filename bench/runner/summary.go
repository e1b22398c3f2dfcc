package main

// The summary: each measurement against the targets.

import (
	"fmt"
	"sort"

	"github.com/microvm-dev/microvm"
	"github.com/microvm-dev/microvm/internal/report"
)

// summary holds what the stages measured (nil or empty: not run).
type summary struct {
	firstRun []float64
	pio      *pioResult
	sbInit   *onOff // exec to init, ms
	bench    *benchResult
	cmp      *compareResult
	snap     *snapResult
}

func median(v []float64) (float64, bool) {
	if len(v) == 0 {
		return 0, false
	}
	v = append([]float64(nil), v...)
	sort.Float64s(v)
	if len(v)%2 == 1 {
		return v[len(v)/2], true
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2, true
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "MISSED"
}

func (r *summary) print(o *options) {
	fmt.Printf("\n== summary\n")
	if p := r.pio; p != nil {
		mv, ok1 := median(p.microvm.on)
		c, ok2 := median(p.cloop)
		fmt.Printf("exit path (%d PIO exits, median of %d): microvm %s µs/exit, C loop %s µs/exit",
			o.pioCount, o.pioReps, fmtOpt(mv, ok1, "%.2f"), fmtOpt(c, ok2, "%.2f"))
		if ok1 && ok2 {
			fmt.Printf(", ratio %.2fx (target <= 1.3x: %s)", mv/c, verdict(mv/c <= 1.3))
		}
		fmt.Println()
		if off, ok := median(p.microvm.off); ok && ok1 {
			fmt.Printf("sandbox cost per exit (median of %d): seccomp kill %.2f µs/exit, --seccomp off %.2f µs/exit, ratio %.3fx (target <= 1.05x: %s)\n",
				o.pioReps, mv, off, mv/off, verdict(mv/off <= 1.05))
		}
	}
	if si := r.sbInit; si != nil {
		on, ok1 := median(si.on)
		off, ok2 := median(si.off)
		fmt.Printf("sandbox cost at boot, exec to init (median of %d): seccomp kill %s ms, --seccomp off %s ms", o.benchRuns,
			fmtOpt(on, ok1, "%.0f"), fmtOpt(off, ok2, "%.0f"))
		if ok1 && ok2 {
			fmt.Printf(", ratio %.3fx", on/off)
		}
		fmt.Println()
	}
	if fr, ok := median(r.firstRun); ok {
		fmt.Printf("exec to first guest instruction (first KVM_RUN), micro-guest without initrd, median of %d: %.1f ms (target <= 5 ms: %s)\n",
			len(r.firstRun), fr, verdict(fr <= 5))
	}
	if b := r.bench; b != nil {
		if b.err != "" {
			fmt.Printf("microvm bench: failed: %s\n", b.err)
		} else {
			if fr, ok := b.Phase(microvm.PhaseFirstRun); ok {
				fmt.Printf("exec to first guest instruction (first KVM_RUN), Linux + %s initrd, median of %d: %.1f ms (min %.1f, max %.1f; target <= 5 ms: %s)\n",
					"u-root", b.Runs, fr.Median, fr.Min, fr.Max, verdict(fr.Median <= 5))
			}
			if in, ok := b.Phase(microvm.PhaseInit); ok {
				fmt.Printf("exec to init (debug-port milestone), median of %d: %.0f ms (min %.0f, max %.0f)\n", b.Runs, in.Median, in.Min, in.Max)
			}
			ov := b.Overhead
			fmt.Printf("VMM overhead (peak RSS - guest RAM touched), median of %d: %.2f MiB (peak RSS %.2f MiB, guest touched %.2f MiB; target <= 5 MiB: %s)\n",
				b.Runs, ov.Median, b.PeakRSS.Median, b.GuestTouched.Median, verdict(ov.Median <= 5))
		}
	}
	if sn := r.snap; sn != nil {
		sn.print()
	}
	if c := r.cmp; c != nil {
		r.printCompare(c)
	}
}

// print is the snapshot rows of issue 15.
func (sn *snapResult) print() {
	row := func(name string, v []float64) (float64, bool) {
		m, ok := median(v)
		if ok {
			lo, hi := v[0], v[0]
			for _, x := range v {
				lo, hi = min(lo, x), max(hi, x)
			}
			fmt.Printf("  %-40s median %.2f s (min %.2f, max %.2f; %d runs)\n", name, m, lo, hi, len(v))
		} else {
			fmt.Printf("  %-40s not measured\n", name)
		}
		return m, ok
	}
	fmt.Printf("snapshot restore, exec to exit:\n")
	c, okC := row("microvm run -- true, cold", sn.cold)
	m, okM := row("microvm run --snapshot DIR -- true", sn.restored)
	q, okQ := row("qemu -incoming, same guest and point", sn.qemu)
	if okC && okM {
		fmt.Printf("  restored vs cold: %.3f (target <= 0.1: %s)\n", m/c, verdict(m/c <= 0.1))
		if g, ok := median(sn.guestMS); ok {
			fmt.Printf("  of a restore, the guest's share (microvm's first KVM_RUN to its exit), median of %d: %.0f ms; restored vs cold with no VMM time at all: %.3f\n",
				len(sn.guestMS), g, g/1000/c)
		}
	}
	if okQ && okM {
		fmt.Printf("  microvm restore vs QEMU's: %.2fx (target <= 0.5x: %s)\n", m/q, verdict(m/q <= 0.5))
	} else if sn.qemuErr != "" {
		fmt.Printf("  QEMU's restore: not measured: %s\n", sn.qemuErr)
	}
	fmt.Printf("  snapshot on disk: microvm memory file %.0f MiB apparent, %.1f MiB allocated, state %.0f KiB (saved in %.2f s); QEMU migration stream %.1f MiB (saved in %.2f s)\n",
		float64(sn.memApparent)/(1<<20), float64(sn.memUsed)/(1<<20), float64(sn.stateBytes)/1024, sn.microvmSave.Seconds(),
		float64(sn.qemuStream)/(1<<20), sn.qemuSave.Seconds())
}

func fmtOpt(v float64, ok bool, f string) string {
	if !ok {
		return "n/a"
	}
	return fmt.Sprintf(f, v)
}

type agg struct {
	init, exit, rss []float64
	runs, exits     int
	notes           []string
}

func (r *summary) printCompare(c *compareResult) {
	aggs := map[string]*agg{}
	for _, s := range c.specs {
		aggs[s.name] = &agg{}
	}
	for _, t := range c.trials {
		a := aggs[t.vmm]
		a.runs++
		if t.reached {
			a.init = append(a.init, t.init.Seconds())
		}
		if t.exited && t.code == 0 {
			a.exits++
			a.exit = append(a.exit, t.exit.Seconds())
		}
		if t.rss > 0 {
			a.rss = append(a.rss, mib(t.rss))
		}
		if t.note != "" {
			a.notes = append(a.notes, fmt.Sprintf("round %d: %s", t.round, t.note))
		}
	}
	fmt.Printf("comparison (medians; init = exec to the guest agent's first console line):\n")
	fmt.Printf("  %-8s %-24s %-26s %s\n", "VMM", "exec to init", "exec to exit", "peak RSS")
	for _, s := range c.specs {
		a := aggs[s.name]
		in, okIn := median(a.init)
		ex, okEx := median(a.exit)
		rs, okRs := median(a.rss)
		fmt.Printf("  %-8s %-24s %-26s %s\n", s.name,
			fmt.Sprintf("%s (%d/%d runs)", fmtOpt(in, okIn, "%.2f s"), len(a.init), a.runs),
			fmt.Sprintf("%s (%d/%d runs)", fmtOpt(ex, okEx, "%.2f s"), a.exits, a.runs),
			fmtOpt(rs, okRs, "%.1f MiB"))
	}
	mv := aggs["microvm"]
	mIn, okIn := median(mv.init)
	mEx, okEx := median(mv.exit)
	mRs, okRs := median(mv.rss)
	for _, s := range c.specs[1:] {
		a := aggs[s.name]
		fmt.Printf("microvm vs %s:", s.name)
		if pIn, ok := median(a.init); ok && okIn {
			fmt.Printf(" boot to init %.2fx (target <= 0.5x: %s);", mIn/pIn, verdict(mIn/pIn <= 0.5))
		} else {
			fmt.Printf(" boot to init: no ratio (%s did not reach init);", s.name)
		}
		if pEx, ok := median(a.exit); ok && okEx {
			fmt.Printf(" exec to exit %.2fx;", mEx/pEx)
		} else {
			fmt.Printf(" exec to exit: no ratio (%s never exited cleanly);", s.name)
		}
		if pRs, ok := median(a.rss); ok && okRs {
			fmt.Printf(" peak RSS %.2fx", mRs/pRs)
		}
		fmt.Println()
	}
	for _, s := range c.specs {
		for _, n := range aggs[s.name].notes {
			fmt.Printf("  note %s %s\n", s.name, n)
		}
	}
	fmt.Printf("  (peak RSS is the kernel's maxrss for each VMM process; this runner's own peak, %.1f MiB, is a floor for it because exec inherits the parent's high-water mark)\n", mib(report.PeakRSS()))
}
