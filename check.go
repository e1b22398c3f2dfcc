package microvm

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/user"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"github.com/microvm-dev/microvm/internal/sandbox"
	"github.com/microvm-dev/microvm/internal/vmm"
	"github.com/microvm-dev/microvm/internal/vmm/layout"
	"golang.org/x/sys/unix"
)

// CheckReport is the verdict on whether this host can boot a guest, with
// everything that went into it. OK is the verdict; Problems says why not,
// each with its fix.
type CheckReport struct {
	OK       bool     `json:"ok"`
	Verdict  string   `json:"verdict"`
	Problems []string `json:"problems,omitempty"`

	KVM        KVMDevice    `json:"kvm_device"`
	APIVersion int          `json:"api_version,omitempty"`
	Caps       []CapCheck   `json:"capabilities,omitempty"`
	Hardware   HardwareInfo `json:"hardware"`
	Limits     HostLimits   `json:"limits"`
	// Sandbox is what of the sandbox (docs/security.md) this host offers
	// this caller: seccomp, user namespaces, the jail.
	Sandbox SandboxSupport `json:"sandbox"`
}

// KVMDevice is what /dev/kvm looks like to the calling user.
type KVMDevice struct {
	Path     string `json:"path"`
	Exists   bool   `json:"exists"`
	Mode     string `json:"mode,omitempty"`  // e.g. crw-rw----
	Group    string `json:"group,omitempty"` // owning group
	InGroup  bool   `json:"user_in_group"`   // the caller is in that group
	Root     bool   `json:"root"`
	Openable bool   `json:"openable"`
	Error    string `json:"error,omitempty"`
	Fix      string `json:"fix,omitempty"`
}

// CapCheck is one KVM capability microvm needs.
type CapCheck struct {
	Name  string `json:"name"`
	Value int    `json:"value"`
	OK    bool   `json:"ok"`
}

// HardwareInfo says whether KVM is backed by hardware virtualization.
type HardwareInfo struct {
	CPUFlag        string `json:"cpu_flag,omitempty"` // vmx or svm
	InsideVM       bool   `json:"inside_vm"`          // cpuinfo has "hypervisor"
	Module         string `json:"module,omitempty"`   // kvm_intel or kvm_amd
	Nested         string `json:"nested,omitempty"`   // that module's nested parameter
	Paravirtual    string `json:"paravirtual,omitempty"`
	ParavirtNote   string `json:"paravirtual_note,omitempty"`
	HardwareBacked bool   `json:"hardware_backed"`
}

// HostLimits are the host's memory and vCPU limits for guests.
type HostLimits struct {
	HostCPUs         int    `json:"host_cpus"`
	MemTotal         uint64 `json:"mem_total_bytes"`
	MemAvailable     uint64 `json:"mem_available_bytes"`
	RecommendedVCPUs int    `json:"kvm_recommended_vcpus,omitempty"`
	MaxVCPUs         int    `json:"kvm_max_vcpus,omitempty"`
	GuestMaxVCPUs    int    `json:"guest_max_vcpus"`
	GuestMinMemory   uint64 `json:"guest_min_memory_bytes"`
	GuestMaxMemory   uint64 `json:"guest_max_memory_bytes"`
}

// Fix hints for /dev/kvm, shared with the README.
const (
	FixKVMGroup = `add the user to /dev/kvm's group: sudo groupadd -f kvm && sudo usermod -aG kvm $USER, then log in again; ` +
		`make the group stick with the udev rule KERNEL=="kvm", GROUP="kvm", MODE="0660" in /etc/udev/rules.d/99-kvm.rules ` +
		`(sudo udevadm control --reload-rules && sudo udevadm trigger --name-match=kvm); or run as root`
	FixKVMMissing = `load KVM (sudo modprobe kvm_intel or kvm_amd) with VT-x/AMD-V enabled in the firmware; ` +
		`inside a cloud VM, enable nested virtualization for it; where that is impossible, run under the nested harness (make test)`
	PVMNote = `a paravirtual nested KVM: stock Linux guest kernels fail under it (its instruction emulator lacks what ` +
		`Linux uses), so guests here must run inside the nested harness (an L1 under QEMU TCG, as make test does)`
)

// CheckHost inspects this host: /dev/kvm, the KVM API and capabilities,
// hardware backing, paravirtual KVM and limits. It never boots a guest.
func CheckHost() CheckReport {
	var r CheckReport
	cpuinfo, _ := os.ReadFile("/proc/cpuinfo")
	r.Hardware = hardwareInfo(cpuinfo)
	r.Limits = hostLimits()
	r.KVM = kvmDevice("/dev/kvm")
	r.Sandbox = sandbox.Probe()
	if !r.Sandbox.Seccomp {
		// The default Seccomp would refuse to start any guest.
		r.problem("%s", r.Sandbox.SeccompNote)
	}

	if k, err := vmm.OpenKVM(); err != nil {
		if r.KVM.Error == "" {
			r.KVM.Error = err.Error()
		}
		r.problem("/dev/kvm cannot be used: %s; fix: %s", r.KVM.Error, r.KVM.Fix)
	} else {
		r.KVM.Openable = true
		r.APIVersion, _ = k.APIVersion()
		for _, c := range vmm.RequiredCaps {
			v := k.CheckExtension(c.Cap)
			r.Caps = append(r.Caps, CapCheck{Name: c.Name, Value: v, OK: v > 0})
			if v <= 0 {
				r.problem("KVM lacks %s, which microvm needs: use a newer host kernel", c.Name)
			}
		}
		r.Limits.RecommendedVCPUs = k.RecommendedVCPUs()
		r.Limits.MaxVCPUs = k.MaxVCPUs()
		r.Limits.GuestMaxVCPUs = min(r.Limits.GuestMaxVCPUs, r.Limits.MaxVCPUs)
		if err := k.ProbeVM(); err != nil {
			r.problem("creating a VM failed: %v", err)
		}
		k.Close()
	}
	switch {
	case r.Hardware.Paravirtual != "" && r.KVM.Openable:
		r.problem("/dev/kvm is %s", r.Hardware.ParavirtNote)
	case r.KVM.Openable && !r.Hardware.HardwareBacked:
		r.problem("/dev/kvm works but no vmx/svm CPU flag and no kvm_intel/kvm_amd module back it: Linux guests will not boot")
	case !r.KVM.Exists && r.Hardware.Paravirtual != "":
		r.problem("this host has %s", r.Hardware.ParavirtNote)
	}
	r.OK = len(r.Problems) == 0
	if r.OK {
		r.Verdict = "yes: this host can boot microvm guests"
	} else {
		r.Verdict = "no: this host cannot boot microvm guests"
	}
	return r
}

