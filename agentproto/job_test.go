package agentproto

import (
	"reflect"
	"strings"
	"testing"
)

func TestJobRoundTrip(t *testing.T) {
	for _, j := range []Job{
		{Argv: []string{"true"}},
		{Argv: []string{"sh", "-c", "ls"}, Mounts: []Mount{{Tag: "microvm0", Path: "/src"}, {Tag: "microvm1", Path: "/data", RO: true}}, Dir: "/src/sub"},
		{Argv: []string{"uname", "-r"}, Root: &Root{Tag: "microvm-root"}},
		{Argv: []string{"x"}, Root: &Root{Tag: "r", RW: true}, Mounts: []Mount{{Tag: "m", Path: "/m"}}},
	} {
		enc := EncodeJob(j)
		if strings.ContainsAny(enc, " \"=") {
			t.Errorf("%+v encodes to %q: not one token", j, enc)
		}
		got, err := DecodeJob(enc)
		if err != nil || !reflect.DeepEqual(got, j) {
			t.Errorf("round trip of %+v: %+v, %v", j, got, err)
		}
		// Over the channel too.
		m, err := ParseMsg(EncodeMsg(CmdMsg(j)))
		if err != nil || !reflect.DeepEqual(m.Job(), j) {
			t.Errorf("channel round trip of %+v: %+v, %v", j, m.Job(), err)
		}
	}
	// A plain command stays the array older agents read.
	if EncodeJob(Job{Argv: []string{"true"}}) != EncodeCmd([]string{"true"}) {
		t.Error("a plain job does not encode as EncodeCmd")
	}
}

func TestJobRejects(t *testing.T) {
	for _, j := range []Job{
		{Argv: []string{"x"}, Mounts: []Mount{{Tag: "", Path: "/a"}}},
		{Argv: []string{"x"}, Mounts: []Mount{{Tag: "t", Path: "rel"}}},
		{Argv: []string{"x"}, Mounts: []Mount{{Tag: "t", Path: "/"}}},
		{Argv: []string{"x"}, Mounts: []Mount{{Tag: "t", Path: "/a/../b"}}},
		{Argv: []string{"x"}, Root: &Root{}},
		{Argv: []string{"x"}, Dir: "rel"},
	} {
		if _, err := DecodeJob(EncodeJob(j)); err == nil {
			t.Errorf("%+v decoded", j)
		}
		if _, err := ParseMsg(EncodeMsg(CmdMsg(j))); err == nil {
			t.Errorf("%+v parsed as a message", j)
		}
	}
	if _, err := DecodeJob("!!!"); err == nil {
		t.Error("garbage decoded")
	}
}
