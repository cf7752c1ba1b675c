package events

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/idend/idend/internal/events/recordpb"
)

// buildRecording writes n connect records into dir with opts and closes
// the recorder. The last 3 go into the last segment in a second run of
// the recorder with larger segments, so that it holds at least 3.
func buildRecording(t *testing.T, dir string, n int, opts RecorderOptions) {
	t.Helper()
	rec := openTestRecorder(t, dir, opts)
	for i := range n {
		if i == n-3 {
			if err := rec.Close(); err != nil {
				t.Fatal(err)
			}
			opts.MaxSegmentBytes = 0
			rec = openTestRecorder(t, dir, opts)
		}
		mustAppend(t, rec, connectRecord("s1", []byte{10, 0, byte(i >> 8), byte(i)}, 443,
			recordpb.Verdict_VERDICT_ALLOW))
	}
	if err := rec.Close(); err != nil {
		t.Fatal(err)
	}
}

// span is where one frame lies in a segment file.
type span struct{ Off, End int64 }

func frameSpans(t *testing.T, path string) []span {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := readSegmentHeader(f); err != nil {
		t.Fatal(err)
	}
	fr := newFrameReader(f, segmentHeaderSize)
	var spans []span
	for {
		fm, err := fr.next()
		if err != nil {
			return spans
		}
		spans = append(spans, span{fm.Offset, fr.off})
	}
}

func segmentPaths(t *testing.T, dir string) []string {
	t.Helper()
	segs, err := listSegments(dir)
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, s := range segs {
		paths = append(paths, s.Path)
	}
	return paths
}

func editFile(t *testing.T, path string, edit func([]byte) []byte) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, edit(b), 0o600); err != nil {
		t.Fatal(err)
	}
}

// firstSeqOf returns the seq of the first record in a segment.
func firstSeqOf(t *testing.T, path string) uint64 {
	t.Helper()
	rs := readAll(t, path)
	return rs[0].Seq
}

func wantChainError(t *testing.T, dir string, file string, seq uint64, off int64, p Problem) {
	t.Helper()
	_, err := Verify(dir)
	var ce *ChainError
	if !errors.As(err, &ce) {
		t.Fatalf("Verify = %v, want a chain error", err)
	}
	t.Log(ce)
	if ce.Problem != p || ce.Seq != seq || (file != "" && ce.File != file) || (off >= 0 && ce.Offset != off) {
		t.Fatalf("Verify found %s at %s record %d offset %d, want %s at %s record %d offset %d",
			ce.Problem, filepath.Base(ce.File), ce.Seq, ce.Offset, p, filepath.Base(file), seq, off)
	}
}

const testSegBytes = 4096

func TestVerifyIntact(t *testing.T) {
	dir := t.TempDir()
	buildRecording(t, dir, 500, RecorderOptions{MaxSegmentBytes: testSegBytes})

	rep, err := Verify(dir)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Records != 500 || rep.FirstSeq != 1 || rep.LastSeq != 500 {
		t.Errorf("report %+v, want records 1 to 500", rep)
	}
	if rep.ByKind[KindConnect] != 500 || len(rep.ByKind) != 1 {
		t.Errorf("counts %v, want 500 connect", rep.ByKind)
	}
	if rep.Segments < 10 || rep.Segments != len(segmentPaths(t, dir)) {
		t.Errorf("report has %d segments", rep.Segments)
	}
	if !rep.Sealed {
		t.Error("closed recording is not sealed")
	}
}

func TestVerifyEmpty(t *testing.T) {
	dir := t.TempDir()
	rec := openTestRecorder(t, dir, RecorderOptions{})
	if err := rec.Close(); err != nil {
		t.Fatal(err)
	}
	rep, err := Verify(dir)
	if err != nil || rep.Records != 0 || rep.Segments != 1 || !rep.Sealed {
		t.Fatalf("Verify = %+v, %v; want one sealed, empty segment", rep, err)
	}
	if _, err := Verify(t.TempDir()); !errors.Is(err, ErrNoRecording) {
		t.Fatalf("Verify of an empty directory = %v, want ErrNoRecording", err)
	}
}

