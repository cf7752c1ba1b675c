package intent

import (
	"fmt"
	"net/netip"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Validate checks every field of in and returns a *ValidationError listing
// each problem, or nil. It also checks that the intent compiles within
// MaxPortRules for any resolution of its host names that gives each host
// addresses of its own.
func (in *Intent) Validate() error {
	r := newReport(in.src.file, in.src.lines)
	in.checkValues(r)
	if len(r.list) == 0 {
		in.checkBudget(r)
	}
	return r.err()
}

// report collects problems.
type report struct {
	file  string
	lines map[string]int
	list  []*Problem
}

func newReport(file string, lines map[string]int) *report {
	if lines == nil {
		lines = make(map[string]int)
	}
	return &report{file: file, lines: lines}
}

// add records a problem of field at line, or at the line recorded for the
// field or its closest enclosing field when line is 0.
func (r *report) add(line int, field, msg string, sentinel error) {
	if line == 0 {
		line = r.lineOf(field)
	}
	r.list = append(r.list, &Problem{File: r.file, Line: line, Field: field, Msg: msg, Err: sentinel})
}

// check records msg as an ErrInvalid problem of field unless it is empty.
func (r *report) check(field, msg string) {
	if msg != "" {
		r.add(0, field, msg, ErrInvalid)
	}
}

func (r *report) lineOf(field string) int {
	for field != "" {
		if l, ok := r.lines[field]; ok {
			return l
		}
		i := strings.LastIndexAny(field, ".[")
		if i < 0 {
			break
		}
		field = field[:i]
	}
	return 0
}

// err returns the problems sorted by line, or nil.
func (r *report) err() error {
	if len(r.list) == 0 {
		return nil
	}
	sort.SliceStable(r.list, func(i, j int) bool { return r.list[i].Line < r.list[j].Line })
	return &ValidationError{Problems: r.list}
}

func (in *Intent) checkValues(r *report) {
	r.check("name", checkName(in.Name))
	r.check("purpose", checkPurpose(in.Purpose))
	r.check("ttl", checkTTL(in.TTL.String(), in.TTL))
	if !in.OnViolation.valid() {
		r.check("on_violation", fmt.Sprintf("%s: one of block, escalate, audit", in.OnViolation))
	}
	in.checkCounts(r)
	for i := range in.Egress {
		checkRule(r, fmt.Sprintf("network.egress[%d]", i), &in.Egress[i])
	}
	for i, p := range in.Unix {
		r.check(fmt.Sprintf("network.unix[%d]", i), checkUnixPath(p))
	}
	switch {
	case in.Exec.Any && len(in.Exec.Paths) > 0:
		r.check("exec.allow", "both any and a list of paths")
	case !in.Exec.Any && len(in.Exec.Paths) == 0:
		r.check("exec.allow", msgEmptyExec)
	}
	for i, p := range in.Exec.Paths {
		r.check(fmt.Sprintf("exec.allow[%d]", i), checkExecPath(p))
	}
}

// checkCounts bounds the lists of an intent so that it always fits
// DefaultLimits when its host names are unresolved.
func (in *Intent) checkCounts(r *report) {
	count := func(field string, n, max int) {
		if n > max {
			r.add(0, field, fmt.Sprintf("%d entries, at most %d", n, max), ErrTooLarge)
		}
	}
	count("network.egress", len(in.Egress), DefaultLimits.MaxPrefixes)
	count("network.unix", len(in.Unix), DefaultLimits.MaxUnix)
	count("exec.allow", len(in.Exec.Paths), DefaultLimits.MaxExec)
}

func checkRule(r *report, field string, rule *Rule) {
	switch {
	case rule.Host != "" && rule.Prefix.IsValid():
		r.check(field+".to", "both a prefix and a host name")
	case rule.Host != "":
		if msg := checkHost(rule.Host); msg != "" {
			r.check(field+".to", fmt.Sprintf("%q: not a valid host name: %s", rule.Host, msg))
		} else if normalHost(rule.Host) != rule.Host {
			r.check(field+".to", fmt.Sprintf("%q: write host names in lower case", rule.Host))
		}
	case rule.Prefix.IsValid():
		if n := normalPrefix(rule.Prefix.Masked()); n != rule.Prefix {
			r.check(field+".to", fmt.Sprintf("%s: not in normal form (%s)", rule.Prefix, n))
		}
	default:
		r.check(field+".to", "required")
	}
	if rule.Ports != nil && len(rule.Ports) == 0 {
		r.check(field+".ports", msgEmptyPorts)
	}
	for j, pr := range rule.Ports {
		msg := checkPortRange(pr.String(), int(pr.Lo), int(pr.Hi))
		r.check(fmt.Sprintf("%s.ports[%d]", field, j), msg)
	}
	if !rule.Protocol.valid() {
		r.check(field+".protocol", fmt.Sprintf("%s: one of tcp, udp, any", rule.Protocol))
	}
}

const (
	msgEmptyPorts = "empty list: omit ports to allow every port"
	msgEmptyExec  = "empty list: would allow no program at all; list the programs or write any"
)

func checkName(s string) string {
	switch {
	case s == "":
		return "required"
	case len(s) > MaxNameLen:
		return fmt.Sprintf("%d bytes, at most %d", len(s), MaxNameLen)
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return fmt.Sprintf("%q: only a-z, 0-9 and - are allowed", s)
		}
	}
	return ""
}

