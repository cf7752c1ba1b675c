package intent

import (
	"errors"
	"net/netip"
	"reflect"
	"slices"
	"testing"

	"pgregory.net/rapid"
)

// The generators draw from small address and port spaces so that rules
// nest, overlap and touch, which is where merging can go wrong.

var hostNames = []string{"h0.test", "h1.test", "h2.test"}

func genV4(t *rapid.T, label string) netip.Addr {
	return netip.AddrFrom4([4]byte{10, 0,
		rapid.ByteRange(0, 3).Draw(t, label+"-c"),
		rapid.Byte().Draw(t, label+"-d")})
}

func genV6(t *rapid.T, label string) netip.Addr {
	var b [16]byte
	copy(b[:], []byte{0x20, 0x01, 0x0d, 0xb8})
	b[14] = rapid.ByteRange(0, 3).Draw(t, label+"-14")
	b[15] = rapid.Byte().Draw(t, label+"-15")
	return netip.AddrFrom16(b)
}

func genPrefix(t *rapid.T, label string) netip.Prefix {
	if rapid.IntRange(0, 3).Draw(t, label+"-family") == 0 {
		bits := rapid.SampledFrom([]int{0, 32, 64, 112, 118, 120, 121, 126, 127, 128}).Draw(t, label+"-bits")
		return netip.PrefixFrom(genV6(t, label), bits).Masked()
	}
	bits := rapid.SampledFrom([]int{0, 8, 16, 22, 23, 24, 25, 26, 30, 31, 32}).Draw(t, label+"-bits")
	return netip.PrefixFrom(genV4(t, label), bits).Masked()
}

func genRule(t *rapid.T, label string) Rule {
	var r Rule
	if rapid.IntRange(0, 4).Draw(t, label+"-host") == 0 {
		r.Host = rapid.SampledFrom(hostNames).Draw(t, label+"-name")
		r.To = r.Host
	} else {
		r.Prefix = genPrefix(t, label)
		r.To = r.Prefix.String()
	}
	if rapid.IntRange(0, 4).Draw(t, label+"-allports") > 0 {
		n := rapid.IntRange(1, 3).Draw(t, label+"-nports")
		for i := 0; i < n; i++ {
			lo := rapid.Uint16Range(1, 30).Draw(t, label+"-lo")
			hi := lo + rapid.Uint16Range(0, 6).Draw(t, label+"-len")
			r.Ports = append(r.Ports, PortRange{Lo: lo, Hi: hi})
		}
	}
	r.Protocol = rapid.SampledFrom([]Proto{ProtoAny, ProtoTCP, ProtoUDP}).Draw(t, label+"-proto")
	return r
}

func genIntent(t *rapid.T, label string) *Intent {
	in := &Intent{Name: label, Purpose: "property test", TTL: DefaultTTL, Exec: ExecPolicy{Any: true}}
	n := rapid.IntRange(0, 6).Draw(t, label+"-rules")
	for i := 0; i < n; i++ {
		in.Egress = append(in.Egress, genRule(t, label+"-rule"))
	}
	return in
}

func genHosts(t *rapid.T) map[string][]netip.Addr {
	hosts := make(map[string][]netip.Addr)
	for _, h := range hostNames {
		n := rapid.IntRange(0, 2).Draw(t, h+"-n")
		for i := 0; i < n; i++ {
			if rapid.Bool().Draw(t, h+"-v6") {
				hosts[h] = append(hosts[h], genV6(t, h))
			} else {
				hosts[h] = append(hosts[h], genV4(t, h))
			}
		}
	}
	return hosts
}

