package loader

import (
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
	"pgregory.net/rapid"

	"github.com/idend/idend/internal/intent"
)

// The differential test: generated intents and actions are judged by
// intent.Evaluate and by the kernel programs (real calls from a process in
// a session cgroup), which must agree on every action, in the call's result
// and in the record's verdict.

// Destinations rules are written with: loopback addresses and prefixes,
// IPv4-mapped spellings of them, and IPv6 prefixes that contain the mapped
// range without being judged for it.
var diffDests = []string{
	"127.0.0.1", "127.0.0.2", "127.0.0.0/8", "127.0.0.0/24", "127.0.0.0/30",
	"127.0.0.0/31", "127.0.1.0/24", "127.1.0.0/16", "127.128.0.0/9", "0.0.0.0/0",
	"::ffff:127.0.0.1", "::ffff:127.0.0.0/104", "::1", "::/0", "::/80", "::/127",
}

// Ports rules are written with, and ports and addresses actions go to.
var (
	diffRulePorts = []string{"53", "80", "443", "8080", "9999", "65535", `"443-444"`,
		`"1-1024"`, `"8000-8080"`, `"9999-65535"`}
	diffPorts = []uint16{53, 80, 443, 444, 1024, 1025, 8000, 8080, 8081, 9999, 65535}
	diffAddrs = []string{"127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.1.1", "127.1.2.3",
		"127.200.0.1", "::1"}
)

// diffSockets are the socket() arguments actions use, before the ones
// this kernel refuses outside any session are dropped. AF_PACKET is left
// out: cgroup/sock_create runs for inet sockets only (see Evaluate).
var diffSockets = [][3]int{
	{unix.AF_INET, unix.SOCK_STREAM, 0},
	{unix.AF_INET, unix.SOCK_STREAM, unix.IPPROTO_TCP},
	{unix.AF_INET, unix.SOCK_STREAM, unix.IPPROTO_MPTCP},
	{unix.AF_INET, unix.SOCK_DGRAM, 0},
	{unix.AF_INET, unix.SOCK_DGRAM, unix.IPPROTO_UDP},
	{unix.AF_INET, unix.SOCK_DGRAM, unix.IPPROTO_UDPLITE},
	{unix.AF_INET, unix.SOCK_DGRAM, unix.IPPROTO_ICMP},
	{unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_ICMP},
	{unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_UDP},
	{unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_RAW},
	{unix.AF_INET6, unix.SOCK_STREAM, 0},
	{unix.AF_INET6, unix.SOCK_STREAM, unix.IPPROTO_MPTCP},
	{unix.AF_INET6, unix.SOCK_DGRAM, 0},
	{unix.AF_INET6, unix.SOCK_RAW, unix.IPPROTO_ICMPV6},
}

// usableSockets returns the socket() arguments this kernel accepts from a
// process in no session.
func usableSockets() [][3]int {
	var out [][3]int
	for _, s := range diffSockets {
		fd, err := unix.Socket(s[0], s[1]|unix.SOCK_CLOEXEC, s[2])
		if err == nil {
			unix.Close(fd)
			out = append(out, s)
		}
	}
	return out
}

// diffAction is one generated call.
type diffAction struct {
	// connect, sendto, fastopen, socket, uconnect, usendto (see netBatch)
	kind string

	proto  intent.Proto
	mapped bool // an IPv4 address sent from an IPv6 socket
	addr   netip.Addr
	port   uint16

	socket [3]int // family, type, protocol

	// path is the unix socket address as the caller passes it, "@" for
	// the NUL of an abstract name; name is what the kernel makes of it.
	path, name string
}

func (a diffAction) String() string {
	switch a.kind {
	case "socket":
		return fmt.Sprintf("socket%v", a.socket)
	case "uconnect", "usendto":
		return fmt.Sprintf("%s %q", a.kind, a.path)
	}
	dst := a.addr
	if a.mapped {
		dst = netip.AddrFrom16(a.addr.As16())
	}
	return fmt.Sprintf("%s %s %s", a.kind, a.proto, netip.AddrPortFrom(dst, a.port))
}

