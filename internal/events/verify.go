package events

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"google.golang.org/protobuf/proto"

	"github.com/idend/idend/internal/events/recordpb"
)

// Problem is what is wrong at a broken link of a recording.
type Problem int

// Problems Verify reports.
const (
	// ProblemEdited: a record's bytes, or a segment header or the seal,
	// differ from what was written.
	ProblemEdited Problem = iota + 1
	// ProblemDeleted: records or whole segments are missing.
	ProblemDeleted
	// ProblemReordered: records or segments are out of order.
	ProblemReordered
	// ProblemTruncated: a record or a segment was cut short, or the
	// recording ends before the record it was sealed at.
	ProblemTruncated
)

// String returns the problem's name, as Verify prints it.
func (p Problem) String() string {
	switch p {
	case ProblemEdited:
		return "edited"
	case ProblemDeleted:
		return "deleted"
	case ProblemReordered:
		return "reordered"
	case ProblemTruncated:
		return "truncated"
	}
	return fmt.Sprintf("Problem(%d)", int(p))
}

// ChainError is the first broken link of a recording.
type ChainError struct {
	// File is the segment file (or seal) where the link breaks.
	File string
	// Seq is the sequence number of the record at the break or, when that
	// record cannot be read, the one expected there.
	Seq uint64
	// Offset is the byte offset of that record in File.
	Offset  int64
	Problem Problem
	// Detail says what was found, in words.
	Detail string
}

// Error describes the break in one line.
func (e *ChainError) Error() string {
	return fmt.Sprintf("%s: record %d at offset %d: %s: %s",
		e.File, e.Seq, e.Offset, e.Problem, e.Detail)
}

// Report summarises a verified recording.
type Report struct {
	// Segments and Records count what was read.
	Segments int
	Records  uint64
	// FirstSeq and LastSeq are the first and last record read.
	FirstSeq uint64
	LastSeq  uint64
	// ByKind counts records by kind name.
	ByKind map[string]uint64
	// Retired counts the records before FirstSeq that retention deleted,
	// as Retention records in the chain account for.
	Retired uint64
	// Lost sums the counts of the recording's Gap records.
	Lost uint64
	// Sealed is true when the recording reaches the record its seal names.
	Sealed bool
}

// Verify walks every segment of the recording in dir and checks every
// checksum and hash link, the links between segments, that records
// deleted from the start are accounted for by Retention records, and that
// the recording reaches its seal. It returns a *ChainError for the first
// broken link; the Report then covers the records before it. It returns
// other errors when the recording cannot be read at all.
func Verify(dir string) (Report, error) {
	v := &verifier{rep: Report{ByKind: map[string]uint64{}}, claims: map[uint64][32]byte{}}
	segs, err := listSegments(dir)
	if err != nil {
		return v.rep, err
	}
	if len(segs) == 0 {
		return v.rep, fmt.Errorf("%s: %w", dir, ErrNoRecording)
	}
	v.seal, err = readSeal(dir)
	if err != nil {
		return v.rep, &ChainError{File: filepath.Join(dir, sealName), Problem: ProblemEdited,
			Detail: err.Error()}
	}

	for i, s := range segs {
		if err := v.segment(s, i == 0, i == len(segs)-1); err != nil {
			return v.rep, err
		}
	}
	if err := v.checkRetention(segs[0]); err != nil {
		return v.rep, err
	}
	return v.rep, v.checkSeal(dir, segs[len(segs)-1])
}

// verifier holds the state of a walk along the chain.
type verifier struct {
	rep  Report
	seal *seal

	file  string
	index uint64
	seq   uint64
	hash  [32]byte
	end   int64
	// size is the size of the last segment while it is walked, else -1.
	size int64

	sealHash  *[32]byte
	firstPrev segmentHeader
	claims    map[uint64][32]byte
}

func (v *verifier) fail(off int64, seq uint64, p Problem, format string, args ...any) error {
	return &ChainError{File: v.file, Seq: seq, Offset: off, Problem: p,
		Detail: fmt.Sprintf(format, args...)}
}

