package intent

import (
	"fmt"

	"go.yaml.in/yaml/v3"
)

func (p *parser) network(n *yaml.Node, in *Intent) {
	if n == nil || isNull(n) {
		return
	}
	f := p.fields(n, "network", []string{"egress", "unix", "raw_sockets"})
	if f == nil {
		return
	}

	items, _ := p.list(f["egress"], "network.egress", "a list of rules (- to: ...)")
	in.Egress = make([]Rule, 0, len(items))
	for i, item := range items {
		field := fmt.Sprintf("network.egress[%d]", i)
		p.lines[field] = item.Line
		in.Egress = append(in.Egress, p.rule(item, field))
	}

	items, _ = p.list(f["unix"], "network.unix", "a list of socket paths")
	for i, item := range items {
		field := fmt.Sprintf("network.unix[%d]", i)
		p.lines[field] = item.Line
		if s, ok := p.scalar(item, field, "a socket path"); ok {
			p.at(item, field, checkUnixPath(s))
			in.Unix = append(in.Unix, s)
		}
	}

	if v := f["raw_sockets"]; v != nil {
		if v.Kind != yaml.ScalarNode || v.Tag != "!!bool" {
			p.at(v, "network.raw_sockets", fmt.Sprintf("%q: true or false", v.Value))
		} else if err := v.Decode(&in.RawSockets); err != nil {
			p.at(v, "network.raw_sockets", fmt.Sprintf("%q: true or false", v.Value))
		}
	}
}

func (p *parser) rule(n *yaml.Node, field string) Rule {
	var rule Rule
	if n.Kind == yaml.ScalarNode && !isNull(n) {
		p.at(n, field, fmt.Sprintf(
			"a rule with to, ports and protocol, not a string (write - to: %s)", n.Value))
		return rule
	}
	f := p.fields(n, field, []string{"to", "ports", "protocol"})
	if f == nil {
		return rule
	}

	switch v := f["to"]; {
	case v == nil || isNull(v):
		p.at(n, field+".to", "required")
	default:
		if s, ok := p.scalar(v, field+".to", "a CIDR, an IP address or a host name"); ok {
			var msg string
			rule.To = s
			rule.Prefix, rule.Host, msg = parseDest(s)
			p.at(v, field+".to", msg)
		}
	}

	rule.Ports = p.ports(f["ports"], field+".ports")
	if s, ok := p.scalar(f["protocol"], field+".protocol", "tcp, udp or any"); ok {
		proto, valid := parseProto(s)
		if !valid {
			p.at(f["protocol"], field+".protocol", fmt.Sprintf("%q: one of tcp, udp, any", s))
		}
		rule.Protocol = proto
	}
	return rule
}

// ports reads the ports of a rule: nil when absent (every port).
func (p *parser) ports(n *yaml.Node, field string) []PortRange {
	switch {
	case n == nil:
		return nil
	case isNull(n):
		p.at(n, field, "an empty value: omit ports to allow every port")
		return nil
	}
	items, ok := p.list(n, field, "a list of ports and ranges, like [443, 8000-8080]")
	if !ok {
		return nil
	}
	if len(items) == 0 {
		p.at(n, field, msgEmptyPorts)
	}
	out := make([]PortRange, 0, len(items))
	for j, item := range items {
		f := fmt.Sprintf("%s[%d]", field, j)
		p.lines[f] = item.Line
		if s, ok := p.scalar(item, f, "a port or a range"); ok {
			r, msg := parsePort(s)
			p.at(item, f, msg)
			out = append(out, r)
		}
	}
	return out
}

func (p *parser) exec(n *yaml.Node, in *Intent) {
	if n == nil || isNull(n) {
		return
	}
	f := p.fields(n, "exec", []string{"allow"})
	v := f["allow"]
	switch {
	case v == nil:
		return
	case isNull(v):
		p.at(v, "exec.allow", "an empty value: write any or a list of absolute paths")
		return
	case v.Kind == yaml.ScalarNode:
		if v.Value != "any" {
			p.at(v, "exec.allow", fmt.Sprintf("%q: the word any or a list of absolute paths", v.Value))
		}
		return
	}

	items, ok := p.list(v, "exec.allow", "the word any or a list of absolute paths")
	if !ok {
		return
	}
	in.Exec = ExecPolicy{Paths: []string{}}
	if len(items) == 0 {
		p.at(v, "exec.allow", msgEmptyExec)
	}
	for i, item := range items {
		field := fmt.Sprintf("exec.allow[%d]", i)
		p.lines[field] = item.Line
		if s, ok := p.scalar(item, field, "an absolute path"); ok {
			p.at(item, field, checkExecPath(s))
			in.Exec.Paths = append(in.Exec.Paths, s)
		}
	}
}