func TestVerifyCatchesEdits(t *testing.T) {
	tests := []struct {
		name string
		// edit damages the recording and returns where Verify must find it.
		edit func(t *testing.T, segs []string) (file string, seq uint64, off int64, p Problem)
	}{
		{"byte flipped in payload", func(t *testing.T, segs []string) (string, uint64, int64, Problem) {
			seg := segs[3]
			sp := frameSpans(t, seg)[5]
			seq := firstSeqOf(t, seg) + 5
			editFile(t, seg, func(b []byte) []byte { b[sp.End-3] ^= 0x20; return b })
			return seg, seq, sp.Off, ProblemEdited
		}},
		{"payload edited with checksum fixed", func(t *testing.T, segs []string) (string, uint64, int64, Problem) {
			seg := segs[3]
			sp := frameSpans(t, seg)[5]
			seq := firstSeqOf(t, seg) + 5
			editFile(t, seg, func(b []byte) []byte {
				b[sp.End-3] ^= 0x20
				resum(b[sp.Off:sp.End])
				return b
			})
			return seg, seq, sp.Off, ProblemEdited
		}},
		{"record deleted from middle", func(t *testing.T, segs []string) (string, uint64, int64, Problem) {
			seg := segs[2]
			sp := frameSpans(t, seg)[4]
			seq := firstSeqOf(t, seg) + 5
			editFile(t, seg, func(b []byte) []byte { return append(b[:sp.Off:sp.Off], b[sp.End:]...) })
			return seg, seq, sp.Off, ProblemDeleted
		}},
		{"two records swapped", func(t *testing.T, segs []string) (string, uint64, int64, Problem) {
			seg := segs[2]
			spans := frameSpans(t, seg)
			a, b := spans[4], spans[5]
			seq := firstSeqOf(t, seg) + 5
			editFile(t, seg, func(buf []byte) []byte {
				out := append([]byte{}, buf[:a.Off]...)
				out = append(out, buf[b.Off:b.End]...)
				out = append(out, buf[a.Off:a.End]...)
				return append(out, buf[b.End:]...)
			})
			return seg, seq, a.Off, ProblemReordered
		}},
		{"last segment truncated mid-record", func(t *testing.T, segs []string) (string, uint64, int64, Problem) {
			seg := segs[len(segs)-1]
			spans := frameSpans(t, seg)
			sp := spans[len(spans)-1]
			seq := firstSeqOf(t, seg) + uint64(len(spans)) - 1
			editFile(t, seg, func(b []byte) []byte { return b[:sp.Off+20] })
			return seg, seq, sp.Off, ProblemTruncated
		}},
		{"middle segment truncated mid-record", func(t *testing.T, segs []string) (string, uint64, int64, Problem) {
			seg := segs[4]
			spans := frameSpans(t, seg)
			sp := spans[len(spans)-2]
			seq := firstSeqOf(t, seg) + uint64(len(spans)) - 2
			editFile(t, seg, func(b []byte) []byte { return b[:sp.End-1] })
			return seg, seq, sp.Off, ProblemTruncated
		}},
		{"last segment cut at a record boundary", func(t *testing.T, segs []string) (string, uint64, int64, Problem) {
			seg := segs[len(segs)-1]
			spans := frameSpans(t, seg)
			sp := spans[len(spans)-2]
			seq := firstSeqOf(t, seg) + uint64(len(spans)) - 2
			editFile(t, seg, func(b []byte) []byte { return b[:sp.Off] })
			return seg, seq, sp.Off, ProblemTruncated
		}},
		{"segment deleted from middle", func(t *testing.T, segs []string) (string, uint64, int64, Problem) {
			seq := firstSeqOf(t, segs[3])
			if err := os.Remove(segs[3]); err != nil {
				t.Fatal(err)
			}
			return segs[4], seq, 0, ProblemDeleted
		}},
		{"final segment deleted", func(t *testing.T, segs []string) (string, uint64, int64, Problem) {
			last := segs[len(segs)-1]
			seq := firstSeqOf(t, last)
			if err := os.Remove(last); err != nil {
				t.Fatal(err)
			}
			return last, seq, 0, ProblemTruncated
		}},
		{"first segment deleted", func(t *testing.T, segs []string) (string, uint64, int64, Problem) {
			seq := firstSeqOf(t, segs[1])
			if err := os.Remove(segs[0]); err != nil {
				t.Fatal(err)
			}
			return segs[1], seq, 0, ProblemDeleted
		}},
		{"segments swapped", func(t *testing.T, segs []string) (string, uint64, int64, Problem) {
			a, b := segs[2], segs[3]
			seq := firstSeqOf(t, a)
			swapSegments(t, a, b)
			return a, seq, 0, ProblemReordered
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			buildRecording(t, dir, 300, RecorderOptions{MaxSegmentBytes: testSegBytes})
			file, seq, off, p := tt.edit(t, segmentPaths(t, dir))
			wantChainError(t, dir, file, seq, off, p)
		})
	}
}

