package attest

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Entry is a registration entry of the configuration: a process whose facts
// satisfy every selector is given the SPIFFE ID. Selectors use SPIRE's
// vocabulary:
//
//	unix:uid:N        effective uid
//	unix:gid:N        effective or supplementary gid
//	unix:user:NAME    user of the effective uid
//	unix:group:NAME   effective or supplementary group
//	unix:path:/abs    executable path
//	unix:sha256:HEX   sha256 of the executable
//	cgroup:path:/dir  cgroup v2 path, that directory or below it
//	container:id:ID   container id (64 hex digits)
type Entry struct {
	SPIFFEID  string   `yaml:"spiffe_id" json:"spiffe_id"`
	Selectors []string `yaml:"selectors" json:"selectors"`
}

// Registry maps attested facts to SPIFFE IDs through registration entries.
// It is immutable and safe for concurrent use. A nil *Registry has no
// entries.
type Registry struct {
	entries []entry
}

// entry is a validated Entry with its position in the configuration.
type entry struct {
	index     int
	id        spiffeid.ID
	selectors []selector
}

// NewRegistry validates entries and returns a Registry of them. The error
// names the index and selector of every malformed entry, and every pair of
// entries that share a selector set but name different SPIFFE IDs; it
// wraps ErrInvalidEntry.
func NewRegistry(entries []Entry) (*Registry, error) {
	r := &Registry{}
	var errs []error
	for i, e := range entries {
		parsed, err := parseEntry(i, e)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		r.entries = append(r.entries, parsed)
	}

	errs = append(errs, r.conflicts()...)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return r, nil
}

// parseEntry validates entry number i.
func parseEntry(i int, e Entry) (entry, error) {
	id, err := spiffeid.FromString(e.SPIFFEID)
	if err != nil {
		return entry{}, fmt.Errorf("entry %d: spiffe_id %q: %w: %w", i, e.SPIFFEID, err, ErrInvalidEntry)
	}
	if len(e.Selectors) == 0 {
		return entry{}, fmt.Errorf("entry %d (%s): no selectors: %w", i, id, ErrInvalidEntry)
	}

	parsed := entry{index: i, id: id}
	for _, s := range e.Selectors {
		sel, err := parseSelector(s)
		if err != nil {
			return entry{}, fmt.Errorf("entry %d (%s): selector %q: %w: %w", i, id, s, err, ErrInvalidEntry)
		}
		parsed.selectors = append(parsed.selectors, sel)
	}
	return parsed, nil
}

// key returns the canonical form of the selector set of e.
func (e entry) key() string {
	s := make([]string, len(e.selectors))
	for i, sel := range e.selectors {
		s[i] = sel.String()
	}
	slices.Sort(s)
	return strings.Join(slices.Compact(s), " ")
}

// conflicts returns an error for each entry whose selector set equals that
// of an earlier entry with another SPIFFE ID.
func (r *Registry) conflicts() []error {
	var errs []error
	seen := make(map[string]entry)
	for _, e := range r.entries {
		k := e.key()
		first, ok := seen[k]
		if !ok {
			seen[k] = e
			continue
		}
		if first.id != e.id {
			errs = append(errs, fmt.Errorf("entries %d (%s) and %d (%s) have the same selectors [%s]: %w",
				first.index, first.id, e.index, e.id, k, ErrInvalidEntry))
		}
	}
	return errs
}

// Len returns the number of entries.
func (r *Registry) Len() int {
	if r == nil {
		return 0
	}
	return len(r.entries)
}

// Match returns the SPIFFE ID of the entries whose selectors all match f.
// It fails with ErrNoEntry when none matches, and with ErrAmbiguous, naming
// both, when entries with different SPIFFE IDs match.
func (r *Registry) Match(f *Facts) (spiffeid.ID, error) {
	var found *entry
	for i := range r.Len() {
		e := &r.entries[i]
		if !e.match(f) {
			continue
		}
		if found == nil {
			found = e
			continue
		}
		if found.id != e.id {
			return spiffeid.ID{}, fmt.Errorf("pid %d: entries %d (%s) and %d (%s) both match: %w",
				f.PID, found.index, found.id, e.index, e.id, ErrAmbiguous)
		}
	}

	if found == nil {
		return spiffeid.ID{}, fmt.Errorf("pid %d: %w", f.PID, ErrNoEntry)
	}
	return found.id, nil
}

// Identity returns the attested identity of f: the SPIFFE ID of Match with
// strength attested.
func (r *Registry) Identity(f *Facts) (*Identity, error) {
	id, err := r.Match(f)
	if err != nil {
		return nil, err
	}
	return &Identity{SPIFFEID: id.String(), Strength: StrengthAttested, Facts: f}, nil
}

// match reports whether every selector of e matches f.
func (e *entry) match(f *Facts) bool {
	for _, s := range e.selectors {
		if !s.match(f) {
			return false
		}
	}
	return true
}
