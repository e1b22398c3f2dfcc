package main

import (
	"reflect"
	"testing"

	"github.com/microvm-dev/microvm/agentproto"
)

func TestParseCmdline(t *testing.T) {
	kv := func(k, v string) param { return param{Key: k, Value: v, HasValue: true} }
	flag := func(k string) param { return param{Key: k} }
	tests := []struct {
		name string
		in   string
		want []param
	}{
		{"empty", "", nil},
		{"only whitespace", " \t\n", nil},
		{
			"typical with trailing newline",
			"console=ttyS0 panic=-1 reboot=k quiet\n",
			[]param{kv("console", "ttyS0"), kv("panic", "-1"), kv("reboot", "k"), flag("quiet")},
		},
		{
			"quoted value with spaces and single quotes",
			`console=ttyS0 microvm.cmd="sh -c 'exit 7'" quiet`,
			[]param{kv("console", "ttyS0"), kv("microvm.cmd", "sh -c 'exit 7'"), flag("quiet")},
		},
		{
			"whole param quoted",
			`"microvm.cmd=echo a  b" x=1`,
			[]param{kv("microvm.cmd", "echo a  b"), kv("x", "1")},
		},
		{
			"quoted bare flag",
			`"foo bar" baz`,
			[]param{flag("foo bar"), flag("baz")},
		},
		{
			"inner quotes kept like the kernel",
			`a=x"y z"w b`,
			[]param{kv("a", `x"y z"w`), flag("b")},
		},
		{
			"empty value and value with equals",
			"a= b=c=d",
			[]param{kv("a", ""), kv("b", "c=d")},
		},
		{
			"empty quoted value",
			`a="" b`,
			[]param{kv("a", ""), flag("b")},
		},
		{
			"unterminated quote runs to the end",
			`a="x y z`,
			[]param{kv("a", "x y z")},
		},
		{
			"tabs and multiple spaces",
			"a=1\t\tb=2   c",
			[]param{kv("a", "1"), kv("b", "2"), flag("c")},
		},
		{
			"stops at --",
			"a=1 -- microvm.cmd=x init args",
			[]param{kv("a", "1")},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := parseCmdline(tt.in)
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("parseCmdline(%q)\n got %#v\nwant %#v", tt.in, got, tt.want)
			}
		})
	}
}

func TestCmdlineWithEncodedCmd(t *testing.T) {
	argv := []string{"sh", "-c", `uname -r; echo "done"; exit 7`}
	line := "console=ttyS0 panic=-1 reboot=k " + agentproto.CmdParam + "=" + agentproto.EncodeCmd(argv) + " microvm.uname=0\n"
	params := parseCmdline(line)
	p, ok := lookupParam(params, agentproto.CmdParam)
	if !ok {
		t.Fatalf("no %s in %q", agentproto.CmdParam, line)
	}
	got, err := agentproto.DecodeCmd(p.Value)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, argv) {
		t.Fatalf("got %q, want %q", got, argv)
	}
	if flagEnabled(lookupParam(params, agentproto.UnameParam)) {
		t.Fatalf("microvm.uname=0 must be off")
	}
}

func TestLookupParamLastWins(t *testing.T) {
	params := parseCmdline("x=1 y x=2")
	if p, ok := lookupParam(params, "x"); !ok || p.Value != "2" {
		t.Fatalf("lookupParam(x) = %+v, %v; want 2", p, ok)
	}
	if _, ok := lookupParam(params, "z"); ok {
		t.Fatalf("lookupParam(z) found")
	}
}

func TestFlagEnabled(t *testing.T) {
	for in, want := range map[string]bool{
		"microvm.uname":       true,
		"microvm.uname=1":     true,
		"microvm.uname=yes":   true,
		"microvm.uname=TRUE":  true,
		"microvm.uname=0":     false,
		"microvm.uname=":      false,
		"microvm.uname=false": false,
		"other=1":             false,
	} {
		if got := flagEnabled(lookupParam(parseCmdline(in), agentproto.UnameParam)); got != want {
			t.Errorf("%q: flagEnabled = %v, want %v", in, got, want)
		}
	}
}