// genNetAction draws a connect or sendmsg near the rules of ins: often at
// the first or last address of a rule's prefix, or just outside it.
func genNetAction(t *rapid.T, ins ...*Intent) Action {
	a := Action{
		Kind:  rapid.SampledFrom([]ActionKind{Connect, Sendmsg}).Draw(t, "kind"),
		Port:  rapid.SampledFrom([]uint16{0, 1, 2, 5, 6, 7, 10, 13, 20, 29, 30, 36, 37, 65535}).Draw(t, "port"),
		Proto: rapid.SampledFrom([]Proto{ProtoTCP, ProtoUDP}).Draw(t, "proto"),
	}
	var rules []Rule
	var edges []uint16
	for _, in := range ins {
		rules = append(rules, in.Egress...)
		for _, r := range in.Egress {
			for _, pr := range r.Ports {
				edges = append(edges, pr.Lo-1, pr.Lo, pr.Hi, pr.Hi+1)
			}
		}
	}
	if len(edges) > 0 && rapid.Bool().Draw(t, "port-at-edge") {
		a.Port = rapid.SampledFrom(edges).Draw(t, "edge-port")
	}
	switch rapid.IntRange(0, 3).Draw(t, "where") {
	case 0:
		a.Addr = genV4(t, "addr")
	case 1:
		a.Addr = genV6(t, "addr")
	default:
		if len(rules) == 0 || rules[0].Host != "" {
			a.Addr = netip.AddrFrom4([4]byte{10, 0, 0, 0})
			break
		}
		p := rapid.SampledFrom(rules).Draw(t, "near").Prefix
		if !p.IsValid() {
			p = netip.MustParsePrefix("10.0.0.0/24")
		}
		a.Addr = nearEdge(t, p)
	}
	if a.Addr.Is4() && rapid.IntRange(0, 3).Draw(t, "mapped") == 0 {
		a.Addr = netip.AddrFrom16(a.Addr.As16())
	}
	return a
}

func nearEdge(t *rapid.T, p netip.Prefix) netip.Addr {
	first := p.Addr()
	last := lastAddr(p)
	switch rapid.IntRange(0, 3).Draw(t, "edge") {
	case 0:
		return first
	case 1:
		return last
	case 2:
		if prev := first.Prev(); prev.IsValid() {
			return prev
		}
		return first
	}
	if next := last.Next(); next.IsValid() {
		return next
	}
	return last
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// refAllows judges a network action directly from the rules of an intent,
// one by one, without any merging.
func refAllows(in *Intent, hosts map[string][]netip.Addr, a Action) bool {
	addr := a.Addr.WithZone("").Unmap()
	for _, r := range in.Egress {
		if r.Protocol != ProtoAny && r.Protocol != a.Proto {
			continue
		}
		if r.Ports != nil && !slices.ContainsFunc(r.Ports, func(pr PortRange) bool {
			return a.Port >= pr.Lo && a.Port <= pr.Hi
		}) {
			continue
		}
		if r.Host == "" && r.Prefix.Contains(addr) {
			return true
		}
		for _, h := range hosts[r.Host] {
			if r.Host != "" && h.WithZone("").Unmap() == addr {
				return true
			}
		}
	}
	return false
}

// TestEvaluateMatchesRules checks that Evaluate on a compiled intent allows
// exactly what the intent's rules, read one by one, allow.
func TestEvaluateMatchesRules(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		in := genIntent(t, "p")
		hosts := genHosts(t)
		c, err := Compile(in, hosts, nil)
		if errors.Is(err, ErrTooLarge) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		checkCompiledShape(t, c)
		for _, a := range boundaryActions(hosts, in) {
			if got, want := Evaluate(c, a).InIntent, refAllows(in, hosts, a); got != want {
				t.Fatalf("%s %s:%d/%s: Evaluate says %v, the rules %v\ncompiled v4 %v\nv6 %v",
					a.Kind, a.Addr, a.Port, a.Proto, got, want, c.V4, c.V6)
			}
		}
	})
}

// checkCompiledShape checks what the kernel relies on: sorted, distinct,
// masked prefixes with at most MaxPortRules sorted port rules each.
func checkCompiledShape(t *rapid.T, c *Compiled) {
	for _, rules := range [][]PrefixRule{c.V4, c.V6} {
		for i, r := range rules {
			if r.Prefix != r.Prefix.Masked() || len(r.Ports) == 0 || len(r.Ports) > MaxPortRules {
				t.Fatalf("bad entry %v", r)
			}
			if i > 0 && comparePrefix(rules[i-1].Prefix, r.Prefix) >= 0 {
				t.Fatalf("unsorted %v, %v", rules[i-1], r)
			}
			if !slices.IsSortedFunc(r.Ports, func(a, b PortRule) int {
				if a.Lo != b.Lo {
					return int(a.Lo) - int(b.Lo)
				}
				return int(a.Hi) - int(b.Hi)
			}) {
				t.Fatalf("unsorted ports %v", r)
			}
		}
	}
}

