package loader

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"

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

// Ports rules are written with, and ports actions go to.
var (
	diffRulePorts = []string{"53", "80", "443", "8080", "9999", "65535", `"443-444"`,
		`"1-1024"`, `"8000-8080"`, `"9999-65535"`}
	diffPorts = []uint16{53, 80, 443, 444, 1024, 1025, 8000, 8080, 8081, 9999, 65535}
	diffAddrs = []string{"127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.1.1", "127.1.2.3",
		"127.200.0.1", "::1"}
)

// diffAction is one generated network call.
type diffAction struct {
	kind   string // connect, sendto, fastopen (see netBatch)
	proto  intent.Proto
	mapped bool // an IPv4 address sent from an IPv6 socket
	addr   netip.Addr
	port   uint16
}

func (a diffAction) String() string {
	dst := a.addr
	if a.mapped {
		dst = netip.AddrFrom16(a.addr.As16())
	}
	return fmt.Sprintf("%s %s %s", a.kind, a.proto, netip.AddrPortFrom(dst, a.port))
}

// spec is the helper's argument for a.
func (a diffAction) spec() string {
	family := "4"
	if a.mapped || a.addr.Is6() {
		family = "6"
	}
	return fmt.Sprintf("%s,%s,%s,%s,%d", a.kind, a.proto, family, a.addr, a.port)
}

func (a diffAction) action() intent.Action {
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
	if a.kind == "sendto" {
		return netIdendEventKindEVENT_SENDMSG
	}
	return netIdendEventKindEVENT_CONNECT
}

func genAction(fastOpen bool) *rapid.Generator[diffAction] {
	return rapid.Custom(func(t *rapid.T) diffAction {
		a := diffAction{
			addr: netip.MustParseAddr(rapid.SampledFrom(diffAddrs).Draw(t, "addr")),
			port: rapid.SampledFrom(diffPorts).Draw(t, "port"),
		}
		kinds := []string{"connect tcp", "connect udp", "sendto udp"}
		if fastOpen {
			kinds = append(kinds, "fastopen tcp")
		}
		kind, proto, _ := strings.Cut(rapid.SampledFrom(kinds).Draw(t, "kind"), " ")
		a.kind = kind
		a.proto = intent.ProtoTCP
		if proto == "udp" {
			a.proto = intent.ProtoUDP
		}
		a.mapped = a.addr.Is4() && rapid.Bool().Draw(t, "mapped")
		return a
	})
}

// genIntent draws an intent file with up to four egress rules.
func genIntent(t *rapid.T) string {
	var b strings.Builder
	mode := rapid.SampledFrom([]string{"block", "audit", "escalate"}).Draw(t, "mode")
	fmt.Fprintf(&b, "name: diff\npurpose: differential test\non_violation: %s\n", mode)
	n := rapid.IntRange(0, 4).Draw(t, "rules")
	if n > 0 {
		b.WriteString("network:\n  egress:\n")
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

// kernelAllowed reads a helper result line: the call passed the hook, or
// was denied with EPERM.
func kernelAllowed(line string) (allowed bool, ok bool) {
	switch line {
	case "ok", fmt.Sprintf("errno %d", syscall.ECONNREFUSED), fmt.Sprintf("errno %d", syscall.EINPROGRESS):
		return true, true
	case eperm:
		return false, true
	}
	return false, false
}

func TestEvaluateAgreesWithKernel(t *testing.T) {
	tr := newTracer(t)
	dir, cg := tr.session("name: diff\npurpose: differential test\n")
	fastOpen := false
	if b, err := os.ReadFile("/proc/sys/net/ipv4/tcp_fastopen"); err == nil {
		fastOpen = len(b) > 0 && (b[0]-'0')&1 == 1
	}
	var sessionID uint64 = 1 << 32
	// How often each verdict came up, to catch generators that never
	// reach one of them.
	seen := map[intent.Verdict]int{}

	rapid.Check(t, func(rt *rapid.T) {
		text := genIntent(rt)
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
		actions := rapid.SliceOfN(genAction(fastOpen), 10, 30).Draw(rt, "actions")

		sessionID++
		if err := tr.l.Apply(cg, sessionID, c); err != nil {
			t.Fatalf("apply: %v", err)
		}
		lines, pid := runBatch(t, dir, actions)
		nets := tr.readUntil(func(r *records) bool {
			return len(r.netsOf(pid)) >= len(actions) && r.exit(pid) != nil
		}).netsOf(pid)
		if len(nets) != len(actions) {
			rt.Fatalf("%d network records for %d actions", len(nets), len(actions))
		}
		for i, a := range actions {
			d := intent.Evaluate(c, a.action())
			allowed, ok := kernelAllowed(lines[i])
			if !ok {
				t.Fatalf("%s: unexpected result %q", a, lines[i])
			}
			if allowed != d.Verdict.Allowed() {
				rt.Errorf("%s: kernel %q, Evaluate %s (%s)\nintent:\n%s", a, lines[i], d.Verdict, d.Reason, text)
			}
			checkNetRecord(rt, &nets[i], a, d, sessionID)
			seen[d.Verdict]++
		}
	})
	t.Logf("verdicts: %v", seen)
	for _, v := range []intent.Verdict{intent.VerdictAllow, intent.VerdictDeny, intent.VerdictAudit, intent.VerdictEscalate} {
		if seen[v] == 0 {
			t.Errorf("no action had verdict %s", v)
		}
	}
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

// netsOf returns the network records of pid in the order they were
// written.
func (r *records) netsOf(pid int) []netNetEvent {
	var out []netNetEvent
	for _, n := range r.nets {
		if n.Hdr.Pid == uint32(pid) {
			out = append(out, n)
		}
	}
	slices.SortStableFunc(out, func(a, b netNetEvent) int {
		return int(a.Hdr.KtimeNs - b.Hdr.KtimeNs)
	})
	return out
}

func checkNetRecord(rt *rapid.T, n *netNetEvent, a diffAction, d intent.Decision, session uint64) {
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
	outside := n.Hdr.Flags&uint32(netIdendEventFlagEVENT_F_OUTSIDE) != 0
	switch {
	case n.Hdr.Kind != uint16(a.recordKind()) || n.Hdr.Session != session:
		rt.Errorf("%s: record kind %d session %d, want %d and %d", a, n.Hdr.Kind, n.Hdr.Session, a.recordKind(), session)
	case addr != a.addr || n.Port != a.port || mapped != a.mapped || n.Protocol != uint16(a.proto):
		rt.Errorf("%s: record for %s port %d mapped %v protocol %d", a, addr, n.Port, mapped, n.Protocol)
	case n.Hdr.Verdict != uint8(kernelVerdict(d.Verdict)) || outside == d.InIntent:
		rt.Errorf("%s: record verdict %d outside %v, Evaluate %s in intent %v (%s)",
			a, n.Hdr.Verdict, outside, d.Verdict, d.InIntent, d.Reason)
	}
}
