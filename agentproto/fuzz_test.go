package agentproto

import (
	"bytes"
	"testing"
)

// FuzzParseMsg: any line from the guest parses to a valid message or an
// error; a valid message survives an encode/parse round trip.
func FuzzParseMsg(f *testing.F) {
	for _, s := range []string{
		`{"t":"ready"}`, `{"t":"cmd","argv":["sh","-c","exit 7"]}`, `{"t":"milestone","code":2}`,
		`{"t":"exit","status":7}`, `{"t":"exit","status":-1}`, `{"t":"cmd","argv":[""]}`, `{`, "",
		`{"t":"cmd","argv":["true"],"seed":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","time_ns":1733000000000000000}`,
		`{"t":"cmd","seed":"AA==","time_ns":-5}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseMsg(b)
		if err != nil {
			return
		}
		m2, err := ParseMsg(EncodeMsg(m))
		if err != nil || m2.T != m.T || m2.Status != m.Status || m2.Code != m.Code || len(m2.Argv) != len(m.Argv) ||
			!bytes.Equal(m2.Seed, m.Seed) || m2.TimeNS != m.TimeNS {
			t.Fatalf("round trip of %+v: %+v, %v", m, m2, err)
		}
	})
}

// FuzzLineSplitter: lines come out exactly as fed, in any chunking, and
// none is longer than MaxMsgLen.
func FuzzLineSplitter(f *testing.F) {
	f.Add([]byte("a\nbb\n\nccc"), uint8(1))
	f.Add([]byte("{\"t\":\"ready\"}\n"), uint8(3))
	f.Fuzz(func(t *testing.T, b []byte, chunk uint8) {
		var s LineSplitter
		var got [][]byte
		for rest := b; len(rest) > 0; {
			n := min(int(chunk)+1, len(rest))
			s.Feed(rest[:n], func(l []byte) { got = append(got, append([]byte(nil), l...)) }, func() { t.Fatal("short input reported too long") })
			rest = rest[n:]
		}
		want := bytes.Split(b, []byte("\n"))
		want = want[:len(want)-1] // the part after the last newline is not a line yet
		if len(got) != len(want) {
			t.Fatalf("%d lines, want %d", len(got), len(want))
		}
		for i := range want {
			if !bytes.Equal(got[i], want[i]) {
				t.Fatalf("line %d = %q, want %q", i, got[i], want[i])
			}
		}
	})
}
