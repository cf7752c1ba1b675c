package events

import (
	"bytes"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/idend/idend/internal/events/recordpb"
	"github.com/idend/idend/internal/intent"
)

func parseIntent(t testing.TB, yaml string) *intent.Intent {
	t.Helper()
	in, err := intent.Parse("test.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	return in
}

// The intent the sessions of the scenario were opened with.
const retryIntent = `
name: payments-retry
purpose: analyze retry patterns
on_violation: block
network:
  egress:
    - to: 10.0.0.0/8
      ports: [443]
      protocol: tcp
    - to: db.internal
      ports: [5432]
  unix:
    - /run/postgresql/.s.PGSQL.5432
exec:
  allow: [/usr/bin/python3]
`

// A stricter one: one address, no unix sockets, git besides python.
const strictIntent = `
name: payments-retry-strict
purpose: analyze retry patterns, less
network:
  egress:
    - to: 10.1.2.3
      ports: [443]
      protocol: tcp
exec:
  allow: [/usr/bin/python3, /usr/bin/git]
`

var (
	python  = intent.FileID{Dev: 8<<20 | 1, Ino: 1001}
	python2 = intent.FileID{Dev: 8<<20 | 1, Ino: 1002}
	curl    = intent.FileID{Dev: 8<<20 | 1, Ino: 2001}
	git     = intent.FileID{Dev: 8<<20 | 1, Ino: 3001}
)

// scenario writes a recording of sessions doing things, with the verdicts
// the kernel gave, through a real Recorder.
type scenario struct {
	t   testing.TB
	rec *Recorder
	dir string
}

func newScenario(t testing.TB) *scenario {
	dir := t.TempDir()
	return &scenario{t: t, rec: openTestRecorder(t, dir, RecorderOptions{}), dir: dir}
}

func (sc *scenario) add(r *recordpb.Record) uint64 {
	sc.t.Helper()
	seq, err := sc.rec.Append(r)
	if err != nil {
		sc.t.Fatal(err)
	}
	return seq
}

func (sc *scenario) close() string {
	sc.t.Helper()
	if err := sc.rec.Close(); err != nil {
		sc.t.Fatal(err)
	}
	return sc.dir
}

func (sc *scenario) open(id, yaml string, hosts map[string]string) uint64 {
	in := parseIntent(sc.t, yaml)
	o := &recordpb.SessionOpen{SessionId: id, Principal: "alice",
		Identity: &recordpb.Identity{SpiffeId: "spiffe://example.org/" + id,
			Strength: recordpb.Strength_STRENGTH_SVID},
		Intent: intentRef(in),
		ExecFiles: []*recordpb.ExecFile{{Path: "/usr/bin/python3", Dev: python.Dev,
			Ino: python.Ino}},
	}
	for _, h := range slices.Sorted(maps.Keys(hosts)) {
		o.Hosts = append(o.Hosts, &recordpb.HostAddrs{Host: h,
			Addrs: [][]byte{netip.MustParseAddr(hosts[h]).AsSlice()}})
	}
	return sc.add(&recordpb.Record{Body: &recordpb.Record_SessionOpen{SessionOpen: o}})
}

func intentRef(in *intent.Intent) *recordpb.IntentRef {
	return &recordpb.IntentRef{Name: in.Name, Hash: []byte(in.Hash()), Canonical: in.Canonical()}
}

func (sc *scenario) connect(id, dst string, proto recordpb.Protocol, op recordpb.ConnectOp,
	v recordpb.Verdict) uint64 {
	ap := netip.MustParseAddrPort(dst)
	c := &recordpb.Connect{SessionId: id, Process: testProcess(77), Identity: testIdentity,
		Verdict: v, Family: unix.AF_INET, Addr: ap.Addr().AsSlice(), Port: uint32(ap.Port()),
		Protocol: proto, Op: op}
	return sc.add(&recordpb.Record{Body: &recordpb.Record_Connect{Connect: c}})
}

func (sc *scenario) tcp(id, dst string, v recordpb.Verdict) uint64 {
	return sc.connect(id, dst, recordpb.Protocol_PROTOCOL_TCP,
		recordpb.ConnectOp_CONNECT_OP_CONNECT, v)
}

func (sc *scenario) unixConnect(id, path string, v recordpb.Verdict) uint64 {
	return sc.add(&recordpb.Record{Body: &recordpb.Record_UnixConnect{UnixConnect: &recordpb.UnixConnect{
		SessionId: id, Process: testProcess(77), Verdict: v, Path: path}}})
}

func (sc *scenario) exec(id, path string, f intent.FileID, v recordpb.Verdict) uint64 {
	return sc.add(&recordpb.Record{Body: &recordpb.Record_Exec{Exec: &recordpb.Exec{
		SessionId: id, Process: testProcess(78), Verdict: v, Path: path, Dev: f.Dev, Ino: f.Ino,
		Argv: []string{path}}}})
}

func (sc *scenario) socket(id string, typ uint32, v recordpb.Verdict) uint64 {
	return sc.add(&recordpb.Record{Body: &recordpb.Record_SocketCreate{SocketCreate: &recordpb.SocketCreate{
		SessionId: id, Process: testProcess(77), Verdict: v, Family: unix.AF_INET, Type: typ}}})
}

const (
	allow    = recordpb.Verdict_VERDICT_ALLOW
	deny     = recordpb.Verdict_VERDICT_DENY
	audit    = recordpb.Verdict_VERDICT_AUDIT
	escalate = recordpb.Verdict_VERDICT_ESCALATE
	killed   = recordpb.Verdict_VERDICT_KILLED
)

// seqs names the records of the scenario that the tests look for.
type seqs struct {
	unixPostgres, dbAfterResolution, approvedConnect, gitExec, tampered uint64
}

// recordScenario plays three sessions: s1 in block mode, s2 in audit mode,
// s3 in escalate mode with an approval. Every verdict is the one the
// evaluator gives under the recorded intents, except that record
// tampered is written with allow when tamper is set.
func recordScenario(t testing.TB, tamper bool) (string, seqs) {
	var s seqs
	sc := newScenario(t)
	sc.add(sampleRecords()[0]) // daemon start
	sc.open("s1", retryIntent, map[string]string{"db.internal": "10.9.9.8"})
	sc.tcp("s1", "10.1.2.3:443", allow)
	sc.tcp("s1", "10.1.2.3:80", deny)
	v := deny
	if tamper {
		v = allow
	}
	s.tampered = sc.tcp("s1", "192.168.1.1:443", v)
	sc.connect("s1", "10.0.0.53:53", recordpb.Protocol_PROTOCOL_UDP,
		recordpb.ConnectOp_CONNECT_OP_SENDMSG, deny)
	s.unixPostgres = sc.unixConnect("s1", "/run/postgresql/.s.PGSQL.5432", allow)
	sc.unixConnect("s1", "/run/docker.sock", deny)
	sc.exec("s1", "/usr/bin/python3", python, allow)
	sc.exec("s1", "/usr/bin/curl", curl, killed)
	s.gitExec = sc.exec("s1", "/usr/bin/git", git, killed)
	sc.socket("s1", unix.SOCK_RAW, deny)
	sc.socket("s1", unix.SOCK_STREAM, allow)
	sc.tcp("s1", "10.9.9.9:5432", deny)
	sc.add(&recordpb.Record{Body: &recordpb.Record_HostResolution{HostResolution: &recordpb.HostResolution{
		SessionId: "s1", Host: "db.internal", Addrs: [][]byte{{10, 9, 9, 9}}}}})
	s.dbAfterResolution = sc.tcp("s1", "10.9.9.9:5432", allow)
	sc.add(&recordpb.Record{Body: &recordpb.Record_ExecRefresh{ExecRefresh: &recordpb.ExecRefresh{
		SessionId: "s1", Path: "/usr/bin/python3", OldDev: python.Dev, OldIno: python.Ino,
		NewDev: python2.Dev, NewIno: python2.Ino}}})
	sc.exec("s1", "/usr/bin/python3", python2, allow)
	sc.exec("s1", "/usr/bin/python3", python, killed)

	sc.open("s2", strings.Replace(retryIntent, "block", "audit", 1), nil)
	sc.tcp("s2", "192.168.1.1:443", audit)
	sc.exec("s2", "/usr/bin/curl", curl, audit)

	sc.open("s3", strings.Replace(retryIntent, "block", "escalate", 1), nil)
	sc.tcp("s3", "172.16.0.1:8080", escalate)
	sc.add(&recordpb.Record{Body: &recordpb.Record_Escalation{Escalation: &recordpb.Escalation{
		SessionId: "s3", EscalationId: "e1", Action: &recordpb.Escalation_Connect{Connect: &recordpb.Connect{
			SessionId: "s3", Family: unix.AF_INET, Addr: []byte{172, 16, 0, 1}, Port: 8080,
			Protocol: recordpb.Protocol_PROTOCOL_TCP}}}}})
	sc.add(&recordpb.Record{Body: &recordpb.Record_Approval{Approval: &recordpb.Approval{
		SessionId: "s3", EscalationId: "e1", ApprovedBy: "root"}}})
	s.approvedConnect = sc.tcp("s3", "172.16.0.1:8080", allow)
	sc.tcp("s3", "172.16.0.1:8081", escalate)
	sc.add(sampleRecords()[3]) // fork, not evaluated
	sc.add(&recordpb.Record{Body: &recordpb.Record_SessionClose{SessionClose: &recordpb.SessionClose{
		SessionId: "s1", Reason: "done"}}})
	return sc.close(), s
}

func replayDir(t testing.TB, dir string, opts ReplayOptions) *ReplayReport {
	t.Helper()
	rd, err := OpenReader(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	rep, err := Replay(rd.All(), opts)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

func TestReplayReproducesVerdicts(t *testing.T) {
	dir, _ := recordScenario(t, false)
	rep := replayDir(t, dir, ReplayOptions{})
	if len(rep.Differences) != 0 || rep.Differ != 0 {
		t.Fatalf("recorded verdicts differ from the evaluator:\n%s", textOf(t, rep))
	}
	if rep.Sessions != 3 || rep.Actions != 20 || rep.Skipped != 0 || len(rep.Warnings) != 0 {
		t.Errorf("report %+v, want 3 sessions and 20 actions evaluated", rep)
	}
	want := map[string]uint64{KindConnect: 9, KindSendmsg: 1, KindUnixConnect: 2,
		KindExec: 6, KindSocket: 2}
	for _, s := range rep.Kinds {
		if want[s.Kind] != s.Actions {
			t.Errorf("%d %s actions, want %d", s.Actions, s.Kind, want[s.Kind])
		}
	}
}

func TestReplayFindsTamperedVerdict(t *testing.T) {
	dir, s := recordScenario(t, true)
	rep := replayDir(t, dir, ReplayOptions{})
	if len(rep.Differences) != 1 {
		t.Fatalf("%d differences, want 1:\n%s", len(rep.Differences), textOf(t, rep))
	}
	d := rep.Differences[0]
	if d.Seq != s.tampered || d.Recorded != "allow" || d.Evaluated != "deny" || d.Session != "s1" {
		t.Errorf("difference %+v, want record %d allow -> deny", d, s.tampered)
	}
}

func TestReplayStricterIntent(t *testing.T) {
	dir, s := recordScenario(t, false)
	strict := parseIntent(t, strictIntent)
	rep := replayDir(t, dir, ReplayOptions{Intent: strict})

	var newlyDenied, newlyAllowed []uint64
	for _, d := range rep.Differences {
		was := d.Recorded == "allow" || d.Recorded == "audit"
		now := d.Evaluated == "allow" || d.Evaluated == "audit"
		switch {
		case was && !now:
			newlyDenied = append(newlyDenied, d.Seq)
		case !was && now:
			newlyAllowed = append(newlyAllowed, d.Seq)
		}
	}
	// In s1: the postgres socket and db.internal; in s2 (audit mode
	// recorded, block now) everything outside; in s3 the approval is not
	// carried over.
	want := []uint64{s.unixPostgres, s.dbAfterResolution}
	want = append(want, seqsWhere(t, dir, func(r *recordpb.Record) bool {
		return SessionID(r) == "s2" && KernelAction(r) != nil
	})...)
	want = append(want, s.approvedConnect)
	if !slices.Equal(newlyDenied, want) {
		t.Errorf("newly denied %v, want %v:\n%s", newlyDenied, want, textOf(t, rep))
	}
	if !slices.Equal(newlyAllowed, []uint64{s.gitExec}) {
		t.Errorf("newly allowed %v, want git's exec %d", newlyAllowed, s.gitExec)
	}

	var denied, allowed uint64
	for _, k := range rep.Kinds {
		denied += k.NewlyDenied
		allowed += k.NewlyAllowed
	}
	if denied != uint64(len(want)) || allowed != 1 {
		t.Errorf("summary counts %d newly denied and %d newly allowed", denied, allowed)
	}
	if !strings.Contains(rep.Intent, "payments-retry-strict (sha256:") {
		t.Errorf("report names intent %q", rep.Intent)
	}
}

func seqsWhere(t testing.TB, dir string, keep func(*recordpb.Record) bool) []uint64 {
	var out []uint64
	for _, r := range readAll(t, dir) {
		if keep(r) {
			out = append(out, r.Seq)
		}
	}
	return out
}

func TestReplaySessionFilter(t *testing.T) {
	dir, s := recordScenario(t, false)
	rep := replayDir(t, dir, ReplayOptions{Intent: parseIntent(t, strictIntent), Session: "s3"})
	if rep.Sessions != 1 || rep.Actions != 3 {
		t.Errorf("replaying s3 opened %d sessions, evaluated %d actions", rep.Sessions, rep.Actions)
	}
	for _, d := range rep.Differences {
		if d.Session != "s3" {
			t.Errorf("difference outside s3: %+v", d)
		}
	}
	if len(rep.Differences) != 3 || rep.Differences[1].Seq != s.approvedConnect {
		t.Errorf("differences %+v", rep.Differences)
	}
}

func TestReplayWithoutSessionOpen(t *testing.T) {
	sc := newScenario(t)
	sc.tcp("gone", "10.1.2.3:443", allow)
	sc.tcp("", "10.1.2.3:443", deny)
	sc.tcp("", "10.1.2.4:443", allow)
	rep := replayDir(t, sc.close(), ReplayOptions{})
	if rep.Skipped != 1 || len(rep.Warnings) != 1 || !strings.Contains(rep.Warnings[0], "gone") {
		t.Errorf("skipped %d, warnings %q", rep.Skipped, rep.Warnings)
	}
	// A task in no session is denied everything.
	if len(rep.Differences) != 1 || rep.Differences[0].Seq != 3 {
		t.Errorf("differences %+v, want record 3 only", rep.Differences)
	}
}

func TestReplayOutputIsByteIdentical(t *testing.T) {
	dir, _ := recordScenario(t, true)
	strict := parseIntent(t, strictIntent)
	run := func() (string, string) {
		rep := replayDir(t, dir, ReplayOptions{Intent: strict})
		var text, js bytes.Buffer
		if err := rep.WriteText(&text); err != nil {
			t.Fatal(err)
		}
		if err := rep.WriteJSON(&js); err != nil {
			t.Fatal(err)
		}
		return text.String(), js.String()
	}
	text1, json1 := run()
	for range 5 {
		text2, json2 := run()
		if text1 != text2 || json1 != json2 {
			t.Fatalf("replay output differs between runs:\n%s\n---\n%s", text1, text2)
		}
	}
	t.Log("\n" + text1)
}

func TestReplayOnDifference(t *testing.T) {
	dir, _ := recordScenario(t, false)
	var streamed []Difference
	rep := replayDir(t, dir, ReplayOptions{Intent: parseIntent(t, strictIntent),
		OnDifference: func(d Difference) { streamed = append(streamed, d) }})
	kept := replayDir(t, dir, ReplayOptions{Intent: parseIntent(t, strictIntent)})
	if rep.Differences != nil || uint64(len(streamed)) != rep.Differ ||
		fmt.Sprint(streamed) != fmt.Sprint(kept.Differences) {
		t.Errorf("streamed %d differences, report counts %d", len(streamed), rep.Differ)
	}
}

func textOf(t testing.TB, rep *ReplayReport) string {
	var b bytes.Buffer
	if err := rep.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func TestReplayFollowsIntentChange(t *testing.T) {
	sc := newScenario(t)
	sc.open("s1", strictIntent, nil)
	sc.tcp("s1", "10.5.5.5:443", deny)
	in := parseIntent(t, retryIntent)
	sc.add(&recordpb.Record{Body: &recordpb.Record_IntentChange{IntentChange: &recordpb.IntentChange{
		SessionId: "s1", Reason: "widened by operator",
		Intent: intentRef(in)}}})
	sc.tcp("s1", "10.5.5.5:443", allow)
	rep := replayDir(t, sc.close(), ReplayOptions{})
	if rep.Actions != 2 || rep.Differ != 0 {
		t.Errorf("intent change not followed:\n%s", textOf(t, rep))
	}
}
