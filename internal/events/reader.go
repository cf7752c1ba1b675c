package events

import (
	"errors"
	"fmt"
	"io"
	"iter"
	"os"

	"google.golang.org/protobuf/proto"

	"github.com/idend/idend/internal/events/recordpb"
)

// ErrNoRecording is returned by OpenReader for a directory without segment
// files.
var ErrNoRecording = errors.New("no recording")

// errLink says a frame's stored hash is not SHA-256(previous hash ||
// payload).
var errLink = errors.New("hash does not chain to the previous record")

// Reader reads the records of a recording in order. It checks every
// record's checksum and its hash link to the record before it in the same
// segment, and stops at the first record that fails, so it never returns a
// damaged record. Use Verify to check a whole recording, including the
// links between segments. A Reader is not safe for concurrent use.
type Reader struct {
	files []string
	next  int
	file  *os.File
	seg   *segmentReader
	err   error
}

// OpenReader reads the segment files in paths, in order. A directory
// stands for all its segment files in index order.
func OpenReader(paths ...string) (*Reader, error) {
	var files []string
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("open recording: %w", err)
		}
		if !fi.IsDir() {
			files = append(files, p)
			continue
		}
		segs, err := listSegments(p)
		if err != nil {
			return nil, err
		}
		if len(segs) == 0 {
			return nil, fmt.Errorf("%s: %w", p, ErrNoRecording)
		}
		for _, s := range segs {
			files = append(files, s.Path)
		}
	}
	return &Reader{files: files}, nil
}

// Next returns the next record, or io.EOF after the last. An error other
// than io.EOF wraps ErrCorrupt when the recording is damaged and
// ErrNewerSchema when it was written by a newer idend; Next then keeps
// returning it.
func (rd *Reader) Next() (*recordpb.Record, error) {
	for rd.err == nil {
		if rd.seg == nil {
			rd.err = rd.openNext()
			continue
		}
		r, err := rd.seg.next()
		if errors.Is(err, io.EOF) {
			rd.closeFile()
			continue
		}
		if err != nil {
			rd.err = err
			break
		}
		return r, nil
	}
	return nil, rd.err
}

// All iterates over the remaining records. An error ends the iteration
// after it is yielded; io.EOF is not yielded.
func (rd *Reader) All() iter.Seq2[*recordpb.Record, error] {
	return func(yield func(*recordpb.Record, error) bool) {
		for {
			r, err := rd.Next()
			if errors.Is(err, io.EOF) {
				return
			}
			if !yield(r, err) || err != nil {
				return
			}
		}
	}
}

// Close releases the file being read.
func (rd *Reader) Close() error {
	rd.closeFile()
	if rd.err == nil {
		rd.err = ErrClosed
	}
	return nil
}

func (rd *Reader) openNext() error {
	if rd.next == len(rd.files) {
		return io.EOF
	}
	name := rd.files[rd.next]
	rd.next++
	f, err := os.Open(name)
	if err != nil {
		return fmt.Errorf("open segment: %w", err)
	}
	seg, err := openSegmentReader(f, name)
	if err != nil {
		f.Close()
		return err
	}
	rd.file, rd.seg = f, seg
	return nil
}

func (rd *Reader) closeFile() {
	if rd.file != nil {
		rd.file.Close()
	}
	rd.file, rd.seg = nil, nil
}

// segmentReader decodes and checks the records of one segment.
type segmentReader struct {
	name   string
	header segmentHeader
	frames *frameReader
	prev   [32]byte
}

func openSegmentReader(r io.Reader, name string) (*segmentReader, error) {
	h, err := readSegmentHeader(r)
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %w", name, err, ErrCorrupt)
	}
	return &segmentReader{
		name:   name,
		header: h,
		frames: newFrameReader(r, segmentHeaderSize),
		prev:   h.PrevHash,
	}, nil
}

// next returns the segment's next record or io.EOF.
func (sr *segmentReader) next() (*recordpb.Record, error) {
	f, err := sr.frames.next()
	if errors.Is(err, io.EOF) {
		return nil, io.EOF
	}
	if err == nil {
		var r *recordpb.Record
		r, err = decodeRecord(sr.prev, f)
		if err == nil {
			sr.prev = f.Hash
			return r, nil
		}
	}
	if isFrameError(err) || errors.Is(err, errLink) || errors.Is(err, errPayload) {
		err = fmt.Errorf("%w: %w", err, ErrCorrupt)
	}
	return nil, fmt.Errorf("%s: offset %d: %w", sr.name, f.Offset, err)
}

// errPayload says a frame's payload is not a Record.
var errPayload = errors.New("payload is not a record")

// decodeRecord checks that f links to prev and decodes its record.
func decodeRecord(prev [32]byte, f frame) (*recordpb.Record, error) {
	if chainHash(prev, f.Payload) != f.Hash {
		return nil, errLink
	}
	r := new(recordpb.Record)
	if err := proto.Unmarshal(f.Payload, r); err != nil {
		return nil, fmt.Errorf("%w: %w", errPayload, err)
	}
	if err := checkSchema(r); err != nil {
		return nil, err
	}
	return r, nil
}
