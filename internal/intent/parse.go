package intent

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Load reads and parses the intent file at path (see Parse).
func Load(path string) (*Intent, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("load intent: %w", err)
	}
	defer f.Close()

	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("load intent: %w", err)
	}
	return Parse(path, data)
}

// Parse parses and validates an intent file. filename is used only to name
// the file in errors. Parse returns a *ValidationError listing every
// problem it finds, each with the file, line and field, like
//
//	intent.yaml:7: network.egress[1].ports[0]: port range 900-80: low end above high end
//
// An intent Parse accepts always compiles while its host names are
// unresolved, and also once each host name has addresses of its own.
func Parse(filename string, data []byte) (*Intent, error) {
	p := &parser{report: newReport(filename, nil)}
	in := p.intent(data)
	if err := p.err(); err != nil {
		return nil, err
	}
	in.src = source{file: filename, lines: p.lines}
	if err := in.Validate(); err != nil {
		return nil, err
	}
	return in, nil
}

// parser walks the YAML node tree of an intent file, recording the line of
// each field it reads.
type parser struct {
	*report
}

var topFields = []string{"name", "purpose", "ttl", "on_violation", "network", "exec"}

func (p *parser) intent(data []byte) *Intent {
	if len(data) > MaxFileSize {
		p.add(1, "", fmt.Sprintf("file of %d bytes, at most %d", len(data), MaxFileSize), ErrTooLarge)
		return nil
	}
	root, ok := p.document(data)
	if !ok || p.hasAliases(root) {
		return nil
	}
	f := p.fields(root, "", topFields)
	if f == nil {
		return nil
	}

	in := &Intent{TTL: DefaultTTL, OnViolation: ModeBlock, Exec: ExecPolicy{Any: true}}
	in.Name = p.required(root, f, "name", checkName)
	in.Purpose = strings.TrimSpace(p.required(root, f, "purpose", checkPurpose))
	if s, ok := p.scalar(f["ttl"], "ttl", "a duration, like 30m"); ok {
		ttl, msg := parseTTL(s)
		p.at(f["ttl"], "ttl", msg)
		in.TTL = ttl
	}
	if s, ok := p.scalar(f["on_violation"], "on_violation", "block, escalate or audit"); ok {
		m, valid := parseMode(s)
		if !valid {
			p.at(f["on_violation"], "on_violation", fmt.Sprintf("%q: one of block, escalate, audit", s))
		}
		in.OnViolation = m
	}
	p.network(f["network"], in)
	p.exec(f["exec"], in)
	return in
}

// document decodes the one YAML document of data. An empty file is an
// empty mapping.
func (p *parser) document(data []byte) (root *yaml.Node, ok bool) {
	defer func() {
		// The YAML library is not expected to panic; if it does on some
		// input, that input is refused like any other malformed file.
		if r := recover(); r != nil {
			p.add(1, "", fmt.Sprintf("yaml: unreadable file: %v", r), ErrInvalid)
			root, ok = nil, false
		}
	}()

	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return emptyMapping(), true
		}
		p.syntax(err)
		return nil, false
	}
	var next yaml.Node
	switch err := dec.Decode(&next); {
	case errors.Is(err, io.EOF):
	case err != nil:
		p.syntax(err)
		return nil, false
	default:
		p.add(next.Line, "", "more than one YAML document", ErrInvalid)
		return nil, false
	}
	if len(doc.Content) == 0 || isNull(doc.Content[0]) {
		return emptyMapping(), true
	}
	return doc.Content[0], true
}

func emptyMapping() *yaml.Node {
	return &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Line: 1}
}

// syntax reports a YAML syntax error, "yaml: line N: msg", at its line.
func (p *parser) syntax(err error) {
	msg := err.Error()
	line := 1
	if rest, ok := strings.CutPrefix(msg, "yaml: line "); ok {
		num, tail, _ := strings.Cut(rest, ": ")
		if n, err := strconv.Atoi(num); err == nil {
			line, msg = n, "yaml: "+tail
		}
	}
	p.add(line, "", msg, ErrInvalid)
}

