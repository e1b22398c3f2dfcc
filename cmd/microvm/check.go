package main

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/microvm-dev/microvm"
)

// runCheck prints the host verdict; exit 0 when a guest can boot, 1 when not.
func runCheck(e *env, args []string) int {
	fs := newFlags("check")
	asJSON := fs.Bool("json", false, "print the report as one JSON object")
	kernel := fs.String("kernel", "", "instead of the host, check a kernel image: its release and whether it will see microvm's devices (ACPI, virtio-mmio, cmdline devices)")
	if done, code := parseFlags(fs, "check [--kernel PATH] [--json]", args); done {
		return code
	}
	if fs.NArg() > 0 {
		return fail(microvm.CodeUsage, "check: unexpected argument %q", fs.Arg(0))
	}
	if fs.Changed("kernel") {
		return checkKernel(*kernel, *asJSON)
	}
	r := microvm.CheckHost()
	code := 0
	if !r.OK {
		code = microvm.CodeInternal
	}
	if *asJSON {
		b, _ := json.MarshalIndent(r, "", "  ")
		fmt.Println(string(b))
		return code
	}
	mark := func(ok bool) string {
		if ok {
			return "ok  "
		}
		return "FAIL"
	}
	d := r.KVM
	fmt.Printf("%s %s", mark(d.Openable), d.Path)
	switch {
	case !d.Exists:
		fmt.Print(": does not exist")
	default:
		fmt.Printf(": %s group %s (you: root=%v, in group=%v)", d.Mode, d.Group, d.Root, d.InGroup)
		if d.Openable {
			fmt.Print(", opens read-write")
		} else {
			fmt.Printf(", %s", d.Error)
		}
	}
	fmt.Println()
	if d.Fix != "" && !d.Openable {
		fmt.Printf("     fix: %s\n", d.Fix)
	}
	if d.Openable {
		fmt.Printf("%s KVM API version %d\n", mark(r.APIVersion == 12), r.APIVersion)
		for _, c := range r.Caps {
			fmt.Printf("%s %s = %d\n", mark(c.OK), c.Name, c.Value)
		}
	}
	h := r.Hardware
	hw := "no vmx/svm CPU flag"
	if h.CPUFlag != "" {
		hw = "CPU flag " + h.CPUFlag
	}
	if h.Module != "" {
		hw += ", module " + h.Module
		if h.Nested != "" {
			hw += " (nested=" + h.Nested + ")"
		}
	}
	if h.InsideVM {
		hw += ", running inside a VM"
	}
	fmt.Printf("%s hardware virtualization: %s\n", mark(h.HardwareBacked), hw)
	if h.Paravirtual != "" {
		fmt.Printf("note paravirtual KVM: %s\n", h.ParavirtNote)
	}
	l := r.Limits
	fmt.Printf("info host: %d CPUs, %.1f GiB RAM, %.1f GiB available\n", l.HostCPUs, gib(l.MemTotal), gib(l.MemAvailable))
	fmt.Printf("info guests: 1 to %d vCPUs", l.GuestMaxVCPUs)
	if l.MaxVCPUs > 0 {
		fmt.Printf(" (KVM recommends at most %d, allows %d)", l.RecommendedVCPUs, l.MaxVCPUs)
	}
	fmt.Printf(", %d MiB to %d GiB RAM each (RAM is allocated as touched)\n", l.GuestMinMemory>>20, l.GuestMaxMemory>>30)
	fmt.Println()
	fmt.Println(r.Verdict)
	for _, p := range r.Problems {
		fmt.Println("  - " + strings.TrimSpace(p))
	}
	return code
}

func gib(b uint64) float64 { return float64(b) / (1 << 30) }

// checkKernel prints what a kernel image says about itself; exit 0, or 2
// for an image that is not one.
func checkKernel(path string, asJSON bool) int {
	if path == "" {
		return fail(microvm.CodeUsage, "--kernel: no path given")
	}
	r, err := microvm.CheckKernel(path)
	if err != nil {
		return failErr(err)
	}
	if asJSON {
		b, _ := json.MarshalIndent(r, "", "  ")
		fmt.Println(string(b))
		return 0
	}
	fmt.Print(r)
	return 0
}
