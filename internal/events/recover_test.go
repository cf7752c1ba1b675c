package events

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/idend/idend/internal/events/recordpb"
)

func appendToFile(t *testing.T, path string, b []byte) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

func lastSegment(t *testing.T, dir string) string {
	t.Helper()
	segs := segmentPaths(t, dir)
	return segs[len(segs)-1]
}

func TestTornTailSealed(t *testing.T) {
	// A whole frame written after the last one, cut short, and random
	// bytes stand for a record the daemon was writing when it died.
	var prev [32]byte
	whole, _ := appendFrame(nil, prev, []byte("a record that never finished"))
	tails := map[string][]byte{
		"cut frame":        whole[:len(whole)-5],
		"cut frame header": whole[:12],
		"garbage":          []byte(strings.Repeat("\xa5\x00\x17", 40)),
	}
	for name, tail := range tails {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			buildRecording(t, dir, 100, RecorderOptions{MaxSegmentBytes: testSegBytes})
			seg := lastSegment(t, dir)
			off := appendToFile(t, seg, tail)
			wantChainError(t, dir, seg, 101, off, ProblemTruncated)

			rec := openTestRecorder(t, dir, RecorderOptions{})
			rv := rec.Recovery()
			if rv == nil || !rv.Truncated || rv.File != seg || rv.Offset != off ||
				rv.Bytes != int64(len(tail)) || rv.GapSeq != 101 {
				t.Fatalf("recovery %+v, want %d bytes cut at %s:%d, gap 101",
					rv, len(tail), seg, off)
			}
			mustAppend(t, rec, connectRecord("s1", []byte{10, 1, 1, 1}, 80,
				recordpb.Verdict_VERDICT_DENY))
			if err := rec.Close(); err != nil {
				t.Fatal(err)
			}

			rep, err := Verify(dir)
			if err != nil {
				t.Fatalf("Verify after sealing: %v", err)
			}
			if rep.LastSeq != 102 || rep.ByKind[KindGap] != 1 || !rep.Sealed {
				t.Errorf("report %+v, want a sealed chain of 102 records with a gap", rep)
			}
			gap := readAll(t, dir)[100].GetGap()
			if gap.GetReason() != GapTornTail || gap.GetFirstSeq() != 100 || gap.GetLastSeq() != 101 {
				t.Errorf("record 101 is %v, want a torn tail gap after record 100", gap)
			}
		})
	}
}

func TestCleanReopenHasNoRecovery(t *testing.T) {
	dir := t.TempDir()
	buildRecording(t, dir, 10, RecorderOptions{})
	rec := openTestRecorder(t, dir, RecorderOptions{})
	defer rec.Close()
	if rv := rec.Recovery(); rv != nil {
		t.Fatalf("clean recording recovered: %+v", rv)
	}
	if seq, err := rec.Append(connectRecord("s1", []byte{1, 1, 1, 1}, 1, 1)); err != nil || seq != 11 {
		t.Fatalf("Append = %d, %v; want 11", seq, err)
	}
}

func TestTornSegmentHeaderRemoved(t *testing.T) {
	dir := t.TempDir()
	buildRecording(t, dir, 100, RecorderOptions{MaxSegmentBytes: testSegBytes})
	segs := segmentPaths(t, dir)
	index, _ := parseSegmentName(filepath.Base(segs[len(segs)-1]))
	torn := filepath.Join(dir, segmentName(index+1))
	if err := os.WriteFile(torn, []byte(segmentMagic+"\x01"), 0o600); err != nil {
		t.Fatal(err)
	}

	rec := openTestRecorder(t, dir, RecorderOptions{})
	if rv := rec.Recovery(); rv == nil || rv.File != torn {
		t.Fatalf("recovery %+v, want the torn segment %s", rv, torn)
	}
	if err := rec.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(torn); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("torn segment still there: %v", err)
	}
	if _, err := Verify(dir); err != nil {
		t.Fatal(err)
	}
}

func TestLargeDamageKept(t *testing.T) {
	// Damage further from the end than one record is not a torn write: the
	// recorder keeps it for inspection and goes on in a new segment.
	dir := t.TempDir()
	buildRecording(t, dir, 12000, RecorderOptions{})
	seg := lastSegment(t, dir)
	sp := frameSpans(t, seg)[10]
	editFile(t, seg, func(b []byte) []byte { b[sp.End-1] ^= 1; return b })

	rec := openTestRecorder(t, dir, RecorderOptions{})
	rv := rec.Recovery()
	if rv == nil || rv.Truncated || rv.Offset != sp.Off {
		t.Fatalf("recovery %+v, want damage at %d kept", rv, sp.Off)
	}
	if err := rec.Close(); err != nil {
		t.Fatal(err)
	}
	if n := len(segmentPaths(t, dir)); n != 2 {
		t.Errorf("%d segments, want the damaged one and a new one", n)
	}
	wantChainError(t, dir, seg, 11, sp.Off, ProblemEdited)
}

// TestRecoverAfterKill kills a process that is recording as fast as it
// can, then checks that the next start seals whatever the kill left and
// that the chain verifies.
func TestRecoverAfterKill(t *testing.T) {
	if os.Getenv("IDEND_TEST_RECORD_DIR") != "" {
		recordForever(t, os.Getenv("IDEND_TEST_RECORD_DIR"))
		return
	}
	for range 3 {
		dir := t.TempDir()
		cmd := exec.Command(os.Args[0], "-test.run=^TestRecoverAfterKill$")
		cmd.Env = append(os.Environ(), "IDEND_TEST_RECORD_DIR="+dir)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		waitForBytes(t, dir, 3*testSegBytes)
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		cmd.Wait()

		rec := openTestRecorder(t, dir, RecorderOptions{})
		t.Logf("recovery after kill: %+v", rec.Recovery())
		if err := rec.Close(); err != nil {
			t.Fatal(err)
		}
		rep, err := Verify(dir)
		if err != nil {
			t.Fatalf("Verify after kill and reopen: %v", err)
		}
		if rep.Records < 10 {
			t.Errorf("only %d records survived", rep.Records)
		}
	}
}

func recordForever(t *testing.T, dir string) {
	rec := openTestRecorder(t, dir, RecorderOptions{MaxSegmentBytes: testSegBytes,
		BufferBytes: 1000, Fsync: FsyncInterval, FsyncInterval: time.Millisecond})
	for i := 0; ; i++ {
		r := connectRecord("s1", []byte{10, 0, byte(i >> 8), byte(i)}, 443,
			recordpb.Verdict_VERDICT_ALLOW)
		if i%7 == 0 {
			r = sampleRecords()[i%len(sampleRecords())]
		}
		mustAppend(t, rec, r)
	}
}

func waitForBytes(t *testing.T, dir string, n int64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		var total int64
		if segs, err := listSegments(dir); err == nil {
			for _, s := range segs {
				if fi, err := os.Stat(s.Path); err == nil {
					total += fi.Size()
				}
			}
		}
		if total >= n {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("recording in %s did not reach %d bytes", dir, n)
}
