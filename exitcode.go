package microvm

// Exit codes of the microvm command. They are part of the API through
// Result.ExitCode, so that a Go program and a shell script see the same
// numbers; the engine itself knows none of them.
const (
	CodeOK       = 0   // the guest reset or powered off
	CodeInternal = 1   // a VMM or KVM failure
	CodeUsage    = 2   // bad input: a flag, a Config field, a file
	CodeCrash    = 3   // the guest crashed: triple fault, kernel panic
	CodeTimeout  = 124 // Config.Timeout expired (as timeout(1))
	CodeCanceled = 130 // Start's context was canceled (as SIGINT)
)

// exitCode maps how a guest ended to its exit code.
func exitCode(r ExitReason) int {
	switch r {
	case ExitReset, ExitPoweroff, ExitSnapshot:
		return CodeOK
	case ExitCrash:
		return CodeCrash
	case ExitTimeout:
		return CodeTimeout
	case ExitCanceled:
		return CodeCanceled
	}
	return CodeInternal
}
