package main

import (
	"strings"
	"testing"
)

// TestSnapFlags: --snapshot and --restore take a directory, exclude each
// other and --share/--rootfs, and bring the virtio console (refusing an
// explicit serial one).
func TestSnapFlags(t *testing.T) {
	for _, c := range []struct {
		args    []string
		err     string
		console string
	}{
		{[]string{"--snapshot", "d"}, "", "virtio"},
		{[]string{"--restore", "d", "--console", "virtio"}, "", "virtio"},
		{[]string{"--snapshot", "d", "--restore", "e"}, "not both", ""},
		{[]string{"--snapshot", "d", "--console", "serial"}, "needs --console virtio", ""},
		{[]string{"--snapshot="}, "needs a directory", ""},
		{[]string{"--snapshot", "d", "--share", "/tmp"}, "not with --share or --rootfs", ""},
		{[]string{"--restore", "d", "--rootfs", "/tmp"}, "not with --share or --rootfs", ""},
		{nil, "", "serial"},
	} {
		fs, f := agentFlags("run")
		var sf snapFlags
		sf.register(fs)
		if err := fs.Parse(c.args); err != nil {
			t.Fatal(err)
		}
		err := sf.check(fs, f)
		if (err == nil) != (c.err == "") || (err != nil && !strings.Contains(err.Error(), c.err)) {
			t.Errorf("%v: err %v, want %q", c.args, err, c.err)
		}
		if err == nil && f.consoleKind != c.console {
			t.Errorf("%v: console %s, want %s", c.args, f.consoleKind, c.console)
		}
	}
}
