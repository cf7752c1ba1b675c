package intent

import (
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"pgregory.net/rapid"
)

func parseNamed(t *testing.T, name, body string) *Intent {
	t.Helper()
	in, err := Parse(name, []byte(header+body))
	if err != nil {
		t.Fatal(err)
	}
	return in
}

func TestCheckSubset(t *testing.T) {
	hosts := map[string][]netip.Addr{
		"db.example":   {netip.MustParseAddr("10.1.0.5")},
		"logs.example": {netip.MustParseAddr("10.9.0.5"), netip.MustParseAddr("2001:db8::5")},
	}
	tests := []struct {
		name          string
		parent, child string
		want          []string // nil: a subset
	}{
		{"same", "network:\n  egress: [{to: 10.0.0.0/16, ports: [443]}]\n",
			"network:\n  egress: [{to: 10.0.0.0/16, ports: [443]}]\n", nil},
		{"inner prefix", "network:\n  egress: [{to: 10.0.0.0/16, ports: [443]}]\n",
			"network:\n  egress: [{to: 10.0.3.0/24, ports: [443], protocol: tcp}]\n", nil},
		{"outer prefix", "network:\n  egress: [{to: 10.0.0.0/16, ports: [443]}]\n",
			"network:\n  egress: [{to: 10.0.0.0/15, ports: [443]}]\n", []string{
				"child.yaml:4: network.egress[0]: to 10.0.0.0/15: the parent does not allow 443/any at 10.1.0.0/16",
			}},
		{"port range past the parent's", "network:\n  egress: [{to: 10.0.0.0/16, ports: [400-450], protocol: tcp}]\n",
			"network:\n  egress:\n    - {to: 10.0.0.0/24, ports: [400-450], protocol: tcp}\n    - {to: 10.0.0.0/24, ports: [440-451], protocol: tcp}\n",
			[]string{"child.yaml:6: network.egress[1]: to 10.0.0.0/24: the parent does not allow 451/tcp at 10.0.0.0/24"}},
		{"any against tcp", "network:\n  egress: [{to: 10.0.0.0/16, ports: [53], protocol: tcp}]\n",
			"network:\n  egress: [{to: 10.0.0.0/16, ports: [53]}]\n", []string{
				"child.yaml:4: network.egress[0]: to 10.0.0.0/16: the parent does not allow 53/udp at 10.0.0.0/16",
			}},
		{"any as tcp plus udp", "network:\n  egress:\n    - {to: 10.0.0.0/16, ports: [53], protocol: tcp}\n    - {to: 10.0.0.0/16, ports: [53], protocol: udp}\n",
			"network:\n  egress: [{to: 10.0.0.0/16, ports: [53]}]\n", nil},
		{"every port against 1-65535", "network:\n  egress: [{to: 10.0.0.0/8, ports: [1-65535]}]\n",
			"network:\n  egress: [{to: 10.0.0.0/8}]\n", []string{
				"child.yaml:4: network.egress[0]: to 10.0.0.0/8: the parent does not allow 0/any at 10.0.0.0/8",
			}},
		{"two halves cover a /24", "network:\n  egress:\n    - {to: 10.0.0.0/25, ports: [80]}\n    - {to: 10.0.0.128/25, ports: [80, 443]}\n",
			"network:\n  egress: [{to: 10.0.0.0/24, ports: [80]}]\n", nil},
		{"two halves differ", "network:\n  egress:\n    - {to: 10.0.0.0/25, ports: [80]}\n    - {to: 10.0.0.128/25, ports: [80, 443]}\n",
			"network:\n  egress: [{to: 10.0.0.0/24, ports: [80, 443]}]\n", []string{
				"child.yaml:4: network.egress[0]: to 10.0.0.0/24: the parent does not allow 443/any at 10.0.0.0/25",
			}},
		{"three quarters and a hole", "network:\n  egress:\n    - {to: 10.0.0.0/25}\n    - {to: 10.0.0.128/26}\n    - {to: 10.0.0.224/27}\n",
			"network:\n  egress: [{to: 10.0.0.0/24, ports: [22], protocol: tcp}]\n", []string{
				"child.yaml:4: network.egress[0]: to 10.0.0.0/24: the parent does not allow 22/tcp at 10.0.0.192/27",
			}},
		{"inner parent rule widens only its part", "network:\n  egress:\n    - {to: 10.0.0.0/16, ports: [443]}\n    - {to: 10.0.1.0/24, ports: [80]}\n",
			"network:\n  egress:\n    - {to: 10.0.1.128/25, ports: [80, 443]}\n    - {to: 10.0.0.0/16, ports: [80]}\n", []string{
				"child.yaml:6: network.egress[1]: to 10.0.0.0/16: the parent does not allow 80/any at 10.0.0.0/24",
			}},
		{"ipv6 halves", "network:\n  egress:\n    - {to: \"::/1\", ports: [443]}\n    - {to: \"8000::/1\", ports: [443]}\n",
			"network:\n  egress: [{to: \"::/0\", ports: [443]}]\n", nil},
		{"mapped range is not ipv6", "network:\n  egress: [{to: \"::fffe:0:0/96\", ports: [80]}]\n",
			"network:\n  egress: [{to: \"::fffe:0:0/95\", ports: [80]}]\n", nil},
		{"ipv4 is not ipv6", "network:\n  egress: [{to: \"::/0\"}]\n",
			"network:\n  egress: [{to: 10.0.0.1}]\n", []string{
				"child.yaml:4: network.egress[0]: to 10.0.0.1: the parent does not allow 0-65535/any at 10.0.0.1/32",
			}},
		{"host by name", "network:\n  egress: [{to: api.example, ports: [443]}]\n",
			"network:\n  egress: [{to: API.example, ports: [443], protocol: tcp}]\n", nil},
		{"host inside a parent prefix", "network:\n  egress: [{to: 10.1.0.0/16, ports: [5432], protocol: tcp}]\n",
			"network:\n  egress: [{to: db.example, ports: [5432], protocol: tcp}]\n", nil},
		{"host with one address outside", "network:\n  egress: [{to: 10.9.0.0/16, ports: [8080]}]\n",
			"network:\n  egress: [{to: logs.example, ports: [8080]}]\n", []string{
				"child.yaml:4: network.egress[0]: to logs.example: the parent does not allow 8080/any at 2001:db8::5, an address of the host",
			}},
		{"unresolved host against everywhere", "network:\n  egress:\n    - {to: 0.0.0.0/0, ports: [443]}\n    - {to: \"::/0\", ports: [443]}\n",
			"network:\n  egress: [{to: new.example, ports: [443]}]\n", nil},
		{"unresolved host against a prefix", "network:\n  egress: [{to: 10.0.0.0/8, ports: [443]}]\n",
			"network:\n  egress: [{to: new.example, ports: [443]}]\n", []string{
				"child.yaml:4: network.egress[0]: to new.example: the parent does not allow 443/any to this host (no parent rule names it, and it has no addresses to compare)",
			}},
		{"prefix inside a parent host", "network:\n  egress: [{to: db.example}]\n",
			"network:\n  egress: [{to: 10.1.0.5, ports: [5432]}]\n", nil},
		{"everything else", `ttl: 30m
on_violation: escalate
network:
  unix: [/run/a.sock]
exec:
  allow: [/usr/bin/git]
`, `ttl: 1h
on_violation: audit
network:
  unix: [/run/a.sock, "@b"]
  raw_sockets: true
exec:
  allow: [/usr/bin/git, /usr/bin/python3]
`, []string{
			"child.yaml:3: ttl: 1h, longer than the parent's 30m",
			"child.yaml:4: on_violation: audit, looser than the parent's escalate",
			`child.yaml:6: network.unix[1]: @b: not allowed by the parent`,
			"child.yaml:7: network.raw_sockets: true, and the parent's is false",
			"child.yaml:9: exec.allow[1]: /usr/bin/python3: not allowed by the parent",
		}},
		{"exec any", "exec:\n  allow: [/usr/bin/git, /bin/sh]\n", "ttl: 1h\n", []string{
			"child.yaml: exec.allow: any program, and the parent allows only /usr/bin/git, /bin/sh",
		}},
		{"default ttl", "ttl: 30m\n", "", []string{
			"child.yaml: ttl: 1h, longer than the parent's 30m",
		}},
		{"stricter everything", "ttl: 2h\non_violation: audit\nnetwork:\n  raw_sockets: true\n",
			"ttl: 1m\non_violation: block\nexec:\n  allow: [/usr/bin/git]\n", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			parent := parseNamed(t, "parent.yaml", tt.parent)
			child := parseNamed(t, "child.yaml", tt.child)
			err := CheckSubset(parent, child, hosts)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("refused:\n%v", err)
				}
				return
			}
			var serr *SubsetError
			if !errors.As(err, &serr) || !errors.Is(err, ErrNotSubset) {
				t.Fatalf("got %v, want a *SubsetError", err)
			}
			if !reflect.DeepEqual(serr.Problems, tt.want) {
				t.Errorf("got\n\t%s\nwant\n\t%s", strings.Join(serr.Problems, "\n\t"), strings.Join(tt.want, "\n\t"))
			}
		})
	}
}