// resum recomputes the checksum of a frame, as a forger without the chain
// would.
func resum(frame []byte) {
	var hdr [frameHeaderSize]byte
	copy(hdr[:], frame)
	crc := crc32Frame(frame)
	frame[4], frame[5], frame[6], frame[7] = byte(crc), byte(crc>>8), byte(crc>>16), byte(crc>>24)
}

// swapSegments swaps the contents of two segment files, keeping each
// header's index so only the chain is wrong.
func swapSegments(t *testing.T, a, b string) {
	t.Helper()
	ba, err := os.ReadFile(a)
	if err != nil {
		t.Fatal(err)
	}
	bb, err := os.ReadFile(b)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(a, bb, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(b, ba, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestVerifyCatchesRewrittenTail(t *testing.T) {
	// A forger who rewrites every record from some point on, recomputing
	// checksums and hashes, keeps the chain consistent; the seal still
	// names the original last record.
	dir := t.TempDir()
	buildRecording(t, dir, 50, RecorderOptions{})
	seg := segmentPaths(t, dir)[0]
	spans := frameSpans(t, seg)
	editFile(t, seg, func(b []byte) []byte {
		var prev [32]byte
		copy(prev[:], b[spans[39].Off+8:])
		out := append([]byte{}, b[:spans[40].Off]...)
		for _, sp := range spans[40:] {
			payload := bytes.Replace(b[sp.Off+frameHeaderSize:sp.End],
				[]byte{10, 0, 0}, []byte{10, 9, 0}, 1)
			out, prev = appendFrame(out, prev, payload)
		}
		return out
	})
	if _, err := tryReadAll(dir); err != nil {
		t.Fatalf("rewritten recording does not read: %v", err)
	}
	wantChainError(t, dir, filepath.Join(dir, sealName), 50, 0, ProblemEdited)
}

func TestVerifyAcceptsRetention(t *testing.T) {
	dir := t.TempDir()
	buildRecording(t, dir, 2000, RecorderOptions{MaxSegmentBytes: testSegBytes,
		MaxTotalBytes: 10 * testSegBytes})

	segs := segmentPaths(t, dir)
	if idx, _ := parseSegmentName(filepath.Base(segs[0])); idx == 1 {
		t.Fatal("retention deleted nothing")
	}
	rep, err := Verify(dir)
	if err != nil {
		t.Fatal(err)
	}
	first := firstSeqOf(t, segs[0])
	if rep.Retired != first-1 || rep.FirstSeq != first || rep.LastSeq < 2000 {
		t.Errorf("report %+v, want records from %d retained", rep, first)
	}
	if rep.ByKind[KindRetention] == 0 {
		t.Errorf("no retention records counted: %v", rep.ByKind)
	}

	// Deleting one more segment by hand is not retention.
	if err := os.Remove(segs[0]); err != nil {
		t.Fatal(err)
	}
	wantChainError(t, dir, segs[1], firstSeqOf(t, segs[1]), 0, ProblemDeleted)
}

func TestVerifyRefusesNewerSchema(t *testing.T) {
	dir := t.TempDir()
	writeFutureRecording(t, dir)
	_, err := Verify(dir)
	if !errors.Is(err, ErrNewerSchema) {
		t.Fatalf("Verify = %v, want ErrNewerSchema", err)
	}
	_, err = tryReadAll(dir)
	if !errors.Is(err, ErrNewerSchema) {
		t.Fatalf("reading = %v, want ErrNewerSchema", err)
	}
	t.Log(err)
}

// writeFutureRecording writes a recording whose second record claims
// schema 2.0, as a newer idend would.
func writeFutureRecording(t *testing.T, dir string) {
	t.Helper()
	buf := (&segmentHeader{Index: 1}).marshal()
	var prev [32]byte
	for seq := uint64(1); seq <= 2; seq++ {
		r := connectRecord("s1", []byte{10, 0, 0, 1}, 443, recordpb.Verdict_VERDICT_ALLOW)
		r.Seq = seq
		r.SchemaVersion = &recordpb.SchemaVersion{Major: uint32(seq), Minor: 3}
		payload, err := proto.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		buf, prev = appendFrame(buf, prev, payload)
	}
	if err := os.WriteFile(filepath.Join(dir, segmentName(1)), buf, 0o600); err != nil {
		t.Fatal(err)
	}
}

func ExampleChainError() {
	err := &ChainError{File: "seg-000000000003.idr", Seq: 57, Offset: 4096,
		Problem: ProblemEdited, Detail: "checksum mismatch"}
	fmt.Println(err)
	// Output: seg-000000000003.idr: record 57 at offset 4096: edited: checksum mismatch
}