func checkPurpose(s string) string {
	switch {
	case strings.TrimSpace(s) == "":
		return "required"
	case len(s) > MaxPurposeLen:
		return fmt.Sprintf("%d bytes, at most %d", len(s), MaxPurposeLen)
	case !utf8.ValidString(s):
		return "not valid UTF-8"
	}
	return ""
}

// parseTTL parses the ttl field as written.
func parseTTL(s string) (time.Duration, string) {
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Sprintf("%q: not a duration (like 30m or 2h)", s)
	}
	return d, checkTTL(s, d)
}

func checkTTL(text string, d time.Duration) string {
	switch {
	case d <= 0:
		return fmt.Sprintf("%s: must be positive", text)
	case d > MaxTTL:
		return fmt.Sprintf("%s: longer than the maximum, 720h", text)
	}
	return ""
}

// parseDest parses the to field of a rule: a CIDR, an IP address or a host
// name. It returns a prefix or a host, or a message saying what is wrong.
func parseDest(s string) (netip.Prefix, string, string) {
	if s == "" {
		return netip.Prefix{}, "", "required"
	}
	if strings.Contains(s, "/") {
		p, msg := parseCIDR(s)
		return p, "", msg
	}
	if strings.Contains(s, "%") {
		return netip.Prefix{}, "", fmt.Sprintf("%q: zoned addresses are not supported", s)
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return normalPrefix(netip.PrefixFrom(a, a.BitLen())), "", ""
	}
	if looksLikeIP(s) {
		return netip.Prefix{}, "", fmt.Sprintf("%q: not an IP address", s)
	}
	h := normalHost(s)
	if msg := checkHost(h); msg != "" {
		return netip.Prefix{}, "", fmt.Sprintf("%q: not a valid host name: %s", s, msg)
	}
	return netip.Prefix{}, h, ""
}

func parseCIDR(s string) (netip.Prefix, string) {
	addr, bits, _ := strings.Cut(s, "/")
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return netip.Prefix{}, fmt.Sprintf("%q: not a CIDR: %q is not an IP address", s, addr)
	}
	if a.Zone() != "" {
		return netip.Prefix{}, fmt.Sprintf("%q: zoned addresses are not supported", s)
	}
	n, err := strconv.Atoi(bits)
	if err != nil || n < 0 || n > a.BitLen() || bits != strconv.Itoa(n) {
		return netip.Prefix{}, fmt.Sprintf("%q: not a CIDR: prefix length must be 0 to %d", s, a.BitLen())
	}
	p := netip.PrefixFrom(a, n)
	if p.Masked() != p {
		return netip.Prefix{}, fmt.Sprintf("%q: host bits set (the network is %s)", s, p.Masked())
	}
	return normalPrefix(p), ""
}

