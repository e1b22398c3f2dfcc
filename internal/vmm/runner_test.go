package vmm

import (
	"testing"

	"golang.org/x/sys/unix"
)

// TestKVMRunMode: the first KVM_RUNs and those after an EINTR use the
// syscall form; rawAfter plain exits in a row switch to the raw form, and
// the next EINTR switches back.
func TestKVMRunMode(t *testing.T) {
	eintr, exit := unix.EINTR, error(nil)
	steps := []struct {
		result  error
		rawNext bool // the call after this result
	}{
		{exit, false}, {exit, false}, {exit, false}, {exit, true}, // rawAfter = 4
		{exit, true},
		{eintr, false}, // preempted: the guest ran without exiting
		{exit, false}, {unix.EAGAIN, false}, {exit, false}, {exit, true},
		{eintr, false}, {eintr, false},
	}
	var k kvmRunMode
	if k.raw() {
		t.Fatal("the first KVM_RUN is raw")
	}
	for i, s := range steps {
		k.ended(s.result)
		if k.raw() != s.rawNext {
			t.Fatalf("after step %d (%v): raw %v, want %v", i, s.result, k.raw(), s.rawNext)
		}
	}
}
