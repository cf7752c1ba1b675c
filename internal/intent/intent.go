package intent

import (
	"fmt"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"
)

// Defaults and bounds of an intent file.
const (
	// DefaultTTL is the lifetime of a session whose intent names no ttl.
	DefaultTTL = time.Hour
	// MaxTTL is the longest ttl an intent may ask for.
	MaxTTL = 30 * 24 * time.Hour
	// MaxNameLen is the longest name, in bytes.
	MaxNameLen = 63
	// MaxPurposeLen is the longest purpose, in bytes.
	MaxPurposeLen = 1024
	// MaxFileSize is the largest intent file Parse and Load accept.
	MaxFileSize = 1 << 20
	// MaxUnixPathLen is the longest unix socket path: sun_path holds 108
	// bytes with the terminating NUL. An abstract name written "@name" may
	// have as many bytes after the "@".
	MaxUnixPathLen = 107
	// MaxExecPathLen is the longest executable path (PATH_MAX without the
	// NUL).
	MaxExecPathLen = unix.PathMax - 1
)

// An Intent is the parsed and validated content of an intent file. Parse,
// Load and FromCanonical return intents that pass Validate; an Intent built
// by hand should be checked with Validate before use.
//
// An Intent is not modified by any function of this package and may then be
// shared between goroutines.
type Intent struct {
	// Name identifies the intent: [a-z0-9-], at most MaxNameLen bytes.
	Name string
	// Purpose says in words what the work is for.
	Purpose string
	// TTL is how long a session opened with this intent lives.
	TTL time.Duration
	// OnViolation is what happens to an action outside the intent.
	OnViolation Mode
	// Egress lists the destinations the session may connect or send to.
	// Empty: none.
	Egress []Rule
	// Unix lists the unix socket paths the session may connect or send to;
	// an abstract name is written "@name".
	Unix []string
	// RawSockets allows raw and packet sockets and inet sockets of
	// protocols other than TCP and UDP.
	RawSockets bool
	// Exec says which programs the session may execute.
	Exec ExecPolicy

	src source
}

// A Rule allows traffic to one destination: a prefix or a host name.
type Rule struct {
	// To is the destination as written in the file (or in canonical form,
	// for an intent read back from its canonical encoding).
	To string
	// Prefix is the destination network, masked, with IPv4-mapped IPv6
	// prefixes written as IPv4. It is the zero Prefix for a host name.
	Prefix netip.Prefix
	// Host is the destination host name, lower case without a trailing dot,
	// or "" for a prefix.
	Host string
	// Ports lists the allowed destination ports; nil allows every port,
	// 0 included.
	Ports []PortRange
	// Protocol is the transport the rule allows.
	Protocol Proto
}

// A PortRange is the inclusive range of ports Lo to Hi.
type PortRange struct {
	Lo, Hi uint16
}

// String returns "443" or "5432-5433".
func (r PortRange) String() string {
	if r.Lo == r.Hi {
		return fmt.Sprint(r.Lo)
	}
	return fmt.Sprintf("%d-%d", r.Lo, r.Hi)
}

// ExecPolicy says which programs a session may execute.
type ExecPolicy struct {
	// Any allows every program; Paths is then empty.
	Any bool
	// Paths lists the absolute paths of the programs allowed. A program
	// is matched by its file (device and inode), not by the path it is
	// run by.
	Paths []string
}

// Mode says what happens to an action outside the intent. The values are
// those of enum idend_mode in bpf/idend.h.
type Mode uint8

// Modes, from the strictest to the loosest.
const (
	// ModeBlock denies the action and records it.
	ModeBlock Mode = iota
	// ModeEscalate denies the action and raises an escalation an operator
	// can approve.
	ModeEscalate
	// ModeAudit allows the action and records it as outside the intent.
	ModeAudit
)

var modeNames = []string{ModeBlock: "block", ModeEscalate: "escalate", ModeAudit: "audit"}

// String returns the word an intent file uses for m.
func (m Mode) String() string {
	if int(m) < len(modeNames) {
		return modeNames[m]
	}
	return fmt.Sprintf("mode(%d)", uint8(m))
}

func (m Mode) valid() bool { return m <= ModeAudit }

// parseMode returns the Mode named s.
func parseMode(s string) (Mode, bool) {
	for m, name := range modeNames {
		if s == name {
			return Mode(m), true
		}
	}
	return 0, false
}

// Proto is a transport protocol of a rule or an action. The values are the
// IP protocol numbers the kernel programs compare, with 0 for any.
type Proto uint8

// Protocols.
const (
	// ProtoAny is TCP or UDP.
	ProtoAny Proto = 0
	// ProtoTCP is TCP (and MPTCP).
	ProtoTCP Proto = unix.IPPROTO_TCP
	// ProtoUDP is UDP.
	ProtoUDP Proto = unix.IPPROTO_UDP
)

// String returns the word an intent file uses for p.
func (p Proto) String() string {
	switch p {
	case ProtoAny:
		return "any"
	case ProtoTCP:
		return "tcp"
	case ProtoUDP:
		return "udp"
	}
	return fmt.Sprintf("proto(%d)", uint8(p))
}

func (p Proto) valid() bool { return p == ProtoAny || p == ProtoTCP || p == ProtoUDP }

// parseProto returns the Proto named s.
func parseProto(s string) (Proto, bool) {
	for _, p := range []Proto{ProtoAny, ProtoTCP, ProtoUDP} {
		if s == p.String() {
			return p, true
		}
	}
	return 0, false
}

// dest returns the destination of r as the canonical form writes it.
func (r *Rule) dest() string {
	if r.Host != "" {
		return r.Host
	}
	return r.Prefix.String()
}

// source remembers where each field of an intent was read from, so that
// later errors (compilation, subset checks) can name the line.
type source struct {
	file  string
	lines map[string]int
}

// where returns "file:line: field", leaving out what is unknown.
func (in *Intent) where(field string) string {
	return location(in.src.file, in.src.lines[field], field)
}

func location(file string, line int, field string) string {
	s := file
	if s != "" && line > 0 {
		s = fmt.Sprintf("%s:%d", s, line)
	}
	if s == "" {
		return field
	}
	if field == "" {
		return s
	}
	return s + ": " + field
}
