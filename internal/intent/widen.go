package intent

import (
	"fmt"
	"net/netip"
	"slices"
)

// Widen returns a copy of c that also allows exactly the action a: one
// destination address, port and protocol; one unix socket path; or one
// executable file. Everything else is decided as by c. c is not modified.
// An action c already allows returns an equal copy.
//
// A socket, an executable without a link, or a network action without a
// TCP or UDP protocol cannot be allowed alone: Widen returns an error
// wrapping ErrCannotWiden. It returns one wrapping ErrTooLarge when the
// result would not fit MaxPortRules or DefaultLimits.
//
// Approvals do not survive Compile: a caller recompiling an intent (for new
// host addresses) applies Widen again for each approved action.
func Widen(c *Compiled, a Action) (*Compiled, error) {
	if c == nil {
		return nil, fmt.Errorf("widen %s: no compiled intent: %w", a.Kind, ErrCannotWiden)
	}
	n := c.clone()
	if Evaluate(c, a).InIntent {
		return n, nil
	}

	var err error
	switch a.Kind {
	case Connect, Sendmsg:
		err = n.widenNet(a)
	case UnixConnect, UnixSendmsg:
		err = n.widenUnix(a.Path)
	case Exec:
		err = n.widenExec(a)
	default:
		err = fmt.Errorf("%w: %s", ErrCannotWiden, a.Kind)
	}
	if err != nil {
		return nil, fmt.Errorf("widen %s: %w", a.Kind, err)
	}
	if err := DefaultLimits.Check(n); err != nil {
		return nil, fmt.Errorf("widen %s: %w", a.Kind, err)
	}
	return n, nil
}

func (c *Compiled) clone() *Compiled {
	n := *c
	n.V4 = clonePrefixRules(c.V4)
	n.V6 = clonePrefixRules(c.V6)
	n.Unix = slices.Clone(c.Unix)
	n.ExecFiles = slices.Clone(c.ExecFiles)
	n.Unresolved = slices.Clone(c.Unresolved)
	if c.Names != nil {
		n.Names = make(map[FileID]string, len(c.Names))
		for k, v := range c.Names {
			n.Names[k] = v
		}
	}
	return &n
}

func clonePrefixRules(rules []PrefixRule) []PrefixRule {
	out := slices.Clone(rules)
	for i := range out {
		out[i].Ports = slices.Clone(out[i].Ports)
	}
	return out
}

// widenNet adds the host prefix of a's address, with the ports its longest
// match allows plus a's port.
func (c *Compiled) widenNet(a Action) error {
	addr := a.Addr.WithZone("").Unmap()
	if !addr.IsValid() {
		return fmt.Errorf("%w: no destination address", ErrCannotWiden)
	}
	if a.Proto != ProtoTCP && a.Proto != ProtoUDP {
		return fmt.Errorf("%w: protocol %s", ErrCannotWiden, a.Proto)
	}
	rules := &c.V6
	if addr.Is4() {
		rules = &c.V4
	}

	var base portSet
	if pr := lookup(*rules, addr); pr != nil {
		base = setOf(pr.Ports)
	}
	host := netip.PrefixFrom(addr, addr.BitLen())
	ports := base.union(protoSet(spans{{Lo: a.Port, Hi: a.Port}}, a.Proto)).rules()
	if len(ports) > MaxPortRules {
		return fmt.Errorf("%s: %d port rules, at most %d: %w", host, len(ports), MaxPortRules, ErrTooLarge)
	}

	i, found := slices.BinarySearchFunc(*rules, host, func(r PrefixRule, p netip.Prefix) int {
		return comparePrefix(r.Prefix, p)
	})
	if found {
		(*rules)[i].Ports = ports
		return nil
	}
	*rules = slices.Insert(*rules, i, PrefixRule{Prefix: host, Ports: ports})
	return nil
}

func (c *Compiled) widenUnix(path string) error {
	if msg := checkUnixPath(path); msg != "" {
		return fmt.Errorf("%w: %s", ErrCannotWiden, msg)
	}
	i, _ := slices.BinarySearch(c.Unix, path)
	c.Unix = slices.Insert(c.Unix, i, path)
	return nil
}

func (c *Compiled) widenExec(a Action) error {
	if a.FileDeleted {
		return fmt.Errorf("%w: file %s has no link", ErrCannotWiden, a.File)
	}
	i, _ := slices.BinarySearchFunc(c.ExecFiles, a.File, FileID.compare)
	c.ExecFiles = slices.Insert(c.ExecFiles, i, a.File)
	return nil
}
