package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRunCommandStatus(t *testing.T) {
	if _, err := os.Stat("/bin/sh"); err != nil {
		t.Skip("no /bin/sh")
	}
	tests := []struct {
		name string
		argv []string
		want int
	}{
		{"success", []string{"/bin/sh", "-c", "exit 0"}, 0},
		{"exit 7", []string{"/bin/sh", "-c", "exit 7"}, 7},
		{"exit 255", []string{"/bin/sh", "-c", "exit 255"}, 255},
		{"killed by SIGKILL", []string{"/bin/sh", "-c", "kill -9 $$"}, 128 + 9},
		{"killed by SIGTERM", []string{"/bin/sh", "-c", "kill -15 $$"}, 128 + 15},
		{"not found in PATH", []string{"microvm-no-such-command"}, 127},
		{"missing absolute path", []string{"/nonexistent/microvm"}, 127},
		{"not executable", []string{"/proc/cmdline"}, 126},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := runCommand(tt.argv, ""); got != tt.want {
				t.Fatalf("runCommand(%q) = %d, want %d", tt.argv, got, tt.want)
			}
		})
	}
}

// A command found in PATH through a symlink (like /bin/sh -> ../bbin/gosh in
// u-root's busybox) gets the full path as argv[0].
func TestRunCommandSymlinkArgv0(t *testing.T) {
	if _, err := os.Stat("/bin/sh"); err != nil {
		t.Skip("no /bin/sh")
	}
	dir := t.TempDir()
	if err := os.Symlink("/bin/sh", filepath.Join(dir, "mysh")); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+":"+os.Getenv("PATH"))
	out := filepath.Join(dir, "argv")
	if st := runCommand([]string{"mysh", "-c", `tr '\0' '\n' < /proc/$$/cmdline > "$0"`, out}, ""); st != 0 {
		t.Fatalf("status %d", st)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.SplitN(string(b), "\n", 2)[0], filepath.Join(dir, "mysh"); got != want {
		t.Fatalf("argv[0] = %q, want %q", got, want)
	}
}

func TestParseUptime(t *testing.T) {
	if v, err := parseUptime("0.53 1.02\n"); err != nil || v != 0.53 {
		t.Fatalf("parseUptime = %v, %v", v, err)
	}
	for _, bad := range []string{"", "\n", "x 1"} {
		if _, err := parseUptime(bad); err == nil {
			t.Errorf("parseUptime(%q): want error", bad)
		}
	}
}
