package events

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/idend/idend/internal/events/recordpb"
)

func TestSampleCoversEveryKind(t *testing.T) {
	body := (&recordpb.Record{}).ProtoReflect().Descriptor().Oneofs().ByName("body")
	seen := map[protoreflect.Name]bool{}
	for _, r := range sampleRecords() {
		seen[r.ProtoReflect().WhichOneof(body).Name()] = true
	}
	for i := range body.Fields().Len() {
		if name := body.Fields().Get(i).Name(); !seen[name] {
			t.Errorf("sampleRecords has no %s record", name)
		}
	}
}

func TestKindNames(t *testing.T) {
	body := (&recordpb.Record{}).ProtoReflect().Descriptor().Oneofs().ByName("body")
	seen := map[string]bool{}
	for _, r := range sampleRecords() {
		field := string(r.ProtoReflect().WhichOneof(body).Name())
		kind := Kind(r)
		if kind != field && kind != strings.TrimSuffix(field, "_create") &&
			!(field == "connect" && kind == KindSendmsg) {
			t.Errorf("%s record has kind %s", field, kind)
		}
		seen[kind] = true
	}
	r := sampleRecords()[8]
	r.GetUnixConnect().Op = recordpb.ConnectOp_CONNECT_OP_SENDMSG
	seen[Kind(r)] = true
	for _, k := range Kinds {
		if !seen[k] {
			t.Errorf("no sample record of kind %s", k)
		}
	}
	if len(Kinds) != len(seen) || Kind(&recordpb.Record{}) != KindUnknown {
		t.Errorf("kinds %v, seen %v", Kinds, seen)
	}
}

func TestRoundTripEveryKind(t *testing.T) {
	dir := t.TempDir()
	rec := openTestRecorder(t, dir, RecorderOptions{})
	want := sampleRecords()
	mustAppend(t, rec, want[:5]...)
	if _, err := rec.AppendBatch(want[5:]); err != nil {
		t.Fatal(err)
	}
	if err := rec.Close(); err != nil {
		t.Fatal(err)
	}

	got := readAll(t, dir)
	if len(got) != len(want) {
		t.Fatalf("read %d records, wrote %d", len(got), len(want))
	}
	for i := range want {
		if got[i].Seq != uint64(i+1) {
			t.Errorf("record %d has seq %d", i, got[i].Seq)
		}
		if got[i].WallNs == 0 || got[i].MonoNs == 0 {
			t.Errorf("record %d has no timestamps", i)
		}
		if got[i].GetSchemaVersion().GetMajor() != SchemaMajor {
			t.Errorf("record %d has schema %v", i, got[i].GetSchemaVersion())
		}
		if !proto.Equal(got[i], want[i]) {
			t.Errorf("record %d (%s) changed:\n got %v\nwant %v", i, Kind(want[i]), got[i], want[i])
		}
	}
}

func TestConcurrentAppend(t *testing.T) {
	dir := t.TempDir()
	rec := openTestRecorder(t, dir, RecorderOptions{MaxSegmentBytes: 64 << 10})
	const writers, each = 8, 2000
	var wg sync.WaitGroup
	seqs := make([][]uint64, writers)
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				r := connectRecord(fmt.Sprintf("s%d", w), []byte{10, byte(w), byte(i >> 8), byte(i)},
					uint32(i), recordpb.Verdict_VERDICT_ALLOW)
				seq, err := rec.Append(r)
				if err != nil {
					t.Error(err)
					return
				}
				seqs[w] = append(seqs[w], seq)
			}
		})
	}
	wg.Wait()
	if err := rec.Close(); err != nil {
		t.Fatal(err)
	}

	rep, err := Verify(dir)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Records != writers*each {
		t.Fatalf("%d records, want %d", rep.Records, writers*each)
	}
	// Each writer's records are in the order it appended them.
	got := readAll(t, dir)
	for w := range writers {
		for i, seq := range seqs[w] {
			c := got[seq-1].GetConnect()
			if c.GetSessionId() != fmt.Sprintf("s%d", w) || c.GetPort() != uint32(i) {
				t.Fatalf("record %d is %v, want writer %d's record %d", seq, c, w, i)
			}
		}
	}
}

func TestRotateByAge(t *testing.T) {
	dir := t.TempDir()
	rec := openTestRecorder(t, dir, RecorderOptions{MaxSegmentAge: time.Nanosecond})
	for range 5 {
		mustAppend(t, rec, connectRecord("s1", []byte{1, 2, 3, 4}, 1, recordpb.Verdict_VERDICT_ALLOW))
		time.Sleep(time.Millisecond)
	}
	if err := rec.Close(); err != nil {
		t.Fatal(err)
	}
	if n := len(segmentPaths(t, dir)); n != 5 {
		t.Errorf("%d segments, want one per record", n)
	}
	if _, err := Verify(dir); err != nil {
		t.Fatal(err)
	}
}

