package sandbox

import (
	"fmt"
	"os"
	"unsafe"

	seccomp "github.com/elastic/go-seccomp-bpf"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// The seccomp-BPF allowlist (seccomp(2),
// Documentation/userspace-api/seccomp_filter.rst): every call a running
// guest's VMM makes, and nothing else. The filter is a linear BPF program
// evaluated on every system call of every thread, so it is laid out by how
// often a call is made: KVM_RUN, the one ioctl of every guest exit, is
// decided within the first ten instructions (TestFilterOrder), then the
// other run-time ioctls, then the calls of the device and runtime hot paths,
// then the rest. What is not listed gets the deny action.

// Needs says what the machine being sandboxed will ask of the host once it
// runs, beyond what every machine needs. Each host backend whose calls not
// every machine makes has a field here and its group in (Needs).groups,
// only when the machine has such a device.
type Needs struct {
	// Ioctls are the ioctl request numbers the running machine makes, the
	// hottest first (KVM_RUN); the engine knows them (vmm.RunIoctls).
	Ioctls []uint64
	// WritableDisks: virtio-blk writes and flushes its images.
	WritableDisks bool
	// MaxFileSize is the largest writable disk in bytes: RLIMIT_FSIZE; or
	// NoFileSizeLimit, with a writable share. A machine that saves a
	// snapshot counts its memory file too.
	MaxFileSize uint64
	// Shares: the virtio-9p backend (devices/virtio/p9fs) serves host
	// directories; WritableShares: at least one of them is not read-only.
	Shares, WritableShares bool
	// ExtraFiles are descriptors the backends may open once the guest
	// runs (a 9p share holds one per file the guest has walked to), on
	// top of RLIMIT_NOFILE's room for those open at Apply.
	ExtraFiles uint64
	// Snapshot: the machine saves a snapshot while it runs (a snapshot at
	// agent ready). Its files are open before the sandbox (vmm's
	// prepareSnapshot); writing them needs ftruncate, pwrite64, lseek and
	// fsync, and putting the snapshot in place needs newfstatat,
	// renameat2 and unlinkat on names relative to the snapshot's parent
	// directory. seccomp sees no path, so it cannot hold those three to
	// that directory: that is what a process that saves a snapshot is
	// allowed beyond the rest, and one that restores is not.
	Snapshot bool
}

// NoFileSizeLimit as Needs.MaxFileSize leaves RLIMIT_FSIZE as it is.
const NoFileSizeLimit = ^uint64(0)

// Terminal ioctls by number (ioctl_tty(2)): the console's raw mode and its
// restore (TCGETS, TCSETS*), and the window size. Never TIOCSTI, which
// would let a compromised VMM type commands into the user's shell.
var terminalIoctls = []uint64{unix.TCGETS, unix.TCSETS, unix.TCSETSW, unix.TCSETSF, unix.TIOCGWINSZ}

// goCloneFlags are the flags of the only clone(2) the Go runtime makes, a
// new thread (runtime/os_linux.go, cloneFlags), to which runtime·clone
// adds CLONE_SETTLS for the thread's TLS (sys_linux_amd64.s). A fork (no
// CLONE_THREAD, as in os/exec), vfork, fork and clone3 (whose flags BPF
// cannot read) are denied.
const goCloneFlags = unix.CLONE_VM | unix.CLONE_FS | unix.CLONE_FILES | unix.CLONE_SIGHAND | unix.CLONE_SYSVSEM | unix.CLONE_THREAD

// groups is the allowlist in evaluation order.
func (n Needs) groups(pid int) []seccomp.SyscallGroup {
	allow := func(names ...string) seccomp.SyscallGroup {
		return seccomp.SyscallGroup{Names: names, Action: seccomp.ActionAllow}
	}
	when := func(names ...seccomp.NameWithConditions) seccomp.SyscallGroup {
		return seccomp.SyscallGroup{NamesWithCondtions: names, Action: seccomp.ActionAllow}
	}
	// 1. ioctl by request number: the machine's own, KVM_RUN first.
	var ioctls []seccomp.NameWithConditions
	for _, req := range append(append([]uint64(nil), n.Ioctls...), terminalIoctls...) {
		ioctls = append(ioctls, arg("ioctl", 1, seccomp.Equal, req))
	}
	g := []seccomp.SyscallGroup{
		when(ioctls...),
		// 2. The hot paths: device goroutines and the runtime's scheduler
		// (futex, the netpoller, sysmon's sleeps, preemption signals).
		allow("futex", "read", "write", "pread64", "epoll_pwait", "nanosleep",
			"sched_yield", "getpid", "gettid", "clock_gettime", "rt_sigreturn"),
		when(arg("tgkill", 0, seccomp.Equal, uint64(pid))),
		// 3. The rest of the Go runtime: memory (never executable, so a
		// compromised VMM cannot map new code), threads, signals, timers
		// (profiling), the netpoller's setup, and exit.
		when(
			arg("mmap", 2, seccomp.BitsNotSet, unix.PROT_EXEC),
			arg("mprotect", 2, seccomp.BitsNotSet, unix.PROT_EXEC),
			// MADV_DODUMP would put guest RAM back into core dumps.
			arg("madvise", 2, seccomp.NotEqual, unix.MADV_DODUMP),
			arg("clone", 0, seccomp.Equal, goCloneFlags|unix.CLONE_SETTLS),
			arg("clone", 0, seccomp.Equal, goCloneFlags),
			// Since Go 1.25 the runtime names its anonymous mappings
			// (runtime/set_vma_name_linux.go). No other prctl: dumpable
			// and the capability calls stay as the sandbox set them.
			arg("prctl", 0, seccomp.Equal, unix.PR_SET_VMA),
			// Re-raising a fatal signal at itself (runtime.raiseproc).
			arg("kill", 0, seccomp.Equal, uint64(pid)),
			// The os package's descriptor flags; not F_DUPFD.
			arg("fcntl", 1, seccomp.Equal, unix.F_GETFD),
			arg("fcntl", 1, seccomp.Equal, unix.F_SETFD),
			arg("fcntl", 1, seccomp.Equal, unix.F_GETFL),
			arg("fcntl", 1, seccomp.Equal, unix.F_SETFL),
		),
		allow("munmap", "rt_sigaction", "rt_sigprocmask", "sigaltstack", "restart_syscall",
			"sched_getaffinity", "epoll_ctl", "epoll_create1", "eventfd2", "close", "fstat",
			"getrandom", "mincore", "getrusage", "timer_create", "timer_settime", "timer_delete",
			"setitimer", "exit", "exit_group"),
	}
	// 4. Optional backends, only when the machine has them.
	if n.WritableDisks {
		g = append(g, allow("pwrite64", "fdatasync"))
	}
	// The 9p backend walks and opens names relative to the share's
	// descriptors (openat2 with RESOLVE_BENEATH), and reopens its own
	// descriptors through /proc/self/fd with openat. seccomp cannot read
	// a path or openat2's flags, and an absolute name ignores the
	// directory descriptor, so with shares the filter no longer forbids
	// opens by path: the backend's RESOLVE_BENEATH confines the guest's
	// names, and --jail takes the rest of the host's tree out of view.
	if n.Shares {
		g = append(g,
			allow("openat", "openat2", "newfstatat", "fstatfs", "getdents64", "readlinkat",
				"lseek", "fsync", "fgetxattr", "flistxattr"),
			when(arg("fcntl", 1, seccomp.Equal, unix.F_DUPFD_CLOEXEC)))
	}
	if n.WritableShares {
		// geteuid: a new file's owner is set only as root (p9fs chown).
		g = append(g, allow("geteuid", "pwrite64", "fdatasync", "ftruncate", "mkdirat", "mknodat", "unlinkat",
			"renameat", "renameat2", "linkat", "symlinkat", "fchmod", "fchmodat", "fchownat",
			"utimensat", "fsetxattr", "fremovexattr"))
	}
	if n.Snapshot {
		g = append(g, allow("pwrite64", "ftruncate", "lseek", "fsync", "newfstatat", "renameat2", "unlinkat"))
	}
	return g
}

func arg(name string, n uint32, op seccomp.Operation, v uint64) seccomp.NameWithConditions {
	return seccomp.NameWithConditions{Name: name, Conditions: seccomp.ArgumentConditions{{Argument: n, Operation: op, Value: v}}}
}

// policy is the allowlist for process pid with deny as the action for
// everything else.
func (n Needs) policy(deny seccomp.Action, pid int) seccomp.Policy {
	return seccomp.Policy{DefaultAction: deny, Syscalls: n.groups(pid)}
}

// denyAction is what a call outside the allowlist gets in mode m: the
// whole process dies of SIGSYS (SECCOMP_RET_KILL_PROCESS), or the call
// fails with EPERM and the kernel logs it (SECCOMP_FILTER_FLAG_LOG).
func denyAction(m Mode) (seccomp.Action, uintptr) {
	if m == Log {
		return seccomp.ActionErrno, unix.SECCOMP_FILTER_FLAG_TSYNC | unix.SECCOMP_FILTER_FLAG_LOG
	}
	return seccomp.ActionKillProcess, unix.SECCOMP_FILTER_FLAG_TSYNC
}

// assemble compiles the allowlist of process pid for mode m.
func (n Needs) assemble(m Mode, pid int) ([]bpf.RawInstruction, uintptr, error) {
	deny, flags := denyAction(m)
	p := n.policy(deny, pid)
	insts, err := p.Assemble()
	if err == nil {
		insts, err = reloadNr(insts)
	}
	if err != nil {
		return nil, 0, err
	}
	raw, err := bpf.Assemble(insts)
	return raw, flags, err
}

// installFilter installs the allowlist on every thread of the process
// (SECCOMP_FILTER_FLAG_TSYNC); threads created later inherit it. The
// calling thread must have no_new_privs set (seccomp(2)). It returns the
// program's length in instructions.
//
// The library's LoadFilter is not used: with TSYNC, seccomp(2) reports a
// thread it could not synchronise as a positive return value with no
// errno, which LoadFilter ignores.
func installFilter(n Needs, m Mode) (int, error) {
	raw, flags, err := n.assemble(m, os.Getpid())
	if err != nil {
		return 0, fmt.Errorf("assemble the seccomp filter: %w", err)
	}
	prog := make([]unix.SockFilter, len(raw))
	for i, r := range raw {
		prog[i] = unix.SockFilter{Code: r.Op, Jt: r.Jt, Jf: r.Jf, K: r.K}
	}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	tid, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, flags, uintptr(unsafe.Pointer(&fprog)))
	switch {
	case errno != 0:
		return 0, fmt.Errorf("seccomp(SECCOMP_SET_MODE_FILTER): %w", errno)
	case tid != 0:
		return 0, fmt.Errorf("seccomp: thread %d could not take the filter (TSYNC)", tid)
	}
	return len(prog), nil
}
