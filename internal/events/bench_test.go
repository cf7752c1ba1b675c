package events

import (
	"testing"

	"github.com/idend/idend/internal/events/recordpb"
)

// BenchmarkRecorderAppend appends small connect records, as the ring
// buffer reader does under a flood, with the default fsync policy.
func BenchmarkRecorderAppend(b *testing.B) {
	rec := openTestRecorder(b, b.TempDir(), RecorderOptions{})
	defer rec.Close()
	r := connectRecord("7c9e6679-7425-40de-944b-e07fc1f90ae7", []byte{10, 20, 1, 7}, 443,
		recordpb.Verdict_VERDICT_ALLOW)

	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		r.WallNs, r.MonoNs = 0, 0
		if _, err := rec.Append(r); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
}

// BenchmarkRecorderAppendBatch appends the same records 64 at a time.
func BenchmarkRecorderAppendBatch(b *testing.B) {
	rec := openTestRecorder(b, b.TempDir(), RecorderOptions{})
	defer rec.Close()
	batch := make([]*recordpb.Record, 64)
	for i := range batch {
		batch[i] = connectRecord("7c9e6679-7425-40de-944b-e07fc1f90ae7",
			[]byte{10, 20, 1, byte(i)}, 443, recordpb.Verdict_VERDICT_ALLOW)
	}

	b.ReportAllocs()
	n := 0
	for b.Loop() {
		for _, r := range batch {
			r.WallNs, r.MonoNs = 0, 0
		}
		if _, err := rec.AppendBatch(batch); err != nil {
			b.Fatal(err)
		}
		n += len(batch)
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "records/s")
}

// replayBenchRecords returns a session's opening and n kernel actions: a
// mix of connects to 1024 destinations (traffic repeats its
// destinations), execs and unix connects, with the verdicts the evaluator
// gives.
func replayBenchRecords(b *testing.B, n int) []*recordpb.Record {
	in := parseIntent(b, retryIntent)
	rs := []*recordpb.Record{{Seq: 1, Body: &recordpb.Record_SessionOpen{SessionOpen: &recordpb.SessionOpen{
		SessionId: "s1",
		Intent:    &recordpb.IntentRef{Name: in.Name, Canonical: in.Canonical()},
		ExecFiles: []*recordpb.ExecFile{{Path: "/usr/bin/python3", Dev: python.Dev, Ino: python.Ino}},
	}}}}
	for i := range n {
		var r *recordpb.Record
		switch i % 8 {
		case 6:
			r = &recordpb.Record{Body: &recordpb.Record_Exec{Exec: &recordpb.Exec{SessionId: "s1",
				Process: testProcess(78), Verdict: allow, Path: "/usr/bin/python3",
				Dev: python.Dev, Ino: python.Ino}}}
		case 7:
			r = &recordpb.Record{Body: &recordpb.Record_UnixConnect{UnixConnect: &recordpb.UnixConnect{
				SessionId: "s1", Process: testProcess(77), Verdict: deny, Path: "/run/docker.sock"}}}
		default:
			v := allow
			if i%3 == 0 {
				v = deny
			}
			r = connectRecord("s1", []byte{10, 0, byte(i>>8) & 3, byte(i)}, 443, v)
			if v == deny {
				r.GetConnect().Addr[0] = 11
			}
		}
		r.Seq = uint64(i + 2)
		rs = append(rs, r)
	}
	return rs
}

func sliceRecords(rs []*recordpb.Record) func(func(*recordpb.Record, error) bool) {
	return func(yield func(*recordpb.Record, error) bool) {
		for _, r := range rs {
			if !yield(r, nil) {
				return
			}
		}
	}
}

// BenchmarkReplay re-evaluates decoded records: the evaluation side of
// idend replay.
func BenchmarkReplay(b *testing.B) {
	rs := replayBenchRecords(b, 100_000)
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		rep, err := Replay(sliceRecords(rs), ReplayOptions{})
		if err != nil {
			b.Fatal(err)
		}
		if rep.Differ != 0 {
			b.Fatalf("%d differences", rep.Differ)
		}
		n += len(rs)
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "records/s")
}

// BenchmarkReplayFromDisk reads, checks and re-evaluates a recording: the
// whole of idend replay.
func BenchmarkReplayFromDisk(b *testing.B) {
	dir := b.TempDir()
	rec := openTestRecorder(b, dir, RecorderOptions{})
	for _, r := range replayBenchRecords(b, 100_000) {
		mustAppend(b, rec, r)
	}
	if err := rec.Close(); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		rd, err := OpenReader(dir)
		if err != nil {
			b.Fatal(err)
		}
		rep, err := Replay(rd.All(), ReplayOptions{})
		if err != nil {
			b.Fatal(err)
		}
		n += int(rep.Records)
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "records/s")
}
