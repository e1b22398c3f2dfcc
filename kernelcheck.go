package microvm

import (
	"fmt"
	"strings"

	"github.com/microvm-dev/microvm/internal/kimage"
	"github.com/microvm-dev/microvm/internal/vmm"
)

// KernelReport says whether a kernel image will see microvm's devices,
// from what the image says about itself (CheckKernel).
type KernelReport struct {
	Path        string `json:"path"`
	Format      string `json:"format"` // bzImage or ELF
	Release     string `json:"release"`
	Version     string `json:"version,omitempty"`
	Compression string `json:"compression,omitempty"`
	// ConfigFrom is where the build config was read ("IKCONFIG" or a
	// file beside the image), or why none was.
	ConfigFrom string `json:"config_from"`
	// ACPI, VirtioMMIO and CmdlineDevices are the values of CONFIG_ACPI,
	// CONFIG_VIRTIO_MMIO and CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES: y, m,
	// n, or "" when no config could be read.
	ACPI           string `json:"acpi"`
	VirtioMMIO     string `json:"virtio_mmio"`
	CmdlineDevices string `json:"cmdline_devices"`
	// ProjectKernel: the release ends in -microvm, the project's own
	// kernel (kernel/microvm.config).
	ProjectKernel bool `json:"project_kernel"`
	// Verdict says how the guest will find its virtio devices, and with
	// which --acpi setting.
	Verdict string `json:"verdict"`
}

// ProjectKernelSuffix ends the release of the project's own guest kernel
// (kernel/build.sh's LOCALVERSION).
const ProjectKernelSuffix = "-microvm"

// CheckKernel reads the kernel image at path. An unreadable or malformed
// image is an *InputError naming Kernel.
func CheckKernel(path string) (KernelReport, error) {
	k, err := vmm.OpenKernel(path) // the checks a boot makes
	if err != nil {
		return KernelReport{}, err // already an InputError saying what is wrong
	}
	k.Close()
	i, err := kimage.Read(path)
	if err != nil {
		return KernelReport{}, &InputError{What: "Kernel", Msg: err.Error()}
	}
	r := KernelReport{
		Path: path, Format: i.Format, Release: i.Release, Version: i.Version, Compression: i.Compression,
		ConfigFrom: i.ConfigFrom, ACPI: i.Option("CONFIG_ACPI"), VirtioMMIO: i.Option("CONFIG_VIRTIO_MMIO"),
		CmdlineDevices: i.Option("CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES"),
		ProjectKernel:  strings.HasSuffix(i.Release, ProjectKernelSuffix),
	}
	r.Verdict = r.verdict()
	return r, nil
}

func (r *KernelReport) verdict() string {
	module := ""
	if r.VirtioMMIO == "m" {
		module = "; virtio_mmio and the device drivers are modules, which the initrd must load"
	}
	switch {
	case r.VirtioMMIO == "":
		return "no build config found: try --acpi on (the default); a kernel without ACPI needs --acpi off"
	case r.VirtioMMIO == "n":
		return "no virtio-mmio driver (CONFIG_VIRTIO_MMIO): the guest sees the serial console but no virtio device"
	case r.ACPI == "y":
		return "finds the virtio devices through ACPI: --acpi on (the default)" + module
	case r.CmdlineDevices == "y":
		return "no ACPI: boot it with --acpi off, which announces the devices on the command line" + module
	}
	return "neither ACPI nor CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES: the guest sees no virtio device"
}

// NoACPIFor reports whether kernel is known to need NoACPI: the project's
// own kernel (release suffix -microvm), built without CONFIG_ACPI
// (kernel/microvm.config; its ACPI build does not load the tables, see the
// README), unless a config found beside it says it has ACPI. Any other
// image, or one that cannot be read, gets the default.
func NoACPIFor(kernel string) bool {
	release, err := kimage.Release(kernel)
	if err != nil || !strings.HasSuffix(release, ProjectKernelSuffix) {
		return false
	}
	return kimage.ConfigBeside(kernel, release)["CONFIG_ACPI"] != "y"
}

// String is the report in lines, as `microvm check --kernel` prints it.
func (r KernelReport) String() string {
	show := func(v string) string {
		switch v {
		case "":
			return "unknown"
		case "y":
			return "yes (built in)"
		case "m":
			return "yes (module)"
		case "n":
			return "no"
		}
		return v
	}
	var b strings.Builder
	fmt.Fprintf(&b, "kernel   %s (%s", r.Path, r.Format)
	if r.Compression != "" {
		fmt.Fprintf(&b, ", %s", r.Compression)
	}
	fmt.Fprintf(&b, ")\nrelease  %s\n", r.Release)
	fmt.Fprintf(&b, "config   %s\n", r.ConfigFrom)
	fmt.Fprintf(&b, "ACPI                         %s\n", show(r.ACPI))
	fmt.Fprintf(&b, "virtio-mmio driver           %s\n", show(r.VirtioMMIO))
	fmt.Fprintf(&b, "virtio-mmio cmdline devices  %s\n", show(r.CmdlineDevices))
	fmt.Fprintf(&b, "\n%s\n", r.Verdict)
	return b.String()
}
