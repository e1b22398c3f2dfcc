package sandbox

import (
	"encoding/binary"
	"testing"

	seccomp "github.com/elastic/go-seccomp-bpf"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// testIoctls stand in for vmm.RunIoctls (this package cannot import the
// engine): KVM_RUN, KVM_IRQ_LINE, KVM_GET_REGS, KVM_GET_MP_STATE.
var testIoctls = []uint64{0xAE80, 0x4008AE61, 0x8090AE81, 0x8004AE98}

const (
	kvmRun     = 0xAE80
	auditArch  = 0xC000003E // AUDIT_ARCH_X86_64
	testPID    = 4242
	retAllow   = unix.SECCOMP_RET_ALLOW
	retKill    = unix.SECCOMP_RET_KILL_PROCESS
	retEPERM   = unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)
	retENOSYS  = unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS)
	maxKVMRuns = 10 // instructions to decide KVM_RUN
)

// run interprets prog as the kernel does (classic BPF over struct
// seccomp_data: nr, arch, ip, args[6], native byte order) and returns the
// action and how many instructions it took.
func run(t *testing.T, prog []bpf.RawInstruction, arch uint32, nr int, args ...uint64) (uint32, int) {
	t.Helper()
	var data [64]byte
	le := binary.LittleEndian
	le.PutUint32(data[0:], uint32(nr))
	le.PutUint32(data[4:], arch)
	for i, a := range args {
		le.PutUint64(data[16+8*i:], a)
	}
	var acc uint32
	for pc, steps := 0, 1; pc < len(prog); pc, steps = pc+1, steps+1 {
		in := prog[pc]
		switch in.Op {
		case 0x20: // BPF_LD|BPF_W|BPF_ABS
			acc = le.Uint32(data[in.K:])
		case 0x06: // BPF_RET|BPF_K
			return in.K, steps
		case 0x05: // BPF_JMP|BPF_JA
			pc += int(in.K)
		case 0x15, 0x25, 0x35, 0x45: // JEQ, JGT, JGE, JSET with K
			var c bool
			switch in.Op {
			case 0x15:
				c = acc == in.K
			case 0x25:
				c = acc > in.K
			case 0x35:
				c = acc >= in.K
			case 0x45:
				c = acc&in.K != 0
			}
			if c {
				pc += int(in.Jt)
			} else {
				pc += int(in.Jf)
			}
		default:
			t.Fatalf("instruction %d: opcode %#x not interpreted", pc, in.Op)
		}
	}
	t.Fatal("program fell off its end")
	return 0, 0
}

