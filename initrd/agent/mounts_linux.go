package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/microvm-dev/microvm/agentproto"
	"golang.org/x/sys/unix"
)

// The host directories of a job (agentproto.Job): virtio-9p shares by
// mount tag, and a root filesystem the agent moves the command into.

// p9Opts are the 9p mount options: the virtio transport, 9P2000.L, and
// the largest message Linux's virtio transport can carry (125 pages,
// net/9p/trans_virtio.c; the device takes up to 512 KiB), so reads and
// writes go in ~500 KiB requests. No cache: the host sees every write at
// once, and the guest sees the host's changes.
const p9Opts = "trans=virtio,version=9p2000.L,msize=512000"

// p9RootOpts mount a root filesystem: cached (cache=loose), as a root's
// files are read again and again (binaries, libraries) and its host
// directory is not expected to change under a running guest; overlayfs
// over an uncached 9p lower refused to exec from it (EINVAL). An rw root
// reaches the host at the latest when the agent syncs at exit.
const p9RootOpts = p9Opts + ",cache=loose"

// newRoot is where the agent assembles a job's root filesystem.
const newRoot = "/run/microvm/root"

// setupJob mounts j's shares and, with a root, assembles it and chroots
// the agent into it, so that the command, found through PATH, runs there.
// It returns the PATH the command should have.
func setupJob(j agentproto.Job) (string, error) {
	prefix := ""
	if j.Root != nil {
		if err := mountRoot(*j.Root); err != nil {
			return "", err
		}
		prefix = newRoot
	}
	for _, m := range j.Mounts {
		if err := mount9p(m.Tag, prefix+m.Path, m.RO, p9Opts); err != nil {
			return "", err
		}
	}
	if j.Root == nil {
		return guestPath, nil
	}
	if err := unix.Chroot(newRoot); err != nil {
		return "", fmt.Errorf("chroot %s: %w", newRoot, err)
	}
	if err := os.Chdir("/"); err != nil {
		return "", err
	}
	// The root's own userland, not the initrd's.
	return "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", nil
}

// mount9p mounts the share tagged tag at dir with opts, creating dir if
// needed.
func mount9p(tag, dir string, ro bool, opts string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("share %s: %w", tag, err)
	}
	var flags uintptr
	if ro {
		flags |= unix.MS_RDONLY
	}
	if err := unix.Mount(tag, dir, "9p", flags, opts); err != nil {
		return fmt.Errorf("mount share %s at %s: %w", tag, dir, err)
	}
	return nil
}

// mountRoot assembles newRoot from the share r: read-only 9p under an
// overlay whose upper layer is a tmpfs (the guest's writes stay in the
// guest), or the share itself with RW; then the guest's own /proc, /sys,
// /dev and /tmp on top.
func mountRoot(r agentproto.Root) error {
	if r.RW {
		if err := mount9p(r.Tag, newRoot, false, p9RootOpts); err != nil {
			return err
		}
	} else {
		const lower, rw = "/run/microvm/lower", "/run/microvm/rw"
		if err := mount9p(r.Tag, lower, true, p9RootOpts); err != nil {
			return err
		}
		if err := mountFS("tmpfs", rw, "tmpfs", "mode=0755"); err != nil {
			return err
		}
		for _, d := range []string{rw + "/upper", rw + "/work", newRoot} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				return err
			}
		}
		opts := "lowerdir=" + lower + ",upperdir=" + rw + "/upper,workdir=" + rw + "/work"
		if err := mountFS("overlay", newRoot, "overlay", opts); err != nil {
			return err
		}
	}
	for _, m := range []struct{ fs, dir, opts string }{
		{"proc", "/proc", ""},
		{"sysfs", "/sys", ""},
		{"devtmpfs", "/dev", ""},
		{"tmpfs", "/tmp", "mode=1777"},
	} {
		dir := filepath.Join(newRoot, m.dir)
		if _, err := os.Stat(dir); err != nil {
			if r.RW {
				continue // not the agent's to create on the host
			}
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return err
			}
		}
		if err := mountFS(m.fs, dir, m.fs, m.opts); err != nil {
			return err
		}
	}
	return nil
}

func mountFS(src, dir, fstype, opts string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := unix.Mount(src, dir, fstype, 0, opts); err != nil {
		return fmt.Errorf("mount %s at %s: %w", fstype, dir, err)
	}
	return nil
}
