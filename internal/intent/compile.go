package intent

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
)

// MaxPortRules is how many port rules the kernel scans at one prefix
// (MAX_PORT_RULES in bpf/idend.h).
const MaxPortRules = 16

// A PortRule allows the ports Lo to Hi of one protocol at a prefix. It is
// the port_rule of bpf/idend.h.
type PortRule struct {
	Lo, Hi uint16
	Proto  Proto
}

// String returns "443/tcp" or "5432-5433/any".
func (r PortRule) String() string {
	return PortRange{Lo: r.Lo, Hi: r.Hi}.String() + "/" + r.Proto.String()
}

// A PrefixRule is one entry of a session's LPM trie: the ports allowed to
// the addresses whose longest matching prefix is Prefix.
type PrefixRule struct {
	Prefix netip.Prefix
	// Ports holds at most MaxPortRules rules, sorted by Lo, Hi, Proto.
	// They already include the ports of every shorter prefix containing
	// Prefix, so that the longest match alone decides.
	Ports []PortRule
}

// Compiled is an intent in the form the kernel programs read, plus what
// Describe needs to explain it. Lists are sorted and free of duplicates, so
// two Compiled values allowing the same actions compare equal with
// reflect.DeepEqual (Names aside). A Compiled is never modified by this
// package after it is returned.
type Compiled struct {
	// V4 and V6 are the entries of the session's IPv4 and IPv6 tries,
	// sorted by address then prefix length. An IPv4-mapped IPv6
	// destination is judged by V4.
	V4, V6 []PrefixRule
	// Unix lists the allowed unix socket paths, "@name" for abstract ones.
	Unix []string
	// RawSockets allows the sockets that need raw_sockets (see Evaluate).
	RawSockets bool
	// ExecAny allows every program; ExecFiles is then empty.
	ExecAny bool
	// ExecFiles lists the files that may be executed, by device and inode,
	// sorted.
	ExecFiles []FileID
	// Mode is what happens to an action outside the intent.
	Mode Mode
	// Unresolved names what compiled to nothing: "host NAME" for a host
	// name without addresses, "exec PATH" for a program not found.
	Unresolved []string
	// Names maps each of ExecFiles to the path it was found at. It is
	// for display only; the kernel does not read it.
	Names map[FileID]string
}

// Limits bounds the size of a compiled intent. A zero field is no limit.
type Limits struct {
	// MaxPrefixes bounds the entries of each of V4 and V6.
	MaxPrefixes int
	// MaxUnix bounds the unix socket paths.
	MaxUnix int
	// MaxExec bounds the executable files.
	MaxExec int
}

// DefaultLimits are the limits Compile and Widen enforce. Parse refuses an
// intent that could not fit them with its host names unresolved.
var DefaultLimits = Limits{MaxPrefixes: 65536, MaxUnix: 1024, MaxExec: 1024}

// Check returns an error wrapping ErrTooLarge when c exceeds l.
func (l Limits) Check(c *Compiled) error {
	over := func(what string, n, max int) error {
		if max > 0 && n > max {
			return fmt.Errorf("%d %s, more than the limit of %d: %w", n, what, max, ErrTooLarge)
		}
		return nil
	}
	if err := over("IPv4 prefixes", len(c.V4), l.MaxPrefixes); err != nil {
		return err
	}
	if err := over("IPv6 prefixes", len(c.V6), l.MaxPrefixes); err != nil {
		return err
	}
	if err := over("unix socket paths", len(c.Unix), l.MaxUnix); err != nil {
		return err
	}
	return over("executable files", len(c.ExecFiles), l.MaxExec)
}

// Compile turns in into what the kernel programs read. hosts gives the
// addresses of each host name of in (a name missing from it compiles to
// nothing); files gives the file of each exec path (see ResolveExec; a path
// missing from it compiles to nothing). Neither map is modified.
//
// Each prefix's ports are merged with those of every shorter prefix that
// contains it, and a prefix that then allows exactly what its container
// allows is dropped. Compile returns a *ValidationError when in is invalid
// or when a prefix needs more than MaxPortRules rules (ErrTooLarge), and an
// error wrapping ErrTooLarge when the result exceeds DefaultLimits.
func Compile(in *Intent, hosts map[string][]netip.Addr, files map[string]FileID) (*Compiled, error) {
	if err := in.Validate(); err != nil {
		return nil, err
	}

	c := &Compiled{Mode: in.OnViolation, RawSockets: in.RawSockets, ExecAny: in.Exec.Any}
	v4, v6, unresolved := netEntries(in, hosts)
	r := newReport(in.src.file, in.src.lines)
	c.V4 = prefixRules(r, in, v4)
	c.V6 = prefixRules(r, in, v6)
	if err := r.err(); err != nil {
		return nil, err
	}

	c.Unix = slices.Compact(slices.Sorted(slices.Values(in.Unix)))
	missing := c.addExecFiles(in.Exec.Paths, files)
	c.Unresolved = append(unresolved, missing...)
	slices.Sort(c.Unresolved)
	c.Unresolved = slices.Compact(c.Unresolved)
	if err := DefaultLimits.Check(c); err != nil {
		return nil, fmt.Errorf("compile %s: %w", in.Name, err)
	}
	return c, nil
}

// netEntry is one prefix of an intent while it compiles.
type netEntry struct {
	prefix netip.Prefix
	own    portSet // the ports of the rules naming this prefix
	ports  portSet // own, plus the ports of every prefix containing it
	parent *netEntry
	rule   int // the first rule naming this prefix
}