func assembleFor(t *testing.T, n Needs, m Mode) []bpf.RawInstruction {
	t.Helper()
	raw, _, err := n.assemble(m, testPID)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// TestFilterOrder: KVM_RUN, the call of every guest exit, is decided
// first, within maxKVMRuns instructions, whatever else the list holds.
func TestFilterOrder(t *testing.T) {
	prog := assembleFor(t, Needs{Ioctls: testIoctls, WritableDisks: true}, Kill)
	act, steps := run(t, prog, auditArch, unix.SYS_IOCTL, 11, kvmRun)
	if act != retAllow {
		t.Fatalf("KVM_RUN: action %#x, want allow", act)
	}
	t.Logf("KVM_RUN allowed after %d of %d instructions", steps, len(prog))
	if steps > maxKVMRuns {
		t.Errorf("KVM_RUN takes %d instructions, want at most %d", steps, maxKVMRuns)
	}
	if _, futex := run(t, prog, auditArch, unix.SYS_FUTEX); futex > 40 {
		t.Errorf("futex takes %d instructions: the hot group is not early", futex)
	}
}

// TestFilterDecisions runs the assembled filter on the calls that matter:
// what the VMM and the Go runtime need passes, and what an attacker in the
// VMM would want does not, in both deny modes.
func TestFilterDecisions(t *testing.T) {
	pid := uint64(testPID)
	allowed := []struct {
		name string
		nr   int
		args []uint64
	}{
		{"KVM_RUN", unix.SYS_IOCTL, []uint64{11, kvmRun}},
		{"KVM_IRQ_LINE", unix.SYS_IOCTL, []uint64{12, 0x4008AE61}},
		{"TCSETS", unix.SYS_IOCTL, []uint64{0, unix.TCSETS}},
		{"futex", unix.SYS_FUTEX, nil},
		{"read", unix.SYS_READ, nil},
		{"thread clone", unix.SYS_CLONE, []uint64{goCloneFlags | unix.CLONE_SETTLS}},
		{"mmap rw", unix.SYS_MMAP, []uint64{0, 4096, unix.PROT_READ | unix.PROT_WRITE}},
		{"madvise dontneed", unix.SYS_MADVISE, []uint64{0, 4096, unix.MADV_DONTNEED}},
		{"tgkill self", unix.SYS_TGKILL, []uint64{pid, 7, uint64(unix.SIGURG)}},
		{"prctl PR_SET_VMA", unix.SYS_PRCTL, []uint64{unix.PR_SET_VMA}},
		{"fcntl F_GETFL", unix.SYS_FCNTL, []uint64{3, unix.F_GETFL}},
		{"fdatasync (writable disk)", unix.SYS_FDATASYNC, nil},
		{"pwrite64 (writable disk)", unix.SYS_PWRITE64, nil},
	}
	denied := []struct {
		name string
		nr   int
		args []uint64
	}{
		{"execve", unix.SYS_EXECVE, nil},
		{"execveat", unix.SYS_EXECVEAT, nil},
		{"openat", unix.SYS_OPENAT, nil},
		{"open", unix.SYS_OPEN, nil},
		{"openat2", unix.SYS_OPENAT2, nil},
		{"socket", unix.SYS_SOCKET, []uint64{unix.AF_INET}},
		{"ptrace", unix.SYS_PTRACE, nil},
		{"mount", unix.SYS_MOUNT, nil},
		{"fork", unix.SYS_FORK, nil},
		{"vfork", unix.SYS_VFORK, nil},
		{"clone3", unix.SYS_CLONE3, nil},
		{"clone as fork (os/exec)", unix.SYS_CLONE, []uint64{unix.CLONE_VFORK | unix.CLONE_VM | uint64(unix.SIGCHLD)}},
		{"clone with a new user namespace", unix.SYS_CLONE, []uint64{goCloneFlags | unix.CLONE_SETTLS | unix.CLONE_NEWUSER}},
		{"arch_prctl", unix.SYS_ARCH_PRCTL, []uint64{0x1002}},
		{"ioctl TIOCSTI", unix.SYS_IOCTL, []uint64{0, unix.TIOCSTI}},
		{"ioctl KVM_SET_REGS", unix.SYS_IOCTL, []uint64{11, 0x4090AE82}},
		{"mmap exec", unix.SYS_MMAP, []uint64{0, 4096, unix.PROT_READ | unix.PROT_EXEC}},
		{"mprotect exec", unix.SYS_MPROTECT, []uint64{0, 4096, unix.PROT_EXEC}},
		{"madvise MADV_DODUMP", unix.SYS_MADVISE, []uint64{0, 4096, unix.MADV_DODUMP}},
		{"prctl PR_SET_DUMPABLE", unix.SYS_PRCTL, []uint64{unix.PR_SET_DUMPABLE, 1}},
		{"kill another process", unix.SYS_KILL, []uint64{1, 9}},
		{"tgkill another process", unix.SYS_TGKILL, []uint64{1, 1, 9}},
		{"fcntl F_DUPFD", unix.SYS_FCNTL, []uint64{3, unix.F_DUPFD}},
		{"setrlimit", unix.SYS_SETRLIMIT, nil},
		{"prlimit64", unix.SYS_PRLIMIT64, nil},
		{"setuid", unix.SYS_SETUID, nil},
		{"chroot", unix.SYS_CHROOT, nil},
		{"connect", unix.SYS_CONNECT, nil},
		{"bpf", unix.SYS_BPF, nil},
		{"newfstatat", unix.SYS_NEWFSTATAT, nil},
	}
	for _, m := range []Mode{Kill, Log} {
		deny := uint32(retKill)
		if m == Log {
			deny = retEPERM
		}
		prog := assembleFor(t, Needs{Ioctls: testIoctls, WritableDisks: true}, m)
		for _, c := range allowed {
			if act, _ := run(t, prog, auditArch, c.nr, c.args...); act != retAllow {
				t.Errorf("%s: %s: action %#x, want allow", m, c.name, act)
			}
		}
		for _, c := range denied {
			if act, _ := run(t, prog, auditArch, c.nr, c.args...); act != deny {
				t.Errorf("%s: %s: action %#x, want %#x", m, c.name, act, deny)
			}
		}
		// Another ABI: i386 through int 0x80 (another arch), x32 (the
		// same arch, numbers with bit 30).
		if act, _ := run(t, prog, 0x40000003, unix.SYS_FUTEX); act != deny {
			t.Errorf("%s: i386 call: action %#x, want %#x", m, act, deny)
		}
		if act, _ := run(t, prog, auditArch, 0x40000000|unix.SYS_READ); act != retENOSYS {
			t.Errorf("%s: x32 call: action %#x, want ENOSYS", m, act)
		}
	}
	// A machine that saves a snapshot may write, size, sync, rename and
	// unlink (its files are open already), never open.
	prog := assembleFor(t, Needs{Ioctls: testIoctls, Snapshot: true}, Kill)
	for _, nr := range []int{unix.SYS_PWRITE64, unix.SYS_FTRUNCATE, unix.SYS_LSEEK, unix.SYS_FSYNC, unix.SYS_NEWFSTATAT, unix.SYS_RENAMEAT2, unix.SYS_UNLINKAT} {
		if act, _ := run(t, prog, auditArch, nr); act != retAllow {
			t.Errorf("saving a snapshot: syscall %d: action %#x, want allow", nr, act)
		}
	}
	for _, nr := range []int{unix.SYS_OPENAT, unix.SYS_OPENAT2, unix.SYS_MKDIRAT, unix.SYS_RENAME, unix.SYS_UNLINK, unix.SYS_FDATASYNC} {
		if act, _ := run(t, prog, auditArch, nr); act != retKill {
			t.Errorf("saving a snapshot: syscall %d: action %#x, want kill", nr, act)
		}
	}
	// Without a writable disk, the disk's writes are denied too.
	prog = assembleFor(t, Needs{Ioctls: testIoctls}, Kill)
	for _, nr := range []int{unix.SYS_PWRITE64, unix.SYS_FDATASYNC} {
		if act, _ := run(t, prog, auditArch, nr); act != retKill {
			t.Errorf("no writable disk: syscall %d: action %#x, want kill", nr, act)
		}
	}
}

// TestLibraryNeedsReload is the evidence for reloadNr: without it,
// go-seccomp-bpf's program compares mmap's prot argument (PROT_READ |
// PROT_EXEC, 5) as a syscall number, finds fstat (5) and allows it. When
// this fails, the library has been fixed and reloadNr can go.
func TestLibraryNeedsReload(t *testing.T) {
	p := Needs{Ioctls: testIoctls}.policy(seccomp.ActionKillProcess, testPID)
	insts, err := p.Assemble()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := bpf.Assemble(insts)
	if err != nil {
		t.Fatal(err)
	}
	if act, _ := run(t, raw, auditArch, unix.SYS_MMAP, 0, 4096, unix.PROT_READ|unix.PROT_EXEC); act != retAllow {
		t.Errorf("unrepaired program: mmap PROT_EXEC gets %#x: the library no longer has the bug reloadNr repairs", act)
	}
}

// TestFilterShares: the 9p backend's calls pass only when the machine has
// shares, its modifying calls only when a share is writable, and exec,
// sockets and ptrace stay denied with shares too.
func TestFilterShares(t *testing.T) {
	const allow, deny = "allow", "deny"
	for _, c := range []struct {
		name   string
		needs  Needs
		nr     int
		args   []uint64
		expect string
	}{
		{"openat2, no share", Needs{}, unix.SYS_OPENAT2, nil, deny},
		{"openat2, read-only share", Needs{Shares: true}, unix.SYS_OPENAT2, nil, allow},
		{"openat (reopen through /proc/self/fd)", Needs{Shares: true}, unix.SYS_OPENAT, nil, allow},
		{"fgetxattr", Needs{Shares: true}, unix.SYS_FGETXATTR, nil, allow},
		{"getdents64", Needs{Shares: true}, unix.SYS_GETDENTS64, nil, allow},
		{"fcntl F_DUPFD_CLOEXEC", Needs{Shares: true}, unix.SYS_FCNTL, []uint64{3, unix.F_DUPFD_CLOEXEC}, allow},
		{"fcntl F_DUPFD, share", Needs{Shares: true}, unix.SYS_FCNTL, []uint64{3, unix.F_DUPFD}, deny},
		{"unlinkat, read-only share", Needs{Shares: true}, unix.SYS_UNLINKAT, nil, deny},
		{"mkdirat, read-only share", Needs{Shares: true}, unix.SYS_MKDIRAT, nil, deny},
		{"fsetxattr, read-only share", Needs{Shares: true}, unix.SYS_FSETXATTR, nil, deny},
		{"unlinkat, writable share", Needs{Shares: true, WritableShares: true}, unix.SYS_UNLINKAT, nil, allow},
		{"renameat, writable share", Needs{Shares: true, WritableShares: true}, unix.SYS_RENAMEAT, nil, allow},
		{"execve, writable share", Needs{Shares: true, WritableShares: true}, unix.SYS_EXECVE, nil, deny},
		{"socket, writable share", Needs{Shares: true, WritableShares: true}, unix.SYS_SOCKET, []uint64{unix.AF_INET}, deny},
		{"ptrace, writable share", Needs{Shares: true, WritableShares: true}, unix.SYS_PTRACE, nil, deny},
		{"chroot, writable share", Needs{Shares: true, WritableShares: true}, unix.SYS_CHROOT, nil, deny},
		// The same call in several groups: a disk, a share and a snapshot.
		{"pwrite64, every backend", Needs{Shares: true, WritableShares: true, WritableDisks: true, Snapshot: true}, unix.SYS_PWRITE64, nil, allow},
		{"execve, every backend", Needs{Shares: true, WritableShares: true, WritableDisks: true, Snapshot: true}, unix.SYS_EXECVE, nil, deny},
	} {
		c.needs.Ioctls = testIoctls
		prog := assembleFor(t, c.needs, Kill)
		act, _ := run(t, prog, auditArch, c.nr, c.args...)
		got := deny
		if act == retAllow {
			got = allow
		}
		if got != c.expect {
			t.Errorf("%s: action %#x (%s), want %s", c.name, act, got, c.expect)
		}
	}
}
