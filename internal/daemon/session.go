package daemon

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/idend/idend/internal/attest"
	"github.com/idend/idend/internal/intent"
)

// Sentinel errors the API maps to status codes.
var (
	ErrNoSession  = errors.New("no such session")
	ErrNoEscalate = errors.New("no such escalation")
	ErrDenied     = errors.New("permission denied")
)

// Session is an open session as the daemon keeps it. The exported fields
// are persisted in the state directory so that sessions survive restarts.
type Session struct {
	ID        string    `json:"id"`
	Num       uint64    `json:"num"`
	Parent    string    `json:"parent,omitempty"`
	Ancestors []string  `json:"ancestors,omitempty"`
	Cgroup    string    `json:"cgroup"`
	CgroupID  uint64    `json:"cgroup_id"`
	Principal string    `json:"principal"`
	Created   time.Time `json:"created"`
	Expires   time.Time `json:"expires"`

	Identity attest.Identity `json:"identity"`
	// Canonical is the intent's canonical encoding; the intent is rebuilt
	// from it.
	Canonical []byte                   `json:"intent"`
	Hosts     map[string][]netip.Addr  `json:"hosts,omitempty"`
	Files     map[string]intent.FileID `json:"files,omitempty"`

	Escalations []*Escalation `json:"escalations,omitempty"`
	nextEsc     int

	intent   *intent.Intent
	compiled *intent.Compiled
}

// Escalation is an action refused in an escalate-mode session, waiting
// for an operator.
type Escalation struct {
	ID         string        `json:"id"`
	Action     intent.Action `json:"action"`
	Desc       string        `json:"desc"`
	State      string        `json:"state"` // pending or approved
	ApprovedBy string        `json:"approved_by,omitempty"`
}

// build parses the session's intent and compiles it with its resolved
// hosts and files, widened by every approved escalation.
func (s *Session) build() error {
	in, err := intent.FromCanonical(s.Canonical)
	if err != nil {
		return fmt.Errorf("session %s: intent: %w", s.ID, err)
	}
	c, err := intent.Compile(in, s.Hosts, s.Files)
	if err != nil {
		return fmt.Errorf("session %s: compile intent: %w", s.ID, err)
	}
	for _, e := range s.Escalations {
		if e.State != "approved" {
			continue
		}
		if c, err = intent.Widen(c, e.Action); err != nil {
			return fmt.Errorf("session %s: escalation %s: %w", s.ID, e.ID, err)
		}
	}
	s.intent, s.compiled = in, c
	s.nextEsc = len(s.Escalations)
	return nil
}

// newSessionNum returns a random nonzero session number, not in use.
func newSessionNum(inUse func(uint64) bool) uint64 {
	var b [8]byte
	for {
		rand.Read(b[:])
		n := binary.LittleEndian.Uint64(b[:]) >> 1
		if n != 0 && !inUse(n) {
			return n
		}
	}
}

// isWithin reports whether s is id or one of its sub-sessions.
func (s *Session) isWithin(id string) bool {
	return s.ID == id || slices.Contains(s.Ancestors, id)
}

// saveSessions writes the sessions to path atomically.
func saveSessions(path string, sessions []*Session) error {
	data, err := json.MarshalIndent(sessions, "", "  ")
	if err != nil {
		return fmt.Errorf("encode sessions: %w", err)
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("save sessions: %w", err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("save sessions: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("save sessions: %w", err)
	}
	return nil
}

// loadSessions reads the sessions saved at path; none when it is missing.
func loadSessions(path string) ([]*Session, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read sessions: %w", err)
	}
	var out []*Session
	if err := json.Unmarshal(data, &out); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Base(path), err)
	}
	return out, nil
}
