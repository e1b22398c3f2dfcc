package report

// Compare is the `--json` output of `microvm compare`. The fields are in
// the order the command always printed them (it used to marshal a map).
type Compare struct {
	// Container is nil (JSON null) unless a container engine answered
	// with a local image; ContainerNote then says why not.
	Container     *ContainerSide `json:"container"`
	ContainerNote string         `json:"container_note"`
	VM            VMSide         `json:"vm"`
	// Rootfs is the directory both columns ran (compare --rootfs); ""
	// for the plain VM-only comparison.
	Rootfs string `json:"rootfs,omitempty"`
}

// VMSide is the VM column of `microvm compare`, every number measured on
// this host in this run.
type VMSide struct {
	StartToInitMS   float64 `json:"start_to_init_ms"`
	KernelBytes     int64   `json:"kernel_bytes"`
	InitrdBytes     int64   `json:"initrd_bytes"`
	DiskBytes       int64   `json:"disk_bytes"`
	HostRSSBytes    uint64  `json:"host_rss_bytes"`
	GuestRAMBytes   uint64  `json:"guest_ram_touched_bytes"`
	OverheadBytes   uint64  `json:"vmm_overhead_rss_bytes"`
	GuestMemory     uint64  `json:"guest_memory_bytes"`
	MemAvailable    uint64  `json:"host_mem_available_bytes"`
	GuestsFit       uint64  `json:"guests_fit"`
	GuestRelease    string  `json:"guest_release"`
	ImageRelease    string  `json:"kernel_image_release"`
	HostRelease     string  `json:"host_release"`
	RunsGivenKernel bool    `json:"runs_given_kernel"` // the guest reported the --kernel image's release

	// With --rootfs: the same directory's size (DiskBytes then includes
	// it), and exec to the first byte of `uname -r`'s output in fresh
	// `microvm run --rootfs` children.
	RootfsBytes         int64     `json:"rootfs_bytes,omitempty"`
	FirstOutputMS       []float64 `json:"first_output_ms,omitempty"`
	FirstOutputMedianMS float64   `json:"first_output_median_ms,omitempty"`
	// Where the column was measured: "" for this host; inside the nested
	// harness, its L1 (which is not the host the container column ran on).
	Where string `json:"where,omitempty"`
}

// ContainerSide is the container column, filled only by a working engine.
type ContainerSide struct {
	Engine        string  `json:"engine"`
	Image         string  `json:"image"`
	RunMS         float64 `json:"run_ms"` // `ENGINE run --rm IMAGE uname -r`, start to exit
	ImageBytes    int64   `json:"image_bytes"`
	Release       string  `json:"release"`
	SharedKernel  bool    `json:"shared_kernel"`
	UnmeasuredWhy string  `json:"unmeasured,omitempty"`

	// With --rootfs (the same directory as the VM's; ImageBytes is then
	// its size): the command line the engine ran, exec to the first byte
	// of `uname -r`'s output per run and their median, and the host's
	// own release, which a container must report.
	Command             []string  `json:"command,omitempty"`
	FirstOutputMS       []float64 `json:"first_output_ms,omitempty"`
	FirstOutputMedianMS float64   `json:"first_output_median_ms,omitempty"`
	HostRelease         string    `json:"host_release,omitempty"`
	// What one idle container (`sleep`) holds on the host: the PSS of the
	// engine's per-container monitor (conmon) and of the container's own
	// processes. Kernel objects (namespaces, cgroup) are not counted.
	MonitorPSSBytes  uint64 `json:"monitor_pss_bytes,omitempty"`
	WorkloadPSSBytes uint64 `json:"workload_pss_bytes,omitempty"`
	OverheadBytes    uint64 `json:"overhead_bytes,omitempty"`
	MemAvailable     uint64 `json:"host_mem_available_bytes,omitempty"`
	ContainersFit    uint64 `json:"containers_fit,omitempty"`
}
