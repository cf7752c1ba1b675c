package attest

import (
	"errors"
	"fmt"
	"os/user"
	"path"
	"slices"
	"strconv"
	"strings"
)

// Selector kinds, in SPIRE's vocabulary. unix:uid and unix:user name the
// effective user, unix:gid and unix:group the effective or any
// supplementary group, as SPIRE's unix workload attestor reads them.
const (
	kindUID         = "unix:uid"
	kindGID         = "unix:gid"
	kindUser        = "unix:user"
	kindGroup       = "unix:group"
	kindPath        = "unix:path"
	kindSHA256      = "unix:sha256"
	kindCgroupPath  = "cgroup:path"
	kindContainerID = "container:id"
)

// selector is one parsed "type:key:value" selector.
type selector struct {
	kind  string
	value string
	id    uint32 // for unix:uid and unix:gid
}

// String returns the canonical form of s.
func (s selector) String() string {
	return s.kind + ":" + s.value
}

// parseSelector parses and normalises one selector.
func parseSelector(s string) (selector, error) {
	typ, rest, ok1 := strings.Cut(s, ":")
	key, value, ok2 := strings.Cut(rest, ":")
	if !ok1 || !ok2 || value == "" {
		return selector{}, errors.New("want type:key:value")
	}

	sel := selector{kind: typ + ":" + key, value: value}
	if err := sel.validate(); err != nil {
		return selector{}, err
	}
	return sel, nil
}

// validate checks and normalises the value of s for its kind.
func (s *selector) validate() error {
	switch s.kind {
	case kindUID, kindGID:
		id, err := strconv.ParseUint(s.value, 10, 32)
		if err != nil {
			return errors.New("want a decimal id")
		}
		s.id = uint32(id)
	case kindUser, kindGroup:
		if strings.ContainsAny(s.value, ": \t\n") {
			return errors.New("want a user or group name")
		}
	case kindPath, kindCgroupPath:
		if !path.IsAbs(s.value) {
			return errors.New("want an absolute path")
		}
		s.value = path.Clean(s.value)
	case kindSHA256, kindContainerID:
		s.value = strings.ToLower(s.value)
		if !isContainerID(s.value) {
			return errors.New("want 64 hex digits")
		}
	default:
		return fmt.Errorf("unknown selector type %q", s.kind)
	}
	return nil
}

// match reports whether the facts f satisfy s.
func (s selector) match(f *Facts) bool {
	switch s.kind {
	case kindUID:
		return f.EUID == s.id
	case kindGID:
		return hasGID(f, s.id)
	case kindUser:
		u, err := user.Lookup(s.value)
		return err == nil && u.Uid == strconv.FormatUint(uint64(f.EUID), 10)
	case kindGroup:
		g, err := user.LookupGroup(s.value)
		if err != nil {
			return false
		}
		id, err := strconv.ParseUint(g.Gid, 10, 32)
		return err == nil && hasGID(f, uint32(id))
	case kindPath:
		return f.ExePath == s.value
	case kindSHA256:
		return f.ExeSHA256 == s.value
	case kindCgroupPath:
		return underPath(f.CgroupPath, s.value)
	case kindContainerID:
		return f.ContainerID == s.value
	}
	return false
}

// hasGID reports whether gid is the effective or a supplementary group of f.
func hasGID(f *Facts, gid uint32) bool {
	return f.EGID == gid || slices.Contains(f.SupplementaryGIDs, gid)
}

// underPath reports whether p is dir or lies below it.
func underPath(p, dir string) bool {
	if p == "" {
		return false
	}
	if dir == "/" || p == dir {
		return true
	}
	return strings.HasPrefix(p, dir+"/")
}
