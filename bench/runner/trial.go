package main

// One boot of one VMM: started, watched for the init marker, timed, reaped.

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

type trial struct {
	vmm        string
	round      int
	init, exit time.Duration
	reached    bool
	exited     bool
	code       int
	rss        uint64
	note       string
}

func (t trial) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-8s ", t.vmm)
	if t.reached {
		fmt.Fprintf(&b, "init at %6.2f s", t.init.Seconds())
	} else {
		b.WriteString("init not reached")
	}
	if t.exited {
		fmt.Fprintf(&b, ", exited (code %d) at %6.2f s", t.code, t.exit.Seconds())
		if t.code != 0 {
			b.WriteString(" (not a clean exit: not counted)")
		}
	} else {
		fmt.Fprintf(&b, ", did not exit (killed at %.1f s)", t.exit.Seconds())
	}
	fmt.Fprintf(&b, ", peak RSS %.1f MiB", mib(t.rss))
	if t.note != "" {
		b.WriteString("; " + t.note)
	}
	return b.String()
}

// markerWriter timestamps the first appearance of any marker in a stream
// and keeps its tail for diagnostics.
type markerWriter struct {
	markers []string
	found   chan string
	buf     []byte
	tail    []byte
	seen    bool
}

func (w *markerWriter) Write(b []byte) (int, error) {
	w.tail = append(w.tail, b...)
	if len(w.tail) > 8192 {
		w.tail = w.tail[len(w.tail)-8192:]
	}
	if w.seen {
		return len(b), nil
	}
	w.buf = append(w.buf, b...)
	for _, m := range w.markers {
		if bytes.Contains(w.buf, []byte(m)) {
			w.seen = true
			w.found <- m
			return len(b), nil
		}
	}
	keep := 256
	if len(w.buf) > keep {
		w.buf = w.buf[len(w.buf)-keep:]
	}
	return len(b), nil
}

func runTrial(s vmmSpec, o *options) trial {
	t := trial{vmm: s.name, code: -1}
	cmd := exec.Command(s.argv[0], s.argv[1:]...)
	pr, pw, err := os.Pipe()
	if err != nil {
		t.note = err.Error()
		return t
	}
	cmd.Stdout, cmd.Stderr = pw, pw // stdin: /dev/null
	mw := &markerWriter{markers: s.markers, found: make(chan string, 1), buf: []byte("\n")}
	copied := make(chan struct{})
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		pw.Close()
		pr.Close()
		t.note = "start: " + err.Error()
		return t
	}
	pw.Close()
	go func() {
		_, _ = io.Copy(mw, pr)
		close(copied)
	}()
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()

	var werr error
	deadline := time.NewTimer(o.bootTimeout)
	defer deadline.Stop()
wait:
	for {
		select {
		case m := <-mw.found:
			t.reached, t.init = true, time.Since(t0)
			if m != agentMarker {
				t.note = "init seen as: " + strings.TrimSpace(m)
			}
			deadline.Reset(o.afterInit)
		case werr = <-waited:
			t.exited, t.exit = true, time.Since(t0)
			break wait
		case <-deadline.C:
			t.exit = time.Since(t0)
			_ = cmd.Process.Kill()
			werr = <-waited
			break wait
		}
	}
	// The marker may have been seen just as the process exited.
	select {
	case <-mw.found:
		t.reached = true
		if t.init == 0 {
			t.init = t.exit
		}
	default:
	}
	<-copied
	pr.Close()
	if st := cmd.ProcessState; st != nil {
		if ru, ok := st.SysUsage().(*syscall.Rusage); ok {
			t.rss = uint64(ru.Maxrss) << 10
		}
		if t.exited {
			t.code = st.ExitCode()
		}
	}
	var ee *exec.ExitError
	if werr != nil && !errors.As(werr, &ee) {
		t.note = join(t.note, werr.Error())
	}
	if !t.exited {
		limit := o.bootTimeout
		if t.reached {
			limit = o.afterInit
		}
		t.note = join(t.note, fmt.Sprintf("no exit within %v of %s", limit, map[bool]string{true: "init", false: "exec"}[t.reached]))
	}
	if o.showOutput {
		fmt.Printf("---- %s output (end) ----\n%s\n----\n", s.name, strings.ReplaceAll(string(mw.tail), "\r", ""))
	}
	if !t.reached || (t.exited && t.code != 0) {
		t.note = join(t.note, "output tail: "+lastLine(mw.tail))
	}
	return t
}

func join(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}

func lastLine(b []byte) string {
	s := strings.TrimSpace(strings.ReplaceAll(string(b), "\r", ""))
	lines := strings.Split(s, "\n")
	if len(lines) > 3 {
		lines = lines[len(lines)-3:]
	}
	return strings.Join(lines, " | ")
}
