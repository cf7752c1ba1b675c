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