// hasAliases reports each anchor and alias under n: an intent is read as
// written, without references.
func (p *parser) hasAliases(n *yaml.Node) bool {
	found := false
	if n.Anchor != "" || n.Kind == yaml.AliasNode {
		p.add(n.Line, "", "anchors and aliases are not supported", ErrInvalid)
		found = true
	}
	for _, c := range n.Content {
		found = p.hasAliases(c) || found
	}
	return found
}

// at reports msg, unless it is empty, at the line of n.
func (p *parser) at(n *yaml.Node, field, msg string) {
	if msg != "" {
		p.add(n.Line, field, msg, ErrInvalid)
	}
}

// fields checks that n is a mapping of known keys without duplicates, and
// returns the value of each key.
func (p *parser) fields(n *yaml.Node, field string, known []string) map[string]*yaml.Node {
	if n.Kind != yaml.MappingNode {
		p.at(n, field, fmt.Sprintf("a mapping of %s, not %s", strings.Join(known, ", "), kindOf(n)))
		return nil
	}
	out := make(map[string]*yaml.Node)
	first := make(map[string]int)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			p.at(k, field, fmt.Sprintf("a key must be a word, not %s", kindOf(k)))
			continue
		}
		path := join(field, k.Value)
		if line, dup := first[k.Value]; dup {
			p.at(k, path, fmt.Sprintf("duplicate key (first at line %d)", line))
			continue
		}
		first[k.Value] = k.Line
		if !slices.Contains(known, k.Value) {
			p.at(k, path, unknownField(k.Value, known))
			continue
		}
		p.lines[path] = v.Line
		out[k.Value] = v
	}
	return out
}

func join(field, key string) string {
	if field == "" {
		return key
	}
	return field + "." + key
}

func unknownField(name string, known []string) string {
	for _, k := range known {
		if strings.EqualFold(name, k) || editDistance(name, k) <= 2 {
			return fmt.Sprintf("unknown field; did you mean %s?", k)
		}
	}
	return fmt.Sprintf("unknown field (known: %s)", strings.Join(known, ", "))
}

// required reads a mandatory string field of the mapping root.
func (p *parser) required(root *yaml.Node, f map[string]*yaml.Node, key string,
	check func(string) string) string {
	v := f[key]
	if v == nil || isNull(v) {
		line := root.Line
		if v != nil {
			line = v.Line
		}
		p.add(line, key, "required", ErrInvalid)
		return ""
	}
	s, ok := p.scalar(v, key, "a string")
	if ok {
		p.at(v, key, check(s))
	}
	return s
}

// scalar returns the text of n. It reports n when it is not a scalar or is
// empty, and returns false then or when n is nil (the field is absent).
func (p *parser) scalar(n *yaml.Node, field, want string) (string, bool) {
	switch {
	case n == nil:
		return "", false
	case n.Kind != yaml.ScalarNode || isNull(n):
		p.at(n, field, fmt.Sprintf("%s, not %s", want, kindOf(n)))
		return "", false
	}
	return n.Value, true
}

// list returns the items of the sequence n, reporting n when it is not
// one. A nil or empty n is an absent list.
func (p *parser) list(n *yaml.Node, field, want string) ([]*yaml.Node, bool) {
	switch {
	case n == nil || isNull(n):
		return nil, false
	case n.Kind != yaml.SequenceNode:
		p.at(n, field, fmt.Sprintf("%s, not %s", want, kindOf(n)))
		return nil, false
	}
	return n.Content, true
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

func kindOf(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	}
	switch n.Tag {
	case "!!null":
		return "an empty value"
	case "!!int", "!!float":
		return "a number"
	case "!!bool":
		return "a boolean"
	}
	return "a string"
}

// editDistance is the Levenshtein distance of a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}
