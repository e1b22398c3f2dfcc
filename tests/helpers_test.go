// Package tests holds the end-to-end tests: they run the real microvm binary
// against the real /dev/kvm (directly, or inside the nested harness's L1; see
// run.sh). Inputs come from the environment that run.sh sets up.
package tests

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
)

// microvmBin returns $MICROVM_BIN, or builds the binary once.
func microvmBin(t *testing.T) string {
	t.Helper()
	if b := os.Getenv("MICROVM_BIN"); b != "" {
		return b
	}
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "microvm-bin")
		if err != nil {
			buildErr = err
			return
		}
		builtBin = filepath.Join(dir, "microvm")
		out, err := exec.Command("go", "build", "-o", builtBin, "../cmd/microvm").CombinedOutput()
		if err != nil {
			buildErr = errors.New(string(out))
		}
	})
	if buildErr != nil {
		t.Fatalf("build microvm: %v", buildErr)
	}
	return builtBin
}

// needKVM skips the test, saying why, when /dev/kvm cannot be opened. That is
// the only reason a VM test may skip.
func needKVM(t *testing.T) {
	t.Helper()
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		t.Skipf("no /dev/kvm (%v): run `make test`, which uses the nested harness", err)
	}
	f.Close()
}

// guestsDir returns the directory of prebuilt micro-guests, building them if
// $MICROVM_GUESTS is not set.
func guestsDir(t *testing.T) string {
	t.Helper()
	if d := os.Getenv("MICROVM_GUESTS"); d != "" {
		return d
	}
	d := filepath.Join(t.TempDir(), "guests")
	if out, err := exec.Command("make", "-s", "-C", "guests", "OUT="+d).CombinedOutput(); err != nil {
		t.Fatalf("build micro-guests: %v\n%s", err, out)
	}
	return d
}

type result struct {
	stdout, stderr string
	code           int
	elapsed        time.Duration
}

// runMicrovm runs the binary with a hard wall-clock limit of its own, so a
// hung VMM fails the test instead of hanging it.
func runMicrovm(t *testing.T, limit time.Duration, args ...string) result {
	t.Helper()
	return runMicrovmTee(t, limit, nil, args...)
}

// runMicrovmTee is runMicrovm that also copies stdout, as it arrives, to
// tee (if not nil): for a test that times what the guest prints.
func runMicrovmTee(t *testing.T, limit time.Duration, tee io.Writer, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, microvmBin(t), args...)
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	if tee != nil {
		cmd.Stdout = io.MultiWriter(&so, tee)
	}
	cmd.Stdin = nil
	start := time.Now()
	code, err := exitCode(cmd.Run())
	r := result{stdout: so.String(), stderr: se.String(), code: code, elapsed: time.Since(start)}
	if err != nil {
		t.Fatalf("run microvm %v: %v", args, err)
	}
	if ctx.Err() != nil {
		t.Fatalf("microvm %v did not exit within %v\nstdout:\n%s\nstderr:\n%s", args, limit, r.stdout, r.stderr)
	}
	return r
}

// exitCode is a finished command's exit code, from the error its Run or
// Wait returned: 0 for nil, the status of an *exec.ExitError (-1 if a
// signal killed it: its ProcessState says which). Any other error means the
// command did not run to its end, and is returned.
func exitCode(err error) (int, error) {
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, nil
	case errors.As(err, &ee):
		return ee.ExitCode(), nil
	}
	return -1, err
}

// envInt reads a positive whole number from the environment, def if unset.
func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	v, err := strconv.Atoi(s)
	if err != nil || v < 1 {
		t.Fatalf("%s=%q: want a positive number", name, s)
	}
	return v
}
