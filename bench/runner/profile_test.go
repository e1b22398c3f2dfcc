package main

import (
	"math"
	"strings"
	"testing"
	"time"
)

func TestProfileCmdline(t *testing.T) {
	got := profileCmdline("console=ttyS0 reboot=k panic=-1 quiet")
	if got != "console=ttyS0 reboot=k panic=-1 initcall_debug printk.time=1 ignore_loglevel" {
		t.Errorf("profileCmdline = %q", got)
	}
}

const sampleLog = `[    0.000000] Linux version 6.12.117-microvm
[    0.010000] tsc: Fast TSC calibration using PIT
[    0.030000] tsc: Detected 2000.000 MHz processor
[    0.100000] calling  pci_subsys_init+0x0/0x80 @ 1
[    0.101000] initcall pci_subsys_init+0x0/0x80 returned 0 after 1200 usecs
[    0.200000] Trying to unpack rootfs image as initramfs...
[    0.210000] initcall i8042_init+0x0/0x3f0 returned -19 after 500000 usecs
[    0.700000] Freeing initrd memory: 8128K
[    0.800000] Run /init as init process
guest: Linux 6.12.117-microvm
`

func TestProfileOf(t *testing.T) {
	lines := readLog(strings.NewReader(sampleLog), time.Now(), func(s string) bool { return strings.HasPrefix(s, "guest: Linux") })
	if len(lines) != 10 || lines[9].kern != -1 || lines[1].kern != 0.01 {
		t.Fatalf("lines %+v", lines)
	}
	p := profileOf(lines, nil)
	want := map[string]float64{
		"initcall pci_subsys_init":                    1.2,
		"initcall i8042_init":                         500,
		"kernel: initramfs unpacking":                 500,
		"kernel: boot to /init":                       800,
		"kernel: tsc: Fast TSC calibration using PIT": 20,
	}
	for k, v := range want {
		if math.Abs(p[k]-v) > 1e-6 {
			t.Errorf("%s = %v, want %v (profile %v)", k, p[k], v, p)
		}
	}
	for _, k := range []string{"host: exec to first console line", "host: exec to agent's first line"} {
		if _, ok := p[k]; !ok {
			t.Errorf("no %q row", k)
		}
	}
}

func TestLargestDiffs(t *testing.T) {
	a := map[string]float64{"x": 10, "y": 500, "only a": 30}
	b := map[string]float64{"x": 12, "y": 100, "only b": 200}
	rows := largestDiffs(a, b, 3)
	if len(rows) != 3 || rows[0].name != "y" || rows[1].name != "only b" || rows[2].name != "only a" {
		t.Fatalf("rows %+v", rows)
	}
	if !math.IsNaN(rows[1].a) || rows[1].diff() != -200 {
		t.Errorf("a row missing on one side: %+v diff %v", rows[1], rows[1].diff())
	}
}

func TestSymbolLookup(t *testing.T) {
	syms := &symbols{addr: []uint64{0xffffffff81000000, 0xffffffff81000100}, name: []string{"a_init", "b_init"}}
	for in, want := range map[string]string{
		"0xffffffff81000000": "a_init",
		"0xffffffff810000ff": "a_init",
		"0xffffffff81000105": "b_init",
		"0x1000":             "0x1000",
		"serial8250_init":    "serial8250_init",
	} {
		if got := syms.lookup(in); got != want {
			t.Errorf("lookup(%s) = %s, want %s", in, got, want)
		}
	}
	var none *symbols
	if got := none.lookup("0xffffffff81000000"); got != "0xffffffff81000000" {
		t.Errorf("no symbols: %s", got)
	}
}
