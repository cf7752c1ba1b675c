package intent

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// CheckSubset returns nil when child allows nothing that parent does not,
// and a *SubsetError naming each wider part of child otherwise. It compares
// what the two intents allow, not how they are written: a child /24 inside
// a parent /16 is a subset, and so is a child /24 covered by two parent
// /25s; a child port range reaching one port past the parent's is not.
//
// Destinations are compared after resolving host names of both intents
// through hosts. A child host name is within its parent when the parent
// names the same host with the ports, when the parent allows the ports at
// every address, or when the parent allows them at each address the host
// has in hosts (true at this resolution only; recheck when it changes).
//
// Unix socket and executable paths are compared as written. The child's
// ttl must not be longer and its on_violation not looser (block is
// stricter than escalate, which is stricter than audit).
func CheckSubset(parent, child *Intent, hosts map[string][]netip.Addr) error {
	var problems []string
	add := func(field, format string, args ...any) {
		problems = append(problems, child.where(field)+": "+fmt.Sprintf(format, args...))
	}

	if child.TTL > parent.TTL {
		add("ttl", "%s, longer than the parent's %s", shortDuration(child.TTL), shortDuration(parent.TTL))
	}
	if child.OnViolation > parent.OnViolation {
		add("on_violation", "%s, looser than the parent's %s", child.OnViolation, parent.OnViolation)
	}
	for _, g := range netGaps(parent, child, hosts) {
		add(ruleField(g.rule), "%s", g.describe(&child.Egress[g.rule]))
	}
	for i, p := range child.Unix {
		if !slices.Contains(parent.Unix, p) {
			add(fmt.Sprintf("network.unix[%d]", i), "%s: not allowed by the parent", p)
		}
	}
	if child.RawSockets && !parent.RawSockets {
		add("network.raw_sockets", "true, and the parent's is false")
	}
	checkExecSubset(parent, child, add)

	if len(problems) > 0 {
		return &SubsetError{Problems: problems}
	}
	return nil
}

func checkExecSubset(parent, child *Intent, add func(field, format string, args ...any)) {
	switch {
	case parent.Exec.Any:
		return
	case child.Exec.Any:
		add("exec.allow", "any program, and the parent allows only %s", strings.Join(parent.Exec.Paths, ", "))
		return
	}
	for i, p := range child.Exec.Paths {
		if !slices.Contains(parent.Exec.Paths, p) {
			add(fmt.Sprintf("exec.allow[%d]", i), "%s: not allowed by the parent", p)
		}
	}
}

// shortDuration writes d as an intent file would: 1h, not 1h0m0s.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

// A netGap is a part of a child rule its parent does not allow.
type netGap struct {
	rule    int          // index in the child's Egress
	region  netip.Prefix // where the parent allows less; invalid for an unresolved host
	missing portSet      // what the child allows there and the parent does not
}

func (g netGap) describe(r *Rule) string {
	var ports []string
	for _, pr := range g.missing.rules() {
		ports = append(ports, pr.String())
	}
	missing := strings.Join(ports, ", ")
	to := r.To
	if to == "" {
		to = r.dest()
	}
	switch {
	case !g.region.IsValid():
		return fmt.Sprintf("to %s: the parent does not allow %s to this host "+
			"(no parent rule names it, and it has no addresses to compare)", to, missing)
	case r.Host != "":
		return fmt.Sprintf("to %s: the parent does not allow %s at %s, an address of the host",
			to, missing, g.region.Addr())
	}
	return fmt.Sprintf("to %s: the parent does not allow %s at %s", to, missing, g.region)
}

