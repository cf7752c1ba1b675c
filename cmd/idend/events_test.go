package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/idend/idend/internal/events"
	"github.com/idend/idend/internal/events/recordpb"
)

// writeMixedRecording records a session opening, allowed and denied
// connects of two sessions, and a close, in stateDir's recording.
func writeMixedRecording(t *testing.T, stateDir string) {
	t.Helper()
	rec, err := events.OpenRecorder(recordingsDir(stateDir), events.RecorderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	connect := func(session string, last byte, v recordpb.Verdict) *recordpb.Record {
		return &recordpb.Record{Body: &recordpb.Record_Connect{Connect: &recordpb.Connect{
			SessionId: session, Process: &recordpb.Process{Pid: 7, Key: "7:1", Comm: "curl"},
			Identity: &recordpb.Identity{Strength: recordpb.Strength_STRENGTH_BEARER},
			Verdict:  v, Family: 2, Addr: []byte{127, 0, 0, last}, Port: 8080,
			Protocol: recordpb.Protocol_PROTOCOL_TCP,
		}}}
	}
	records := []*recordpb.Record{
		{Body: &recordpb.Record_SessionOpen{SessionOpen: &recordpb.SessionOpen{
			SessionId: "s-a", Principal: "alice",
			Identity: &recordpb.Identity{Strength: recordpb.Strength_STRENGTH_BEARER}}}},
		connect("s-a", 2, recordpb.Verdict_VERDICT_ALLOW),
		connect("s-a", 3, recordpb.Verdict_VERDICT_DENY),
		connect("s-b", 2, recordpb.Verdict_VERDICT_ALLOW),
		{Body: &recordpb.Record_SessionClose{SessionClose: &recordpb.SessionClose{SessionId: "s-a"}}},
	}
	for _, r := range records {
		if _, err := rec.Append(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := rec.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestEvents(t *testing.T) {
	state := t.TempDir()
	writeMixedRecording(t, state)

	tests := []struct {
		args  []string
		kinds []string // of the lines printed, in order
	}{
		{nil, []string{"session_open", "connect", "connect", "connect", "session_close"}},
		{[]string{"--session", "s-a"}, []string{"session_open", "connect", "connect", "session_close"}},
		{[]string{"--session", "s-a,s-b", "--kind", "connect"}, []string{"connect", "connect", "connect"}},
		{[]string{"--verdict", "deny"}, []string{"connect"}},
		{[]string{"--session", "s-b", "--verdict", "deny"}, nil},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			r := idend(t, nil, append([]string{"events", "--state-dir", state}, tt.args...)...)
			if r.status != exitOK {
				t.Fatal(r)
			}
			var kinds []string
			for _, l := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
				// TIME SEQ SESSION PROCESS KIND ...
				if f := strings.Fields(l); len(f) > 4 {
					kinds = append(kinds, f[4])
				}
			}
			if strings.Join(kinds, " ") != strings.Join(tt.kinds, " ") {
				t.Fatalf("want kinds %v, got %s", tt.kinds, r)
			}
		})
	}

	r := idend(t, nil, "events", "--state-dir", state, "--verdict", "deny")
	if f := strings.Fields(r.stdout); len(f) < 7 || f[2] != "s-a" || f[5] != "deny" || f[6] != "bearer" ||
		!strings.Contains(r.stdout, "127.0.0.3") {
		t.Fatalf("denied connect line: %s", r)
	}
}

func TestEventsJSON(t *testing.T) {
	state := t.TempDir()
	writeMixedRecording(t, state)

	r := idend(t, nil, "events", "--state-dir", state, "--json", "--kind", "connect")
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if r.status != exitOK || len(lines) != 3 {
		t.Fatalf("want three JSON lines, got %s", r)
	}
	for i, l := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("line %d: %v: %s", i, err, l)
		}
		if m["kind"] != "connect" || m["seq"] != float64(i+2) || m["session"] == nil || m["verdict"] == nil {
			t.Errorf("line %d: %s", i, l)
		}
	}
}

func TestEventsDamaged(t *testing.T) {
	state := t.TempDir()
	segs := writeRecording(t, recordingsDir(state), 20)
	data := readFile(t, segs[0])
	data[len(data)/2] ^= 0x40
	writeFile(t, segs[0], data)

	r := idend(t, nil, "events", "--state-dir", state)
	lines := strings.Count(r.stdout, "\n")
	if r.status != exitFailure || lines == 0 || lines >= 20 ||
		!strings.Contains(r.stderr, "idend audit verify") {
		t.Fatalf("want the records before the damage, then exit 1 pointing to audit verify, got %s", r)
	}
}

func TestEventsNoRecording(t *testing.T) {
	r := idend(t, nil, "events", "--state-dir", t.TempDir())
	if r.status != exitFailure || !strings.HasPrefix(r.stderr, "idend: ") {
		t.Fatalf("want exit 1, got %s", r)
	}
}

func TestReplayDeterministic(t *testing.T) {
	state := t.TempDir()
	writeMixedRecording(t, state)
	intentFile := exampleIntent("payments-analysis.yaml")

	for _, args := range [][]string{
		{"replay", "--state-dir", state},
		{"replay", "--intent", intentFile, recordingsDir(state)},
		{"replay", "--intent", intentFile, "--json", "--session", "s-a", recordingsDir(state)},
	} {
		first := idend(t, nil, args...)
		if first.status != exitOK || first.stdout == "" {
			t.Fatalf("idend %v: %s", args, first)
		}
		if again := idend(t, nil, args...); again.stdout != first.stdout {
			t.Fatalf("idend %v: output differs between runs:\n%s\n%s", args, first.stdout, again.stdout)
		}
	}

	r := idend(t, nil, "replay", "--intent", intentFile, "--json", recordingsDir(state))
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	var summary map[string]any
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &summary); err != nil || summary["type"] != "summary" {
		t.Fatalf("want a summary object last: %v: %s", err, r)
	}
}
