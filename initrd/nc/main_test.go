package main

import (
	"bytes"
	"io"
	"net"
	"strings"
	"testing"
)

// TestConnect: nc HOST PORT sends its stdin, half-closes, and prints what
// the peer answers before closing; bad arguments are an error.
func TestConnect(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- err.Error()
			return
		}
		b, _ := io.ReadAll(c) // until nc half-closes
		c.Write([]byte("echo:" + string(b)))
		c.Close()
		got <- string(b)
	}()
	host, port, _ := net.SplitHostPort(ln.Addr().String())
	var out bytes.Buffer
	if err := run([]string{host, port}, strings.NewReader("hello"), &out); err != nil {
		t.Fatal(err)
	}
	if s := <-got; s != "hello" {
		t.Errorf("the peer received %q", s)
	}
	if out.String() != "echo:hello" {
		t.Errorf("nc printed %q", out.String())
	}
	for _, bad := range [][]string{nil, {"onlyhost"}, {"-l"}, {"a", "b", "c"}} {
		if err := run(bad, strings.NewReader(""), io.Discard); err == nil {
			t.Errorf("nc %q: no error", bad)
		}
	}
}