// netGaps finds, for each egress rule of child, one place where it allows
// more than parent.
func netGaps(parent, child *Intent, hosts map[string][]netip.Addr) []netGap {
	v4, v6, _ := netEntries(parent, hosts)
	var gaps []netGap
	for i := range child.Egress {
		r := &child.Egress[i]
		want := ruleSet(r)
		if r.Host != "" {
			if g, ok := hostGap(parent, v4, v6, r.Host, want, hosts); ok {
				g.rule = i
				gaps = append(gaps, g)
			}
			continue
		}
		es := v6
		if r.Prefix.Addr().Is4() {
			es = v4
		}
		if region, missing, ok := prefixGap(es, r.Prefix, want); ok {
			gaps = append(gaps, netGap{rule: i, region: region, missing: missing})
		}
	}
	return gaps
}

// prefixGap looks for a part of region where the entries es allow less than
// want. Where no entry lies strictly inside a region, the region's longest
// covering entry decides all of it; elsewhere the region is split in two.
// Merged entries only grow inward, so a region whose covering entry allows
// want is wholly allowed.
func prefixGap(es []*netEntry, region netip.Prefix, want portSet) (netip.Prefix, portSet, bool) {
	if region.Addr().Is4In6() && region.Bits() >= 96 {
		return netip.Prefix{}, portSet{}, false // judged by the IPv4 rules
	}
	missing := want.minus(covering(es, region))
	if missing.empty() {
		return netip.Prefix{}, portSet{}, false
	}
	if !splits(es, region) {
		return region, missing, true
	}
	lo, hi := halves(region)
	if g, m, ok := prefixGap(es, lo, want); ok {
		return g, m, ok
	}
	return prefixGap(es, hi, want)
}

// covering returns the ports of the longest entry containing all of
// region.
func covering(es []*netEntry, region netip.Prefix) portSet {
	var best *netEntry
	for _, e := range es {
		if e.prefix.Bits() <= region.Bits() && e.prefix.Contains(region.Addr()) &&
			(best == nil || e.prefix.Bits() > best.prefix.Bits()) {
			best = e
		}
	}
	if best == nil {
		return portSet{}
	}
	return best.ports
}

var mapped = netip.MustParsePrefix("::ffff:0:0/96")

// splits reports whether region holds an entry, or IPv4-mapped addresses
// (judged elsewhere), strictly inside it.
func splits(es []*netEntry, region netip.Prefix) bool {
	if region.Addr().Is6() && region.Bits() < mapped.Bits() && region.Contains(mapped.Addr()) {
		return true
	}
	for _, e := range es {
		if e.prefix.Bits() > region.Bits() && region.Contains(e.prefix.Addr()) {
			return true
		}
	}
	return false
}

// halves splits p into its two prefixes one bit longer.
func halves(p netip.Prefix) (netip.Prefix, netip.Prefix) {
	b := p.Addr().AsSlice()
	i := p.Bits()
	b[i/8] |= 0x80 >> (i % 8)
	hi, _ := netip.AddrFromSlice(b)
	return netip.PrefixFrom(p.Addr(), i+1), netip.PrefixFrom(hi, i+1)
}

// hostGap checks a child rule to host name host.
func hostGap(parent *Intent, v4, v6 []*netEntry, host string, want portSet,
	hosts map[string][]netip.Addr) (netGap, bool) {
	var byName portSet
	for i := range parent.Egress {
		if parent.Egress[i].Host == host {
			byName = byName.union(ruleSet(&parent.Egress[i]))
		}
	}
	everywhere := covering(v4, netip.MustParsePrefix("0.0.0.0/0")).intersect(
		covering(v6, netip.MustParsePrefix("::/0")))
	missing := want.minus(byName.union(everywhere))
	if missing.empty() {
		return netGap{}, false
	}

	addrs := hosts[host]
	if len(addrs) == 0 {
		return netGap{missing: missing}, true
	}
	for _, a := range addrs {
		if a = a.WithZone("").Unmap(); !a.IsValid() {
			continue
		}
		es := v6
		if a.Is4() {
			es = v4
		}
		p := netip.PrefixFrom(a, a.BitLen())
		if m := want.minus(covering(es, p).union(byName)); !m.empty() {
			return netGap{region: p, missing: m}, true
		}
	}
	return netGap{}, false
}
