package report

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/microvm-dev/microvm"
	"github.com/microvm-dev/microvm/devices"
)

// roundTrip checks that v marshals to exactly want (the wire format the
// readers depend on) and that want unmarshals back to v.
func roundTrip[T any](t *testing.T, v T, want string, indent bool) {
	t.Helper()
	var b []byte
	var err error
	if indent {
		b, err = json.MarshalIndent(v, "", "  ")
	} else {
		b, err = json.Marshal(v)
	}
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != want {
		t.Errorf("marshal:\n got %s\nwant %s", b, want)
	}
	var back T
	if err := json.Unmarshal([]byte(want), &back); err != nil {
		t.Fatalf("unmarshal %s: %v", want, err)
	}
	if !reflect.DeepEqual(back, v) {
		t.Errorf("unmarshal: got %+v, want %+v", back, v)
	}
}

func TestBootJSON(t *testing.T) {
	for _, c := range []struct {
		name string
		in   Boot
		want string
	}{
		{"no timeline", Boot{Reason: "error", Code: 1, GuestStatus: -1},
			`{"exit_reason":"error","exit_code":1,"guest_status":-1,"timeline":null,"start_unix_ns":0,"peak_rss_bytes":0,"guest_touched_bytes":0}`},
		{"full", Boot{Reason: "crash", Code: 3, Detail: "triple fault at RIP 0x1000", GuestStatus: 7,
			Timeline:    Timeline{{"process-start", 0}, {"first-kvm-run", 12.345}},
			StartUnixNS: 1700000000123456789, PeakRSS: 34 << 20, GuestTouched: 30 << 20},
			`{"exit_reason":"crash","exit_code":3,"detail":"triple fault at RIP 0x1000","guest_status":7,` +
				`"timeline":[{"phase":"process-start","ms":0},{"phase":"first-kvm-run","ms":12.345}],` +
				`"start_unix_ns":1700000000123456789,"peak_rss_bytes":35651584,"guest_touched_bytes":31457280}`},
		{"sandboxed", Boot{Reason: "reset", GuestStatus: -1, Sandbox: &microvm.SandboxReport{Seccomp: microvm.SeccompKill,
			FilterInstructions: 174, NoNewPrivs: true, CapsDropped: true, BoundingDropped: true, UID: 4242, GID: 4243,
			Jail: "/var/lib/microvm/jail", NoFileLimit: 24, FSizeLimit: 1 << 20, GuestDontDump: true}},
			`{"exit_reason":"reset","exit_code":0,"guest_status":-1,"timeline":null,"start_unix_ns":0,"peak_rss_bytes":0,"guest_touched_bytes":0,` +
				`"sandbox":{"seccomp":"kill","seccomp_instructions":174,"no_new_privs":true,"capabilities_dropped":true,"bounding_set_dropped":true,` +
				`"uid":4242,"gid":4243,"jail":"/var/lib/microvm/jail","dumpable":false,"rlimit_core":0,"rlimit_nofile":24,"rlimit_fsize":1048576,"guest_ram_dontdump":true}}`},
	} {
		t.Run(c.name, func(t *testing.T) { roundTrip(t, c.in, c.want, false) })
	}
}

func TestNewBoot(t *testing.T) {
	start := time.Unix(1700000000, 5)
	for _, c := range []struct {
		name string
		res  microvm.Result
		code int
		want Boot
	}{
		{"reset with a timeline", microvm.Result{Reason: microvm.ExitReset, GuestStatus: 0, Start: start, GuestTouched: 4096,
			Timeline: []microvm.Mark{{Phase: microvm.PhaseStart}, {Phase: microvm.PhaseInit, At: 1500*time.Millisecond + 1234*time.Nanosecond}}},
			0, Boot{Reason: "reset", GuestStatus: 0, StartUnixNS: start.UnixNano(), PeakRSS: 1 << 20, GuestTouched: 4096,
				Timeline: Timeline{{"process-start", 0}, {"init-reached", 1500.001}}}},
		{"timeout without a timeline", microvm.Result{Reason: microvm.ExitTimeout, Detail: "RIP 0xffff", GuestStatus: -1, Start: start},
			124, Boot{Reason: "timeout", Code: 124, Detail: "RIP 0xffff", GuestStatus: -1, StartUnixNS: start.UnixNano(), PeakRSS: 1 << 20}},
		{"exits, devices most first", microvm.Result{Reason: microvm.ExitReset, GuestStatus: -1, Start: start,
			Exits: microvm.Exits{IO: 120, MMIO: 9, Interrupted: 4, Other: 1,
				PIO:     []devices.Accesses{{Name: "i8042", Base: 0x60, Reads: 2, Writes: 1}, {Name: "serial ttyS0", Base: 0x3f8, Reads: 40, Writes: 77}},
				MMIOBus: []devices.Accesses{{Name: "virtio-console", Base: 0xd0000000, Reads: 6, Writes: 3}}}},
			0, Boot{Reason: "reset", GuestStatus: -1, StartUnixNS: start.UnixNano(), PeakRSS: 1 << 20,
				Exits: &Exits{Total: 134, IO: 120, MMIO: 9, Interrupted: 4, Other: 1, Devices: []DeviceExits{
					{"pio", "serial ttyS0", 0x3f8, 40, 77}, {"mmio", "virtio-console", 0xd0000000, 6, 3}, {"pio", "i8042", 0x60, 2, 1}}}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := NewBoot(c.res, c.code, 1<<20); !reflect.DeepEqual(got, c.want) {
				t.Errorf("NewBoot = %+v, want %+v", got, c.want)
			}
		})
	}
}