// spec is the helper's argument for a.
func (a diffAction) spec() string {
	switch a.kind {
	case "socket":
		return fmt.Sprintf("socket,%d,%d,%d", a.socket[0], a.socket[1], a.socket[2])
	case "uconnect", "usendto":
		return a.kind + "," + hex.EncodeToString([]byte(a.path))
	}
	family := "4"
	if a.mapped || a.addr.Is6() {
		family = "6"
	}
	return fmt.Sprintf("%s,%s,%s,%s,%d", a.kind, a.proto, family, a.addr, a.port)
}

func (a diffAction) action() intent.Action {
	switch a.kind {
	case "socket":
		return intent.Action{Kind: intent.Socket, Family: a.socket[0], SockType: a.socket[1], SockProto: a.socket[2]}
	case "uconnect":
		return intent.Action{Kind: intent.UnixConnect, Path: a.name}
	case "usendto":
		return intent.Action{Kind: intent.UnixSendmsg, Path: a.name}
	}
	act := intent.Action{Kind: intent.Connect, Addr: a.addr, Port: a.port, Proto: a.proto}
	if a.kind == "sendto" {
		act.Kind = intent.Sendmsg
	}
	if a.mapped {
		act.Addr = netip.AddrFrom16(a.addr.As16())
	}
	return act
}

// recordKind is the kind of record the kernel writes for a.
func (a diffAction) recordKind() netIdendEventKind {
	switch a.kind {
	case "sendto":
		return netIdendEventKindEVENT_SENDMSG
	case "socket":
		return netIdendEventKindEVENT_SOCKET
	case "uconnect":
		return netIdendEventKindEVENT_UNIX_CONNECT
	case "usendto":
		return netIdendEventKindEVENT_UNIX_SENDMSG
	}
	return netIdendEventKindEVENT_CONNECT
}

// recorded says whether the kernel writes a record for a: every action but
// the creation of an ordinary socket inside the intent.
func (a diffAction) recorded(d intent.Decision) bool {
	if a.kind != "socket" {
		return true
	}
	ordinary := intent.Evaluate(&intent.Compiled{}, a.action()).InIntent
	return !d.InIntent || !ordinary
}

// diffUniverse is what generated intents and actions are drawn from.
type diffUniverse struct {
	fastOpen bool
	sockets  [][3]int
	// unixRules are the unix socket names rules use; unixPaths the
	// addresses actions use, each with the name the kernel sees.
	unixRules []string
	unixPaths [][2]string
}

func newDiffUniverse(t *testing.T, unixHooks bool) *diffUniverse {
	u := &diffUniverse{sockets: usableSockets()}
	if b, err := os.ReadFile("/proc/sys/net/ipv4/tcp_fastopen"); err == nil {
		u.fastOpen = len(b) > 0 && (b[0]-'0')&1 == 1
	}
	if !unixHooks {
		return u
	}
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.sock"), filepath.Join(dir, "b.sock")
	abstract := "@" + randomName("idend-diff-")
	u.unixRules = []string{a, b, abstract + "-a", abstract + "-b"}
	for _, r := range u.unixRules {
		u.unixPaths = append(u.unixPaths, [2]string{r, r})
	}
	// TODO: two addresses are left out because unix.bpf.c looks the
	// rule up with all 108 bytes of sun_path as they were passed: a
	// pathname with bytes after its NUL ("a.sock\0junk", which the kernel
	// resolves to a.sock) is denied though the intent allows it, and an
	// abstract name with a trailing NUL ("\0name\0", another socket than
	// "\0name") is allowed by the rule for "@name". Add both here once the
	// key ends where the kernel's name ends.
	u.unixPaths = append(u.unixPaths,
		// The kernel reads a pathname up to its first NUL.
		[2]string{a + "\x00", a},
		// Paths are compared as written, not resolved.
		[2]string{filepath.Join(dir, "x") + "/../a.sock", filepath.Join(dir, "x") + "/../a.sock"},
		[2]string{abstract + "-c", abstract + "-c"},
	)
	return u
}

