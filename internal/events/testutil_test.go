package events

import (
	"errors"
	"io"
	"strconv"
	"testing"

	"github.com/idend/idend/internal/events/recordpb"
)

func fmtKey(pid uint32, start uint64) string {
	return strconv.FormatUint(uint64(pid), 10) + ":" + strconv.FormatUint(start, 10)
}

// readAll reads every record of paths, failing the test on any error.
func readAll(t testing.TB, paths ...string) []*recordpb.Record {
	t.Helper()
	rs, err := tryReadAll(paths...)
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

func tryReadAll(paths ...string) ([]*recordpb.Record, error) {
	rd, err := OpenReader(paths...)
	if err != nil {
		return nil, err
	}
	defer rd.Close()
	var rs []*recordpb.Record
	for {
		r, err := rd.Next()
		if errors.Is(err, io.EOF) {
			return rs, nil
		}
		if err != nil {
			return rs, err
		}
		rs = append(rs, r)
	}
}

func openTestRecorder(t testing.TB, dir string, opts RecorderOptions) *Recorder {
	t.Helper()
	rec, err := OpenRecorder(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

func mustAppend(t testing.TB, rec *Recorder, rs ...*recordpb.Record) {
	t.Helper()
	for _, r := range rs {
		if _, err := rec.Append(r); err != nil {
			t.Fatal(err)
		}
	}
}