// normalPrefix writes an IPv4-mapped IPv6 prefix as the IPv4 prefix it
// covers. A shorter IPv6 prefix that contains the mapped range stays IPv6.
func normalPrefix(p netip.Prefix) netip.Prefix {
	if p.Addr().Is4In6() && p.Bits() >= 96 {
		return netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	return p
}

func looksLikeIP(s string) bool {
	return strings.Contains(s, ":") || strings.Trim(s, "0123456789.") == ""
}

// normalHost lowers s and drops one trailing dot.
func normalHost(s string) string {
	return strings.TrimSuffix(strings.ToLower(s), ".")
}

// checkHost checks a host name as DNS writes it: dot-separated labels of
// letters, digits and inner hyphens, the last not all digits.
func checkHost(s string) string {
	if len(s) > 253 {
		return fmt.Sprintf("%d characters, at most 253", len(s))
	}
	labels := strings.Split(s, ".")
	for _, l := range labels {
		if msg := checkLabel(l); msg != "" {
			return msg
		}
	}
	if strings.Trim(labels[len(labels)-1], "0123456789") == "" {
		return "the last label is all digits"
	}
	return ""
}

func checkLabel(l string) string {
	switch {
	case l == "":
		return "empty label"
	case len(l) > 63:
		return fmt.Sprintf("label %q longer than 63 characters", l)
	case l[0] == '-' || l[len(l)-1] == '-':
		return fmt.Sprintf("label %q starts or ends with -", l)
	}
	for _, c := range l {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			return fmt.Sprintf("label %q has a character other than a-z, 0-9 and -", l)
		}
	}
	return ""
}

// parsePort parses "443" or "5432-5433".
func parsePort(s string) (PortRange, string) {
	los, his, isRange := strings.Cut(s, "-")
	if !isRange {
		his = los
	}
	lo, ok1 := portNumber(los)
	hi, ok2 := portNumber(his)
	if !ok1 || !ok2 {
		return PortRange{}, fmt.Sprintf("port %q: not a port number or range (like 443 or 8000-8080)", s)
	}
	if msg := checkPortRange(s, lo, hi); msg != "" {
		return PortRange{}, msg
	}
	return PortRange{Lo: uint16(lo), Hi: uint16(hi)}, ""
}

// portNumber parses a decimal number; one too long for an int is returned
// as 1<<20, which no port reaches.
func portNumber(s string) (int, bool) {
	s = strings.TrimSpace(s)
	if s == "" || strings.Trim(s, "0123456789") != "" {
		return 0, false
	}
	n, err := strconv.Atoi(s)
	if err != nil || n > 1<<20 {
		n = 1 << 20
	}
	return n, true
}

func checkPortRange(text string, lo, hi int) string {
	what := "port range"
	if !strings.Contains(text, "-") {
		what = "port"
	}
	switch {
	case lo < 1 || hi < 1 || lo > 65535 || hi > 65535:
		return fmt.Sprintf("%s %s: ports are 1 to 65535", what, text)
	case lo > hi:
		return fmt.Sprintf("%s %s: low end above high end", what, text)
	}
	return ""
}

// checkUnixPath checks a unix socket path, or an abstract name written
// "@name".
func checkUnixPath(p string) string {
	switch {
	case strings.ContainsRune(p, 0):
		return fmt.Sprintf("%q: contains a NUL byte", p)
	case p == "@":
		return fmt.Sprintf("%q: empty abstract socket name", p)
	case strings.HasPrefix(p, "@"):
		if len(p)-1 > MaxUnixPathLen {
			return fmt.Sprintf("%q: abstract name of %d bytes, at most %d", short(p), len(p)-1, MaxUnixPathLen)
		}
		return ""
	case !strings.HasPrefix(p, "/"):
		return fmt.Sprintf("%q: not an absolute path (or @name for an abstract socket)", p)
	case len(p) > MaxUnixPathLen:
		return fmt.Sprintf("%q: %d bytes, at most %d", short(p), len(p), MaxUnixPathLen)
	case path.Clean(p) != p:
		return fmt.Sprintf("%q: not a clean path (write %s)", p, path.Clean(p))
	}
	return ""
}

// checkExecPath checks a path of the exec allow list.
func checkExecPath(p string) string {
	switch {
	case p == "":
		return "empty path"
	case strings.ContainsRune(p, 0):
		return fmt.Sprintf("%q: contains a NUL byte", p)
	case p == "any":
		return fmt.Sprintf("%q: write allow: any on its own, not in a list", p)
	case !strings.HasPrefix(p, "/"):
		return fmt.Sprintf("%q: not an absolute path (give the full path, like /usr/bin/%s)", p, path.Base(p))
	case len(p) > MaxExecPathLen:
		return fmt.Sprintf("%q: %d bytes, at most %d", short(p), len(p), MaxExecPathLen)
	case path.Clean(p) != p:
		return fmt.Sprintf("%q: not a clean path (write %s)", p, path.Clean(p))
	}
	return ""
}

// short cuts s for quoting in a message.
func short(s string) string {
	if len(s) <= 64 {
		return s
	}
	return s[:61] + "..."
}
