package microvm

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/microvm-dev/microvm/agentproto"
	"github.com/microvm-dev/microvm/internal/vmm"
)

// Share is a host directory the guest sees through virtio-9p. With
// Config.Command the guest agent mounts it at GuestPath; without, the guest
// mounts it itself by its tag (microvm0, microvm1, ... in order):
// mount -t 9p -o trans=virtio,version=9p2000.L microvm0 /mnt.
type Share struct {
	HostDir   string // an existing directory
	GuestPath string // absolute; default: HostDir's absolute path
	ReadOnly  bool   // every change the guest asks for fails with EROFS
}

// Rootfs is a host directory that becomes the command's root filesystem
// (tag microvm-root): read-only under a tmpfs overlay that takes the
// guest's writes, or with RW written through to the host. /proc, /sys,
// /dev and /tmp are the guest's own. Without a Command only the device is
// there (a kernel can boot straight into it: root=microvm-root
// rootfstype=9p rootflags=trans=virtio,version=9p2000.L).
type Rootfs struct {
	Dir string
	RW  bool
}

// RootTag is the mount tag of Config.Rootfs's device.
const RootTag = "microvm-root"

// ShareTag is the mount tag of Config.Shares[i]'s device.
func ShareTag(i int) string { return fmt.Sprintf("microvm%d", i) }

// shares checks cfg's shares and root and returns the devices and the job
// that mounts them. The InputErrors name Shares, Rootfs or Dir.
func (cfg Config) shares() ([]vmm.Share, agentproto.Job, error) {
	job := agentproto.Job{Argv: cfg.Command}
	var devs []vmm.Share
	hostDirs := map[string]string{} // guest path -> host dir
	for i, s := range cfg.Shares {
		dir, err := hostDir(s.HostDir)
		if err != nil {
			return nil, job, &InputError{What: "Shares", Msg: err.Error()}
		}
		gp := s.GuestPath
		if gp == "" {
			gp = dir
		}
		switch {
		case !path.IsAbs(gp):
			return nil, job, &InputError{What: "Shares", Msg: fmt.Sprintf("guest path %q is not absolute", gp)}
		case path.Clean(gp) == "/":
			return nil, job, &InputError{What: "Shares", Msg: fmt.Sprintf("%s: a share cannot be the guest's / (that is Rootfs)", s.HostDir)}
		}
		gp = path.Clean(gp)
		if _, dup := hostDirs[gp]; dup {
			return nil, job, &InputError{What: "Shares", Msg: fmt.Sprintf("guest path %s is given twice", gp)}
		}
		hostDirs[gp] = dir
		devs = append(devs, vmm.Share{Tag: ShareTag(i), Dir: dir, ReadOnly: s.ReadOnly})
		job.Mounts = append(job.Mounts, agentproto.Mount{Tag: ShareTag(i), Path: gp, RO: s.ReadOnly})
	}
	rootDir := ""
	if cfg.Rootfs != nil {
		dir, err := hostDir(cfg.Rootfs.Dir)
		if err != nil {
			return nil, job, &InputError{What: "Rootfs", Msg: err.Error()}
		}
		rootDir = dir
		devs = append(devs, vmm.Share{Tag: RootTag, Dir: dir, ReadOnly: !cfg.Rootfs.RW})
		job.Root = &agentproto.Root{Tag: RootTag, RW: cfg.Rootfs.RW}
	}
	if len(cfg.Command) == 0 && cfg.Dir != "" {
		return nil, job, &InputError{What: "Dir", Msg: "needs a command to run"}
	}
	switch {
	case cfg.Dir != "":
		if !path.IsAbs(cfg.Dir) {
			return nil, job, &InputError{What: "Dir", Msg: fmt.Sprintf("%q is not absolute", cfg.Dir)}
		}
		job.Dir = path.Clean(cfg.Dir)
	case len(devs) > 0:
		if wd, err := os.Getwd(); err == nil {
			job.Dir = guestDir(wd, hostDirs, rootDir)
		}
	}
	return devs, job, nil
}

// hostDir returns dir made absolute, if it is an existing directory.
func hostDir(dir string) (string, error) {
	if dir == "" {
		return "", fmt.Errorf("no directory given")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return "", err
	}
	if !fi.IsDir() {
		return "", fmt.Errorf("%s is not a directory", dir)
	}
	return abs, nil
}

// guestDir is where host directory wd is in the guest: inside the share
// with the longest host path containing it, else inside the root, else
// none ("": the agent starts in /).
func guestDir(wd string, shares map[string]string, root string) string {
	best, bestLen := "", -1
	for gp, hd := range shares {
		if rel, ok := within(wd, hd); ok && len(hd) > bestLen {
			best, bestLen = path.Join(gp, rel), len(hd)
		}
	}
	if bestLen < 0 && root != "" {
		if rel, ok := within(wd, root); ok {
			best = path.Join("/", rel)
		}
	}
	return best
}

// within reports whether p lies in dir, and where.
func within(p, dir string) (string, bool) {
	rel, err := filepath.Rel(dir, p)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return "", false
	}
	return filepath.ToSlash(rel), true
}
