package events

import (
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/idend/idend/internal/events/recordpb"
)

// Reasons of Gap records.
const (
	// GapRingBuffer: the kernel dropped events because the ring buffer
	// between it and the daemon was full.
	GapRingBuffer = "ring buffer full"
	// GapTornTail: a record the daemon was writing when it stopped was cut
	// off on the next start.
	GapTornTail = "torn tail sealed"
	// GapCorruptTail: the end of a segment was damaged beyond one record;
	// it was left in place and the recording went on in a new segment.
	GapCorruptTail = "corrupt tail preserved"
)

// Recovery describes damage OpenRecorder found at the end of the
// recording and how it sealed it.
type Recovery struct {
	// File is the damaged segment; its damage starts at Offset and is
	// Bytes long.
	File   string
	Offset int64
	Bytes  int64
	// Truncated is true when the damage was at most one torn record and
	// was cut off; the chain then verifies. Otherwise the bytes were kept
	// for inspection, the recording continues in a new segment, and Verify
	// reports the damage.
	Truncated bool
	// GapSeq is the sequence number of the Gap record written in its place.
	GapSeq uint64
}

// resume picks up the chain where the existing segments end.
func (rec *Recorder) resume() error {
	segs, err := listSegments(rec.dir)
	if err != nil {
		return err
	}
	for len(segs) > 0 {
		last := segs[len(segs)-1]
		done, err := rec.resumeSegment(last, len(segs) > 1)
		if err != nil {
			return err
		}
		if done {
			break
		}
		segs = segs[:len(segs)-1]
	}
	if len(segs) == 0 {
		return rec.createSegment(1)
	}

	older := make([]segmentState, 0, len(segs))
	for _, s := range segs[:len(segs)-1] {
		older = append(older, statSegment(s))
	}
	rec.segs = append(older, rec.segs...)
	return nil
}

// statSegment reads what retention needs to know of an older segment. A
// damaged header is left for Verify to report.
func statSegment(s segmentFile) segmentState {
	st := segmentState{Path: s.Path, Header: segmentHeader{Index: s.Index}}
	f, err := os.Open(s.Path)
	if err != nil {
		return st
	}
	defer f.Close()
	if h, err := readSegmentHeader(f); err == nil {
		st.Header = h
	}
	if fi, err := f.Stat(); err == nil {
		st.Size = fi.Size()
	}
	return st
}

// resumeSegment continues the chain at the end of the last segment. It
// returns false when the segment was only a torn header and was removed,
// so that the one before it is the last.
func (rec *Recorder) resumeSegment(s segmentFile, hasOlder bool) (bool, error) {
	f, err := os.Open(s.Path)
	if err != nil {
		return false, fmt.Errorf("open last segment: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return false, fmt.Errorf("open last segment: %w", err)
	}

	h, err := readSegmentHeader(f)
	if err != nil {
		return false, rec.dropTornHeader(s, fi.Size(), hasOlder, err)
	}
	end, err := rec.scanTail(f, h)
	if err != nil {
		return false, fmt.Errorf("scan %s: %w", s.Path, err)
	}
	return true, rec.repairTail(s, h, end, fi.Size())
}

// dropTornHeader removes a last segment whose header was being written
// when the daemon stopped.
func (rec *Recorder) dropTornHeader(s segmentFile, size int64, hasOlder bool, err error) error {
	if size > segmentHeaderSize || (!hasOlder && s.Index != 1) {
		return fmt.Errorf("segment %s: %w: %w", s.Path, err, ErrCorrupt)
	}
	if err := os.Remove(s.Path); err != nil {
		return fmt.Errorf("remove torn segment: %w", err)
	}
	rec.recovery = &Recovery{File: s.Path, Bytes: size, Truncated: true}
	return nil
}

// scanTail reads the frames of the last segment, sets the chain state to
// its last good frame and returns the offset just after it.
func (rec *Recorder) scanTail(f io.Reader, h segmentHeader) (int64, error) {
	rec.seq, rec.hash = h.PrevSeq, h.PrevHash
	fr := newFrameReader(f, segmentHeaderSize)
	var last []byte
	count := 0
	for {
		fm, err := fr.next()
		if errors.Is(err, io.EOF) || isFrameError(err) {
			break
		}
		if err != nil {
			return 0, err
		}
		count++
		rec.hash = fm.Hash
		last = append(last[:0], fm.Payload...)
	}

	rec.segRecords = count
	if count > 0 {
		rec.seq = h.PrevSeq + uint64(count)
		var r recordpb.Record
		if proto.Unmarshal(last, &r) == nil && r.Seq != 0 {
			rec.seq = r.Seq
		}
	}
	return fr.off, nil
}

// repairTail cuts a torn final record off, or leaves larger damage in
// place and moves on to a new segment, and opens the segment to append.
func (rec *Recorder) repairTail(s segmentFile, h segmentHeader, end, size int64) error {
	bad := size - end
	if bad > 0 {
		rec.recovery = &Recovery{File: s.Path, Offset: end, Bytes: bad}
	}
	if bad > frameHeaderSize+MaxRecordSize {
		rec.segs = append(rec.segs, segmentState{Path: s.Path, Header: h, Size: size})
		return rec.createSegment(h.Index + 1)
	}
	if bad > 0 {
		if err := os.Truncate(s.Path, end); err != nil {
			return fmt.Errorf("cut torn record: %w", err)
		}
		rec.recovery.Truncated = true
	}

	f, err := os.OpenFile(s.Path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return fmt.Errorf("open last segment: %w", err)
	}
	if bad > 0 {
		if err := f.Sync(); err != nil {
			f.Close()
			return fmt.Errorf("sync cut segment: %w", err)
		}
	}
	rec.file = f
	rec.segs = append(rec.segs, segmentState{Path: s.Path, Header: h, Size: end})
	return nil
}

// sealRecovery appends the durable Gap record that stands for the damage.
func (rec *Recorder) sealRecovery() error {
	rv := rec.recovery
	g := &recordpb.Gap{
		Reason: GapTornTail,
		Detail: fmt.Sprintf("%s: %d bytes at offset %d cut off", rv.File, rv.Bytes, rv.Offset),
	}
	if rv.Truncated && rv.Bytes >= frameHeaderSize {
		g.Count = 1
	}
	if !rv.Truncated {
		g.Reason = GapCorruptTail
		g.Detail = fmt.Sprintf("%s: %d damaged bytes at offset %d kept",
			rv.File, rv.Bytes, rv.Offset)
	}
	r := &recordpb.Record{Body: &recordpb.Record_Gap{Gap: g}}
	if err := rec.appendLocked(r, time.Now()); err != nil {
		return err
	}
	rv.GapSeq = r.Seq
	return rec.syncLocked()
}