// TestSubsetExact checks CheckSubset's network part both ways: when it
// accepts, no action the child allows is refused by the parent; when it
// reports a gap, the gap holds an action the child allows and the parent
// refuses.
func TestSubsetExact(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		parent := genIntent(t, "parent")
		child := genChild(t, parent)
		hosts := genHosts(t)
		if parent.Validate() != nil || child.Validate() != nil {
			return
		}
		gaps := netGaps(parent, child, hosts)
		for _, g := range gaps {
			if !g.region.IsValid() {
				continue
			}
			a := Action{Kind: Connect, Addr: g.region.Addr(), Proto: ProtoTCP}
			ports := g.missing.tcp
			if len(ports) == 0 {
				a.Proto, ports = ProtoUDP, g.missing.udp
			}
			a.Port = ports[0].Lo
			if !refAllows(child, hosts, a) || refAllows(parent, hosts, a) {
				t.Fatalf("gap %v of rule %d: child allows %v: %v, parent: %v",
					g, g.rule, a, refAllows(child, hosts, a), refAllows(parent, hosts, a))
			}
		}
		if len(gaps) > 0 {
			return
		}
		for _, a := range boundaryActions(hosts, child, parent) {
			if refAllows(child, hosts, a) && !refAllows(parent, hosts, a) {
				t.Fatalf("accepted, but the child alone allows %s %s:%d/%s", a.Kind, a.Addr, a.Port, a.Proto)
			}
		}
	})
}