func (u *diffUniverse) action() *rapid.Generator[diffAction] {
	kinds := []string{"connect tcp", "connect udp", "sendto udp"}
	if u.fastOpen {
		kinds = append(kinds, "fastopen tcp")
	}
	if len(u.sockets) > 0 {
		kinds = append(kinds, "socket")
	}
	if len(u.unixPaths) > 0 {
		kinds = append(kinds, "uconnect", "usendto")
	}
	return rapid.Custom(func(t *rapid.T) diffAction {
		kind, proto, _ := strings.Cut(rapid.SampledFrom(kinds).Draw(t, "kind"), " ")
		a := diffAction{kind: kind}
		switch kind {
		case "socket":
			a.socket = rapid.SampledFrom(u.sockets).Draw(t, "socket")
			return a
		case "uconnect", "usendto":
			p := rapid.SampledFrom(u.unixPaths).Draw(t, "path")
			a.path, a.name = p[0], p[1]
			return a
		}
		a.addr = netip.MustParseAddr(rapid.SampledFrom(diffAddrs).Draw(t, "addr"))
		a.port = rapid.SampledFrom(diffPorts).Draw(t, "port")
		a.proto = intent.ProtoTCP
		if proto == "udp" {
			a.proto = intent.ProtoUDP
		}
		a.mapped = a.addr.Is4() && rapid.Bool().Draw(t, "mapped")
		return a
	})
}

// intent draws an intent file with up to four egress rules, some unix
// sockets and raw_sockets.
func (u *diffUniverse) intent(t *rapid.T) string {
	var b strings.Builder
	mode := rapid.SampledFrom([]string{"block", "audit", "escalate"}).Draw(t, "mode")
	fmt.Fprintf(&b, "name: diff\npurpose: differential test\non_violation: %s\nnetwork:\n", mode)
	fmt.Fprintf(&b, "  raw_sockets: %v\n", rapid.Bool().Draw(t, "raw"))
	if len(u.unixRules) > 0 {
		paths := rapid.SliceOfNDistinct(rapid.SampledFrom(u.unixRules), 0, 3, rapid.ID).Draw(t, "unix")
		if len(paths) > 0 {
			fmt.Fprintf(&b, "  unix: [%s]\n", quoteAll(paths))
		}
	}
	n := rapid.IntRange(0, 4).Draw(t, "rules")
	if n > 0 {
		b.WriteString("  egress:\n")
	}
	for i := range n {
		fmt.Fprintf(&b, "    - to: %q\n", rapid.SampledFrom(diffDests).Draw(t, fmt.Sprintf("to%d", i)))
		if rapid.Bool().Draw(t, fmt.Sprintf("someports%d", i)) {
			ports := rapid.SliceOfNDistinct(rapid.SampledFrom(diffRulePorts), 1, 3, rapid.ID).
				Draw(t, fmt.Sprintf("ports%d", i))
			fmt.Fprintf(&b, "      ports: [%s]\n", strings.Join(ports, ", "))
		}
		proto := rapid.SampledFrom([]string{"", "any", "tcp", "udp"}).Draw(t, fmt.Sprintf("proto%d", i))
		if proto != "" {
			fmt.Fprintf(&b, "      protocol: %s\n", proto)
		}
	}
	return b.String()
}

func quoteAll(s []string) string {
	q := make([]string, len(s))
	for i, v := range s {
		q[i] = fmt.Sprintf("%q", v)
	}
	return strings.Join(q, ", ")
}

// kernelVerdict is the record verdict the kernel writes for a decision.
func kernelVerdict(v intent.Verdict) netIdendVerdict {
	switch v {
	case intent.VerdictAllow:
		return netIdendVerdictVERDICT_ALLOW
	case intent.VerdictAudit:
		return netIdendVerdictVERDICT_AUDIT
	}
	return netIdendVerdictVERDICT_DENY
}