// TestWidenAllowsExactlyOne checks that Widen adds the one action and
// nothing else, and that it equals compiling the intent with a rule for
// that action.
func TestWidenAllowsExactlyOne(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		in := genIntent(t, "p")
		c, err := Compile(in, nil, nil)
		if errors.Is(err, ErrTooLarge) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		a := genNetAction(t, in)
		w, err := Widen(c, a)
		if errors.Is(err, ErrTooLarge) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		if !Evaluate(w, a).InIntent {
			t.Fatalf("widened intent refuses %v", a)
		}
		addr := a.Addr.Unmap()
		for i := 0; i < 40; i++ {
			b := genNetAction(t, in)
			same := b.Addr.Unmap() == addr && b.Port == a.Port && b.Proto == a.Proto
			if got, want := Evaluate(w, b).InIntent, Evaluate(c, b).InIntent; !same && got != want {
				t.Fatalf("widening for %v changed %v: %v -> %v", a, b, want, got)
			}
		}

		if Evaluate(c, a).InIntent {
			if !reflect.DeepEqual(w, c) {
				t.Fatalf("widening for an allowed action changed the rules")
			}
			return
		}
		wider := *in
		wider.Egress = append(slices.Clone(in.Egress), Rule{
			To: addr.String(), Prefix: netip.PrefixFrom(addr, addr.BitLen()),
			Ports: []PortRange{{Lo: a.Port, Hi: a.Port}}, Protocol: a.Proto,
		})
		if a.Port == 0 {
			return // port 0 cannot be written in an intent
		}
		want, err := Compile(&wider, nil, nil)
		if err != nil {
			return
		}
		if !reflect.DeepEqual(w.V4, want.V4) || !reflect.DeepEqual(w.V6, want.V6) {
			t.Fatalf("widened\n%v %v\ncompiled\n%v %v", w.V4, w.V6, want.V4, want.V6)
		}
	})
}

// TestCanonicalPreservesDecisions checks that an intent rebuilt from its
// canonical form compiles to the same rules.
func TestCanonicalPreservesDecisions(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		in := genIntent(t, "p")
		hosts := genHosts(t)
		c, err := Compile(in, hosts, nil)
		if err != nil {
			return
		}
		back, err := FromCanonical(in.Canonical())
		if err != nil {
			t.Fatalf("%v\n%s", err, in.Canonical())
		}
		if back.Hash() != in.Hash() {
			t.Fatalf("hash changed")
		}
		c2, err := Compile(back, hosts, nil)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(c, c2) {
			t.Fatalf("compiled forms differ:\n%v\n%v", c, c2)
		}
	})
}

// boundaryActions returns connects at every point where what ins allow can
// change: the first and last address of each prefix and host address and
// their neighbours, crossed with the edges of each port range and both
// protocols. Checking two rule sets at these points compares them
// everywhere.
func boundaryActions(hosts map[string][]netip.Addr, ins ...*Intent) []Action {
	addrs := map[netip.Addr]bool{}
	ports := map[uint16]bool{0: true, 65535: true}
	addPrefix := func(p netip.Prefix) {
		first, last := p.Addr(), lastAddr(p)
		for _, a := range []netip.Addr{first, first.Prev(), last, last.Next()} {
			if a.IsValid() {
				addrs[a] = true
			}
		}
	}
	for _, in := range ins {
		for _, r := range in.Egress {
			if r.Prefix.IsValid() {
				addPrefix(r.Prefix)
			}
			for _, pr := range r.Ports {
				ports[pr.Lo-1], ports[pr.Lo], ports[pr.Hi], ports[pr.Hi+1] = true, true, true, true
			}
		}
	}
	for _, as := range hosts {
		for _, a := range as {
			addPrefix(netip.PrefixFrom(a, a.BitLen()))
		}
	}
	var out []Action
	for a := range addrs {
		for p := range ports {
			for _, proto := range []Proto{ProtoTCP, ProtoUDP} {
				out = append(out, Action{Kind: Connect, Addr: a, Port: p, Proto: proto})
			}
		}
	}
	return out
}
