package events

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/idend/idend/internal/events/recordpb"
)

// canonicalSegment is a valid segment of sample records and the records
// it holds.
func canonicalSegment(tb testing.TB) ([]byte, []*recordpb.Record) {
	tb.Helper()
	seg := (&segmentHeader{Index: 1, CreatedNs: 1}).marshal()
	var prev [32]byte
	recs := sampleRecords()
	for i, r := range recs {
		r.Seq = uint64(i + 1)
		r.SchemaVersion = currentSchema
		payload, err := proto.Marshal(r)
		if err != nil {
			tb.Fatal(err)
		}
		seg, prev = appendFrame(seg, prev, payload)
	}
	return seg, recs
}

// readSegmentBytes returns the records a reader accepts from b, and the
// error that stopped it, if any.
func readSegmentBytes(b []byte) ([]*recordpb.Record, error) {
	sr, err := openSegmentReader(bytes.NewReader(b), "fuzz")
	if err != nil {
		return nil, err
	}
	var rs []*recordpb.Record
	for {
		r, err := sr.next()
		if errors.Is(err, io.EOF) {
			return rs, nil
		}
		if err != nil {
			return rs, err
		}
		rs = append(rs, r)
	}
}

// FuzzReadSegment damages a valid segment (a byte changed, the end cut,
// bytes appended) and checks that the reader returns only records that
// were written, and none from the damaged frame on. The appended bytes
// are also read on their own as a segment, which must not panic.
func FuzzReadSegment(f *testing.F) {
	seg, _ := canonicalSegment(f)
	f.Add(uint(0), byte(0), uint(len(seg)), []byte{})
	f.Add(uint(100), byte(1), uint(len(seg)), []byte{})
	f.Add(uint(7), byte(0x80), uint(len(seg)-3), []byte{1, 2, 3})
	f.Add(uint(0), byte(0), uint(len(seg)), seg[:200])
	f.Fuzz(func(t *testing.T, pos uint, xor byte, cut uint, tail []byte) {
		readSegmentBytes(tail)

		seg, want := canonicalSegment(t)
		pos %= uint(len(seg))
		seg[pos] ^= xor
		seg = append(seg[:min(cut, uint(len(seg)))], tail...)

		got, err := readSegmentBytes(seg)
		for i, r := range got {
			if i >= len(want) || !proto.Equal(r, want[i]) {
				t.Fatalf("record %d accepted but never written: %v", i, r)
			}
		}
		if xor != 0 && int(pos) >= segmentHeaderSize && len(got) > frameIndex(t, pos) {
			t.Fatalf("%d records accepted though frame %d was changed", len(got), frameIndex(t, pos))
		}
		if xor != 0 && int(pos) < segmentHeaderSize && err == nil {
			t.Fatal("segment with a changed header accepted")
		}
	})
}

// frameIndex returns the index of the frame of the canonical segment that
// holds byte pos.
func frameIndex(t *testing.T, pos uint) int {
	seg, _ := canonicalSegment(t)
	fr := newFrameReader(bytes.NewReader(seg[segmentHeaderSize:]), segmentHeaderSize)
	for i := 0; ; i++ {
		if _, err := fr.next(); err != nil {
			t.Fatalf("canonical segment unreadable: %v", err)
		}
		if int64(pos) < fr.off {
			return i
		}
	}
}

// FuzzDecodeRecord frames an arbitrary payload, changes one byte of the
// frame, and decodes it: a changed frame is never accepted, and an
// unchanged one decodes exactly when the payload is a readable record.
func FuzzDecodeRecord(f *testing.F) {
	_, recs := canonicalSegment(f)
	for _, r := range recs {
		payload, _ := proto.Marshal(r)
		f.Add(payload, uint(0), byte(0))
		f.Add(payload, uint(len(payload)/2), byte(4))
	}
	f.Add([]byte{}, uint(0), byte(0))
	f.Add([]byte{0x08}, uint(3), byte(0))
	f.Fuzz(func(t *testing.T, payload []byte, pos uint, xor byte) {
		prev := [32]byte{1, 2, 3}
		b, _ := appendFrame(nil, prev, payload)
		b[pos%uint(len(b))] ^= xor

		got, err := decodeFrameBytes(prev, b)
		if xor != 0 {
			if err == nil {
				t.Fatalf("changed frame accepted: %v", got)
			}
			return
		}
		var want recordpb.Record
		wantErr := proto.Unmarshal(payload, &want)
		if wantErr == nil {
			wantErr = checkSchema(&want)
		}
		if len(payload) == 0 || len(payload) > MaxRecordSize {
			wantErr = errLength
		}
		if (err == nil) != (wantErr == nil) {
			t.Fatalf("decode error %v, want %v", err, wantErr)
		}
		if err == nil && !proto.Equal(got, &want) {
			t.Fatalf("decoded %v, want %v", got, &want)
		}
	})
}

func decodeFrameBytes(prev [32]byte, b []byte) (*recordpb.Record, error) {
	fr := newFrameReader(bytes.NewReader(b), 0)
	f, err := fr.next()
	if err != nil {
		return nil, err
	}
	return decodeRecord(prev, f)
}