func (r *CheckReport) problem(format string, a ...any) {
	r.Problems = append(r.Problems, fmt.Sprintf(format, a...))
}

func kvmDevice(path string) KVMDevice {
	d := KVMDevice{Path: path, Root: os.Geteuid() == 0}
	st, err := os.Stat(path)
	if err != nil {
		d.Error = "does not exist"
		d.Fix = FixKVMMissing
		return d
	}
	d.Exists = true
	d.Mode = st.Mode().String()
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		gid := int(sys.Gid)
		d.Group = strconv.Itoa(gid)
		if g, err := user.LookupGroupId(d.Group); err == nil {
			d.Group = g.Name
		}
		groups, _ := unix.Getgroups()
		d.InGroup = os.Getegid() == gid
		for _, g := range groups {
			d.InGroup = d.InGroup || g == gid
		}
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	switch {
	case err == nil:
		f.Close()
	case errors.Is(err, os.ErrPermission):
		d.Error = "permission denied"
		if d.InGroup {
			d.Error += " (you are in its group " + d.Group + ", which lacks rw in " + d.Mode + ")"
		}
		d.Fix = FixKVMGroup
	default:
		d.Error = err.Error()
		d.Fix = FixKVMMissing
	}
	return d
}

func hardwareInfo(cpuinfo []byte) HardwareInfo {
	var h HardwareInfo
	for _, l := range bytes.Split(cpuinfo, []byte("\n")) {
		name, val, ok := bytes.Cut(l, []byte(":"))
		if !ok || string(bytes.TrimSpace(name)) != "flags" {
			continue
		}
		for _, f := range strings.Fields(string(val)) {
			switch f {
			case "vmx", "svm":
				h.CPUFlag = f
			case "hypervisor":
				h.InsideVM = true
			}
		}
		break
	}
	for _, m := range []string{"kvm_intel", "kvm_amd"} {
		if _, err := os.Stat("/sys/module/" + m); err == nil {
			h.Module = m
			if b, err := os.ReadFile("/sys/module/" + m + "/parameters/nested"); err == nil {
				h.Nested = strings.TrimSpace(string(b))
			}
			// kvm_intel is also built into kernels on AMD machines; the
			// one whose flag the CPU has is the one in use.
			if (m == "kvm_intel") == (h.CPUFlag == "vmx") {
				break
			}
		}
	}
	if _, err := os.Stat("/sys/module/kvm_pvm"); err == nil {
		h.Paravirtual = "kvm_pvm"
		h.ParavirtNote = "kvm_pvm, " + PVMNote
		if line := kernelLogLine("kvm-pvm", "not binding"); line != "" {
			h.ParavirtNote = "kvm_pvm (which did not bind: " + line + "), " + PVMNote
		}
	}
	h.HardwareBacked = h.CPUFlag != "" && h.Module != "" && h.Paravirtual == ""
	return h
}

// kernelLogLine returns the first kernel log line holding all of words, or
// "" (also when the log is not readable, e.g. dmesg_restrict).
func kernelLogLine(words ...string) string {
	n, err := unix.Klogctl(unix.SYSLOG_ACTION_SIZE_BUFFER, nil)
	if err != nil || n <= 0 {
		return ""
	}
	buf := make([]byte, n)
	n, err = unix.Klogctl(unix.SYSLOG_ACTION_READ_ALL, buf)
	if err != nil {
		return ""
	}
	for _, l := range strings.Split(string(buf[:n]), "\n") {
		all := true
		for _, w := range words {
			all = all && strings.Contains(l, w)
		}
		if all {
			if i := strings.Index(l, "] "); i >= 0 {
				l = l[i+2:]
			}
			return strings.TrimSpace(l)
		}
	}
	return ""
}

func hostLimits() HostLimits {
	l := HostLimits{
		HostCPUs:       runtime.NumCPU(),
		GuestMaxVCPUs:  254,
		GuestMinMemory: layout.MinMemory,
		GuestMaxMemory: layout.MaxMemory,
	}
	l.MemTotal, l.MemAvailable = meminfo()
	return l
}

// meminfo returns MemTotal and MemAvailable in bytes.
func meminfo() (total, avail uint64) {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		v, _ := strconv.ParseUint(f[1], 10, 64)
		switch f[0] {
		case "MemTotal:":
			total = v << 10
		case "MemAvailable:":
			avail = v << 10
		}
	}
	return total, avail
}

// MemAvailable is the host's available memory in bytes (/proc/meminfo).
func MemAvailable() uint64 {
	_, a := meminfo()
	return a
}
