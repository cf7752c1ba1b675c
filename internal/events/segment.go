package events

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

const (
	segmentPrefix = "seg-"
	segmentSuffix = ".idr"
	sealName      = "seal"
	sealMagic     = "IDNDSEAL"
	sealSize      = 60
)

// segmentName returns the file name of the segment with the given index.
// Names sort in index order.
func segmentName(index uint64) string {
	return fmt.Sprintf("%s%012d%s", segmentPrefix, index, segmentSuffix)
}

// parseSegmentName returns the index in a segment file name.
func parseSegmentName(name string) (uint64, bool) {
	digits, ok := strings.CutPrefix(name, segmentPrefix)
	if !ok {
		return 0, false
	}
	digits, ok = strings.CutSuffix(digits, segmentSuffix)
	if !ok || len(digits) < 12 {
		return 0, false
	}
	index, err := strconv.ParseUint(digits, 10, 64)
	return index, err == nil && index > 0
}

// segmentFile is a segment file found in a recording directory.
type segmentFile struct {
	Index uint64
	Path  string
}

// listSegments returns the segment files in dir in index order.
func listSegments(dir string) ([]segmentFile, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list segments: %w", err)
	}
	var segs []segmentFile
	for _, e := range entries {
		index, ok := parseSegmentName(e.Name())
		if !ok || !e.Type().IsRegular() {
			continue
		}
		segs = append(segs, segmentFile{index, filepath.Join(dir, e.Name())})
	}
	slices.SortFunc(segs, func(a, b segmentFile) int {
		return cmp.Compare(a.Index, b.Index)
	})
	return segs, nil
}

// seal is the last record the recorder knew to be durable when it closed a
// segment or the recording. Verify uses it to tell a recording whose end
// was cut off from one that simply ends.
type seal struct {
	Seq   uint64
	Hash  [32]byte
	Index uint64
}

var errSealCorrupt = errors.New("seal file corrupt")

func (s *seal) marshal() []byte {
	b := make([]byte, sealSize)
	copy(b, sealMagic)
	binary.LittleEndian.PutUint64(b[8:], s.Seq)
	copy(b[16:48], s.Hash[:])
	binary.LittleEndian.PutUint64(b[48:], s.Index)
	binary.LittleEndian.PutUint32(b[56:], crc32.Checksum(b[:56], castagnoli))
	return b
}

func (s *seal) unmarshal(b []byte) error {
	if len(b) != sealSize || string(b[:8]) != sealMagic ||
		crc32.Checksum(b[:56], castagnoli) != binary.LittleEndian.Uint32(b[56:]) {
		return errSealCorrupt
	}
	s.Seq = binary.LittleEndian.Uint64(b[8:])
	copy(s.Hash[:], b[16:48])
	s.Index = binary.LittleEndian.Uint64(b[48:])
	return nil
}

// readSeal returns the seal of the recording in dir, or nil when it has
// none.
func readSeal(dir string) (*seal, error) {
	b, err := os.ReadFile(filepath.Join(dir, sealName))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read seal: %w", err)
	}
	var s seal
	if err := s.unmarshal(b); err != nil {
		return nil, err
	}
	return &s, nil
}

// writeSeal replaces the seal of the recording in dir atomically.
func writeSeal(dir string, s *seal) error {
	tmp := filepath.Join(dir, sealName+".tmp")
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("write seal: %w", err)
	}
	_, err = f.Write(s.marshal())
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write seal: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, sealName)); err != nil {
		return fmt.Errorf("write seal: %w", err)
	}
	return syncDir(dir)
}

// syncDir makes entries created in or removed from dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
