package main

// Restoring a snapshot (issue 15), three rows in one run: microvm's cold
// `run -- true`, its restored `run --snapshot DIR -- true`, and QEMU
// restoring the same guest at the same point from its own migration stream
// (-incoming), each from exec to the VMM's exit, in interleaved rounds.
//
// The QEMU guest is the same kernel and initrd. Its agent takes its command
// from the kernel command line (QEMU has no microvm agent channel): a shell
// that prints snapshotPoint, waits for a line on the serial console and
// then runs /bbin/true (what `true` is in the initrd), as microvm's agent
// does once its command arrives.
// The saving run stops QEMU there and migrates it into a file; a restore
// streams that file into `-incoming`, and once QMP says the guest runs the
// line is typed. QEMU 7.2 has no file: migration URI and the L1 has no
// /bin/sh for exec:, so the stream goes through Unix sockets this process
// serves from and to the file.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/microvm-dev/microvm"
	"github.com/microvm-dev/microvm/agentproto"
	"github.com/microvm-dev/microvm/internal/report"
)

// snapshotPoint is what the QEMU guest prints when it waits for its line.
const snapshotPoint = "snapshot-point"

func (o *options) snapshotFlags(fs *flag.FlagSet) {
	fs.IntVar(&o.snapRounds, "snapshot-rounds", 0, "rounds of cold, restored and QEMU-restored `run -- true` (0: not measured)")
	fs.StringVar(&o.snapDir, "snapshot-dir", "", "where the snapshots go (default: a new directory under $TMPDIR)")
}

type snapResult struct {
	cold, restored, qemu []float64 // seconds, exec to exit
	microvmSave          time.Duration
	qemuSave             time.Duration
	memApparent, memUsed int64 // microvm's memory file
	stateBytes           int64
	qemuStream           int64
	qemuErr              string
	guestMS              []float64 // restored: first KVM_RUN to exit, ms
}

