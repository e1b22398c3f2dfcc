package nested

import (
	"runtime"
	"testing"
)

func TestMeasureTSC(t *testing.T) {
	if runtime.GOARCH != "amd64" {
		t.Skip("not x86-64")
	}
	khz := measureTSCkHz()
	t.Logf("host TSC %d kHz", khz)
	if khz == 0 {
		t.Fatal("no plausible TSC rate measured")
	}
	if again := measureTSCkHz(); again < khz*999/1000 || again > khz*1001/1000 {
		t.Errorf("two measurements differ by more than 0.1%%: %d and %d kHz", khz, again)
	}
}
