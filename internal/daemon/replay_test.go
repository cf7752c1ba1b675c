package daemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/idend/idend/internal/api/apipb"
	"github.com/idend/idend/internal/events"
	"github.com/idend/idend/internal/events/recordpb"
	"github.com/idend/idend/internal/intent"
	"github.com/idend/idend/internal/loader"
)

// recordWatch receives, over the API's event stream, the records the
// daemon appends once the stream is open. A test awaits the kernel
// records of what it ran before it stops the daemon, so that none is
// still in a ring when the daemon stops.
type recordWatch struct {
	ch   chan *recordpb.Record
	seen []*recordpb.Record
}

func (d *testDaemon) watch() *recordWatch {
	d.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	d.t.Cleanup(cancel)
	stream, err := d.client.Events(ctx, &apipb.EventsRequest{})
	if err != nil {
		d.t.Fatal(err)
	}
	w := &recordWatch{ch: make(chan *recordpb.Record)}
	go func() {
		defer close(w.ch)
		for {
			r, err := stream.Recv()
			if err != nil {
				return
			}
			select {
			case w.ch <- r:
			case <-ctx.Done():
				return
			}
		}
	}()
	return w
}

// await waits until, for each of match, a record it matches was streamed.
func (w *recordWatch) await(t *testing.T, match ...func(*recordpb.Record) bool) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		missing := 0
		for _, m := range match {
			if !slices.ContainsFunc(w.seen, m) {
				missing++
			}
		}
		if missing == 0 {
			return
		}
		select {
		case r, ok := <-w.ch:
			if !ok {
				t.Fatalf("event stream ended with %d records still awaited", missing)
			}
			w.seen = append(w.seen, r)
		case <-timeout:
			t.Fatalf("%d records awaited not streamed within 10s", missing)
		}
	}
}

