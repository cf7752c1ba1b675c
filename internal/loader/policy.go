package loader

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/idend/idend/internal/intent"
)

// applied is what the kernel holds for one session.
type applied struct {
	session netSession
	unix    []netUnixKey
	exec    []netExecKey
}

// Session is a session as the kernel maps hold it.
type Session struct {
	CgroupID uint64
	ID       uint64
	Policy   uint32
}

// Apply installs c as the policy of the session whose cgroup has id
// cgroupID, replacing any policy it had. The kernel sees the old policy or
// the new one, never a mix: the new rules are filled under a fresh policy
// id and the session is repointed at them in one map update. A policy over
// capacity is rejected whole with ErrTooLarge, and nothing changes.
func (l *Loader) Apply(cgroupID, sessionID uint64, c *intent.Compiled) error {
	l.mu.Lock()
	defer l.mu.Unlock()

	old := l.policies[cgroupID]
	if err := l.checkCapacity(c, old); err != nil {
		return err
	}
	id, err := l.allocPolicy()
	if err != nil {
		return err
	}

	next := &applied{session: netSession{Id: sessionID, Policy: id, Mode: mode(c.Mode), Flags: flags(c)}}
	if err := l.fill(next, c); err != nil {
		l.drop(next)
		return err
	}
	if err := l.net.SessionsMap.Put(cgroupID, next.session); err != nil {
		l.drop(next)
		return fmt.Errorf("point session at policy %d: %w", id, err)
	}
	l.policies[cgroupID] = next
	l.unixUsed += len(next.unix)
	l.execUsed += len(next.exec)
	if old != nil {
		l.drop(old)
	}
	return nil
}

// Remove deletes a session from the kernel. Tasks still in its cgroup are
// then denied everything until the cgroup is gone.
func (l *Loader) Remove(cgroupID uint64) error {
	l.mu.Lock()
	defer l.mu.Unlock()

	err := l.net.SessionsMap.Delete(cgroupID)
	if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete session: %w", err)
	}
	if old := l.policies[cgroupID]; old != nil {
		l.drop(old)
		delete(l.policies, cgroupID)
	}
	return nil
}

// Sessions lists the sessions the kernel maps hold.
func (l *Loader) Sessions() []Session {
	l.mu.Lock()
	defer l.mu.Unlock()

	out := make([]Session, 0, len(l.policies))
	for cg, a := range l.policies {
		out = append(out, Session{CgroupID: cg, ID: a.session.Id, Policy: a.session.Policy})
	}
	return out
}

func (l *Loader) checkCapacity(c *intent.Compiled, old *applied) error {
	switch {
	case len(c.V4) > l.opts.MaxPrefixes:
		return fmt.Errorf("%d IPv4 prefixes, at most %d per session: %w", len(c.V4), l.opts.MaxPrefixes, ErrTooLarge)
	case len(c.V6) > l.opts.MaxPrefixes:
		return fmt.Errorf("%d IPv6 prefixes, at most %d per session: %w", len(c.V6), l.opts.MaxPrefixes, ErrTooLarge)
	case len(c.Unix) > l.opts.MaxPaths:
		return fmt.Errorf("%d unix socket paths, at most %d per session: %w", len(c.Unix), l.opts.MaxPaths, ErrTooLarge)
	case len(c.ExecFiles) > l.opts.MaxPaths:
		return fmt.Errorf("%d executables, at most %d per session: %w", len(c.ExecFiles), l.opts.MaxPaths, ErrTooLarge)
	}
	// Both policies live side by side until the switch.
	if free := int(l.net.ExecRulesMap.MaxEntries()) - l.execUsed; len(c.ExecFiles) > free {
		return fmt.Errorf("%d executables, %d free on this node: %w", len(c.ExecFiles), free, ErrTooLarge)
	}
	if l.unix != nil {
		if free := int(l.unix.UnixRulesMap.MaxEntries()) - l.unixUsed; len(c.Unix) > free {
			return fmt.Errorf("%d unix socket paths, %d free on this node: %w", len(c.Unix), free, ErrTooLarge)
		}
	}
	if len(l.used) >= int(l.net.V4RulesMap.MaxEntries())-1 {
		return fmt.Errorf("%d policies in use: %w", len(l.used), ErrTooLarge)
	}
	return nil
}

// allocPolicy returns an unused policy id.
func (l *Loader) allocPolicy() (uint32, error) {
	for range len(l.used) + 2 {
		id := l.next
		l.next++
		if l.next == 0 {
			l.next = 1
		}
		if id != 0 && !l.used[id] {
			l.used[id] = true
			return id, nil
		}
	}
	return 0, fmt.Errorf("allocate policy id: %w", ErrTooLarge)
}