func runSnapshot(o *options) *snapResult {
	fmt.Printf("\n== snapshot restore: `run -- true` cold and restored, against QEMU's -incoming restore of the same guest, %d rounds, exec to exit\n", o.snapRounds)
	dir := o.snapDir
	if dir == "" {
		d, err := os.MkdirTemp("", "snapbench")
		if err != nil {
			fmt.Printf("  snapshot: %v\n", err)
			return nil
		}
		defer os.RemoveAll(d)
		dir = d
	}
	r := &snapResult{}
	mem := strconv.Itoa(o.memoryMiB) + "M"
	// run times one `microvm run`; with --json it also returns the ms from
	// the first KVM_RUN to the exit on microvm's own timeline: the guest's
	// share, which no VMM work shortens.
	var guest []float64
	run := func(want string, extra ...string) (time.Duration, error) {
		argv := append([]string{"run", "--kernel", o.kernel, "--initrd", o.initrd, "--memory", mem, "--timeout", o.bootTimeout.String(), "--json"}, extra...)
		argv = append(argv, "--", "true")
		cmd := exec.Command(o.microvm, argv...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		t0 := time.Now()
		err := cmd.Run()
		d := time.Since(t0)
		if err != nil {
			return d, fmt.Errorf("microvm %s: %v: %s", strings.Join(argv, " "), err, lastLine(stderr.Bytes()))
		}
		lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
		var rep report.Boot
		if err := json.Unmarshal([]byte(lines[len(lines)-1]), &rep); err != nil {
			return d, fmt.Errorf("microvm %s: no --json report: %v", strings.Join(argv, " "), err)
		}
		if len(extra) > 0 { // --snapshot: a run that saved again is not a restore
			if rep.Snapshot == nil || rep.Snapshot.Path != want {
				return d, fmt.Errorf("microvm %s: snapshot path %+v, want %q", strings.Join(argv, " "), rep.Snapshot, want)
			}
		}
		if want == "restored" {
			first, ok1 := rep.Timeline.MS(microvm.PhaseFirstRun)
			exit, ok2 := rep.Timeline.MS(microvm.PhaseExit)
			if ok1 && ok2 {
				guest = append(guest, exit-first)
			}
		}
		return d, nil
	}
	defer func() { r.guestMS = guest }()
	snap := filepath.Join(dir, "microvm")
	progressf("microvm: saving the snapshot (cold boot to agent ready) ...")
	var err error
	if r.microvmSave, err = run("saved", "--snapshot", snap); err != nil {
		fmt.Printf("  snapshot: %v\n", err)
		return nil
	}
	if fi, err := os.Stat(filepath.Join(snap, "memory")); err == nil {
		r.memApparent = fi.Size()
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			r.memUsed = st.Blocks * 512
		}
	}
	if fi, err := os.Stat(filepath.Join(snap, "state")); err == nil {
		r.stateBytes = fi.Size()
	}
	var q *qemuSnap
	if o.qemu != "" {
		q = &qemuSnap{o: o, dir: filepath.Join(dir, "qemu")}
		progressf("qemu: saving its migration stream at the same point ...")
		if err := q.save(); err != nil {
			r.qemuErr = err.Error()
			fmt.Printf("  qemu: not measured: %v\n", err)
			q = nil
		} else {
			r.qemuSave, r.qemuStream = q.saveTime, q.streamBytes
		}
	}
	// The three rows, each a way to time one run and where its samples go.
	type row struct {
		label string
		time  func() (time.Duration, error)
		into  *[]float64
	}
	rows := []row{
		{"microvm cold    ", func() (time.Duration, error) { return run("") }, &r.cold},
		{"microvm restored", func() (time.Duration, error) { return run("restored", "--snapshot", snap) }, &r.restored},
	}
	if q != nil {
		rows = append(rows, row{"qemu restored   ", q.restore, &r.qemu})
	}
	for i := 1; i <= o.snapRounds; i++ {
		// Rotate the order, so that none of the rows always follows the same one.
		for k := range rows {
			w := rows[(k+i-1)%len(rows)]
			d, err := w.time()
			if err != nil {
				fmt.Printf("  round %d: %s: %v\n", i, strings.TrimSpace(w.label), err)
				continue
			}
			*w.into = append(*w.into, d.Seconds())
			progressf("round %d/%d: %s %6.2f s", i, o.snapRounds, w.label, d.Seconds())
		}
	}
	return r
}

// qemuSnap saves and restores QEMU's guest.
type qemuSnap struct {
	o           *options
	dir         string
	saveTime    time.Duration
	streamBytes int64
}

func (q *qemuSnap) argv(extra ...string) []string {
	job := agentproto.EncodeJob(agentproto.Job{Argv: []string{"/bin/sh", "-c",
		"echo " + snapshotPoint + "; read x < /dev/ttyS0; /bbin/true"}})
	a := []string{q.o.qemu, "-M", "microvm", "-enable-kvm", "-cpu", "host", "-m", strconv.Itoa(q.o.memoryMiB),
		"-nodefaults", "-no-user-config", "-nographic", "-serial", "stdio", "-no-reboot", "-device", "i8042",
		"-kernel", q.o.kernel, "-initrd", q.o.initrd,
		"-append", q.o.cmdline + " " + agentproto.CmdParam + "=" + job,
		"-qmp", "unix:" + filepath.Join(q.dir, "qmp.sock") + ",server=on,wait=off"}
	return append(a, extra...)
}

func (q *qemuSnap) stream() string { return filepath.Join(q.dir, "migration") }

// start runs QEMU with stdin a pipe and stdout/stderr into a markerWriter.
func (q *qemuSnap) start(marker string, extra ...string) (*exec.Cmd, io.WriteCloser, *markerWriter, error) {
	_ = os.Remove(filepath.Join(q.dir, "qmp.sock"))
	argv := q.argv(extra...)
	cmd := exec.Command(argv[0], argv[1:]...)
	mw := &markerWriter{markers: []string{marker}, found: make(chan string, 1), buf: []byte("\n")}
	cmd.Stdout, cmd.Stderr = mw, mw
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, nil, nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, nil, nil, err
	}
	return cmd, in, mw, nil
}