// readRecording returns every record of the recording in a daemon's state
// directory.
func readRecording(t *testing.T, stateDir string) []*recordpb.Record {
	t.Helper()
	rd, err := events.OpenReader(filepath.Join(stateDir, "recordings"))
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	var out []*recordpb.Record
	for r, err := range rd.All() {
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

// findOne returns the one record that match matches.
func findOne(t *testing.T, recs []*recordpb.Record, what string,
	match func(*recordpb.Record) bool) *recordpb.Record {
	t.Helper()
	var found []*recordpb.Record
	for _, r := range recs {
		if match(r) {
			found = append(found, r)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d records of %s, want 1", len(found), what)
	}
	return found[0]
}

func connectRecord(session string, port int, v recordpb.Verdict) func(*recordpb.Record) bool {
	return func(r *recordpb.Record) bool {
		c := r.GetConnect()
		return c != nil && c.SessionId == session && c.Port == uint32(port) && c.Verdict == v
	}
}

func deniedConnect(session string, port int) func(*recordpb.Record) bool {
	return connectRecord(session, port, recordpb.Verdict_VERDICT_DENY)
}

func execRecord(session, path string, v recordpb.Verdict) func(*recordpb.Record) bool {
	return func(r *recordpb.Record) bool {
		e := r.GetExec()
		return e != nil && e.SessionId == session && e.Path == path && e.Verdict == v
	}
}

// replayCase is a session of the replay test: what its processes do and
// which of their records a stricter intent newly denies.
type replayCase struct {
	what  string
	match func(*recordpb.Record) bool
	// stricter: the stricter intent of the test refuses what the kernel
	// let through.
	stricter bool
}

// replayWorkload runs real processes in a block-mode and an audit-mode
// session, checks what the kernel let them do, and returns the records
// that must be in the recording.
func replayWorkload(t *testing.T, block, audit *apipb.Session, allowed, other int) []replayCase {
	t.Helper()
	connect := func(s *apipb.Session, port int, want string) {
		t.Helper()
		if out := connectFrom(t, s, port); out != want {
			t.Errorf("session %s: connect to port %d: %q, want %q", s.Id, port, out, want)
		}
	}
	connect(block, allowed, "ok")
	connect(block, other, "errno 1")
	if _, code := runIn(t, block.Cgroup, nil, "/usr/bin/true"); code != 0 {
		t.Errorf("allowed exec of true: exit %d", code)
	}
	stopped := forbiddenExec(t, block.Cgroup, "/usr/bin/false")
	connect(audit, allowed, "ok")
	connect(audit, other, "ok")
	if _, code := runIn(t, audit.Cgroup, nil, "/usr/bin/false"); code != 1 {
		t.Errorf("exec of false in audit mode: exit %d, want 1", code)
	}

	const (
		allow = recordpb.Verdict_VERDICT_ALLOW
		deny  = recordpb.Verdict_VERDICT_DENY
		aud   = recordpb.Verdict_VERDICT_AUDIT
	)
	return []replayCase{
		{"block: allowed connect", connectRecord(block.Id, allowed, allow), true},
		{"block: denied connect", connectRecord(block.Id, other, deny), false},
		{"block: allowed exec", execRecord(block.Id, "/usr/bin/true", allow), true},
		{"block: stopped exec", execRecord(block.Id, "/usr/bin/false", stopped), false},
		{"audit: allowed connect", connectRecord(audit.Id, allowed, allow), true},
		{"audit: audited connect", connectRecord(audit.Id, other, aud), true},
		{"audit: audited exec", execRecord(audit.Id, "/usr/bin/false", aud), true},
	}
}

// connectFrom runs python in session s to connect to a local port, and
// returns "ok" or "errno N".
func connectFrom(t *testing.T, s *apipb.Session, port int) string {
	t.Helper()
	out, _ := runIn(t, s.Cgroup, nil, "/usr/bin/python3", "-c", connectProg, fmt.Sprint(port))
	return strings.TrimSpace(out)
}

// forbiddenExec runs a forbidden program in a cgroup, checks that it was
// stopped the way this kernel stops it, and returns the verdict its record
// must have: LSM_DENIED where BPF-LSM refuses the execve with EPERM,
// KILLED where the exec tracepoint kills the process.
func forbiddenExec(t *testing.T, cgroupDir, name string) recordpb.Verdict {
	t.Helper()
	ws, err := runSignaled(t, cgroupDir, name)
	if loader.Probe().LSM {
		if !errors.Is(err, syscall.EPERM) {
			t.Errorf("forbidden exec of %s: %v, status %v; want EPERM", name, err, ws)
		}
		return recordpb.Verdict_VERDICT_LSM_DENIED
	}
	if err != nil || ws.Signal() != syscall.SIGKILL {
		t.Errorf("forbidden exec of %s: %v, status %v; want SIGKILL", name, err, ws)
	}
	return recordpb.Verdict_VERDICT_KILLED
}

// runSignaled runs a program in a cgroup and returns how it ended, or the
// error of its execve.
func runSignaled(t *testing.T, cgroupDir, name string) (syscall.WaitStatus, error) {
	t.Helper()
	fd, err := syscall.Open(cgroupDir, syscall.O_DIRECTORY|syscall.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	var attr syscall.ProcAttr
	attr.Sys = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd}
	pid, err := syscall.ForkExec(name, []string{name}, &attr)
	if err != nil {
		return 0, err
	}
	var ws syscall.WaitStatus
	if _, err := syscall.Wait4(pid, &ws, 0, nil); err != nil {
		t.Fatal(err)
	}
	return ws, nil
}

const replayBlockIntent = `name: replay-block
purpose: replay test, block mode
network:
  egress:
    - to: 127.0.0.1
      ports: [%d]
exec:
  allow: [/usr/bin/python3, /usr/bin/true]
`

const replayAuditIntent = `name: replay-audit
purpose: replay test, audit mode
on_violation: audit
network:
  egress:
    - to: 127.0.0.1
      ports: [%d]
exec:
  allow: [/usr/bin/python3]
`

// replayStricter allows python and nothing else: no egress, no true.
const replayStricter = `name: replay-stricter
purpose: replay test, stricter than both sessions
exec:
  allow: [/usr/bin/python3]
`

// TestReplayRealSession records real processes in a block-mode and an
// audit-mode session, and replays the recording: every kernel verdict is
// reproduced; a stricter intent newly denies exactly the actions outside
// it that went through; a verdict changed in a re-recorded copy is found.
func TestReplayRealSession(t *testing.T) {
	d := startDaemon(t)
	watch := d.watch()
	allowed, other := tcpListener(t), tcpListener(t)
	block := d.open(fmt.Sprintf(replayBlockIntent, allowed), "")
	audit := d.open(fmt.Sprintf(replayAuditIntent, allowed), "")
	cases := replayWorkload(t, block, audit, allowed, other)
	for _, c := range cases {
		watch.await(t, c.match)
	}
	d.stop()

	dir := filepath.Join(d.cfg.StateDir, "recordings")
	if _, err := events.Verify(dir); err != nil {
		t.Fatalf("verify the daemon's recording: %v", err)
	}
	recs := readRecording(t, d.cfg.StateDir)
	seqs := map[uint64]string{}
	for _, c := range cases {
		r := findOne(t, recs, c.what, c.match)
		if c.stricter {
			seqs[r.Seq] = c.what
		}
	}

	t.Run("recorded intents", func(t *testing.T) { checkReplayRecorded(t, dir, recs) })
	t.Run("stricter intent", func(t *testing.T) { checkReplayStricter(t, dir, seqs) })
	t.Run("one session", func(t *testing.T) { checkReplaySession(t, dir, block.Id, seqs) })
	t.Run("tampered verdict", func(t *testing.T) {
		checkReplayTampered(t, dir, findOne(t, recs, "denied connect", deniedConnect(block.Id, other)))
	})
}

// replay replays the recording in dir twice, from two readers, checks
// that both reports read the same byte for byte, and returns one.
func replay(t *testing.T, dir string, opts events.ReplayOptions) *events.ReplayReport {
	t.Helper()
	var reps []*events.ReplayReport
	var outs [][]byte
	for range 2 {
		rd, err := events.OpenReader(dir)
		if err != nil {
			t.Fatal(err)
		}
		rep, err := events.Replay(rd.All(), opts)
		rd.Close()
		if err != nil {
			t.Fatalf("replay: %v", err)
		}
		var b bytes.Buffer
		if err := rep.WriteText(&b); err != nil {
			t.Fatal(err)
		}
		if err := rep.WriteJSON(&b); err != nil {
			t.Fatal(err)
		}
		reps, outs = append(reps, rep), append(outs, b.Bytes())
	}
	if !bytes.Equal(outs[0], outs[1]) {
		t.Errorf("two replays differ:\n%s\n---\n%s", outs[0], outs[1])
	}
	return reps[0]
}

// judged counts the kernel actions of sessions the evaluator judges.
func judged(recs []*recordpb.Record) uint64 {
	var n uint64
	for _, r := range recs {
		switch r.GetBody().(type) {
		case *recordpb.Record_Connect, *recordpb.Record_SocketCreate,
			*recordpb.Record_UnixConnect, *recordpb.Record_Exec:
			n++
		}
	}
	return n
}

func checkReplayRecorded(t *testing.T, dir string, recs []*recordpb.Record) {
	rep := replay(t, dir, events.ReplayOptions{})
	if rep.Differ != 0 || len(rep.Differences) != 0 {
		var b bytes.Buffer
		rep.WriteText(&b)
		t.Errorf("replay of the recorded intents differs from the kernel:\n%s", b.Bytes())
	}
	if rep.Sessions != 2 || rep.Skipped != 0 || len(rep.Warnings) != 0 {
		t.Errorf("replay of %d sessions, %d actions skipped, warnings %q; want 2, 0, none",
			rep.Sessions, rep.Skipped, rep.Warnings)
	}
	if want := judged(recs); rep.Actions != want {
		t.Errorf("replay evaluated %d actions, the recording holds %d", rep.Actions, want)
	}
}

func parseIntent(t *testing.T, text string) *intent.Intent {
	t.Helper()
	in, err := intent.Parse("stricter.yaml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	return in
}

// checkDifferences checks that diffs are the actions of want, each newly
// denied.
func checkDifferences(t *testing.T, rep *events.ReplayReport, want map[uint64]string) {
	t.Helper()
	got := map[uint64]bool{}
	for _, d := range rep.Differences {
		got[d.Seq] = true
		what, ok := want[d.Seq]
		if !ok {
			t.Errorf("unexpected difference: %+v", d)
			continue
		}
		if d.Evaluated != "deny" || (d.Recorded != "allow" && d.Recorded != "audit") {
			t.Errorf("%s: %s -> %s, want newly denied", what, d.Recorded, d.Evaluated)
		}
	}
	for seq, what := range want {
		if !got[seq] {
			t.Errorf("%s (record %d) is not reported as newly denied", what, seq)
		}
	}
	var denied, allowed uint64
	for _, k := range rep.Kinds {
		denied, allowed = denied+k.NewlyDenied, allowed+k.NewlyAllowed
	}
	if rep.Differ != uint64(len(want)) || denied != uint64(len(want)) || allowed != 0 {
		t.Errorf("summary: %d differences, %d newly denied, %d newly allowed; want %d, %d, 0",
			rep.Differ, denied, allowed, len(want), len(want))
	}
}

func checkReplayStricter(t *testing.T, dir string, seqs map[uint64]string) {
	in := parseIntent(t, replayStricter)
	rep := replay(t, dir, events.ReplayOptions{Intent: in})
	checkDifferences(t, rep, seqs)
	if !strings.HasPrefix(rep.Intent, "replay-stricter ") {
		t.Errorf("report names intent %q", rep.Intent)
	}
}

func checkReplaySession(t *testing.T, dir, session string, seqs map[uint64]string) {
	in := parseIntent(t, replayStricter)
	rep := replay(t, dir, events.ReplayOptions{Intent: in, Session: session})
	want := map[uint64]string{}
	for seq, what := range seqs {
		if strings.HasPrefix(what, "block:") {
			want[seq] = what
		}
	}
	checkDifferences(t, rep, want)
}

// checkReplayTampered re-records the recording through a Recorder with
// the verdict of denied changed to allow: the copy's chain is intact, and
// only replay finds the change.
func checkReplayTampered(t *testing.T, dir string, denied *recordpb.Record) {
	copyDir := filepath.Join(t.TempDir(), "recordings")
	rec, err := events.OpenRecorder(copyDir, events.RecorderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rd, err := events.OpenReader(dir)
	if err != nil {
		t.Fatal(err)
	}
	var tampered uint64
	for r, err := range rd.All() {
		if err != nil {
			t.Fatal(err)
		}
		flip := r.Seq == denied.Seq
		if flip {
			r.GetConnect().Verdict = recordpb.Verdict_VERDICT_ALLOW
		}
		seq, err := rec.Append(r)
		if err != nil {
			t.Fatal(err)
		}
		if flip {
			tampered = seq
		}
	}
	rd.Close()
	if err := rec.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := events.Verify(copyDir); err != nil {
		t.Fatalf("verify the re-recorded copy: %v", err)
	}

	rep := replay(t, copyDir, events.ReplayOptions{})
	if len(rep.Differences) != 1 || rep.Differ != 1 {
		t.Fatalf("replay of the tampered copy: %d differences, want 1: %+v", rep.Differ, rep.Differences)
	}
	d := rep.Differences[0]
	if d.Seq != tampered || d.Kind != "connect" || d.Recorded != "allow" || d.Evaluated != "deny" ||
		!strings.Contains(d.What, fmt.Sprintf(":%d/tcp", denied.GetConnect().Port)) {
		t.Errorf("difference %+v, want record %d, connect recorded allow, evaluated deny", d, tampered)
	}
}
