package nested

import (
	"bytes"
	"strings"
	"testing"
)

func TestParseExit(t *testing.T) {
	for _, tc := range []struct {
		name, out string
		code      int
		ok        bool
	}{
		{"none", "booting\n@@L1 start\n", 0, false},
		{"empty", "", 0, false},
		{"zero", "@@L1 start\n\r\n@@L1-EXIT 0\r\n", 0, true},
		{"nonzero", "x\n@@L1-EXIT 3\r\n[    2.1] reboot: Restarting system\n", 3, true},
		{"timeout", "@@L1-EXIT 124\n", 124, true},
		{"mid-line", "[ 1.0] some kernel noise@@L1-EXIT 7\n", 7, true},
		{"no newline at end", "@@L1-EXIT 42", 42, true},
		{"last wins", "payload said @@L1-EXIT 9\n@@L1-EXIT 1\n", 1, true},
		{"negative", "@@L1-EXIT -1\n", -1, true},
		{"no number", "@@L1-EXIT \n", 0, false},
		{"wrong marker", "@@L1-EXITED 3\n@@L1 EXIT 3\n", 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, ok := ParseExit([]byte(tc.out))
			if code != tc.code || ok != tc.ok {
				t.Errorf("ParseExit(%q) = %d, %v; want %d, %v", tc.out, code, ok, tc.code, tc.ok)
			}
		})
	}
}

func TestConsoleMarkers(t *testing.T) {
	var live bytes.Buffer
	c := &console{out: &live, exited: make(chan struct{})}
	for _, chunk := range []string{"boot\r\n@@L1 st", "art\r\nhello\r\n@@L1-EX", "IT 5\r\n"} {
		c.Write([]byte(chunk))
	}
	if !c.started {
		t.Error("start marker split over writes not seen")
	}
	select {
	case <-c.exited:
	default:
		t.Error("exit marker split over writes not seen")
	}
	if live.String() != string(c.bytes()) {
		t.Error("live console differs from the captured output")
	}
	if got := tail(c.bytes(), 2); strings.Join(got, "|") != "hello|@@L1-EXIT 5" {
		t.Errorf("tail = %q", got)
	}
}
