package events

import (
	"strings"
	"unicode/utf8"

	"google.golang.org/protobuf/reflect/protoreflect"
)

// Kernel strings (a comm, argv, a path) hold whatever bytes the workload
// chose, and proto3 refuses to encode a string that is not UTF-8. So that
// no workload escapes the recording by naming itself badly, the recorder
// replaces each byte that is not part of a UTF-8 sequence with U+FFFD and
// records the rest as it was.

// repairUTF8 fixes every string of m, and of the messages in it, and
// reports whether it changed anything.
func repairUTF8(m protoreflect.Message) bool {
	type fix struct {
		fd protoreflect.FieldDescriptor
		v  protoreflect.Value
	}
	var fixes []fix
	changed := false
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsMap():
			// The schema has no maps.
		case fd.IsList():
			changed = repairList(fd, v.List()) || changed
		case fd.Message() != nil:
			changed = repairUTF8(v.Message()) || changed
		case fd.Kind() == protoreflect.StringKind && !utf8.ValidString(v.String()):
			fixes = append(fixes, fix{fd, protoreflect.ValueOfString(validUTF8(v.String()))})
		}
		return true
	})
	for _, f := range fixes {
		m.Set(f.fd, f.v)
	}
	return changed || len(fixes) > 0
}

func repairList(fd protoreflect.FieldDescriptor, l protoreflect.List) bool {
	changed := false
	for i := range l.Len() {
		switch {
		case fd.Message() != nil:
			changed = repairUTF8(l.Get(i).Message()) || changed
		case fd.Kind() == protoreflect.StringKind && !utf8.ValidString(l.Get(i).String()):
			l.Set(i, protoreflect.ValueOfString(validUTF8(l.Get(i).String())))
			changed = true
		}
	}
	return changed
}

// validUTF8 replaces each byte of s that is not part of a UTF-8 sequence
// with U+FFFD.
func validUTF8(s string) string {
	var b strings.Builder
	b.Grow(len(s) + 8)
	for _, r := range s {
		b.WriteRune(r)
	}
	return b.String()
}