// segment checks one segment file.
func (v *verifier) segment(s segmentFile, first, last bool) error {
	f, err := os.Open(s.Path)
	if err != nil {
		return fmt.Errorf("open segment: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("open segment: %w", err)
	}

	v.file = s.Path
	h, err := readSegmentHeader(f)
	if errors.Is(err, errHeaderShort) {
		return v.fail(0, v.seq+1, ProblemTruncated, "%v", err)
	}
	if err != nil {
		return v.fail(0, v.seq+1, ProblemEdited, "%v", err)
	}
	if h.Index != s.Index {
		// The header checksum holds, so the file was renamed.
		return v.fail(0, v.seq+1, ProblemReordered, "file holds segment %d", h.Index)
	}
	if first {
		err = v.start(h)
	} else {
		err = v.link(h)
	}
	if err != nil {
		return err
	}

	v.index = h.Index
	v.rep.Segments++
	v.size = fi.Size()
	if !last {
		v.size = -1
	}
	return v.frames(newFrameReader(f, segmentHeaderSize))
}

// start takes the first segment's header as the start of the chain.
func (v *verifier) start(h segmentHeader) error {
	if h.PrevSeq == 0 && h.PrevHash != ([32]byte{}) {
		return v.fail(0, 1, ProblemEdited, "first segment links to a record before record 1")
	}
	v.firstPrev = h
	v.rep.Retired = h.PrevSeq
	v.seq, v.hash = h.PrevSeq, h.PrevHash
	return nil
}

// link checks that a segment continues the one before it.
func (v *verifier) link(h segmentHeader) error {
	next := v.seq + 1
	switch {
	case h.Index != v.index+1:
		return v.fail(0, next, ProblemDeleted, "%s missing",
			spanWords("segment", v.index+1, h.Index-1))
	case h.PrevSeq > v.seq:
		return v.fail(0, next, ProblemTruncated,
			"previous segment ends after record %d, this one continues after record %d",
			v.seq, h.PrevSeq)
	case h.PrevSeq < v.seq:
		return v.fail(0, next, ProblemReordered,
			"previous segment ends after record %d, this one continues after record %d",
			v.seq, h.PrevSeq)
	case h.PrevHash != v.hash:
		return v.fail(0, next, ProblemEdited,
			"header does not link to the hash of record %d", v.seq)
	}
	return nil
}

// frames checks the records of one segment.
func (v *verifier) frames(fr *frameReader) error {
	for {
		f, err := fr.next()
		if errors.Is(err, io.EOF) {
			v.end = fr.off
			return nil
		}
		if err != nil {
			return v.frameError(f.Offset, err)
		}
		r, err := v.record(f)
		if err != nil {
			return err
		}
		if r.Seq != v.seq+1 {
			return v.outOfOrder(fr, f.Offset, r.Seq)
		}
		if chainHash(v.hash, f.Payload) != f.Hash {
			return v.fail(f.Offset, r.Seq, ProblemEdited,
				"hash does not chain to record %d", v.seq)
		}
		v.count(r, f.Hash)
	}
}

func (v *verifier) frameError(off int64, err error) error {
	if errors.Is(err, errTorn) {
		return v.fail(off, v.seq+1, ProblemTruncated, "%v", err)
	}
	if errors.Is(err, errLength) && v.size >= 0 && v.size-off <= frameHeaderSize+MaxRecordSize {
		// What a crash leaves: the next start of the recorder seals it.
		return v.fail(off, v.seq+1, ProblemTruncated,
			"%d unreadable bytes end the recording (a torn write)", v.size-off)
	}
	if isFrameError(err) {
		return v.fail(off, v.seq+1, ProblemEdited, "%v", err)
	}
	return fmt.Errorf("read %s: %w", v.file, err)
}

// record decodes the record of a frame whose checksum holds.
func (v *verifier) record(f frame) (*recordpb.Record, error) {
	r := new(recordpb.Record)
	if err := proto.Unmarshal(f.Payload, r); err != nil {
		return nil, v.fail(f.Offset, v.seq+1, ProblemEdited, "%v: %v", errPayload, err)
	}
	if r.Seq == 0 {
		return nil, v.fail(f.Offset, v.seq+1, ProblemEdited, "record has no sequence number")
	}
	if err := checkSchema(r); err != nil {
		return nil, fmt.Errorf("%s: offset %d: %w", v.file, f.Offset, err)
	}
	return r, nil
}

// outOfOrder classifies a record whose seq is not the next one. A record
// from the future followed by one from the past means records were
// swapped; without such a follower, records were deleted.
func (v *verifier) outOfOrder(fr *frameReader, off int64, seq uint64) error {
	if seq < v.seq+1 {
		return v.fail(off, seq, ProblemReordered, "record %d follows record %d", seq, v.seq)
	}
	if f, err := fr.next(); err == nil {
		var r recordpb.Record
		if proto.Unmarshal(f.Payload, &r) == nil && r.Seq != 0 && r.Seq < seq {
			return v.fail(off, seq, ProblemReordered,
				"record %d follows record %d and comes before record %d", seq, v.seq, r.Seq)
		}
	}
	return v.fail(off, seq, ProblemDeleted, "%s missing", spanWords("record", v.seq+1, seq-1))
}

// spanWords names the things numbered from to to: "record 5 is" or
// "records 5 to 9 are".
func spanWords(thing string, from, to uint64) string {
	if from == to {
		return fmt.Sprintf("%s %d is", thing, from)
	}
	return fmt.Sprintf("%ss %d to %d are", thing, from, to)
}

// count adds a record that links correctly to the report.
func (v *verifier) count(r *recordpb.Record, hash [32]byte) {
	v.seq, v.hash = r.Seq, hash
	if v.rep.Records == 0 {
		v.rep.FirstSeq = r.Seq
	}
	v.rep.Records++
	v.rep.LastSeq = r.Seq
	v.rep.ByKind[Kind(r)]++
	if v.seal != nil && v.seal.Seq == r.Seq {
		v.sealHash = &hash
	}
	switch b := r.GetBody().(type) {
	case *recordpb.Record_Gap:
		v.rep.Lost += b.Gap.GetCount()
	case *recordpb.Record_Retention:
		var h [32]byte
		copy(h[:], b.Retention.GetThroughHash())
		v.claims[b.Retention.GetThroughSeq()] = h
	}
}

// checkRetention checks that records missing from the start of the
// recording were deleted by retention, as a Retention record says.
func (v *verifier) checkRetention(first segmentFile) error {
	h := v.firstPrev
	if h.PrevSeq == 0 {
		return nil
	}
	if claim, ok := v.claims[h.PrevSeq]; ok && claim == h.PrevHash {
		return nil
	}
	var retired uint64
	for seq := range v.claims {
		if seq < h.PrevSeq {
			retired = max(retired, seq)
		}
	}
	v.file = first.Path
	v.rep.Retired = retired
	if retired == 0 {
		return v.fail(0, h.PrevSeq+1, ProblemDeleted,
			"%s missing and no retention record accounts for them",
			spanWords("record", 1, h.PrevSeq))
	}
	return v.fail(0, h.PrevSeq+1, ProblemDeleted,
		"%s missing; retention records account only for records up to %d",
		spanWords("record", retired+1, h.PrevSeq), retired)
}

// checkSeal checks that the recording reaches the record it was sealed at.
func (v *verifier) checkSeal(dir string, last segmentFile) error {
	s := v.seal
	if s == nil || s.Seq < v.firstPrev.PrevSeq {
		return nil
	}
	v.file = last.Path
	if s.Seq > v.seq {
		if s.Index > v.index {
			v.file = filepath.Join(dir, segmentName(v.index+1))
			return v.fail(0, v.seq+1, ProblemTruncated,
				"recording was sealed at record %d in %s, which is missing",
				s.Seq, segmentName(s.Index))
		}
		return v.fail(v.end, v.seq+1, ProblemTruncated,
			"recording ends at record %d but was sealed at record %d", v.seq, s.Seq)
	}
	if s.Seq == v.firstPrev.PrevSeq {
		v.sealHash = &v.firstPrev.PrevHash
	}
	if v.sealHash == nil || *v.sealHash != s.Hash {
		v.file = filepath.Join(dir, sealName)
		return v.fail(0, s.Seq, ProblemEdited,
			"record %d differs from the one the recording was sealed at", s.Seq)
	}
	v.rep.Sealed = true
	return nil
}
