package events

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

// On disk, a segment is a header followed by frames:
//
//	header: magic "IDNDSEG\x00" | format u16 | flags u16 | reserved u32 |
//	        index u64 | prev_seq u64 | prev_hash [32] | created_ns i64 |
//	        reserved u32 | crc32c u32                        (80 bytes)
//	frame:  length u32 | crc32c u32 | hash [32] | payload [length]
//
// All integers are little endian. A frame's payload is a marshalled
// recordpb.Record; its hash is SHA-256(previous hash || payload), where the
// previous hash of a segment's first frame is the header's prev_hash. The
// frame checksum covers length, hash and payload; the header checksum
// covers every header byte before it. Reserved bytes are zero.
const (
	segmentMagic      = "IDNDSEG\x00"
	segmentFormat     = 1
	segmentHeaderSize = 80
	frameHeaderSize   = 40

	// MaxRecordSize bounds the marshalled size of one record.
	MaxRecordSize = 1 << 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Frame errors. The chain checks above them turn these into a Problem.
var (
	errTorn         = errors.New("record cut short")
	errChecksum     = errors.New("checksum mismatch")
	errLength       = errors.New("impossible record length")
	errHeaderShort  = errors.New("segment header cut short")
	errHeaderMagic  = errors.New("not a segment file")
	errHeaderCRC    = errors.New("segment header checksum mismatch")
	errHeaderFormat = errors.New("unknown segment format")
)

// segmentHeader opens every segment file.
type segmentHeader struct {
	Index     uint64
	PrevSeq   uint64
	PrevHash  [32]byte
	CreatedNs int64
}

func (h *segmentHeader) marshal() []byte {
	b := make([]byte, segmentHeaderSize)
	copy(b, segmentMagic)
	binary.LittleEndian.PutUint16(b[8:], segmentFormat)
	binary.LittleEndian.PutUint64(b[16:], h.Index)
	binary.LittleEndian.PutUint64(b[24:], h.PrevSeq)
	copy(b[32:64], h.PrevHash[:])
	binary.LittleEndian.PutUint64(b[64:], uint64(h.CreatedNs))
	binary.LittleEndian.PutUint32(b[76:], crc32.Checksum(b[:76], castagnoli))
	return b
}

func (h *segmentHeader) unmarshal(b []byte) error {
	if len(b) < segmentHeaderSize {
		return errHeaderShort
	}
	if string(b[:8]) != segmentMagic {
		return errHeaderMagic
	}
	if crc32.Checksum(b[:76], castagnoli) != binary.LittleEndian.Uint32(b[76:]) {
		return errHeaderCRC
	}
	if v := binary.LittleEndian.Uint16(b[8:]); v != segmentFormat {
		return fmt.Errorf("format %d: %w", v, errHeaderFormat)
	}
	h.Index = binary.LittleEndian.Uint64(b[16:])
	h.PrevSeq = binary.LittleEndian.Uint64(b[24:])
	copy(h.PrevHash[:], b[32:64])
	h.CreatedNs = int64(binary.LittleEndian.Uint64(b[64:]))
	return nil
}

// readSegmentHeader reads the header at the start of r.
func readSegmentHeader(r io.Reader) (segmentHeader, error) {
	var h segmentHeader
	b := make([]byte, segmentHeaderSize)
	if _, err := io.ReadFull(r, b); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return h, errHeaderShort
		}
		return h, err
	}
	return h, h.unmarshal(b)
}

// sealFrame fills in the frame header of frame, whose payload starts at
// frameHeaderSize, and returns the frame's hash. The hash field must hold
// the previous hash on entry: the chain hash is computed over it and the
// payload in place.
func sealFrame(frame []byte) [32]byte {
	binary.LittleEndian.PutUint32(frame, uint32(len(frame)-frameHeaderSize))
	sum := sha256.Sum256(frame[8:])
	copy(frame[8:frameHeaderSize], sum[:])
	crc := crc32.Update(0, castagnoli, frame[:4])
	crc = crc32.Update(crc, castagnoli, frame[8:])
	binary.LittleEndian.PutUint32(frame[4:], crc)
	return sum
}

// appendFrame appends the frame of payload, linked to prev, to dst.
func appendFrame(dst []byte, prev [32]byte, payload []byte) ([]byte, [32]byte) {
	start := len(dst)
	dst = append(dst, make([]byte, frameHeaderSize)...)
	copy(dst[start+8:], prev[:])
	dst = append(dst, payload...)
	return dst, sealFrame(dst[start:])
}

// chainHash returns SHA-256(prev || payload).
func chainHash(prev [32]byte, payload []byte) [32]byte {
	h := sha256.New()
	h.Write(prev[:])
	h.Write(payload)
	var sum [32]byte
	h.Sum(sum[:0])
	return sum
}

// frame is one frame as read, before its link is checked.
type frame struct {
	Offset  int64
	Hash    [32]byte
	Payload []byte
}

// frameReader reads the frames of one segment after its header. The
// payload of a returned frame is valid until the next call.
type frameReader struct {
	r   *bufio.Reader
	off int64
	hdr [frameHeaderSize]byte
	buf []byte
}

func newFrameReader(r io.Reader, off int64) *frameReader {
	return &frameReader{r: bufio.NewReaderSize(r, 256<<10), off: off}
}

// next returns the next frame whose checksum holds, io.EOF at a clean end,
// or one of errTorn, errLength and errChecksum. fr.off stays at the start
// of a frame that could not be read.
func (fr *frameReader) next() (frame, error) {
	f := frame{Offset: fr.off}
	n, err := io.ReadFull(fr.r, fr.hdr[:])
	if n == 0 && errors.Is(err, io.EOF) {
		return f, io.EOF
	}
	if err != nil {
		return f, readErr(err)
	}

	size := binary.LittleEndian.Uint32(fr.hdr[:4])
	if size == 0 || size > MaxRecordSize {
		return f, errLength
	}
	if cap(fr.buf) < int(size) {
		fr.buf = make([]byte, size)
	}
	f.Payload = fr.buf[:size]
	if _, err := io.ReadFull(fr.r, f.Payload); err != nil {
		return f, readErr(err)
	}

	crc := crc32.Update(0, castagnoli, fr.hdr[:4])
	crc = crc32.Update(crc, castagnoli, fr.hdr[8:])
	crc = crc32.Update(crc, castagnoli, f.Payload)
	if crc != binary.LittleEndian.Uint32(fr.hdr[4:]) {
		return f, errChecksum
	}
	copy(f.Hash[:], fr.hdr[8:])
	fr.off += frameHeaderSize + int64(size)
	return f, nil
}

func readErr(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return errTorn
	}
	return err
}

// isFrameError reports whether err says the bytes are bad, as opposed to
// the file being unreadable.
func isFrameError(err error) bool {
	return errors.Is(err, errTorn) || errors.Is(err, errChecksum) ||
		errors.Is(err, errLength)
}

// crc32Frame returns the checksum a frame should carry.
func crc32Frame(frame []byte) uint32 {
	crc := crc32.Update(0, castagnoli, frame[:4])
	return crc32.Update(crc, castagnoli, frame[8:])
}