// fill creates and fills the maps of a new policy.
func (l *Loader) fill(a *applied, c *intent.Compiled) error {
	id := a.session.Policy
	if err := l.fillTrie(l.net.V4RulesMap, id, c.V4, true); err != nil {
		return err
	}
	if err := l.fillTrie(l.net.V6RulesMap, id, c.V6, false); err != nil {
		return err
	}
	for _, f := range c.ExecFiles {
		k := netExecKey{Policy: id, Dev: f.Dev, Ino: f.Ino}
		if err := l.net.ExecRulesMap.Put(k, uint8(1)); err != nil {
			return fmt.Errorf("add executable %d:%d: %w", f.Dev, f.Ino, err)
		}
		a.exec = append(a.exec, k)
	}
	if l.unix == nil {
		return nil
	}
	for _, p := range c.Unix {
		k := netUnixKey{Policy: id, Path: unixPath(p)}
		if err := l.unix.UnixRulesMap.Put(k, uint8(1)); err != nil {
			return fmt.Errorf("add unix socket %s: %w", p, err)
		}
		a.unix = append(a.unix, k)
	}
	return nil
}

func (l *Loader) fillTrie(outer *ebpf.Map, id uint32, rules []intent.PrefixRule, v4 bool) error {
	spec := l.v4Inner
	if !v4 {
		spec = l.v6Inner
	}
	inner, err := ebpf.NewMap(spec)
	if err != nil {
		return fmt.Errorf("create rule trie: %w", err)
	}
	defer inner.Close()

	for _, r := range rules {
		key, val, err := trieEntry(r, v4)
		if err != nil {
			return err
		}
		if err := inner.Put(key, val); err != nil {
			return fmt.Errorf("add rule %s: %w", r.Prefix, err)
		}
	}
	if err := outer.Put(id, inner); err != nil {
		return fmt.Errorf("install rule trie: %w", err)
	}
	return nil
}

func trieEntry(r intent.PrefixRule, v4 bool) (any, netPortRules, error) {
	var val netPortRules
	if len(r.Ports) > len(val.Rules) {
		return nil, val, fmt.Errorf("prefix %s: %d port rules, at most %d: %w", r.Prefix, len(r.Ports), len(val.Rules), ErrTooLarge)
	}
	val.Count = uint32(len(r.Ports))
	for i, p := range r.Ports {
		val.Rules[i] = netPortRule{Lo: p.Lo, Hi: p.Hi, Proto: protoNumber(p.Proto)}
	}
	addr := r.Prefix.Addr()
	if v4 {
		return netV4Key{Prefixlen: uint32(r.Prefix.Bits()), Addr: addr.As4()}, val, nil
	}
	return netV6Key{Prefixlen: uint32(r.Prefix.Bits()), Addr: addr.As16()}, val, nil
}

// drop deletes a policy's maps and entries. Errors are ignored: the
// entries belong to no session any more, and adoptPolicies sweeps leftovers
// at the next start.
func (l *Loader) drop(a *applied) {
	id := a.session.Policy
	_ = l.net.V4RulesMap.Delete(id)
	_ = l.net.V6RulesMap.Delete(id)
	for _, k := range a.exec {
		if l.net.ExecRulesMap.Delete(k) == nil {
			l.execUsed--
		}
	}
	for _, k := range a.unix {
		if l.unix.UnixRulesMap.Delete(k) == nil {
			l.unixUsed--
		}
	}
	delete(l.used, id)
}

func protoNumber(p intent.Proto) uint8 {
	switch p {
	case intent.ProtoTCP:
		return unix.IPPROTO_TCP
	case intent.ProtoUDP:
		return unix.IPPROTO_UDP
	}
	return 0
}

func mode(m intent.Mode) uint32 {
	switch m {
	case intent.ModeEscalate:
		return uint32(netIdendModeMODE_ESCALATE)
	case intent.ModeAudit:
		return uint32(netIdendModeMODE_AUDIT)
	}
	return uint32(netIdendModeMODE_BLOCK)
}

func flags(c *intent.Compiled) uint32 {
	var f uint32
	if c.ExecAny {
		f |= uint32(netIdendSessionFlagSESSION_EXEC_ANY)
	}
	if c.RawSockets {
		f |= uint32(netIdendSessionFlagSESSION_RAW_OK)
	}
	return f
}

// unixPath converts a socket path to the kernel's form: an abstract name,
// written "@name", starts with a NUL byte.
func unixPath(p string) [108]int8 {
	var out [108]int8
	b := []byte(p)
	if len(b) > 0 && b[0] == '@' {
		b[0] = 0
	}
	for i := 0; i < len(b) && i < len(out); i++ {
		out[i] = int8(b[i])
	}
	return out
}
