// Command nc is the guest's TCP tool: `nc HOST PORT` connects, `nc -l
// [HOST] PORT` accepts one connection; either way it sends its stdin, then
// half-closes, and copies what it receives to stdout until the peer closes.
//
// It replaces u-root's netcat, whose dependencies made up more than a
// quarter of the initramfs (8,346,440 bytes with it, 6,056,772 with this
// one instead, 2026-12-02) for options no user of `microvm run` or its
// tests needed; the busybox binary's other commands already link the net
// package this one uses.
package main

import (
	"fmt"
	"io"
	"net"
	"os"
)

func main() {
	if err := run(os.Args[1:], os.Stdin, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "nc: %v\n", err)
		os.Exit(1)
	}
}

func run(args []string, in io.Reader, out io.Writer) error {
	listen := len(args) > 0 && args[0] == "-l"
	if listen {
		args = args[1:]
	}
	var conn net.Conn
	switch {
	case listen && (len(args) == 1 || len(args) == 2):
		host := ""
		if len(args) == 2 {
			host, args = args[0], args[1:]
		}
		ln, err := net.Listen("tcp", net.JoinHostPort(host, args[0]))
		if err != nil {
			return err
		}
		conn, err = ln.Accept()
		ln.Close()
		if err != nil {
			return err
		}
	case !listen && len(args) == 2:
		var err error
		if conn, err = net.Dial("tcp", net.JoinHostPort(args[0], args[1])); err != nil {
			return err
		}
	default:
		return fmt.Errorf("usage: nc HOST PORT | nc -l [HOST] PORT")
	}
	defer conn.Close()
	recv := make(chan error, 1)
	go func() {
		_, err := io.Copy(out, conn)
		recv <- err
	}()
	if _, err := io.Copy(conn, in); err != nil {
		return fmt.Errorf("send: %w", err)
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		tc.CloseWrite() // the peer sees our end of data
	}
	if err := <-recv; err != nil {
		return fmt.Errorf("receive: %w", err)
	}
	return nil
}
