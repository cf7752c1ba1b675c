package events

import (
	"bytes"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"pgregory.net/rapid"

	"github.com/idend/idend/internal/events/recordpb"
)

// TestFastMarshalMatchesProto fills every field of a Connect record by
// reflection and checks that the hand-written encoder writes what
// proto.Marshal writes.
func TestFastMarshalMatchesProto(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		r := &recordpb.Record{}
		fillMessage(t, r.ProtoReflect(), 0)
		c := &recordpb.Connect{}
		fillMessage(t, c.ProtoReflect(), 0)
		r.Body = &recordpb.Record_Connect{Connect: c}

		want, err := proto.Marshal(r)
		if err != nil {
			t.Skip("proto.Marshal refuses the record:", err)
		}
		got, err := marshalRecord([]byte("prefix"), r)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got[6:], want) {
			t.Fatalf("encoding differs for %v:\n got %x\nwant %x", r, got[6:], want)
		}
	})
}

// fillMessage sets each field of m, except oneof members, to a drawn
// value, which may be the zero value.
func fillMessage(t *rapid.T, m protoreflect.Message, depth int) {
	fields := m.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if fd.ContainingOneof() != nil {
			continue
		}
		name := string(fd.FullName())
		switch {
		case fd.IsList():
			list := m.Mutable(fd).List()
			for range rapid.IntRange(0, 2).Draw(t, name+".len") {
				list.Append(drawValue(t, fd, list.NewElement, depth))
			}
		case fd.IsMap():
			t.Fatalf("%s: maps are not covered by this filler", name)
		case fd.Message() != nil:
			if depth < 3 && rapid.IntRange(0, 4).Draw(t, name+".set") > 0 {
				m.Set(fd, drawValue(t, fd, func() protoreflect.Value { return m.NewField(fd) }, depth))
			}
		default:
			m.Set(fd, drawValue(t, fd, nil, depth))
		}
	}
}

func drawValue(t *rapid.T, fd protoreflect.FieldDescriptor,
	newMsg func() protoreflect.Value, depth int) protoreflect.Value {
	name := string(fd.FullName())
	zeroOr := func(n int) bool { return rapid.IntRange(0, 3).Draw(t, name+".zero") == 0 && n >= 0 }
	switch fd.Kind() {
	case protoreflect.MessageKind:
		v := newMsg()
		fillMessage(t, v.Message(), depth+1)
		return v
	case protoreflect.BoolKind:
		return protoreflect.ValueOfBool(rapid.Bool().Draw(t, name))
	case protoreflect.EnumKind:
		return protoreflect.ValueOfEnum(protoreflect.EnumNumber(rapid.Int32Range(-2, 8).Draw(t, name)))
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return protoreflect.ValueOfInt32(rapid.Int32().Draw(t, name))
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return protoreflect.ValueOfInt64(rapid.Int64().Draw(t, name))
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		if zeroOr(0) {
			return protoreflect.ValueOfUint32(0)
		}
		return protoreflect.ValueOfUint32(rapid.Uint32().Draw(t, name))
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		if zeroOr(0) {
			return protoreflect.ValueOfUint64(0)
		}
		return protoreflect.ValueOfUint64(rapid.Uint64().Draw(t, name))
	case protoreflect.StringKind:
		return protoreflect.ValueOfString(rapid.String().Draw(t, name))
	case protoreflect.BytesKind:
		return protoreflect.ValueOfBytes(rapid.SliceOfN(rapid.Byte(), 0, 40).Draw(t, name))
	}
	t.Fatalf("%s: kind %v is not covered by this filler", name, fd.Kind())
	return protoreflect.Value{}
}

func TestInvalidUTF8Recorded(t *testing.T) {
	// proto.Marshal refuses invalid UTF-8, and so must the fast encoder;
	// the recorder then repairs the strings rather than lose the record.
	r := connectRecord("s1", []byte{1, 2, 3, 4}, 1, recordpb.Verdict_VERDICT_ALLOW)
	r.GetConnect().Process.Comm = "ev\xffil"
	if _, err := marshalRecord(nil, r); err == nil {
		t.Fatal("record with invalid UTF-8 marshalled")
	}
	exec := sampleRecords()[2]
	exec.GetExec().Argv = []string{"sh", "-c", "\xc3\x28 \xe2\x82"}

	dir := t.TempDir()
	rec := openTestRecorder(t, dir, RecorderOptions{})
	mustAppend(t, rec, r, exec)
	if err := rec.Close(); err != nil {
		t.Fatal(err)
	}
	got := readAll(t, dir)
	if comm := got[0].GetConnect().GetProcess().GetComm(); comm != "ev\uFFFDil" {
		t.Errorf("comm recorded as %q", comm)
	}
	if argv := got[1].GetExec().GetArgv(); argv[2] != "\uFFFD( \uFFFD\uFFFD" || argv[0] != "sh" {
		t.Errorf("argv recorded as %q", argv)
	}
}