func (q *qemuSnap) save() error {
	if err := os.MkdirAll(q.dir, 0o700); err != nil {
		return err
	}
	t0 := time.Now()
	cmd, in, mw, err := q.start("\n" + snapshotPoint)
	if err != nil {
		return err
	}
	defer in.Close()
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	select {
	case <-mw.found:
	case <-time.After(q.o.bootTimeout):
		_ = cmd.Process.Kill()
		_ = cmd.Wait() // the output is copied in full before the tail is read
		return fmt.Errorf("the guest did not print %q within %v: %s", snapshotPoint, q.o.bootTimeout, lastLine(mw.tail))
	}
	// Let the shell reach its read of the serial line.
	time.Sleep(500 * time.Millisecond)
	qmp, err := dialQMP(filepath.Join(q.dir, "qmp.sock"), 10*time.Second)
	if err != nil {
		return err
	}
	defer qmp.Close()
	if _, err := qmp.do("stop", nil); err != nil {
		return err
	}
	sock := filepath.Join(q.dir, "out.sock")
	_ = os.Remove(sock)
	ln, err := net.Listen("unix", sock)
	if err != nil {
		return err
	}
	defer ln.Close()
	copied := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			copied <- err
			return
		}
		defer c.Close()
		f, err := os.Create(q.stream())
		if err != nil {
			copied <- err
			return
		}
		n, err := io.Copy(f, c)
		q.streamBytes = n
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		copied <- err
	}()
	if _, err := qmp.do("migrate", map[string]any{"uri": "unix:" + sock}); err != nil {
		return err
	}
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(50 * time.Millisecond) {
		ret, err := qmp.do("query-migrate", nil)
		if err != nil {
			return err
		}
		var st struct {
			Status    string `json:"status"`
			ErrorDesc string `json:"error-desc"`
		}
		_ = json.Unmarshal(ret, &st)
		if st.Status == "completed" {
			break
		}
		if st.Status == "failed" || st.Status == "cancelled" || time.Now().After(deadline) {
			return fmt.Errorf("migrate: status %q %s", st.Status, st.ErrorDesc)
		}
	}
	if err := <-copied; err != nil {
		return fmt.Errorf("migration stream: %w", err)
	}
	q.saveTime = time.Since(t0)
	_, _ = qmp.do("quit", nil)
	return nil
}

// restore times one QEMU restore: exec, the stream fed to -incoming, the
// guest running again, its line typed, the guest's /bin/true and reset,
// QEMU's exit.
func (q *qemuSnap) restore() (time.Duration, error) {
	sock := filepath.Join(q.dir, "in.sock")
	_ = os.Remove(sock)
	t0 := time.Now()
	cmd, in, mw, err := q.start("\n"+snapshotPoint, "-incoming", "unix:"+sock)
	if err != nil {
		return 0, err
	}
	defer in.Close()
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	fail := func(err error) (time.Duration, error) {
		_ = cmd.Process.Kill()
		<-waited
		return 0, fmt.Errorf("%w; QEMU's console, last 8 KiB:\n%s", err, indent(mw.tail))
	}
	c, err := dialRetry(sock, 10*time.Second)
	if err != nil {
		return fail(err)
	}
	f, err := os.Open(q.stream())
	if err != nil {
		c.Close()
		return fail(err)
	}
	_ = c.SetDeadline(time.Now().Add(q.o.bootTimeout))
	_, err = io.Copy(c, f)
	f.Close()
	c.Close()
	if err != nil {
		return fail(fmt.Errorf("feeding -incoming: %w", err))
	}
	qmp, err := dialQMP(filepath.Join(q.dir, "qmp.sock"), 10*time.Second)
	if err != nil {
		return fail(err)
	}
	defer qmp.Close()
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(5 * time.Millisecond) {
		ret, err := qmp.do("query-status", nil)
		if err != nil {
			return fail(err)
		}
		var st struct {
			Status string `json:"status"`
		}
		_ = json.Unmarshal(ret, &st)
		if st.Status == "running" {
			break
		}
		// The stream carries the run state it was saved in (stopped, so
		// that it is one pass): once loaded, the guest waits for cont.
		if st.Status == "paused" {
			if _, err := qmp.do("cont", nil); err != nil {
				return fail(err)
			}
			continue
		}
		if time.Now().After(deadline) {
			return fail(fmt.Errorf("guest not running a minute after exec (status %q)", st.Status))
		}
	}
	if _, err := io.WriteString(in, "go\n"); err != nil {
		return fail(err)
	}
	select {
	case err := <-waited:
		d := time.Since(t0)
		if err != nil {
			return 0, fmt.Errorf("qemu: %v; its console, last 8 KiB:\n%s", err, indent(mw.tail))
		}
		return d, nil
	case <-time.After(q.o.bootTimeout):
		return fail(fmt.Errorf("no exit within %v", q.o.bootTimeout))
	}
}

