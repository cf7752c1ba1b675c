package events

import (
	"encoding/hex"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
	"time"
	"unicode"

	"golang.org/x/sys/unix"

	"github.com/idend/idend/internal/events/recordpb"
)

// FormatText writes r as one line:
//
//	TIME SEQ SESSION PROCESS KIND VERDICT STRENGTH WHAT
//
// TIME is the wall clock in UTC, PROCESS the process key, STRENGTH that of
// the identity, and WHAT the details of the kind, with strings the
// workload controls quoted when they hold spaces or control characters.
// Fields a record does not have are "-".
func FormatText(w io.Writer, r *recordpb.Record) error {
	session, process, verdict, strength := "-", "-", "-", "-"
	if s := SessionID(r); s != "" {
		session = quote(s)
	}
	if a := KernelAction(r); a != nil {
		process = field(a.GetProcess().GetKey())
		verdict = orDash(VerdictName(a.GetVerdict()))
		strength = orDash(StrengthName(a.GetIdentity().GetStrength()))
	}
	if o := r.GetSessionOpen(); o != nil {
		strength = orDash(StrengthName(o.GetIdentity().GetStrength()))
	}
	_, err := fmt.Fprintf(w, "%s %d %s %s %s %s %s %s\n", formatTime(r.GetWallNs()),
		r.GetSeq(), session, process, Kind(r), verdict, strength, describe(r))
	return err
}

