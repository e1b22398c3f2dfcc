package sandbox

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Support is what of the sandbox this host and caller can have, for
// `microvm check`.
type Support struct {
	// Seccomp: the kernel takes seccomp filters whose actions include
	// SECCOMP_RET_KILL_PROCESS and SECCOMP_RET_ERRNO (since Linux 4.14).
	Seccomp     bool   `json:"seccomp"`
	SeccompNote string `json:"seccomp_note"`
	// UserNamespaces: an unprivileged process may create a user
	// namespace (user_namespaces(7)). microvm does not need them; a jail
	// without root would.
	UserNamespaces     bool   `json:"user_namespaces"`
	UserNamespacesNote string `json:"user_namespaces_note"`
	// Jail: --jail (chroot) is possible for this caller: it needs root.
	Jail     bool   `json:"jail"`
	JailNote string `json:"jail_note"`
}

// Probe looks at what the sandbox can use here. It changes nothing.
func Probe() Support {
	var s Support
	s.Seccomp, s.SeccompNote = probeSeccomp()
	s.UserNamespaces, s.UserNamespacesNote = probeUserns()
	if os.Geteuid() == 0 {
		s.Jail, s.JailNote = true, "--jail DIR chroots the VMM into an empty directory (running as root)"
	} else {
		s.JailNote = fmt.Sprintf("--jail needs root (you are uid %d); --uid/--gid too", os.Geteuid())
	}
	return s
}

func probeSeccomp() (bool, string) {
	if Applied() {
		return true, "this process is sandboxed already"
	}
	for _, a := range []struct {
		action uint32
		name   string
	}{{unix.SECCOMP_RET_KILL_PROCESS, "SECCOMP_RET_KILL_PROCESS"}, {unix.SECCOMP_RET_ERRNO, "SECCOMP_RET_ERRNO"}} {
		action := a.action
		_, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_GET_ACTION_AVAIL, 0, uintptr(unsafe.Pointer(&action)))
		if errno != 0 {
			return false, fmt.Sprintf("seccomp(SECCOMP_GET_ACTION_AVAIL, %s): %v: guests can only run with --seccomp off (needs Linux 4.14 with CONFIG_SECCOMP_FILTER)", a.name, errno)
		}
	}
	return true, "seccomp filters with kill_process and errno actions (--seccomp kill|log)"
}

func probeUserns() (bool, string) {
	max, err := readInt("/proc/sys/user/max_user_namespaces")
	switch {
	case err != nil:
		return false, "no /proc/sys/user/max_user_namespaces: the kernel has no user namespaces"
	case max == 0:
		return false, "disabled: user.max_user_namespaces is 0"
	}
	// Distribution switches that keep them from unprivileged users.
	if v, err := readInt("/proc/sys/kernel/unprivileged_userns_clone"); err == nil && v == 0 {
		return false, "root only: kernel.unprivileged_userns_clone is 0"
	}
	if v, err := readInt("/proc/sys/kernel/apparmor_restrict_unprivileged_userns"); err == nil && v != 0 {
		return false, "root only: kernel.apparmor_restrict_unprivileged_userns is 1"
	}
	return true, fmt.Sprintf("available to unprivileged users (user.max_user_namespaces %d)", max)
}

func readInt(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}
