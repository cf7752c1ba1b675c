package events

import (
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/idend/idend/internal/events/recordpb"
)

// Connect records are what the kernel floods the recorder with, and the
// generic protobuf encoder spends more time on them than hashing does. The
// encoder below writes the same bytes for them, field by field in number
// order; TestFastMarshalMatchesProto fills every field of the messages
// involved by reflection, so a field added to the schema and not here
// fails it.

// marshalRecord appends the encoding of r to b.
func marshalRecord(b []byte, r *recordpb.Record) ([]byte, error) {
	if c := r.GetConnect(); c != nil && fastConnect(r, c) {
		return appendConnectRecord(b, r, c), nil
	}
	return proto.MarshalOptions{}.MarshalAppend(b, r)
}

// fastConnect reports whether the encoder below covers r: no unknown
// fields to carry and only valid UTF-8, which proto.Marshal would refuse.
func fastConnect(r *recordpb.Record, c *recordpb.Connect) bool {
	p, id := c.GetProcess(), c.GetIdentity()
	if len(r.ProtoReflect().GetUnknown()) > 0 || len(c.ProtoReflect().GetUnknown()) > 0 ||
		len(r.GetSchemaVersion().ProtoReflect().GetUnknown()) > 0 ||
		(p != nil && len(p.ProtoReflect().GetUnknown()) > 0) ||
		(id != nil && (len(id.ProtoReflect().GetUnknown()) > 0 || id.GetAttested() != nil)) {
		return false
	}
	return utf8.ValidString(c.SessionId) && utf8.ValidString(p.GetKey()) &&
		utf8.ValidString(p.GetComm()) && utf8.ValidString(p.GetParentKey()) &&
		utf8.ValidString(id.GetSpiffeId()) && utf8.ValidString(id.GetPrincipal())
}

func appendConnectRecord(b []byte, r *recordpb.Record, c *recordpb.Connect) []byte {
	b = appendVarint(b, 1, r.Seq)
	b = appendVarint(b, 2, r.MonoNs)
	b = appendVarint(b, 3, uint64(r.WallNs))
	if v := r.SchemaVersion; v != nil {
		b = protowire.AppendTag(b, 4, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(sizeSchema(v)))
		b = appendVarint(b, 1, uint64(v.Major))
		b = appendVarint(b, 2, uint64(v.Minor))
	}
	b = protowire.AppendTag(b, 13, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(sizeConnect(c)))

	b = appendString(b, 1, c.SessionId)
	b = appendVarint(b, 2, c.CgroupId)
	if c.Process != nil {
		b = protowire.AppendTag(b, 3, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(sizeProcess(c.Process)))
		b = appendProcess(b, c.Process)
	}
	if id := c.Identity; id != nil {
		b = protowire.AppendTag(b, 4, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(sizeIdentity(id)))
		b = appendString(b, 1, id.SpiffeId)
		b = appendVarint(b, 2, enumWire(int32(id.Strength)))
		b = appendBytes(b, 3, id.Fingerprint)
		b = appendString(b, 4, id.Principal)
	}
	b = appendVarint(b, 5, enumWire(int32(c.Verdict)))
	b = appendVarint(b, 10, uint64(c.Family))
	b = appendBytes(b, 11, c.Addr)
	b = appendVarint(b, 12, uint64(c.Port))
	b = appendVarint(b, 13, enumWire(int32(c.Protocol)))
	return appendVarint(b, 14, enumWire(int32(c.Op)))
}

func appendProcess(b []byte, p *recordpb.Process) []byte {
	b = appendVarint(b, 1, uint64(p.Pid))
	b = appendVarint(b, 2, uint64(p.Tid))
	b = appendVarint(b, 3, p.StartTicks)
	b = appendString(b, 4, p.Key)
	b = appendVarint(b, 5, uint64(p.Uid))
	b = appendVarint(b, 6, uint64(p.Gid))
	b = appendString(b, 7, p.Comm)
	return appendString(b, 8, p.ParentKey)
}

func sizeSchema(v *recordpb.SchemaVersion) int {
	return sizeVarint(uint64(v.Major)) + sizeVarint(uint64(v.Minor))
}

func sizeConnect(c *recordpb.Connect) int {
	n := sizeLen(len(c.SessionId)) + sizeVarint(c.CgroupId)
	if c.Process != nil {
		n += sizeMessage(sizeProcess(c.Process))
	}
	if c.Identity != nil {
		n += sizeMessage(sizeIdentity(c.Identity))
	}
	return n + sizeVarint(enumWire(int32(c.Verdict))) + sizeVarint(uint64(c.Family)) +
		sizeLen(len(c.Addr)) + sizeVarint(uint64(c.Port)) +
		sizeVarint(enumWire(int32(c.Protocol))) + sizeVarint(enumWire(int32(c.Op)))
}

func sizeProcess(p *recordpb.Process) int {
	return sizeVarint(uint64(p.Pid)) + sizeVarint(uint64(p.Tid)) + sizeVarint(p.StartTicks) +
		sizeLen(len(p.Key)) + sizeVarint(uint64(p.Uid)) + sizeVarint(uint64(p.Gid)) +
		sizeLen(len(p.Comm)) + sizeLen(len(p.ParentKey))
}

func sizeIdentity(id *recordpb.Identity) int {
	return sizeLen(len(id.SpiffeId)) + sizeVarint(enumWire(int32(id.Strength))) +
		sizeLen(len(id.Fingerprint)) + sizeLen(len(id.Principal))
}

// The helpers below are for fields numbered below 16, whose tag is one
// byte, and skip zero values as proto3 does.

func enumWire(v int32) uint64 { return uint64(int64(v)) }

func sizeVarint(v uint64) int {
	if v == 0 {
		return 0
	}
	return 1 + protowire.SizeVarint(v)
}

func sizeLen(n int) int {
	if n == 0 {
		return 0
	}
	return 1 + protowire.SizeBytes(n)
}

func sizeMessage(n int) int { return 1 + protowire.SizeBytes(n) }

func appendVarint(b []byte, num protowire.Number, v uint64) []byte {
	if v == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}

func appendString(b []byte, num protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

func appendBytes(b []byte, num protowire.Number, s []byte) []byte {
	if len(s) == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, s)
}
