// Package nested runs a program inside an L1 Linux booted under QEMU TCG
// ("-accel tcg -cpu max", which emulates AMD SVM), so that the program sees a
// working /dev/kvm (kvm_amd) even where the host has none or only a
// paravirtual one.
//
// The L1 boots from an initramfs that Run writes: /init is the static Go
// program in ./l1init, which reads /l1config.json, runs the payload with its
// output on the serial console, prints "@@L1-EXIT <code>" and reboots; QEMU
// runs with -no-reboot, so it exits then. Package l1proto holds that
// contract.
package nested

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/microvm-dev/microvm/tests/nested/l1proto"
)

// Config describes one L1 run.
type Config struct {
	// Kernel is the host path of the L1 bzImage. It needs KVM and KVM_AMD,
	// built in or in Modules, and devtmpfs, tmpfs and a serial console
	// built in.
	Kernel string
	// Modules are host paths of kernel modules for Kernel, loaded in L1 in
	// this order (dependencies first) before the payload starts: the
	// harness's L1 is Debian's stock kernel, whose KVM is modular.
	Modules []string
	// Files maps a destination path inside L1 to a host path. A host
	// directory is copied recursively. Files with an execute bit get 0755.
	Files map[string]string
	// Trees maps a destination directory inside L1 to a host directory
	// copied as a root filesystem (testimg.CPIO.Tree: symlinks and modes
	// kept), for a --rootfs directory.
	Trees map[string]string
	// Init is the path inside L1 of the payload program.
	Init string
	// Args are the payload's arguments (without argv[0]).
	Args []string
	// Env holds extra KEY=VALUE entries for the payload. PATH, HOME=/tmp
	// and TMPDIR=/tmp are set by default and can be overridden.
	Env []string
	// Dir is the payload's working directory inside L1 (default "/").
	Dir string
	// MemoryMiB is L1's RAM (default 4096). The initramfs, and so every
	// file in Files, lives in this RAM, as does /tmp.
	MemoryMiB int
	// CPUs is L1's vCPU count (default 1). Above 1, MTTCG is used.
	CPUs int
	// Timeout bounds the whole run, boot included (default 10 minutes).
	// The payload gets a little less, so an overrun ends as exit code 124
	// with a clean L1 shutdown rather than a killed QEMU.
	Timeout time.Duration
	// Console, if set, receives L1's serial console output live.
	Console io.Writer
	// KernelArgs are appended to the L1 kernel command line.
	KernelArgs string
	// Monitor, if set, is a Unix socket path for QEMU's human monitor
	// (to inspect a stuck L1: socat - UNIX-CONNECT:path, "info registers").
	Monitor string
	// AllowNoKVM lets the payload run even if L1 has no /dev/kvm.
	// Otherwise that ends the run with an error.
	AllowNoKVM bool
	// L1Init is a prebuilt static l1init binary. If empty, Run builds
	// ./l1init with "go build" (CGO_ENABLED=0).
	L1Init string
	// QEMU is the QEMU binary (default qemu-system-x86_64 from PATH).
	QEMU string
	// Heartbeat is how often L1 prints a heartbeat line while the payload
	// runs (default 10 s; negative turns heartbeats and stall detection
	// off).
	Heartbeat time.Duration
	// Kick is how often a byte is sent to L1's serial port (default 2 s;
	// negative: never). QEMU 10.0's helper_vmrun sets a bit in the vCPU's
	// interrupt_request without the lock or an atomic, racing the I/O
	// thread's APIC timer, which sets CPU_INTERRUPT_POLL there: when the
	// POLL bit is lost, L1's timer vector sits in IRR for good and L1
	// freezes (fixed upstream in QEMU 10.2, "cpu-common: use atomic access
	// for interrupt_request"; tests/nested/NOTES.md). A serial interrupt
	// makes QEMU poll the APIC again, so a lost bit costs at most a Kick.
	// l1init turns echo off, so the bytes go nowhere.
	Kick time.Duration
	// StallAfter is how long L1 may go without a heartbeat once the
	// payload started (default 6 heartbeats). Then the run is diagnosed
	// (L1's RIP and LAPIC, printed as an "@@L1-STALL" line) and L1 gets an
	// NMI; if no heartbeat follows within StallAfter/2, the run ends as
	// stalled. A frozen L1 (tests/nested/NOTES.md) then costs a minute
	// and a half, not the whole Timeout.
	StallAfter time.Duration
}

