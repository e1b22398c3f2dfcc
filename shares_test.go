package microvm

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/microvm-dev/microvm/agentproto"
)

func TestSharesJob(t *testing.T) {
	src, data, root := t.TempDir(), t.TempDir(), t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(src, "pkg", "sub"), 0o755))
	t.Chdir(filepath.Join(src, "pkg", "sub"))
	cfg := Config{Kernel: "k", Command: []string{"ls"},
		Shares: []Share{{HostDir: src}, {HostDir: data, GuestPath: "/data/", ReadOnly: true}},
		Rootfs: &Rootfs{Dir: root}}
	vc, _, err := cfg.engineConfig()
	must(err)
	if len(vc.Shares) != 3 || vc.Shares[0].Tag != "microvm0" || vc.Shares[1].Tag != "microvm1" || !vc.Shares[1].ReadOnly ||
		vc.Shares[2].Tag != RootTag || !vc.Shares[2].ReadOnly || vc.Shares[2].Dir != root {
		t.Errorf("devices %+v", vc.Shares)
	}
	enc, ok := strings.CutPrefix(vc.Cmdline[strings.Index(vc.Cmdline, agentproto.CmdParam):], agentproto.CmdParam+"=")
	if !ok {
		t.Fatalf("cmdline %q", vc.Cmdline)
	}
	job, err := agentproto.DecodeJob(strings.Fields(enc)[0])
	must(err)
	if len(job.Mounts) != 2 || job.Mounts[0].Path != src || job.Mounts[1].Path != "/data" || !job.Mounts[1].RO ||
		job.Root == nil || job.Root.RW || job.Dir != filepath.Join(src, "pkg", "sub") {
		t.Errorf("job %+v", job)
	}
	// Outside every share, inside the root: the path within the root.
	t.Chdir(root)
	must(os.Mkdir(filepath.Join(root, "etc"), 0o755))
	t.Chdir(filepath.Join(root, "etc"))
	_, job, err = cfg.shares()
	if err != nil || job.Dir != "/etc" {
		t.Errorf("cwd in the root: %q %v", job.Dir, err)
	}
	// Nowhere shared: the agent's default.
	t.Chdir(t.TempDir())
	if _, job, _ = cfg.shares(); job.Dir != "" {
		t.Errorf("cwd outside: %q", job.Dir)
	}
	// Without a command the devices are there all the same.
	vc, _, err = Config{Kernel: "k", Shares: []Share{{HostDir: src}}}.engineConfig()
	if err != nil || len(vc.Shares) != 1 {
		t.Errorf("plain boot with a share: %+v %v", vc.Shares, err)
	}
}

func TestSharesBadInput(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "f")
	os.WriteFile(file, nil, 0o644)
	for _, c := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"missing", Config{Shares: []Share{{HostDir: filepath.Join(dir, "nope")}}}, "Shares: stat"},
		{"a file", Config{Shares: []Share{{HostDir: file}}}, "not a directory"},
		{"empty", Config{Shares: []Share{{}}}, "no directory"},
		{"relative", Config{Shares: []Share{{HostDir: dir, GuestPath: "x"}}}, "not absolute"},
		{"root", Config{Shares: []Share{{HostDir: dir, GuestPath: "/"}}}, "Rootfs"},
		{"twice", Config{Shares: []Share{{HostDir: dir, GuestPath: "/a"}, {HostDir: dir, GuestPath: "/a/."}}}, "twice"},
		{"rootfs file", Config{Rootfs: &Rootfs{Dir: file}}, "Rootfs: "},
		{"dir without command", Config{Dir: "/x"}, "Dir"},
		{"relative dir", Config{Command: []string{"ls"}, Dir: "x"}, "Dir"},
		{"share and snapshot", Config{Shares: []Share{{HostDir: dir}}, Command: []string{"ls"}, VirtioConsole: true, SaveSnapshot: dir}, "Shares: not with a snapshot"},
		{"rootfs and restore", Config{Rootfs: &Rootfs{Dir: dir}, Command: []string{"ls"}, VirtioConsole: true, Restore: dir}, "Rootfs: not with a snapshot"},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.cfg.Kernel = "k"
			_, _, err := c.cfg.engineConfig()
			if !IsInputError(err) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("err %v, want an InputError with %q", err, c.want)
			}
		})
	}
}
