package sandbox

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Credentials and capabilities are per thread in Linux
// (credentials(7), capabilities(7)), and a Go program has many threads:
// every change here goes to all of them through syscall.AllThreadsSyscall,
// as syscall.Setresuid does itself since Go 1.16. That needs a binary
// without cgo (the microvm binary and the tests are built CGO_ENABLED=0).

// allThreads runs a syscall on every thread of the process.
func allThreads(name string, trap, a1, a2, a3 uintptr) error {
	_, _, errno := syscall.AllThreadsSyscall6(trap, a1, a2, a3, 0, 0, 0)
	switch errno {
	case 0:
		return nil
	case syscall.ENOTSUP:
		return fmt.Errorf("%s on every thread: not possible in a binary built with cgo (build with CGO_ENABLED=0)", name)
	}
	return fmt.Errorf("%s: %w", name, errno)
}

// fdSpare is the room RLIMIT_NOFILE leaves above the descriptors open at
// Apply: the VMM opens nothing once its guest runs, but the Go runtime may
// still create its netpoller's epoll and eventfd descriptors.
const fdSpare = 8

// openFDs returns one more than the highest descriptor open now.
func openFDs() (uint64, error) {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 0, fmt.Errorf("count open descriptors: %w", err)
	}
	hi := uint64(0)
	for _, e := range ents {
		if n, err := strconv.ParseUint(e.Name(), 10, 32); err == nil {
			hi = max(hi, n+1)
		}
	}
	return hi, nil
}

// lastCap is the highest capability this kernel knows.
func lastCap() int {
	b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap")
	if n, err2 := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && err2 == nil {
		return n
	}
	return unix.CAP_LAST_CAP
}

// enterJail chroots into dir, creating it if needed, and returns its
// resolved path. The working directory moves inside: a cwd outside a
// chroot is a way out of it (chroot(2)).
func enterJail(dir string) (string, error) {
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return "", fmt.Errorf("jail: %w", err)
	}
	abs, err := filepath.Abs(dir)
	if err == nil {
		abs, err = filepath.EvalSymlinks(abs)
	}
	if err == nil {
		err = checkJail(abs)
	}
	if err != nil {
		return "", fmt.Errorf("jail: %w", err)
	}
	if err := unix.Chroot(abs); err != nil {
		return "", fmt.Errorf("jail: chroot %s: %w", abs, err)
	}
	if err := unix.Chdir("/"); err != nil {
		return "", fmt.Errorf("jail: chdir /: %w", err)
	}
	return abs, nil
}

// dropBounding empties the capability bounding set (PR_CAPBSET_DROP,
// prctl(2)). Without CAP_SETPCAP it does nothing and reports false.
func dropBounding(last int) (bool, error) {
	for c := 0; c <= last; c++ {
		err := allThreads("PR_CAPBSET_DROP", unix.SYS_PRCTL, unix.PR_CAPBSET_DROP, uintptr(c), 0)
		switch {
		case errors.Is(err, unix.EPERM) && c == 0:
			return false, nil
		case err != nil:
			return false, err
		}
	}
	return true, nil
}

// setIDs drops every thread to c: supplementary groups first, then the
// group, then the user (each needs the privilege the next one removes).
func setIDs(c Credential) error {
	if err := syscall.Setgroups(nil); err != nil {
		return fmt.Errorf("setgroups: %w", err)
	}
	if err := syscall.Setresgid(int(c.GID), int(c.GID), int(c.GID)); err != nil {
		return fmt.Errorf("setresgid %d: %w", c.GID, err)
	}
	if err := syscall.Setresuid(int(c.UID), int(c.UID), int(c.UID)); err != nil {
		return fmt.Errorf("setresuid %d: %w", c.UID, err)
	}
	return nil
}

// dropCaps empties the ambient, effective, permitted and inheritable sets
// of every thread, whatever the uid: root without capabilities is an
// ordinary user for the kernel.
func dropCaps() error {
	// EINVAL: a kernel before 4.3, which has no ambient set.
	if err := allThreads("PR_CAP_AMBIENT_CLEAR_ALL", unix.SYS_PRCTL, unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0); err != nil && !errors.Is(err, unix.EINVAL) {
		return err
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData // version 3: 64 capabilities in two words
	return allThreads("capset", unix.SYS_CAPSET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&data[0])), 0)
}

// setNoNewPrivs sets no_new_privs on every thread: no exec can grant
// privileges again, and the filter may be installed without
// CAP_SYS_ADMIN (seccomp(2)).
func setNoNewPrivs() error {
	return allThreads("PR_SET_NO_NEW_PRIVS", unix.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1, 0)
}

// noDumps makes the process undumpable (PR_SET_DUMPABLE 0, prctl(2)): no
// core dump, and /proc/PID/mem, maps and ptrace are closed to other
// processes of the same user. It is per process (mm), and is set after
// setIDs, which resets it. RLIMIT_CORE 0 stops a dump even if something
// made the process dumpable again.
func noDumps(r *Report) error {
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return fmt.Errorf("PR_SET_DUMPABLE: %w", err)
	}
	d, err := unix.PrctlRetInt(unix.PR_GET_DUMPABLE, 0, 0, 0, 0)
	r.Dumpable = err != nil || d != 0
	return setLimit(unix.RLIMIT_CORE, 0, "RLIMIT_CORE")
}

// setLimit sets resource limit res to v, soft and hard alike so that
// nothing raises it again (getrlimit(2)).
func setLimit(res int, v uint64, name string) error {
	if err := unix.Setrlimit(res, &unix.Rlimit{Cur: v, Max: v}); err != nil {
		return fmt.Errorf("setrlimit %s %d: %w", name, v, err)
	}
	return nil
}

// setLimits sets RLIMIT_NOFILE to r.NoFileLimit and RLIMIT_FSIZE to
// maxFile, and records the outcome in r.
func setLimits(r *Report, maxFile uint64) error {
	if err := setLimit(unix.RLIMIT_NOFILE, r.NoFileLimit, "RLIMIT_NOFILE"); err != nil {
		return err
	}
	// The limit is on every regular file the process writes, stdout and
	// stderr included: when one of them is a file, the limit would cut
	// the console output short, so it stays as it is.
	for _, fd := range []int{1, 2} {
		var st unix.Stat_t
		if unix.Fstat(fd, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFREG {
			r.Notes = append(r.Notes, fmt.Sprintf("RLIMIT_FSIZE left as it was: descriptor %d is a regular file", fd))
			return nil
		}
	}
	// A writable share's files grow as large as the guest makes them,
	// within the host directory's own quota: a limit here would kill the
	// VMM with SIGXFSZ on the guest's first large write.
	if maxFile == NoFileSizeLimit {
		r.Notes = append(r.Notes, "RLIMIT_FSIZE left as it was: a writable share")
		return nil
	}
	if err := setLimit(unix.RLIMIT_FSIZE, maxFile, "RLIMIT_FSIZE"); err != nil {
		return err
	}
	r.FSizeLimit = int64(maxFile)
	return nil
}