func TestTimelineLookup(t *testing.T) {
	marks := []microvm.Mark{{Phase: microvm.PhaseStart}, {Phase: microvm.PhaseFirstRun, At: 2 * time.Millisecond}, {Phase: microvm.PhaseExit, At: time.Second}}
	wire := TimelineOf(marks)
	for _, c := range []struct {
		p  microvm.Phase
		at time.Duration
		ok bool
	}{
		{microvm.PhaseStart, 0, true},
		{microvm.PhaseFirstRun, 2 * time.Millisecond, true},
		{microvm.PhaseExit, time.Second, true},
		{microvm.PhaseInit, 0, false},
	} {
		t.Run(string(c.p), func(t *testing.T) {
			if at, ok := PhaseAt(marks, c.p); at != c.at || ok != c.ok {
				t.Errorf("PhaseAt = %v, %v; want %v, %v", at, ok, c.at, c.ok)
			}
			if ms, ok := wire.MS(c.p); ms != MS(c.at) || ok != c.ok {
				t.Errorf("Timeline.MS = %v, %v; want %v, %v", ms, ok, MS(c.at), c.ok)
			}
		})
	}
	if TimelineOf(nil) != nil {
		t.Error("TimelineOf(nil) is not nil: a Boot without marks must say \"timeline\":null")
	}
}

func TestBenchSummaryJSON(t *testing.T) {
	s := BenchSummary{Runs: 2,
		Phases: []Stat{
			{Name: "first-kvm-run", N: 2, Min: 150.5, Median: 152, Max: 153.5},
			{Name: "init-reached", N: 0},
			{Name: "process-exit", N: 2, Min: 900, Median: 950, Max: 1000},
		},
		PeakRSS:      Stat{Name: "peak RSS", N: 2, Min: 34, Median: 34.5, Max: 35},
		GuestTouched: Stat{Name: "guest RAM touched", N: 2, Min: 30, Median: 30, Max: 30},
		Overhead:     Stat{Name: "VMM overhead", N: 2, Min: 4, Median: 4.5, Max: 5},
	}
	roundTrip(t, s, `{"runs":2,"phases_ms_since_exec":[`+
		`{"name":"first-kvm-run","n":2,"min":150.5,"median":152,"max":153.5},`+
		`{"name":"init-reached","n":0,"min":0,"median":0,"max":0},`+
		`{"name":"process-exit","n":2,"min":900,"median":950,"max":1000}],`+
		`"peak_rss_mib":{"name":"peak RSS","n":2,"min":34,"median":34.5,"max":35},`+
		`"guest_touched_mib":{"name":"guest RAM touched","n":2,"min":30,"median":30,"max":30},`+
		`"vmm_overhead_mib":{"name":"VMM overhead","n":2,"min":4,"median":4.5,"max":5}}`, false)
	for _, c := range []struct {
		p      microvm.Phase
		ok     bool
		median float64
	}{
		{microvm.PhaseFirstRun, true, 152},
		{microvm.PhaseInit, false, 0}, // present, but no run reached it
		{PhaseProcessExit, true, 950},
		{microvm.PhaseAgentReady, false, 0},
	} {
		if st, ok := s.Phase(c.p); ok != c.ok || st.Median != c.median {
			t.Errorf("Phase(%s) = %+v, %v; want median %v, %v", c.p, st, ok, c.median, c.ok)
		}
	}
}

func TestCompareJSON(t *testing.T) {
	vm := VMSide{StartToInitMS: 5407, KernelBytes: 2 << 20, InitrdBytes: 5 << 20, DiskBytes: 7 << 20,
		HostRSSBytes: 40 << 20, GuestRAMBytes: 28 << 20, OverheadBytes: 12 << 20, GuestMemory: 128 << 20,
		MemAvailable: 4 << 30, GuestsFit: 29, GuestRelease: "6.12.117-microvm", ImageRelease: "6.12.117-microvm",
		HostRelease: "6.1.0-28-amd64", RunsGivenKernel: true}
	vmJSON := `  "vm": {
    "start_to_init_ms": 5407,
    "kernel_bytes": 2097152,
    "initrd_bytes": 5242880,
    "disk_bytes": 7340032,
    "host_rss_bytes": 41943040,
    "guest_ram_touched_bytes": 29360128,
    "vmm_overhead_rss_bytes": 12582912,
    "guest_memory_bytes": 134217728,
    "host_mem_available_bytes": 4294967296,
    "guests_fit": 29,
    "guest_release": "6.12.117-microvm",
    "kernel_image_release": "6.12.117-microvm",
    "host_release": "6.1.0-28-amd64",
    "runs_given_kernel": true
  }
}`
	for _, c := range []struct {
		name string
		in   Compare
		want string
	}{
		{"no engine", Compare{VM: vm, ContainerNote: "no container engine here"},
			"{\n  \"container\": null,\n  \"container_note\": \"no container engine here\",\n" + vmJSON},
		{"docker", Compare{VM: vm, Container: &ContainerSide{Engine: "docker", Image: "alpine:3", RunMS: 812.5,
			ImageBytes: 7 << 20, Release: "6.1.0-28-amd64", SharedKernel: true}},
			`{
  "container": {
    "engine": "docker",
    "image": "alpine:3",
    "run_ms": 812.5,
    "image_bytes": 7340032,
    "release": "6.1.0-28-amd64",
    "shared_kernel": true
  },
  "container_note": "",
` + vmJSON},
	} {
		t.Run(c.name, func(t *testing.T) { roundTrip(t, c.in, c.want, true) })
	}
}

func TestPeakRSS(t *testing.T) {
	// A Go test binary is several MiB resident; a result under 1 MiB or
	// over 16 GiB means the parsing is off (kB read as bytes or MiB).
	if p := PeakRSS(); p < 1<<20 || p > 16<<30 {
		t.Errorf("PeakRSS() = %d bytes", p)
	}
}
