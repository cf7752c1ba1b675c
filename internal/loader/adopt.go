package loader

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
)

// adoptPolicies rebuilds the loader's view of the sessions from the pinned
// maps, and deletes the entries of policies no session points at: those a
// daemon left behind when it died halfway through a change.
func (l *Loader) adoptPolicies() error {
	byPolicy := make(map[uint32]*applied)

	var (
		cg uint64
		s  netSession
	)
	it := l.net.SessionsMap.Iterate()
	for it.Next(&cg, &s) {
		a := &applied{session: s}
		l.policies[cg] = a
		l.used[s.Policy] = true
		byPolicy[s.Policy] = a
		if s.Policy >= l.next {
			l.next = s.Policy + 1
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("iterate sessions: %w", err)
	}

	execKeys, err := keys[netExecKey](l.net.ExecRulesMap)
	if err != nil {
		return err
	}
	for _, k := range execKeys {
		if a := byPolicy[k.Policy]; a != nil {
			a.exec = append(a.exec, k)
			l.execUsed++
		} else {
			_ = l.net.ExecRulesMap.Delete(k)
		}
	}

	if l.unix != nil {
		unixKeys, err := keys[netUnixKey](l.unix.UnixRulesMap)
		if err != nil {
			return err
		}
		for _, k := range unixKeys {
			if a := byPolicy[k.Policy]; a != nil {
				a.unix = append(a.unix, k)
				l.unixUsed++
			} else {
				_ = l.unix.UnixRulesMap.Delete(k)
			}
		}
	}

	for _, outer := range []*ebpf.Map{l.net.V4RulesMap, l.net.V6RulesMap} {
		ids, err := keys[uint32](outer)
		if err != nil {
			return err
		}
		for _, id := range ids {
			if !l.used[id] {
				_ = outer.Delete(id)
			}
		}
	}
	return nil
}

// keys lists the keys of a map. Keys deleted meanwhile may be missed.
func keys[K any](m *ebpf.Map) ([]K, error) {
	var out []K
	var prev any
	for {
		var next K
		err := m.NextKey(prev, &next)
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("list keys: %w", err)
		}
		out = append(out, next)
		prev = next
	}
}