func TestRecordTooLarge(t *testing.T) {
	dir := t.TempDir()
	rec := openTestRecorder(t, dir, RecorderOptions{})
	defer rec.Close()
	big := &recordpb.Record{Body: &recordpb.Record_Exec{Exec: &recordpb.Exec{
		Argv: []string{strings.Repeat("x", MaxRecordSize)}}}}
	if _, err := rec.Append(big); !errors.Is(err, ErrRecordTooLarge) {
		t.Fatalf("Append = %v, want ErrRecordTooLarge", err)
	}
	// Nothing was appended: the next record takes seq 1.
	if seq, err := rec.Append(connectRecord("s1", []byte{1, 1, 1, 1}, 1, 1)); seq != 1 || err != nil {
		t.Fatalf("Append = %d, %v; want 1", seq, err)
	}
}

func TestAppendAfterClose(t *testing.T) {
	rec := openTestRecorder(t, t.TempDir(), RecorderOptions{})
	if err := rec.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := rec.Append(connectRecord("s1", []byte{1, 1, 1, 1}, 1, 1)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Append after Close = %v, want ErrClosed", err)
	}
	if err := rec.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestFsyncPolicyNames(t *testing.T) {
	for _, p := range []FsyncPolicy{FsyncControl, FsyncAlways, FsyncInterval} {
		got, err := ParseFsyncPolicy(p.String())
		if err != nil || got != p {
			t.Errorf("ParseFsyncPolicy(%q) = %v, %v", p, got, err)
		}
	}
	if _, err := ParseFsyncPolicy("sometimes"); err == nil {
		t.Error("ParseFsyncPolicy accepted an unknown name")
	}
}

func TestControlRecordsReachTheFile(t *testing.T) {
	// Under the default policy, a control record is on disk when Append
	// returns; kernel records may still be buffered.
	dir := t.TempDir()
	rec := openTestRecorder(t, dir, RecorderOptions{FsyncInterval: time.Hour})
	defer rec.Close()
	mustAppend(t, rec, connectRecord("s1", []byte{1, 1, 1, 1}, 1, 1))
	if got, _ := tryReadAll(dir); len(got) != 0 {
		t.Fatalf("kernel record written before the buffer filled: %d records", len(got))
	}
	mustAppend(t, rec, sampleRecords()[1])
	if got := readAll(t, dir); len(got) != 2 {
		t.Fatalf("%d records on disk after a control record, want 2", len(got))
	}
}

func TestSubscribe(t *testing.T) {
	rec := openTestRecorder(t, t.TempDir(), RecorderOptions{})
	fast, cancelFast := rec.Subscribe(100)
	defer cancelFast()
	slow, cancelSlow := rec.Subscribe(2)

	for i := range 10 {
		mustAppend(t, rec, connectRecord("s1", []byte{1, 1, 1, byte(i)}, 1, 1))
	}
	for i := range 10 {
		if r := <-fast; r.Seq != uint64(i+1) {
			t.Fatalf("fast subscriber got record %d, want %d", r.Seq, i+1)
		}
	}
	// The slow one got the first two, then learns what it missed.
	<-slow
	<-slow
	mustAppend(t, rec, connectRecord("s1", []byte{1, 1, 1, 11}, 1, 1))
	gap := (<-slow).GetGap()
	if gap.GetCount() != 8 || gap.GetFirstSeq() != 2 || gap.GetLastSeq() != 11 ||
		gap.GetReason() != SubscriberGapReason {
		t.Fatalf("slow subscriber got %v, want a gap of records 3 to 10", gap)
	}
	if r := <-slow; r.Seq != 11 {
		t.Fatalf("slow subscriber got record %d after the gap, want 11", r.Seq)
	}
	if st := rec.Stats(); st.SubscriberDrops != 8 || st.Seq != 11 {
		t.Errorf("stats %+v, want 8 drops", st)
	}

	cancelSlow()
	if _, ok := <-slow; ok {
		t.Error("cancelled subscription still open")
	}
	if err := rec.Close(); err != nil {
		t.Fatal(err)
	}
	<-fast
	if _, ok := <-fast; ok {
		t.Error("subscription open after Close")
	}
}

func TestFsyncPolicies(t *testing.T) {
	// always: each record is in the file when Append returns.
	dir := t.TempDir()
	rec := openTestRecorder(t, dir, RecorderOptions{Fsync: FsyncAlways, FsyncInterval: time.Hour})
	mustAppend(t, rec, connectRecord("s1", []byte{1, 1, 1, 1}, 1, 1))
	if got := readAll(t, dir); len(got) != 1 {
		t.Errorf("always: %d records in the file after Append, want 1", len(got))
	}
	rec.Close()

	// interval: records reach the file within the interval, control
	// records included, and not before.
	dir = t.TempDir()
	rec = openTestRecorder(t, dir, RecorderOptions{Fsync: FsyncInterval,
		FsyncInterval: 300 * time.Millisecond})
	defer rec.Close()
	mustAppend(t, rec, sampleRecords()[1])
	if got := readAll(t, dir); len(got) != 0 {
		t.Errorf("interval: control record written before the interval")
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(readAll(t, dir)) != 1 {
		if time.Now().After(deadline) {
			t.Fatal("interval: record never reached the file")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
