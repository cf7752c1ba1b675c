package events

import (
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
