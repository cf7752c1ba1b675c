package intent

import (
	"errors"
	"fmt"
	"strings"
)

var (
	// ErrInvalid is wrapped by every problem of an intent that breaks the
	// format or its rules.
	ErrInvalid = errors.New("invalid intent")
	// ErrTooLarge is wrapped when an intent compiles to more than the
	// kernel programs or the configured limits hold.
	ErrTooLarge = errors.New("intent too large")
	// ErrNotSubset is wrapped by a SubsetError.
	ErrNotSubset = errors.New("intent wider than its parent")
	// ErrCannotWiden is returned by Widen for an action no single rule can
	// allow (a socket, an executable without a link).
	ErrCannotWiden = errors.New("action cannot be approved alone")
)

// A Problem is one mistake in an intent, located by file, line and field.
type Problem struct {
	// File is the name the intent was parsed under, or "" when unknown.
	File string
	// Line is the 1-based line in File, or 0 when unknown.
	Line int
	// Field is the path of the field, like network.egress[1].ports[0].
	Field string
	// Msg says what is wrong.
	Msg string
	// Err is the sentinel the problem is an instance of: ErrInvalid or
	// ErrTooLarge.
	Err error
}

// Error returns "file:line: field: msg".
func (p *Problem) Error() string {
	return location(p.File, p.Line, p.Field) + ": " + p.Msg
}

// Unwrap returns the sentinel of p.
func (p *Problem) Unwrap() error { return p.Err }

// ValidationError lists every problem found in one intent.
type ValidationError struct {
	Problems []*Problem
}

// maxShown bounds the problems Error writes out; Problems holds them all.
const maxShown = 100

// Error returns the problems, one a line, at most 100 of them.
func (e *ValidationError) Error() string {
	var lines []string
	for i, p := range e.Problems {
		if i == maxShown {
			lines = append(lines, fmt.Sprintf("... and %d more problems", len(e.Problems)-maxShown))
			break
		}
		lines = append(lines, p.Error())
	}
	return strings.Join(lines, "\n")
}

// Unwrap returns the problems, so that errors.Is finds their sentinels.
func (e *ValidationError) Unwrap() []error {
	errs := make([]error, len(e.Problems))
	for i, p := range e.Problems {
		errs[i] = p
	}
	return errs
}

// SubsetError is returned by CheckSubset: each problem names a part of the
// child intent that allows more than its parent, with its file and line.
type SubsetError struct {
	Problems []string
}

// Error returns the problems, one a line.
func (e *SubsetError) Error() string {
	return strings.Join(e.Problems, "\n")
}

// Is reports whether target is ErrNotSubset.
func (e *SubsetError) Is(target error) bool { return target == ErrNotSubset }
