package procstat

import "testing"

func TestParse(t *testing.T) {
	status := "Name:\tmicrovm\nVmHWM:\t   6160 kB\nVmRSS:\t   5884 kB\nThreads:\t4\n"
	tests := []struct {
		name string
		want uint64
		ok   bool
	}{
		{"VmHWM", 6160 << 10, true},
		{"VmRSS", 5884 << 10, true},
		{"VmSwap", 0, false},
		{"Threads", 4 << 10, true}, // no unit, still a number
	}
	for _, tt := range tests {
		if got, ok := parse(status, tt.name); got != tt.want || ok != tt.ok {
			t.Errorf("%s: %d, %v; want %d, %v", tt.name, got, ok, tt.want, tt.ok)
		}
	}
	if v, ok := Bytes("VmRSS"); !ok || v == 0 {
		t.Errorf("own VmRSS: %d, %v", v, ok)
	}
}

// TestKeep: the kept file gives fresh figures on every read, as a new
// open would.
func TestKeep(t *testing.T) {
	Keep()
	before, ok := Bytes("VmHWM")
	if !ok || kept == nil {
		t.Fatalf("VmHWM through the kept file: %d, %v (kept %v)", before, ok, kept)
	}
	grow := make([]byte, 64<<20)
	for i := range grow {
		grow[i] = 1
	}
	after, _ := Bytes("VmHWM")
	if after < before+32<<20 {
		t.Errorf("VmHWM %d after touching 64 MiB, was %d: the kept file gives stale text", after, before)
	}
	_ = grow[len(grow)-1]
}
