package agentproto

import (
	"encoding/base64"
	"errors"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

func TestCmdRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		argv []string
	}{
		{"single", []string{"true"}},
		{"sh -c with single quotes", []string{"sh", "-c", "exit 7"}},
		{"double quotes", []string{"echo", `say "hi"`, `"`}},
		{"spaces", []string{"echo", "  a  b  ", " "}},
		{"newlines and tabs", []string{"printf", "a\nb\r\n\tc"}},
		{"unicode", []string{"echo", "héllo wörld", "日本語", "🚀"}},
		{"shell metachars", []string{"sh", "-c", `echo $HOME; ls | cat && x=$(id) \ '"'`}},
		{"empty args after argv0", []string{"echo", "", ""}},
		{"equals and base64-ish", []string{"env", "A=B==", "microvm.cmd=x"}},
		{"control chars", []string{"echo", "\x00\x01\x1b[31m"}},
	}
	token := regexp.MustCompile(`^[A-Za-z0-9_-]+$`)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			enc := EncodeCmd(tt.argv)
			if !token.MatchString(enc) {
				t.Fatalf("EncodeCmd(%q) = %q: not a plain cmdline token", tt.argv, enc)
			}
			got, err := DecodeCmd(enc)
			if err != nil {
				t.Fatalf("DecodeCmd(%q): %v", enc, err)
			}
			if !reflect.DeepEqual(got, tt.argv) {
				t.Fatalf("round trip: got %q, want %q", got, tt.argv)
			}
		})
	}
}

func TestDecodeCmdTolerant(t *testing.T) {
	enc := EncodeCmd([]string{"sh", "-c", "exit 7"})
	want := []string{"sh", "-c", "exit 7"}
	for _, in := range []string{enc, `"` + enc + `"`, " " + enc + "\n", enc + "=="} {
		got, err := DecodeCmd(in)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("DecodeCmd(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

func TestDecodeCmdErrors(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		isEmpty bool
	}{
		{"empty string", "", true},
		{"empty argv", EncodeCmd([]string{}), true},
		{"nil argv", EncodeCmd(nil), true},
		{"empty argv0", EncodeCmd([]string{""}), true},
		{"not base64", "a b*c", false},
		{"std base64 alphabet", "+/+/", false},
		{"not json", encodeRaw("sh -c 'exit 7'"), false},
		{"json object", encodeRaw(`{"a":1}`), false},
		{"json non-string element", encodeRaw(`["sh",1]`), false},
		{"json null", encodeRaw(`null`), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeCmd(tt.in)
			if err == nil {
				t.Fatalf("DecodeCmd(%q) = %q, want error", tt.in, got)
			}
			if errors.Is(err, ErrEmptyArgv) != tt.isEmpty {
				t.Fatalf("DecodeCmd(%q) error %v: errors.Is(ErrEmptyArgv) = %v, want %v", tt.in, err, !tt.isEmpty, tt.isEmpty)
			}
		})
	}
}

// encodeRaw base64url-encodes arbitrary bytes (test helper).
func encodeRaw(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

func TestMilestonePacking(t *testing.T) {
	tests := []struct {
		code  uint8
		value uint32
		word  uint32
	}{
		{MilestoneCmdDone, 0, 0x00000003},
		{MilestoneCmdDone, 7, 0x00000703},
		{MilestoneCmdDone, 255, 0x0000ff03},
		{MilestoneCmdDone, 128 + 9, 0x00008903},
		{MilestoneReady, MaxMilestoneValue, 0xffffff02},
	}
	for _, tt := range tests {
		if got := PackMilestone(tt.code, tt.value); got != tt.word {
			t.Errorf("PackMilestone(%#x, %d) = %#x, want %#x", tt.code, tt.value, got, tt.word)
		}
		code, value := UnpackMilestone(tt.word)
		if code != tt.code || value != tt.value {
			t.Errorf("UnpackMilestone(%#x) = %#x, %d; want %#x, %d", tt.word, code, value, tt.code, tt.value)
		}
	}
	if got := PackMilestone(1, 1<<24|5); got != 0x0501 {
		t.Errorf("PackMilestone must truncate value to 24 bits, got %#x", got)
	}
}

func TestUnameLine(t *testing.T) {
	u := Uname{
		Sysname:  "Linux",
		Nodename: "(none)",
		Release:  "6.12.0-microvm",
		Version:  `#1 SMP PREEMPT_DYNAMIC Thu Nov 27 23:17:00 UTC 2025 "q"`,
		Machine:  "x86_64",
		UptimeS:  0.42,
	}
	line := FormatUnameLine(u)
	if !strings.HasPrefix(line, UnamePrefix+"{") || strings.ContainsAny(line, "\r\n") {
		t.Fatalf("FormatUnameLine = %q", line)
	}
	for _, in := range []string{
		line,
		line + "\r",
		"[    0.5] noise " + line + "  trailing",
	} {
		got, err := ParseUnameLine(in)
		if err != nil {
			t.Fatalf("ParseUnameLine(%q): %v", in, err)
		}
		if got != u {
			t.Fatalf("ParseUnameLine(%q) = %+v, want %+v", in, got, u)
		}
	}
	if want := "Linux (none) 6.12.0-microvm " + u.Version + " x86_64"; u.String() != want {
		t.Errorf("String() = %q, want %q", u.String(), want)
	}

	for _, in := range []string{"", "guest: Linux", "@@microvm-unam {}"} {
		if _, err := ParseUnameLine(in); !errors.Is(err, ErrNoUnameLine) {
			t.Errorf("ParseUnameLine(%q) err = %v, want ErrNoUnameLine", in, err)
		}
	}
	if _, err := ParseUnameLine(UnamePrefix + "{broken"); err == nil || errors.Is(err, ErrNoUnameLine) {
		t.Errorf("ParseUnameLine(broken json) err = %v, want parse error", err)
	}
}