// Result is the outcome of a run that reached the payload's end.
type Result struct {
	// ExitCode is the payload's exit status: 128+n if killed by signal n,
	// 124 if it overran its timeout, 127 if it could not be started.
	ExitCode int
	// Duration is the wall time from QEMU's start to its exit.
	Duration time.Duration
	// Output is everything L1 printed on its console (and QEMU's stderr).
	Output []byte
	// Revived counts stalls that an NMI ended (see StallAfter).
	Revived int
}

// Error is returned when L1 did not report the payload's exit status.
type Error struct {
	Reason string   // what happened, one line
	Tail   []string // last console lines (up to 20)
}

func (e *Error) Error() string {
	if len(e.Tail) == 0 {
		return "nested: " + e.Reason
	}
	return "nested: " + e.Reason + "; last console lines:\n\t" + strings.Join(e.Tail, "\n\t")
}

// ExitKVMMissing is the code l1init reports when /dev/kvm is missing and
// AllowNoKVM is false.
const ExitKVMMissing = l1proto.ExitKVMMissing

func (cfg *Config) defaults() {
	if cfg.MemoryMiB <= 0 {
		cfg.MemoryMiB = 4096
	}
	if cfg.CPUs <= 0 {
		cfg.CPUs = 1
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Minute
	}
	if cfg.QEMU == "" {
		cfg.QEMU = "qemu-system-x86_64"
	}
	if cfg.Heartbeat == 0 {
		cfg.Heartbeat = 10 * time.Second
	}
	if cfg.Kick == 0 {
		cfg.Kick = 2 * time.Second
	}
	if cfg.StallAfter <= 0 {
		cfg.StallAfter = 6 * cfg.Heartbeat
	}
}

// payloadTimeout leaves L1 time to boot and to shut down after a kill.
func payloadTimeout(total time.Duration) time.Duration {
	margin := total / 5
	if margin > time.Minute {
		margin = time.Minute
	}
	return total - margin
}

// Run boots L1 and runs cfg.Init in it. It returns an error (an *Error when
// L1 booted but did not report an exit status) unless the payload's exit
// status was read; a non-zero status is not an error.
func Run(ctx context.Context, cfg Config) (Result, error) {
	cfg.defaults()
	if cfg.Kernel == "" {
		return Result{}, errors.New("nested: no kernel given")
	}
	if _, err := os.Stat(cfg.Kernel); err != nil {
		return Result{}, fmt.Errorf("nested: kernel: %w", err)
	}
	if !strings.HasPrefix(cfg.Init, "/") {
		return Result{}, fmt.Errorf("nested: init %q must be an absolute path inside L1", cfg.Init)
	}
	qemu, err := exec.LookPath(cfg.QEMU)
	if err != nil {
		return Result{}, fmt.Errorf("nested: %w (apt-get install qemu-system-x86)", err)
	}
	tmp, err := os.MkdirTemp("", "microvm-nested-")
	if err != nil {
		return Result{}, err
	}
	defer os.RemoveAll(tmp)

	l1init := cfg.L1Init
	if l1init == "" {
		l1init = filepath.Join(tmp, "l1init")
		if err := BuildL1Init(ctx, l1init); err != nil {
			return Result{}, err
		}
	}
	initrd := filepath.Join(tmp, "initramfs.cpio")
	if err := writeInitramfs(initrd, &cfg, l1init); err != nil {
		return Result{}, fmt.Errorf("nested: initramfs: %w", err)
	}
	return runQEMU(ctx, &cfg, qemu, initrd)
}

// BuildL1Init builds the l1init program as a static binary at out. It needs
// the module's source tree: it uses the directory this file was compiled
// from, or else the import path resolved from the working directory.
func BuildL1Init(ctx context.Context, out string) error {
	args := []string{"build", "-trimpath", "-o", out}
	dir := ""
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		if d := filepath.Join(filepath.Dir(file), "l1init"); isDir(d) {
			dir = d
		}
	}
	if dir != "" {
		args = append(args, ".")
	} else {
		args = append(args, "github.com/microvm-dev/microvm/tests/nested/l1init")
	}
	gobin := "go"
	if g := filepath.Join(runtime.GOROOT(), "bin", "go"); runtime.GOROOT() != "" && isFile(g) {
		gobin = g
	}
	cmd := exec.CommandContext(ctx, gobin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nested: building l1init: %v: %s", err, bytes.TrimSpace(out))
	}
	return nil
}

func isDir(p string) bool  { fi, err := os.Stat(p); return err == nil && fi.IsDir() }
func isFile(p string) bool { fi, err := os.Stat(p); return err == nil && fi.Mode().IsRegular() }