// qmpConn is a minimal QMP client: one command at a time, events skipped.
type qmpConn struct {
	c net.Conn
	r *bufio.Reader
}

func dialRetry(path string, limit time.Duration) (net.Conn, error) {
	deadline := time.Now().Add(limit)
	for {
		c, err := net.Dial("unix", path)
		if err == nil || time.Now().After(deadline) {
			return c, err
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func dialQMP(path string, limit time.Duration) (*qmpConn, error) {
	c, err := dialRetry(path, limit)
	if err != nil {
		return nil, fmt.Errorf("qmp: %w", err)
	}
	q := &qmpConn{c: c, r: bufio.NewReader(c)}
	_ = c.SetDeadline(time.Now().Add(time.Minute))
	if _, err := q.r.ReadBytes('\n'); err != nil { // the greeting
		c.Close()
		return nil, fmt.Errorf("qmp greeting: %w", err)
	}
	if _, err := q.do("qmp_capabilities", nil); err != nil {
		c.Close()
		return nil, err
	}
	return q, nil
}

func (q *qmpConn) Close() error { return q.c.Close() }

// do runs one command and returns its "return" value.
func (q *qmpConn) do(cmd string, args map[string]any) (json.RawMessage, error) {
	req := map[string]any{"execute": cmd}
	if args != nil {
		req["arguments"] = args
	}
	b, _ := json.Marshal(req)
	_ = q.c.SetDeadline(time.Now().Add(time.Minute))
	if _, err := q.c.Write(append(b, '\n')); err != nil {
		return nil, fmt.Errorf("qmp %s: %w", cmd, err)
	}
	for {
		line, err := q.r.ReadBytes('\n')
		if err != nil {
			if cmd == "quit" && errors.Is(err, io.EOF) {
				return nil, nil
			}
			return nil, fmt.Errorf("qmp %s: %w", cmd, err)
		}
		var resp struct {
			Return json.RawMessage `json:"return"`
			Error  *struct {
				Desc string `json:"desc"`
			} `json:"error"`
			Event string `json:"event"`
		}
		if json.Unmarshal(line, &resp) != nil || resp.Event != "" {
			continue
		}
		if resp.Error != nil {
			return nil, fmt.Errorf("qmp %s: %s", cmd, resp.Error.Desc)
		}
		return resp.Return, nil
	}
}

// indent prefixes each line of b, so that compare.sh's filter of L1 kernel
// lines keeps them.
func indent(b []byte) string {
	s := strings.TrimRight(strings.ReplaceAll(string(b), "\r", ""), "\n")
	return "    | " + strings.ReplaceAll(s, "\n", "\n    | ")
}