// kernelAllowed reads a helper result line: the call passed the hook
// (succeeded, or failed past it: nobody listening, no such socket file),
// or was denied with EPERM.
func kernelAllowed(line string) (allowed bool, ok bool) {
	for _, e := range []syscall.Errno{syscall.ECONNREFUSED, syscall.EINPROGRESS, syscall.ENOENT} {
		if line == fmt.Sprintf("errno %d", e) {
			return true, true
		}
	}
	switch line {
	case "ok":
		return true, true
	case eperm:
		return false, true
	}
	return false, false
}

func TestEvaluateAgreesWithKernel(t *testing.T) {
	tr := newTracer(t)
	dir, cg := tr.session("name: diff\npurpose: differential test\n")
	d := &diffRun{
		t: t, tr: tr, dir: dir, cgroup: cg, session: 1 << 32,
		u:     newDiffUniverse(t, tr.l.Features().UnixHooks),
		seen:  map[intent.Verdict]int{},
		kinds: map[string]int{},
	}
	rapid.Check(t, d.check)

	t.Logf("verdicts: %v; actions: %v; sockets: %v", d.seen, d.kinds, d.u.sockets)
	for _, v := range []intent.Verdict{intent.VerdictAllow, intent.VerdictDeny, intent.VerdictAudit, intent.VerdictEscalate} {
		if d.seen[v] == 0 {
			t.Errorf("no action had verdict %s", v)
		}
	}
}

// diffRun is the state of the differential test across its checks.
type diffRun struct {
	t       *testing.T
	tr      *tracer
	dir     string
	cgroup  uint64
	session uint64
	u       *diffUniverse
	// How often each verdict and kind came up, to catch generators that
	// never reach one of them.
	seen  map[intent.Verdict]int
	kinds map[string]int
}

// check applies a generated intent to the session, runs generated actions
// in it and compares each outcome and record with Evaluate's decision.
// Failures of the test's own machinery stop the test through d.t.
func (d *diffRun) check(rt *rapid.T) {
	text := d.u.intent(rt)
	c := compileDiff(rt, text)
	actions := rapid.SliceOfN(d.u.action(), 10, 30).Draw(rt, "actions")

	d.session++
	if err := d.tr.l.Apply(d.cgroup, d.session, c); err != nil {
		d.t.Fatalf("apply: %v", err)
	}
	lines, pid := runBatch(d.t, d.dir, actions)
	decisions := make([]intent.Decision, len(actions))
	want := 0
	for i, a := range actions {
		decisions[i] = intent.Evaluate(c, a.action())
		if a.recorded(decisions[i]) {
			want++
		}
	}
	recs := d.tr.readUntil(func(r *records) bool {
		return len(r.of(pid)) >= want && r.exit(pid) != nil
	}).of(pid)
	if len(recs) != want {
		rt.Fatalf("%d records for %d recorded actions", len(recs), want)
	}

	for i, a := range actions {
		dec := decisions[i]
		allowed, ok := kernelAllowed(lines[i])
		if !ok {
			d.t.Fatalf("%s: unexpected result %q", a, lines[i])
		}
		if allowed != dec.Verdict.Allowed() {
			rt.Errorf("%s: kernel %q, Evaluate %s (%s)\nintent:\n%s", a, lines[i], dec.Verdict, dec.Reason, text)
		}
		if a.recorded(dec) {
			checkRecord(rt, recs[0], a, dec, d.session)
			recs = recs[1:]
		}
		d.seen[dec.Verdict]++
		d.kinds[a.kind]++
	}
}

func compileDiff(rt *rapid.T, text string) *intent.Compiled {
	in, err := intent.Parse("diff.yaml", []byte(text))
	if err != nil {
		rt.Fatalf("generated intent does not parse: %v\n%s", err, text)
	}
	c, err := intent.Compile(in, nil, nil)
	if errors.Is(err, intent.ErrTooLarge) {
		rt.Skip("more port rules at a prefix than the kernel scans")
	}
	if err != nil {
		rt.Fatalf("compile: %v\n%s", err, text)
	}
	return c
}

