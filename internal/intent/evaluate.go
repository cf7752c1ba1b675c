package intent

import (
	"fmt"
	"net/netip"
	"slices"

	"golang.org/x/sys/unix"
)

// ActionKind is the kind of an Action.
type ActionKind uint8

// Kinds of actions the kernel programs judge.
const (
	// Connect is connect() of a TCP or UDP socket (cgroup/connect4,6).
	Connect ActionKind = iota + 1
	// Sendmsg is sendto()/sendmsg() with an address (cgroup/sendmsg4,6).
	Sendmsg
	// Socket is socket() of an inet socket (cgroup/sock_create) or, with
	// BPF-LSM, of another family (lsm/socket_create).
	Socket
	// UnixConnect is connect() to a unix socket (cgroup/connect_unix).
	UnixConnect
	// UnixSendmsg is sendto() to a unix socket (cgroup/sendmsg_unix).
	UnixSendmsg
	// Exec is execve() of a file (sched_process_exec).
	Exec
)

var kindNames = []string{
	Connect: "connect", Sendmsg: "sendmsg", Socket: "socket",
	UnixConnect: "unix_connect", UnixSendmsg: "unix_sendmsg", Exec: "exec",
}

// String returns the kind's name, like "connect".
func (k ActionKind) String() string {
	if int(k) < len(kindNames) && kindNames[k] != "" {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// An Action is something a process in a session does that the kernel
// judges. Only the fields of its Kind are read.
type Action struct {
	Kind ActionKind

	// Connect, Sendmsg: the destination. An IPv4-mapped IPv6 address is
	// judged as the IPv4 address. Proto is ProtoTCP or ProtoUDP, as the
	// kernel programs derive it from the socket type (SOCK_DGRAM is UDP,
	// every other type TCP).
	Addr  netip.Addr
	Port  uint16
	Proto Proto

	// Socket: the arguments of socket(); flags in SockType are ignored.
	Family, SockType, SockProto int

	// UnixConnect, UnixSendmsg: the socket path, "@name" for an abstract
	// name.
	Path string

	// Exec: the executed file, and whether it has no link left (deleted,
	// or a memfd), which keeps it out of any allow list.
	File        FileID
	FileDeleted bool
}

// Verdict is the outcome of an action. The values of VerdictAllow,
// VerdictDeny and VerdictAudit are those of enum idend_verdict.
type Verdict uint8

// Verdicts.
const (
	// VerdictAllow: inside the intent, allowed.
	VerdictAllow Verdict = iota + 1
	// VerdictDeny: outside the intent, denied (on_violation: block).
	VerdictDeny
	// VerdictAudit: outside the intent, allowed and recorded as such
	// (on_violation: audit).
	VerdictAudit
	// VerdictEscalate: outside the intent, denied, and an escalation
	// raised (on_violation: escalate). The kernel reports it as a denial.
	VerdictEscalate
)

var verdictNames = []string{
	VerdictAllow: "allow", VerdictDeny: "deny", VerdictAudit: "audit", VerdictEscalate: "escalate",
}

// String returns the verdict's name, like "allow".
func (v Verdict) String() string {
	if int(v) < len(verdictNames) && verdictNames[v] != "" {
		return verdictNames[v]
	}
	return fmt.Sprintf("verdict(%d)", uint8(v))
}

// Allowed reports whether the kernel lets an action of verdict v through.
func (v Verdict) Allowed() bool { return v == VerdictAllow || v == VerdictAudit }

// A Decision is what Evaluate says of an action.
type Decision struct {
	// InIntent is whether the intent covers the action.
	InIntent bool
	// Verdict is the outcome, given InIntent and the intent's mode.
	Verdict Verdict
	// Reason says in a few words which rule decided, for records and
	// replay output. It is the same for the same Compiled and Action.
	Reason string
}

// Evaluate decides an action the way the kernel programs do for a session
// whose rules are c. A nil c is a task under idend's cgroup root in no
// session, which is denied everything.
// It is pure and safe for concurrent use.
//
//   - Connect, Sendmsg: the longest prefix of V4 (IPv4 and IPv4-mapped
//     addresses) or V6 containing Addr decides; the action is in the intent
//     when one of its port rules covers Port for Proto. No address is
//     implicitly allowed, loopback and unspecified included.
//   - Socket: inet sockets (AF_INET, AF_INET6) of type SOCK_RAW, of a type
//     other than SOCK_STREAM and SOCK_DGRAM, or of a protocol other than 0,
//     TCP, UDP and MPTCP (ICMP echo, SCTP, ...) need RawSockets, as do
//     sockets of every family but inet, unix and netlink (packet, vsock,
//     CAN, ...); unix and netlink sockets of any type are ordinary, and so
//     in the intent. Every kernel judges inet sockets (cgroup/sock_create);
//     only kernels with BPF-LSM active judge the other families
//     (lsm/socket_create), elsewhere they are let through unseen. Evaluate
//     cannot know which kernel a session ran on and judges as a BPF-LSM
//     kernel does: a recording from a kernel without it holds no record of
//     those sockets to disagree with.
//   - UnixConnect, UnixSendmsg: Path is one of Unix, exactly.
//   - Exec: ExecAny, or File is one of ExecFiles and not FileDeleted.
//
// Outside the intent, the verdict follows c.Mode.
func Evaluate(c *Compiled, a Action) Decision {
	if c == nil {
		return Decision{Verdict: VerdictDeny, Reason: "no session"}
	}
	in, reason := judge(c, a)
	return Decision{InIntent: in, Verdict: verdictFor(c.Mode, in), Reason: reason}
}

func verdictFor(m Mode, in bool) Verdict {
	switch {
	case in:
		return VerdictAllow
	case m == ModeAudit:
		return VerdictAudit
	case m == ModeEscalate:
		return VerdictEscalate
	}
	return VerdictDeny
}

func judge(c *Compiled, a Action) (bool, string) {
	switch a.Kind {
	case Connect, Sendmsg:
		return judgeNet(c, a)
	case Socket:
		return judgeSocket(c, a)
	case UnixConnect, UnixSendmsg:
		return judgeUnix(c, a)
	case Exec:
		return judgeExec(c, a)
	}
	return false, fmt.Sprintf("unknown action %s", a.Kind)
}

func judgeNet(c *Compiled, a Action) (bool, string) {
	addr := a.Addr.WithZone("").Unmap()
	if !addr.IsValid() {
		return false, "no destination address"
	}
	dst := fmt.Sprintf("%s/%s", netip.AddrPortFrom(addr, a.Port), a.Proto)
	rules := c.V6
	if addr.Is4() {
		rules = c.V4
	}
	pr := lookup(rules, addr)
	if pr == nil {
		return false, dst + ": no rule for the address"
	}
	if r, ok := portAllowed(pr.Ports, a.Port, a.Proto); ok {
		return true, fmt.Sprintf("%s: allowed by %s %s", dst, pr.Prefix, r)
	}
	return false, fmt.Sprintf("%s: port not allowed at %s", dst, pr.Prefix)
}

// portAllowed scans rules as the kernel does: at most MaxPortRules of
// them, a rule of protocol any matching every protocol.
func portAllowed(rules []PortRule, port uint16, proto Proto) (PortRule, bool) {
	for i, r := range rules {
		if i == MaxPortRules {
			break
		}
		if (r.Proto == ProtoAny || r.Proto == proto) && port >= r.Lo && port <= r.Hi {
			return r, true
		}
	}
	return PortRule{}, false
}

func judgeSocket(c *Compiled, a Action) (bool, string) {
	sock := fmt.Sprintf("socket(%s, %s, %d)", familyName(a.Family), typeName(a.SockType&0xf), a.SockProto)
	switch {
	case !needsRaw(a.Family, a.SockType&0xf, a.SockProto):
		return true, sock + ": an ordinary socket"
	case c.RawSockets:
		return true, sock + ": allowed by raw_sockets"
	}
	return false, sock + ": needs raw_sockets"
}

// needsRaw mirrors needs_raw() of bpf/net.bpf.c for inet sockets and
// family_needs_raw() of bpf/lsm.bpf.c for the other families.
func needsRaw(family, typ, proto int) bool {
	switch family {
	case unix.AF_INET, unix.AF_INET6:
	case unix.AF_UNIX, unix.AF_NETLINK:
		return false
	default:
		return true
	}
	if typ == unix.SOCK_RAW {
		return true
	}
	switch proto {
	case unix.IPPROTO_IP, unix.IPPROTO_TCP, unix.IPPROTO_UDP, unix.IPPROTO_MPTCP:
		return typ != unix.SOCK_STREAM && typ != unix.SOCK_DGRAM
	}
	return true
}

func familyName(f int) string {
	switch f {
	case unix.AF_INET:
		return "AF_INET"
	case unix.AF_INET6:
		return "AF_INET6"
	case unix.AF_UNIX:
		return "AF_UNIX"
	case unix.AF_PACKET:
		return "AF_PACKET"
	case unix.AF_NETLINK:
		return "AF_NETLINK"
	case unix.AF_VSOCK:
		return "AF_VSOCK"
	}
	return fmt.Sprint(f)
}

func typeName(t int) string {
	switch t {
	case unix.SOCK_STREAM:
		return "SOCK_STREAM"
	case unix.SOCK_DGRAM:
		return "SOCK_DGRAM"
	case unix.SOCK_RAW:
		return "SOCK_RAW"
	case unix.SOCK_SEQPACKET:
		return "SOCK_SEQPACKET"
	}
	return fmt.Sprint(t)
}

func judgeUnix(c *Compiled, a Action) (bool, string) {
	if _, ok := slices.BinarySearch(c.Unix, a.Path); ok {
		return true, fmt.Sprintf("unix socket %q: allowed", a.Path)
	}
	return false, fmt.Sprintf("unix socket %q: not in the intent", a.Path)
}

func judgeExec(c *Compiled, a Action) (bool, string) {
	file := a.File.String()
	if name := c.Names[a.File]; name != "" {
		file += " (" + name + ")"
	}
	switch {
	case c.ExecAny:
		return true, "exec " + file + ": any program allowed"
	case a.FileDeleted:
		return false, "exec " + file + ": file without a link (deleted or memfd)"
	}
	if _, ok := slices.BinarySearchFunc(c.ExecFiles, a.File, FileID.compare); ok {
		return true, "exec " + file + ": allowed"
	}
	return false, "exec " + file + ": not in the allow list"
}
