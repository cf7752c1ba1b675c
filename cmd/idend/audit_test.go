package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/idend/idend/internal/events"
	"github.com/idend/idend/internal/events/recordpb"
)

// writeRecording records n connect records in dir with the recorder the
// daemon uses, and returns its segment files.
func writeRecording(t *testing.T, dir string, n int) []string {
	t.Helper()
	rec, err := events.OpenRecorder(dir, events.RecorderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		r := &recordpb.Record{Body: &recordpb.Record_Connect{Connect: &recordpb.Connect{
			SessionId: "s1", CgroupId: 42,
			Process: &recordpb.Process{Pid: uint32(100 + i), Comm: "curl"},
			Verdict: recordpb.Verdict_VERDICT_ALLOW,
			Family:  2, Addr: []byte{10, 0, 0, byte(i)}, Port: 443,
			Protocol: recordpb.Protocol_PROTOCOL_TCP,
		}}}
		if _, err := rec.Append(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := rec.Close(); err != nil {
		t.Fatal(err)
	}
	segs, err := filepath.Glob(filepath.Join(dir, "*.idr"))
	if err != nil || len(segs) == 0 {
		t.Fatalf("no segment files in %s: %v", dir, err)
	}
	return segs
}

func TestAuditVerify(t *testing.T) {
	state := t.TempDir()
	dir := recordingsDir(state)
	writeRecording(t, dir, 20)

	for _, args := range [][]string{
		{"audit", "verify", dir},
		{"audit", "verify", "--state-dir", state},
	} {
		r := idend(t, nil, args...)
		if r.status != exitOK {
			t.Fatalf("idend %v: %s", args, r)
		}
		if !strings.HasPrefix(r.stdout, dir+": ok\n") || !strings.Contains(r.stdout, "connect 20") ||
			!strings.Contains(r.stdout, "sealed    yes") {
			t.Fatalf("idend %v: want an intact, sealed chain with 20 connects, got %s", args, r)
		}
	}
}

func TestAuditVerifyTampered(t *testing.T) {
	tests := []struct {
		name    string
		tamper  func(t *testing.T, seg string)
		problem string
	}{
		{"edited", func(t *testing.T, seg string) {
			data := readFile(t, seg)
			data[len(data)/2] ^= 0x40
			writeFile(t, seg, data)
		}, "edited"},
		{"truncated", func(t *testing.T, seg string) {
			data := readFile(t, seg)
			writeFile(t, seg, data[:len(data)-10])
		}, "truncated"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			segs := writeRecording(t, dir, 20)
			tt.tamper(t, segs[0])

			r := idend(t, nil, "audit", "verify", dir)
			if r.status != exitFailure {
				t.Fatalf("want exit 1, got %s", r)
			}
			if !strings.HasPrefix(r.stdout, dir+": BROKEN\n") || !strings.Contains(r.stdout, segs[0]) ||
				!strings.Contains(r.stdout, ": "+tt.problem+": ") {
				t.Fatalf("want the broken link in %s named as %s, got %s", segs[0], tt.problem, r)
			}
			if !strings.HasPrefix(r.stderr, "idend: recording chain broken: "+segs[0]+": record ") {
				t.Fatalf("want the first broken link on stderr, got %s", r)
			}
		})
	}
}

func TestAuditVerifyNoRecording(t *testing.T) {
	r := idend(t, nil, "audit", "verify", "--state-dir", t.TempDir())
	if r.status != exitFailure || !strings.Contains(r.stderr, "idend: verify ") {
		t.Fatalf("want exit 1, got %s", r)
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// --sealed refuses a recording without its seal: records cut from its end
// look like a daemon that never stopped.
func TestAuditVerifySealed(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "recordings")
	writeRecording(t, dir, 5)
	if r := idend(t, nil, "audit", "verify", "--sealed", dir); r.status != exitOK {
		t.Fatalf("sealed recording with --sealed: %s", r)
	}
	if err := os.Remove(filepath.Join(dir, "seal")); err != nil {
		t.Fatal(err)
	}
	if r := idend(t, nil, "audit", "verify", dir); r.status != exitOK || !strings.Contains(r.stdout, "sealed    no") {
		t.Fatalf("unsealed recording: %s", r)
	}
	r := idend(t, nil, "audit", "verify", "--sealed", dir)
	if r.status != exitFailure || !strings.Contains(r.stderr, "not sealed") {
		t.Fatalf("unsealed recording with --sealed: %s", r)
	}
}
