package intent

import "sort"

// spans is a set of ports: sorted, disjoint, non-adjacent ranges.
type spans []PortRange

var everyPort = spans{{Lo: 0, Hi: 65535}}

// union returns the ports in a or in b.
func union(a, b spans) spans {
	all := make([]PortRange, 0, len(a)+len(b))
	all = append(append(all, a...), b...)
	sort.Slice(all, func(i, j int) bool { return all[i].Lo < all[j].Lo })
	var out spans
	for _, r := range all {
		n := len(out)
		if n > 0 && int(r.Lo) <= int(out[n-1].Hi)+1 {
			out[n-1].Hi = max(out[n-1].Hi, r.Hi)
			continue
		}
		out = append(out, r)
	}
	return out
}

// minus returns the ports in s and not in t.
func (s spans) minus(t spans) spans {
	var out spans
	for _, r := range s {
		lo := int(r.Lo)
		for _, x := range t {
			if int(x.Hi) < lo || x.Lo > r.Hi {
				continue
			}
			if int(x.Lo) > lo {
				out = append(out, PortRange{Lo: uint16(lo), Hi: x.Lo - 1})
			}
			lo = int(x.Hi) + 1
		}
		if lo <= int(r.Hi) {
			out = append(out, PortRange{Lo: uint16(lo), Hi: r.Hi})
		}
	}
	return out
}

// intersect returns the ports in both s and t.
func (s spans) intersect(t spans) spans {
	return s.minus(s.minus(t))
}

func (s spans) contains(port uint16) bool {
	i := sort.Search(len(s), func(i int) bool { return s[i].Hi >= port })
	return i < len(s) && s[i].Lo <= port
}

func (s spans) equal(t spans) bool {
	if len(s) != len(t) {
		return false
	}
	for i := range s {
		if s[i] != t[i] {
			return false
		}
	}
	return true
}

// portSet is what a destination allows: a set of TCP ports and a set of
// UDP ports. A rule of protocol any adds its ports to both.
type portSet struct {
	tcp, udp spans
}

// ruleSet returns the ports rule allows.
func ruleSet(rule *Rule) portSet {
	ports := everyPort
	if rule.Ports != nil {
		ports = union(nil, rule.Ports)
	}
	return protoSet(ports, rule.Protocol)
}

func protoSet(ports spans, proto Proto) portSet {
	var ps portSet
	if proto != ProtoUDP {
		ps.tcp = ports
	}
	if proto != ProtoTCP {
		ps.udp = ports
	}
	return ps
}

func (a portSet) union(b portSet) portSet {
	return portSet{tcp: union(a.tcp, b.tcp), udp: union(a.udp, b.udp)}
}

func (a portSet) minus(b portSet) portSet {
	return portSet{tcp: a.tcp.minus(b.tcp), udp: a.udp.minus(b.udp)}
}

func (a portSet) intersect(b portSet) portSet {
	return portSet{tcp: a.tcp.intersect(b.tcp), udp: a.udp.intersect(b.udp)}
}

func (a portSet) empty() bool { return len(a.tcp) == 0 && len(a.udp) == 0 }

func (a portSet) equal(b portSet) bool { return a.tcp.equal(b.tcp) && a.udp.equal(b.udp) }

// rules writes a as port rules for the kernel: the maximal ranges of each
// protocol, a range that is the same for TCP and UDP written once as any.
// It never needs more rules than were merged into a.
func (a portSet) rules() []PortRule {
	var out []PortRule
	t, u := a.tcp, a.udp
	for len(t) > 0 || len(u) > 0 {
		switch {
		case len(t) > 0 && len(u) > 0 && t[0] == u[0]:
			out = append(out, PortRule{Lo: t[0].Lo, Hi: t[0].Hi, Proto: ProtoAny})
			t, u = t[1:], u[1:]
		case len(u) == 0 || len(t) > 0 && lessRange(t[0], u[0]):
			out = append(out, PortRule{Lo: t[0].Lo, Hi: t[0].Hi, Proto: ProtoTCP})
			t = t[1:]
		default:
			out = append(out, PortRule{Lo: u[0].Lo, Hi: u[0].Hi, Proto: ProtoUDP})
			u = u[1:]
		}
	}
	return out
}

func lessRange(a, b PortRange) bool {
	if a.Lo != b.Lo {
		return a.Lo < b.Lo
	}
	return a.Hi < b.Hi
}

// setOf returns the ports a list of port rules allows.
func setOf(rules []PortRule) portSet {
	var ps portSet
	for _, r := range rules {
		ps = ps.union(protoSet(spans{{Lo: r.Lo, Hi: r.Hi}}, r.Proto))
	}
	return ps
}