// runBatch runs the actions from one helper process in dir and returns a
// result line per action and the helper's pid.
func runBatch(t *testing.T, dir string, actions []diffAction) ([]string, int) {
	t.Helper()
	args := []string{os.Args[0]}
	for _, a := range actions {
		args = append(args, a.spec())
	}
	p := spawnEnv(t, dir, []string{"IDEND_TEST_HELPER=net_batch"}, args...)
	lines := strings.Split(strings.TrimSpace(p.out), "\n")
	// The helper ends with its own "ok".
	if p.status.ExitStatus() != 0 || len(lines) != len(actions)+1 || lines[len(actions)] != "ok" {
		t.Fatalf("helper: %v", p)
	}
	return lines[:len(actions)], p.pid
}

// actionRecord is a network or unix socket record.
type actionRecord struct {
	net  *netNetEvent
	unix *netUnixEvent
}

func (r actionRecord) hdr() *netEventHeader {
	if r.net != nil {
		return &r.net.Hdr
	}
	return &r.unix.Hdr
}

// of returns the network and unix socket records of pid in the order
// they were written.
func (r *records) of(pid int) []actionRecord {
	var out []actionRecord
	for i := range r.nets {
		if r.nets[i].Hdr.Pid == uint32(pid) {
			out = append(out, actionRecord{net: &r.nets[i]})
		}
	}
	for i := range r.unix {
		if r.unix[i].Hdr.Pid == uint32(pid) {
			out = append(out, actionRecord{unix: &r.unix[i]})
		}
	}
	slices.SortStableFunc(out, func(a, b actionRecord) int {
		return int(a.hdr().KtimeNs - b.hdr().KtimeNs)
	})
	return out
}

func checkRecord(rt *rapid.T, r actionRecord, a diffAction, d intent.Decision, session uint64) {
	rt.Helper()
	h := r.hdr()
	outside := h.Flags&uint32(netIdendEventFlagEVENT_F_OUTSIDE) != 0
	switch {
	case h.Kind != uint16(a.recordKind()) || h.Session != session:
		rt.Errorf("%s: record kind %d session %d, want %d and %d", a, h.Kind, h.Session, a.recordKind(), session)
		return
	case h.Verdict != uint8(kernelVerdict(d.Verdict)) || outside == d.InIntent:
		rt.Errorf("%s: record verdict %d outside %v, Evaluate %s in intent %v (%s)",
			a, h.Verdict, outside, d.Verdict, d.InIntent, d.Reason)
	}
	switch {
	case r.unix != nil:
		if got := unixName(r.unix); got != a.name {
			rt.Errorf("%s: record path %q, want %q", a, got, a.name)
		}
	case a.kind == "socket":
		n := r.net
		if got := [3]int{int(n.Family), int(n.Type), int(n.Protocol)}; got != a.socket {
			rt.Errorf("%s: record for socket%v", a, got)
		}
	default:
		checkNetRecord(rt, r.net, a)
	}
}

// unixName returns the path of a unix record, "@name" for an abstract one.
func unixName(ev *netUnixEvent) string {
	b := bytesOf(ev.Path[:])[:min(int(ev.PathLen), len(ev.Path))]
	if len(b) > 0 && b[0] == 0 {
		return "@" + string(b[1:])
	}
	return string(b)
}

func checkNetRecord(rt *rapid.T, n *netNetEvent, a diffAction) {
	rt.Helper()
	addr := netip.AddrFrom16(n.Addr)
	if a.addr.Is4() {
		addr = netip.AddrFrom4([4]byte(n.Addr[:4]))
	}
	mapped := n.Hdr.Flags&uint32(netIdendEventFlagEVENT_F_V4MAPPED) != 0
	if a.kind == "sendto" {
		// udpv6_sendmsg hands a v4-mapped destination to udp_sendmsg,
		// so sendmsg4 judges it and cannot tell it came mapped: the
		// verdict is the same, the flag is not set.
		mapped = a.mapped
	}
	if addr != a.addr || n.Port != a.port || mapped != a.mapped || n.Protocol != uint16(a.proto) {
		rt.Errorf("%s: record for %s port %d mapped %v protocol %d", a, addr, n.Port, mapped, n.Protocol)
	}
}