// netEntries collects the prefixes of in's rules, host names resolved
// through hosts, and merges into each the ports of the prefixes containing
// it. It returns the entries of each family sorted by address then length,
// and the host names hosts has no address for.
func netEntries(in *Intent, hosts map[string][]netip.Addr) (v4, v6 []*netEntry,
	unresolved []string) {
	m := make(map[netip.Prefix]*netEntry)
	for i := range in.Egress {
		rule := &in.Egress[i]
		ps := ruleSet(rule)
		if rule.Host == "" {
			addEntry(m, rule.Prefix, ps, i)
			continue
		}
		addrs := hosts[rule.Host]
		if len(addrs) == 0 && !slices.Contains(unresolved, "host "+rule.Host) {
			unresolved = append(unresolved, "host "+rule.Host)
		}
		for _, a := range addrs {
			if a = a.WithZone("").Unmap(); a.IsValid() {
				addEntry(m, netip.PrefixFrom(a, a.BitLen()), ps, i)
			}
		}
	}

	for _, e := range m {
		if e.prefix.Addr().Is4() {
			v4 = append(v4, e)
		} else {
			v6 = append(v6, e)
		}
	}
	return mergeEntries(v4), mergeEntries(v6), unresolved
}

func addEntry(m map[netip.Prefix]*netEntry, p netip.Prefix, ps portSet, rule int) {
	e := m[p]
	if e == nil {
		e = &netEntry{prefix: p, rule: rule}
		m[p] = e
	}
	e.own = e.own.union(ps)
	e.rule = min(e.rule, rule)
}

// mergeEntries sorts es so that every prefix comes after the prefixes
// containing it, then gives each the union of its own ports and those of
// its closest container, which already holds its own containers' ports.
func mergeEntries(es []*netEntry) []*netEntry {
	slices.SortFunc(es, func(a, b *netEntry) int { return comparePrefix(a.prefix, b.prefix) })
	var stack []*netEntry
	for _, e := range es {
		for len(stack) > 0 && !stack[len(stack)-1].prefix.Contains(e.prefix.Addr()) {
			stack = stack[:len(stack)-1]
		}
		e.ports = e.own
		if len(stack) > 0 {
			e.parent = stack[len(stack)-1]
			e.ports = e.ports.union(e.parent.ports)
		}
		stack = append(stack, e)
	}
	return es
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return cmp.Compare(a.Bits(), b.Bits())
}

// prefixRules writes the entries that change what their container allows
// as PrefixRules, reporting each that needs more than MaxPortRules rules.
func prefixRules(r *report, in *Intent, es []*netEntry) []PrefixRule {
	var out []PrefixRule
	for _, e := range es {
		if e.parent != nil && e.ports.equal(e.parent.ports) {
			continue
		}
		rules := e.ports.rules()
		if len(rules) > MaxPortRules {
			r.add(0, ruleField(e.rule), overflowMsg(e.prefix, len(rules)), ErrTooLarge)
		}
		out = append(out, PrefixRule{Prefix: e.prefix, Ports: rules})
	}
	return out
}

func ruleField(i int) string { return fmt.Sprintf("network.egress[%d]", i) }

func overflowMsg(p netip.Prefix, n int) string {
	return fmt.Sprintf("%s: %d port rules after merging with enclosing prefixes, at most %d",
		p, n, MaxPortRules)
}

// checkBudget reports the rules that would compile to more than
// MaxPortRules rules at a prefix: a CIDR once merged, a host name merged
// with the largest set of any prefix its addresses could fall in.
func (in *Intent) checkBudget(r *report) {
	v4, v6, _ := netEntries(in, nil)
	most := 0
	for _, e := range append(v4, v6...) {
		n := len(e.ports.rules())
		most = max(most, n)
		if n > MaxPortRules && (e.parent == nil || !e.ports.equal(e.parent.ports)) {
			r.add(0, ruleField(e.rule), overflowMsg(e.prefix, n), ErrTooLarge)
		}
	}
	// Rules naming the same host always share its addresses.
	first := make(map[string]int)
	own := make(map[string]portSet)
	for i := range in.Egress {
		rule := &in.Egress[i]
		if rule.Host == "" {
			continue
		}
		if _, ok := first[rule.Host]; !ok {
			first[rule.Host] = i
		}
		own[rule.Host] = own[rule.Host].union(ruleSet(rule))
	}
	for i := range in.Egress {
		host := in.Egress[i].Host
		if host == "" || first[host] != i {
			continue
		}
		if n := len(own[host].rules()); n+most > MaxPortRules {
			r.add(0, ruleField(i), fmt.Sprintf(
				"host %s: %d port rules, with up to %d from an enclosing prefix, exceed %d",
				host, n, most, MaxPortRules), ErrTooLarge)
		}
	}
}

// addExecFiles fills ExecFiles and Names from the files of paths, and
// returns the paths files has no entry for.
func (c *Compiled) addExecFiles(paths []string, files map[string]FileID) []string {
	var missing []string
	for _, p := range paths {
		id, ok := files[p]
		if !ok {
			missing = append(missing, "exec "+p)
			continue
		}
		if c.Names == nil {
			c.Names = make(map[FileID]string)
		}
		if _, dup := c.Names[id]; !dup {
			c.Names[id] = p
			c.ExecFiles = append(c.ExecFiles, id)
		}
	}
	slices.SortFunc(c.ExecFiles, FileID.compare)
	return missing
}

// lookup returns the longest prefix of rules containing a, or nil.
func lookup(rules []PrefixRule, a netip.Addr) *PrefixRule {
	var best *PrefixRule
	for i := range rules {
		r := &rules[i]
		if r.Prefix.Contains(a) && (best == nil || r.Prefix.Bits() > best.Prefix.Bits()) {
			best = r
		}
	}
	return best
}
