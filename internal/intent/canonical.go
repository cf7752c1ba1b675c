package intent

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"
)

// canonicalVersion is the version of the canonical encoding.
const canonicalVersion = 1

type canonicalIntent struct {
	Version     int             `json:"version"`
	Name        string          `json:"name"`
	Purpose     string          `json:"purpose"`
	TTL         string          `json:"ttl"`
	OnViolation string          `json:"on_violation"`
	Egress      []canonicalRule `json:"egress"`
	Unix        []string        `json:"unix"`
	RawSockets  bool            `json:"raw_sockets"`
	Exec        canonicalExec   `json:"exec"`
}

type canonicalRule struct {
	To       string   `json:"to"`
	Ports    []string `json:"ports,omitempty"` // absent: every port
	Protocol string   `json:"protocol"`
}

type canonicalExec struct {
	Any   bool     `json:"any"`
	Allow []string `json:"allow"`
}

// Canonical returns the canonical encoding of in: compact JSON with every
// default filled in, addresses written as masked prefixes, host names in
// lower case, each rule's ports sorted and merged, and every list sorted
// and free of duplicates. Two files that differ only in layout, comments,
// key order, list order or such spellings have the same encoding. A
// recording carries it so that FromCanonical can rebuild the intent.
func (in *Intent) Canonical() []byte {
	c := canonicalIntent{
		Version:     canonicalVersion,
		Name:        in.Name,
		Purpose:     in.Purpose,
		TTL:         in.TTL.String(),
		OnViolation: in.OnViolation.String(),
		Egress:      make([]canonicalRule, 0, len(in.Egress)),
		Unix:        sortedSet(in.Unix),
		RawSockets:  in.RawSockets,
		Exec:        canonicalExec{Any: in.Exec.Any, Allow: sortedSet(in.Exec.Paths)},
	}
	for i := range in.Egress {
		c.Egress = append(c.Egress, canonicalRuleOf(&in.Egress[i]))
	}
	slices.SortFunc(c.Egress, compareRules)
	c.Egress = slices.CompactFunc(c.Egress, func(a, b canonicalRule) bool {
		return compareRules(a, b) == 0
	})

	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(c); err != nil {
		// Strings, bools and slices of them always encode.
		panic(fmt.Sprintf("encode canonical intent: %v", err))
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

// Hash returns "sha256:" and the hex SHA-256 of in's canonical encoding.
func (in *Intent) Hash() string {
	sum := sha256.Sum256(in.Canonical())
	return "sha256:" + hex.EncodeToString(sum[:])
}

func canonicalRuleOf(r *Rule) canonicalRule {
	c := canonicalRule{To: r.dest(), Protocol: r.Protocol.String()}
	if r.Ports != nil {
		for _, pr := range union(nil, r.Ports) {
			c.Ports = append(c.Ports, pr.String())
		}
	}
	return c
}

func compareRules(a, b canonicalRule) int {
	return strings.Compare(
		a.To+"\x00"+a.Protocol+"\x00"+strings.Join(a.Ports, ","),
		b.To+"\x00"+b.Protocol+"\x00"+strings.Join(b.Ports, ","))
}

func sortedSet(s []string) []string {
	return slices.Compact(slices.Sorted(slices.Values(append([]string{}, s...))))
}

// FromCanonical rebuilds an intent from its canonical encoding and
// validates it. Errors name the field, like those of Parse.
func FromCanonical(data []byte) (*Intent, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var c canonicalIntent
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("decode canonical intent: %w", err)
	}
	if dec.More() {
		return nil, fmt.Errorf("decode canonical intent: data after the intent: %w", ErrInvalid)
	}
	if c.Version != canonicalVersion {
		return nil, fmt.Errorf("decode canonical intent: version %d, want %d: %w",
			c.Version, canonicalVersion, ErrInvalid)
	}

	r := newReport("", nil)
	in := c.intent(r)
	if err := r.err(); err != nil {
		return nil, err
	}
	if err := in.Validate(); err != nil {
		return nil, err
	}
	return in, nil
}

// intent converts c, reporting the fields that do not parse.
func (c *canonicalIntent) intent(r *report) *Intent {
	in := &Intent{
		Name:       c.Name,
		Purpose:    c.Purpose,
		Unix:       c.Unix,
		RawSockets: c.RawSockets,
		Exec:       ExecPolicy{Any: c.Exec.Any, Paths: c.Exec.Allow},
	}
	ttl, err := time.ParseDuration(c.TTL)
	if err != nil {
		r.check("ttl", fmt.Sprintf("%q: not a duration (like 30m or 2h)", c.TTL))
	}
	in.TTL = ttl
	mode, ok := parseMode(c.OnViolation)
	if !ok {
		r.check("on_violation", fmt.Sprintf("%q: one of block, escalate, audit", c.OnViolation))
	}
	in.OnViolation = mode

	for i, cr := range c.Egress {
		field := ruleField(i)
		rule := Rule{To: cr.To}
		var msg string
		rule.Prefix, rule.Host, msg = parseDest(cr.To)
		r.check(field+".to", msg)
		if cr.Ports != nil {
			rule.Ports = make([]PortRange, 0, len(cr.Ports))
		}
		for j, s := range cr.Ports {
			pr, msg := parsePort(s)
			r.check(fmt.Sprintf("%s.ports[%d]", field, j), msg)
			rule.Ports = append(rule.Ports, pr)
		}
		if rule.Protocol, ok = parseProto(cr.Protocol); !ok {
			r.check(field+".protocol", fmt.Sprintf("%q: one of tcp, udp, any", cr.Protocol))
		}
		in.Egress = append(in.Egress, rule)
	}
	return in
}
