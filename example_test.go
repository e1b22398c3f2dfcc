package microvm_test

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/microvm-dev/microvm"
)

// Boot the default guest (built by `make kernel initrd`) and run a command
// in it. The example is compiled but not run by `go test` (it needs a
// working /dev/kvm); tests/api_test.go runs the same calls for real.
func Example() {
	cache := os.Getenv("HOME") + "/.cache/microvm"
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	vm, err := microvm.Start(ctx, microvm.Config{
		Kernel:  cache + "/bzImage",
		Initrd:  cache + "/initrd.cpio", // u-root with the guest agent
		Memory:  128 << 20,
		Command: []string{"sh", "-c", "uname -r; exit 3"},
		Stdout:  os.Stdout, // only the command's output
	})
	if err != nil {
		// An *microvm.InputError names the bad field or file; a missing
		// /dev/kvm says how to fix it (see `microvm check`).
		fmt.Fprintln(os.Stderr, err)
		return
	}
	res, err := vm.Wait()
	if err != nil {
		fmt.Fprintln(os.Stderr, "VMM failure:", err)
		return
	}
	fmt.Println("exit status:", res.ExitCode) // 3
	for _, m := range res.Timeline {
		fmt.Printf("%-20s %v\n", m.Phase, m.At)
	}
}
