package tests

import (
	"fmt"
	"os"
	"strings"
	"testing"
)

// l1Group is one L1 of the nested harness: the tests it runs, in order, and
// what that L1 needs. tests/run.sh reads this table (printPlan); a test that
// boots Linux and has no row here fails the run, so every new VM test
// declares its budget next to its code.
type l1Group struct {
	Tests []string
	// CPUs of the L1. A guest with N vCPUs needs an L1 with N CPUs: in a
	// 1-CPU L1 a vCPU spinning for its sibling's IPI can starve L1 for
	// good (tests/nested/NOTES.md).
	CPUs int
	// Minutes bounds the whole L1 run, its boot included: a hang guard
	// several times the measured time, not a speed check.
	Minutes int
	// OptIn groups run only when TESTS_RUN names them (benchmarks and
	// soaks: the gate checks correctness, benchmarks check scale).
	OptIn bool
}

// microTests are the tests that boot no Linux guest: micro-guests, the API,
// signals, bad input. They share one L1 (or run on the host, see run.sh).
var microTests = []string{
	"TestAPIMicroGuest", "TestBadInput", "TestCheck", "TestInGuest", "TestInGuestShare", "TestInGuestRoot",
	"TestMicroGuestBootProtocol", "TestMicroGuestACPI", "TestMicroGuestTripleFault", "TestMicroGuestSMP",
	"TestMicroGuestHighMemory", "TestMicroGuestTimeout", "TestMicroGuestExitCounts", "TestNonRoot",
	"TestSignalBeforeKVM", "TestSignalGuestRunning", "TestSignalHangup", "TestConsoleEscape",
	"TestHostileTransport", "TestHostileGrowth", "TestHostileStalledStdout",
	"TestSandboxProc", "TestSandboxModes", "TestSandboxMemory", "TestAPISandboxed",
	"TestAPISnapshotCounter",
}

// l1Plan: one Linux-booting test per L1, so that every test starts from a
// fresh L1 and boots as few L2 guests in one L1 as it can (the L1 freeze of
// tests/nested/NOTES.md strikes L1s that start many L2s).
var l1Plan = []l1Group{
	{Tests: microTests, CPUs: 1, Minutes: 8},
	{Tests: []string{"TestLinuxUname"}, CPUs: 1, Minutes: 5},
	{Tests: []string{"TestLinuxRunExitStatus"}, CPUs: 1, Minutes: 5},
	{Tests: []string{"TestLinuxVmlinux"}, CPUs: 1, Minutes: 5},
	{Tests: []string{"TestLinuxSMP"}, CPUs: 2, Minutes: 8},
	{Tests: []string{"TestLinuxMemory"}, CPUs: 1, Minutes: 6},
	{Tests: []string{"TestLinuxCmdline", "TestLinuxClockNoCalibration"}, CPUs: 1, Minutes: 6},
	{Tests: []string{"TestLinuxPanic"}, CPUs: 1, Minutes: 5},
	{Tests: []string{"TestLinuxRebootAndPoweroff"}, CPUs: 1, Minutes: 6},
	{Tests: []string{"TestLinuxAPI"}, CPUs: 1, Minutes: 5},
	{Tests: []string{"TestLinuxBench"}, CPUs: 1, Minutes: 8},
	{Tests: []string{"TestLinuxCompareJSON"}, CPUs: 1, Minutes: 6},
	{Tests: []string{"TestLinuxCompareTable"}, CPUs: 1, Minutes: 6},
	// 4 boots: one measured, 3 timed starts (--runs 3).
	{Tests: []string{"TestLinuxCompareRootfs"}, CPUs: 1, Minutes: 8},
	{Tests: []string{"TestLinuxDensity"}, CPUs: 1, Minutes: 8},
	{Tests: []string{"TestLinuxGoTestInGuest"}, CPUs: 1, Minutes: 6},
	{Tests: []string{"TestLinuxSignalCommand"}, CPUs: 1, Minutes: 5},
	{Tests: []string{"TestLinuxSignalBoot"}, CPUs: 1, Minutes: 5},
	{Tests: []string{"TestLinuxDiskDurability"}, CPUs: 1, Minutes: 8},
	{Tests: []string{"TestLinuxDiskReadOnly"}, CPUs: 1, Minutes: 5},
	{Tests: []string{"TestLinuxVirtioConsole"}, CPUs: 1, Minutes: 6},
	{Tests: []string{"TestLinuxNet"}, CPUs: 1, Minutes: 6},
	// Debian's stock kernels (14 MiB lz4 and 8 MiB xz bzImages, their
	// decompressors emulated): uname and every device through ACPI (2
	// boots, about 1 min each); --cpus 2 for both in one 2-CPU L1, the
	// kind whose own kernel now and then crashes under MTTCG (NOTES.md).
	{Tests: []string{"TestStockKernelCloud"}, CPUs: 1, Minutes: 12},
	{Tests: []string{"TestStockKernelGeneric"}, CPUs: 1, Minutes: 12},
	{Tests: []string{"TestStockKernelSMP"}, CPUs: 2, Minutes: 12},
	// A whole Debian 12 from its disk: the stock cloud kernel, its
	// initramfs-tools initrd, systemd to multi-user.target, poweroff.
	{Tests: []string{"TestDebianBoot"}, CPUs: 1, Minutes: 18},
	{Tests: []string{"TestLinuxShare"}, CPUs: 1, Minutes: 6},
	{Tests: []string{"TestLinuxRootfs"}, CPUs: 1, Minutes: 8},
	// Snapshots (issue 15): each group boots one to six Linux guests in turn
	// (two restored at once in the clones' group).
	{Tests: []string{"TestLinuxSnapshot"}, CPUs: 1, Minutes: 6},
	{Tests: []string{"TestLinuxSnapshotClones"}, CPUs: 1, Minutes: 6},
	{Tests: []string{"TestLinuxSnapshotRemake"}, CPUs: 1, Minutes: 8},
	{Tests: []string{"TestLinuxSnapshotBadInput"}, CPUs: 1, Minutes: 6},
	// `make bench-snapshot` sets their sizes and its own limit.
	{Tests: []string{"TestLinuxSnapshotDensity"}, CPUs: 1, Minutes: 40, OptIn: true},
	// `make soak` sets MICROVM_SOAK_N and its own limit.
	{Tests: []string{"TestLinuxSoak"}, CPUs: 1, Minutes: 5, OptIn: true},
}

// printPlan writes l1Plan as "CPUS MINUTES OPTIN ^(TestA|TestB)$" lines,
// for tests/run.sh (MICROVM_PRINT_L1PLAN=1 tests.test).
func printPlan() {
	for _, g := range l1Plan {
		fmt.Printf("%d %d %t ^(%s)$\n", g.CPUs, g.Minutes, g.OptIn, strings.Join(g.Tests, "|"))
	}
}

func TestMain(m *testing.M) {
	if os.Getenv("MICROVM_PRINT_L1PLAN") == "1" {
		printPlan()
		os.Exit(0)
	}
	if h := os.Getenv("MICROVM_TEST_HELPER"); h != "" {
		os.Exit(runHelper(h)) // a child some test started (sandbox_test.go)
	}
	os.Exit(m.Run())
}