func formatTime(ns int64) string {
	return time.Unix(0, ns).UTC().Format("2006-01-02T15:04:05.000000Z")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// field returns s quoted as needed, or "-" when it is empty.
func field(s string) string {
	if s == "" {
		return "-"
	}
	return quote(s)
}

// describe says what a record is about, in a few words.
func describe(r *recordpb.Record) string {
	switch b := r.GetBody().(type) {
	case *recordpb.Record_Exec:
		return describeExec(b.Exec)
	case *recordpb.Record_Fork:
		return "child " + quote(b.Fork.GetChild().GetKey()) + comm(b.Fork.GetProcess())
	case *recordpb.Record_Exit:
		return describeExit(b.Exit)
	case *recordpb.Record_Connect:
		return destination(b.Connect) + comm(b.Connect.GetProcess())
	case *recordpb.Record_SocketCreate:
		return describeSocket(b.SocketCreate) + comm(b.SocketCreate.GetProcess())
	case *recordpb.Record_UnixConnect:
		return quote(b.UnixConnect.GetPath()) + comm(b.UnixConnect.GetProcess())
	}
	return describeControl(r)
}

func describeControl(r *recordpb.Record) string {
	switch b := r.GetBody().(type) {
	case *recordpb.Record_DaemonStart:
		d := b.DaemonStart
		return fmt.Sprintf("version %s kernel %s host %s enforcing %s",
			quote(d.GetVersion()), quote(d.GetKernel()), quote(d.GetHostname()),
			orDash(strings.Join(d.GetEnforcement(), ",")))
	case *recordpb.Record_DaemonStop:
		return "reason " + quote(b.DaemonStop.GetReason())
	case *recordpb.Record_SessionOpen:
		return describeOpen(b.SessionOpen)
	case *recordpb.Record_SessionClose:
		return "reason " + quote(b.SessionClose.GetReason())
	case *recordpb.Record_IntentChange:
		return fmt.Sprintf("intent %s reason %s", intentWords(b.IntentChange.GetIntent()),
			quote(b.IntentChange.GetReason()))
	case *recordpb.Record_Escalation:
		return describeEscalation(b.Escalation)
	case *recordpb.Record_Approval:
		a := b.Approval
		return fmt.Sprintf("escalation %s approved by %s",
			quote(a.GetEscalationId()), quote(a.GetApprovedBy()))
	case *recordpb.Record_HostResolution:
		h := b.HostResolution
		return fmt.Sprintf("%s -> %s", quote(h.GetHost()), addrList(h.GetAddrs()))
	case *recordpb.Record_ExecRefresh:
		e := b.ExecRefresh
		return fmt.Sprintf("%s file %s -> %s", quote(e.GetPath()),
			fileID(e.GetOldDev(), e.GetOldIno()), fileID(e.GetNewDev(), e.GetNewIno()))
	case *recordpb.Record_ProcessFound:
		f := b.ProcessFound
		return fmt.Sprintf("%s %s parent %s argv %s", quote(f.GetExePath()), f.GetProcess().GetKey(),
			f.GetProcess().GetParentKey(), quoteList(f.GetArgv()))
	case *recordpb.Record_Retention:
		t := b.Retention
		return fmt.Sprintf("removed %s (%d bytes), records up to %d",
			strings.Join(t.GetRemoved(), ","), t.GetBytesRemoved(), t.GetThroughSeq())
	case *recordpb.Record_Gap:
		return describeGap(b.Gap)
	}
	return "-"
}

// quoteList formats argv as ["a" "b"].
func quoteList(argv []string) string {
	var b strings.Builder
	b.WriteByte('[')
	for i, a := range argv {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(strconv.Quote(a))
	}
	b.WriteByte(']')
	return b.String()
}

func describeExec(e *recordpb.Exec) string {
	var b strings.Builder
	b.WriteString(quote(e.GetPath()))
	if e.GetPathTruncated() {
		b.WriteString(" (path truncated)")
	}
	b.WriteString(" ")
	b.WriteString(strings.TrimSuffix(quoteList(e.GetArgv()), "]"))
	if e.GetArgvTruncated() {
		b.WriteString(" ...")
	}
	b.WriteString("] file ")
	b.WriteString(fileID(e.GetDev(), e.GetIno()))
	if e.GetDeleted() {
		b.WriteString(" (no link: deleted or memfd)")
	}
	return b.String()
}

func describeExit(e *recordpb.Exit) string {
	if e.GetSignal() != 0 {
		return fmt.Sprintf("signal %d%s", e.GetSignal(), comm(e.GetProcess()))
	}
	return fmt.Sprintf("code %d%s", e.GetExitCode(), comm(e.GetProcess()))
}

func describeOpen(o *recordpb.SessionOpen) string {
	id := o.GetIdentity()
	s := fmt.Sprintf("intent %s principal %s identity %s", intentWords(o.GetIntent()),
		field(o.GetPrincipal()), field(id.GetSpiffeId()))
	if o.GetParentId() != "" {
		s += " parent " + quote(o.GetParentId())
	}
	if o.GetExpiresNs() != 0 {
		s += " expires " + formatTime(o.GetExpiresNs())
	}
	return s + " cgroup " + field(o.GetCgroupPath())
}

func describeEscalation(e *recordpb.Escalation) string {
	what := "-"
	switch a := e.GetAction().(type) {
	case *recordpb.Escalation_Connect:
		what = KindConnect + " " + destination(a.Connect)
		if a.Connect.GetOp() == recordpb.ConnectOp_CONNECT_OP_SENDMSG {
			what = KindSendmsg + " " + destination(a.Connect)
		}
	case *recordpb.Escalation_SocketCreate:
		what = describeSocket(a.SocketCreate)
	case *recordpb.Escalation_UnixConnect:
		what = KindUnixConnect + " " + quote(a.UnixConnect.GetPath())
		if a.UnixConnect.GetOp() == recordpb.ConnectOp_CONNECT_OP_SENDMSG {
			what = KindUnixSendmsg + " " + quote(a.UnixConnect.GetPath())
		}
	case *recordpb.Escalation_Exec:
		what = KindExec + " " + quote(a.Exec.GetPath()) + " file " +
			fileID(a.Exec.GetDev(), a.Exec.GetIno())
	}
	return fmt.Sprintf("escalation %s: %s", quote(e.GetEscalationId()), what)
}

func describeGap(g *recordpb.Gap) string {
	kind := g.GetKind()
	if kind == "" {
		kind = "unknown"
	}
	s := fmt.Sprintf("%d %s records lost between records %d and %d: %s",
		g.GetCount(), quote(kind), g.GetFirstSeq(), g.GetLastSeq(), quote(g.GetReason()))
	if g.GetDetail() != "" {
		s += " (" + quote(g.GetDetail()) + ")"
	}
	return s
}

func describeSocket(s *recordpb.SocketCreate) string {
	return fmt.Sprintf("socket(%s, %s, %d)", familyName(s.GetFamily()),
		sockTypeName(s.GetType()), s.GetProtocol())
}

func comm(p *recordpb.Process) string {
	if p.GetComm() == "" {
		return ""
	}
	return " comm " + quote(p.GetComm())
}

func intentWords(in *recordpb.IntentRef) string {
	return fmt.Sprintf("%s (%s)", field(in.GetName()), orDash(hashText(in.GetHash())))
}

// hashText shows an intent hash: as written when it is text
// ("sha256:..."), else in hex.
func hashText(h []byte) string {
	for _, c := range h {
		if c < 0x21 || c > 0x7e {
			return hex.EncodeToString(h)
		}
	}
	return string(h)
}

// destination returns "10.0.0.5:443/tcp" or "[::1]:53/udp".
func destination(c *recordpb.Connect) string {
	return addrText(c.GetAddr()) + ":" + strconv.FormatUint(uint64(c.GetPort()), 10) + "/" +
		protocolName(c.GetProtocol())
}

func addrText(b []byte) string {
	a, ok := netip.AddrFromSlice(b)
	if !ok {
		return "invalid(" + hex.EncodeToString(b) + ")"
	}
	if a.Is6() {
		return "[" + a.String() + "]"
	}
	return a.String()
}

func addrList(addrs [][]byte) string {
	if len(addrs) == 0 {
		return "(none)"
	}
	parts := make([]string, len(addrs))
	for i, a := range addrs {
		parts[i] = strings.Trim(addrText(a), "[]")
	}
	return strings.Join(parts, ",")
}

func protocolName(p recordpb.Protocol) string {
	switch p {
	case recordpb.Protocol_PROTOCOL_TCP:
		return "tcp"
	case recordpb.Protocol_PROTOCOL_UDP:
		return "udp"
	}
	return "unknown"
}

// fileID returns "major:minor:inode", as the intent package prints files.
func fileID(dev, ino uint64) string {
	return fmt.Sprintf("%d:%d:%d", dev>>20, dev&(1<<20-1), ino)
}

var familyNames = map[uint32]string{
	unix.AF_INET: "AF_INET", unix.AF_INET6: "AF_INET6", unix.AF_UNIX: "AF_UNIX",
	unix.AF_PACKET: "AF_PACKET", unix.AF_NETLINK: "AF_NETLINK",
}

func familyName(f uint32) string {
	if n, ok := familyNames[f]; ok {
		return n
	}
	return strconv.FormatUint(uint64(f), 10)
}

var sockTypeNames = map[uint32]string{
	unix.SOCK_STREAM: "SOCK_STREAM", unix.SOCK_DGRAM: "SOCK_DGRAM", unix.SOCK_RAW: "SOCK_RAW",
	unix.SOCK_SEQPACKET: "SOCK_SEQPACKET",
}

func sockTypeName(t uint32) string {
	if n, ok := sockTypeNames[t&0xf]; ok {
		return n
	}
	return strconv.FormatUint(uint64(t), 10)
}

// quote returns s as is when it is printable and without spaces, else Go
// quoted, so that a line always splits into its fields and a workload's
// strings cannot forge output.
func quote(s string) string {
	if s == "" {
		return `""`
	}
	for _, r := range s {
		if !unicode.IsPrint(r) || unicode.IsSpace(r) || r == '"' || r == '\\' {
			return strconv.Quote(s)
		}
	}
	return s
}