// genChild draws an intent whose rules are mostly narrowed copies of the
// parent's, so that both outcomes are common.
func genChild(t *rapid.T, parent *Intent) *Intent {
	child := genIntent(t, "child")
	if len(parent.Egress) == 0 || rapid.IntRange(0, 3).Draw(t, "random-child") == 0 {
		return child
	}
	for i := range child.Egress {
		if rapid.Bool().Draw(t, "keep-random") {
			continue
		}
		r := rapid.SampledFrom(parent.Egress).Draw(t, "from-parent")
		if r.Prefix.IsValid() {
			bits := r.Prefix.Bits() + rapid.IntRange(-2, 3).Draw(t, "longer")
			bits = max(0, min(r.Prefix.Addr().BitLen(), bits))
			addr := nearEdge(t, r.Prefix)
			if !r.Prefix.Contains(addr) {
				addr = r.Prefix.Addr()
			}
			r.Prefix = netip.PrefixFrom(addr, bits).Masked()
			r.To = r.Prefix.String()
		}
		if r.Ports != nil && rapid.Bool().Draw(t, "shift-ports") {
			r.Ports = []PortRange{{Lo: r.Ports[0].Lo, Hi: r.Ports[0].Hi + rapid.Uint16Range(0, 1).Draw(t, "past")}}
		}
		child.Egress[i] = r
	}
	return child
}
