package events

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/idend/idend/internal/events/recordpb"
)

// ErrBadFilter is returned by Filter.Validate for a kind or verdict that
// does not exist.
var ErrBadFilter = errors.New("bad filter")

// Filter selects records, as idend events --session, --kind and --verdict
// do. An empty field selects every record; a field may list several values
// separated by commas. A Verdict selects kernel actions only.
type Filter struct {
	// Session selects the records of these sessions.
	Session string
	// Kind selects records of these kinds (see Kinds).
	Kind string
	// Verdict selects kernel actions with these verdicts: allow, deny,
	// audit, escalate, killed, lsm_denied.
	Verdict string
}

// Validate checks that the filter names known kinds and verdicts.
func (f Filter) Validate() error {
	for _, k := range values(f.Kind) {
		if !slices.Contains(Kinds, k) {
			return fmt.Errorf("kind %q: want one of %s: %w", k,
				strings.Join(Kinds, ", "), ErrBadFilter)
		}
	}
	for _, v := range values(f.Verdict) {
		if !slices.Contains(verdictNames(), v) {
			return fmt.Errorf("verdict %q: want one of %s: %w", v,
				strings.Join(verdictNames(), ", "), ErrBadFilter)
		}
	}
	return nil
}

// Match reports whether the filter selects r.
func (f Filter) Match(r *recordpb.Record) bool {
	if f.Session != "" && !slices.Contains(values(f.Session), SessionID(r)) {
		return false
	}
	if f.Kind != "" && !slices.Contains(values(f.Kind), Kind(r)) {
		return false
	}
	if f.Verdict == "" {
		return true
	}
	a := KernelAction(r)
	return a != nil && slices.Contains(values(f.Verdict), VerdictName(a.GetVerdict()))
}

func values(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

func verdictNames() []string {
	var names []string
	for v := range recordpb.Verdict_name {
		if n := VerdictName(recordpb.Verdict(v)); n != "" {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	return names
}
