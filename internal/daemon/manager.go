package daemon

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/idend/idend/internal/attest"
	"github.com/idend/idend/internal/cgroup"
	"github.com/idend/idend/internal/events"
	"github.com/idend/idend/internal/events/recordpb"
	"github.com/idend/idend/internal/intent"
	"github.com/idend/idend/internal/loader"
)

// manager owns the sessions: their cgroups, their policies in the kernel,
// their records and their persisted state. It is safe for concurrent use.
type manager struct {
	log        *slog.Logger
	cfg        Config
	root       string // absolute cgroup root
	statePath  string
	loader     *loader.Loader
	rec        *events.Recorder
	registry   *attest.Registry
	attester   *attest.Attester
	verifier   *attest.Verifier
	nodeKey    []byte
	limits     intent.Limits
	pidsMax    bool // set pids.max on top-level sessions
	lookupHost func(ctx context.Context, host string) ([]netip.Addr, error)

	mu       sync.RWMutex
	sessions map[string]*Session
	byNum    map[uint64]*Session
	// closed keeps recently closed sessions, so that kernel records still
	// in the rings when a session closes get its identity.
	closed *lru.Cache[string, *Session]
}

// ErrApproved is returned for approving an escalation twice.
var ErrApproved = errors.New("already approved")

// openRequest is a validated OpenSession call.
type openRequest struct {
	file      string
	yaml      []byte
	parent    string
	principal string
	ttl       time.Duration
	identity  *attest.Identity // nil: derive from the caller
	caller    *caller
}

func (m *manager) get(id string) (*Session, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	s := m.sessions[id]
	if s == nil {
		return nil, fmt.Errorf("session %s: %w", id, ErrNoSession)
	}
	return s, nil
}

// mode returns what a session does with actions outside its intent.
func (m *manager) mode(s *Session) intent.Mode {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if s.compiled == nil {
		return intent.ModeBlock
	}
	return s.compiled.Mode
}

// byNumber returns the session a kernel record names, or nil.
func (m *manager) byNumber(n uint64) *Session {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.byNum[n]
}

func (m *manager) list() []*Session {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := make([]*Session, 0, len(m.sessions))
	for _, s := range m.sessions {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	return out
}

// open opens a session. Nothing of a refused session stays behind.
func (m *manager) open(ctx context.Context, req openRequest) (*Session, error) {
	in, err := intent.Parse(req.file, req.yaml)
	if err != nil {
		return nil, err
	}

	// Host names and programs are looked up before taking the lock: a
	// slow resolver must not hold up recording.
	hosts, files, err := m.resolve(ctx, in)
	if err != nil {
		return nil, err
	}

	m.mu.Lock()
	defer m.mu.Unlock()

	if len(m.sessions) >= m.cfg.Limits.MaxSessions {
		return nil, fmt.Errorf("%d sessions open, the configured maximum: %w", len(m.sessions), loader.ErrTooLarge)
	}
	now := time.Now()
	s := &Session{
		Num:       newSessionNum(func(n uint64) bool { return m.byNum[n] != nil }),
		Principal: req.principal,
		Created:   now,
		Canonical: in.Canonical(),
		Hosts:     hosts,
		Files:     files,
	}
	s.ID = events.SessionName(s.Num)

	ttl := min(in.TTL, m.cfg.Limits.MaxTTL)
	if req.ttl > 0 {
		ttl = min(ttl, req.ttl)
	}
	s.Expires = now.Add(ttl)
	parentDir := m.root
	if req.parent != "" {
		p := m.sessions[req.parent]
		if p == nil {
			return nil, fmt.Errorf("parent session %s: %w", req.parent, ErrNoSession)
		}
		if err := intent.CheckSubset(p.intent, in, p.Hosts); err != nil {
			return nil, fmt.Errorf("intent %s is not within parent session %s: %w", req.file, p.ID, err)
		}
		s.Parent = p.ID
		s.Ancestors = append([]string{p.ID}, p.Ancestors...)
		if s.Expires.After(p.Expires) {
			s.Expires = p.Expires
		}
		parentDir = p.Cgroup
		if s.Principal == "" {
			s.Principal = p.Principal
		}
		if req.identity == nil {
			id := p.Identity
			req.identity = &id
		}
	}
	if req.identity == nil {
		if req.identity, err = m.attestCaller(req.caller); err != nil {
			return nil, err
		}
	}
	s.Identity = *req.identity
	// A session lives no longer than the SVID that opened it.
	if exp := s.Identity.Expires; !exp.IsZero() && exp.Before(s.Expires) {
		s.Expires = exp
	}

	if err := s.build(); err != nil {
		return nil, err
	}
	if err := m.limits.Check(s.compiled); err != nil {
		return nil, err
	}

	s.Cgroup = filepath.Join(parentDir, s.ID)
	if err := cgroup.Create(s.Cgroup); err != nil {
		return nil, err
	}
	if err := m.install(s); err != nil {
		m.loader.Remove(s.CgroupID)
		cgroup.Kill(s.Cgroup, time.Second)
		return nil, err
	}
	m.sessions[s.ID] = s
	m.byNum[s.Num] = s
	if err := m.saveLocked(); err != nil {
		m.log.Error("save sessions", "err", err)
	}
	m.log.Info("session opened", "session", s.ID, "parent", s.Parent, "intent", s.intent.Name,
		"principal", s.Principal, "strength", s.Identity.Strength, "expires", s.Expires.Format(time.RFC3339))
	return s, nil
}

// install puts a new session's cgroup under its limits and its policy in
// the kernel, and records the open.
func (m *manager) install(s *Session) error {
	if m.pidsMax && s.Parent == "" {
		if err := cgroup.SetPidsMax(s.Cgroup, m.cfg.Limits.MaxProcesses); err != nil {
			return err
		}
	}
	id, err := cgroup.ID(s.Cgroup)
	if err != nil {
		return err
	}
	s.CgroupID = id
	if err := m.loader.Apply(s.CgroupID, s.Num, s.compiled); err != nil {
		return err
	}
	_, err = m.rec.Append(openRecord(s))
	return err
}

// attestCaller gives the calling process's attested identity, or an error
// saying what identity to present.
func (m *manager) attestCaller(c *caller) (*attest.Identity, error) {
	if c == nil || c.pid == 0 {
		return nil, errors.New("no identity: present an SVID or a credential file")
	}
	facts, err := m.attester.Attest(c.pid)
	if err != nil {
		return nil, fmt.Errorf("attest calling process %d: %w", c.pid, err)
	}
	id, err := m.registry.Identity(facts)
	if errors.Is(err, attest.ErrNoEntry) {
		return nil, fmt.Errorf("no identity: the calling process (uid %d, %s) matches no registration entry; "+
			"present an SVID (--svid, --jwt-svid) or a credential (--credential-file)", facts.UID, facts.ExePath)
	}
	return id, err
}

// resolve looks up the host names and executables an intent names.
func (m *manager) resolve(ctx context.Context, in *intent.Intent) (map[string][]netip.Addr, map[string]intent.FileID, error) {
	hosts := make(map[string][]netip.Addr)
	for _, r := range in.Egress {
		if r.Host == "" {
			continue
		}
		addrs, err := m.lookupHost(ctx, r.Host)
		if err != nil {
			m.log.Warn("resolve host", "intent", in.Name, "host", r.Host, "err", err)
		}
		hosts[r.Host] = addrs
	}
	files, err := intent.ResolveExec(in.Exec.Paths)
	if err != nil {
		return nil, nil, err
	}
	return hosts, files, nil
}

func defaultLookupHost(ctx context.Context, host string) ([]netip.Addr, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	for i, a := range addrs {
		addrs[i] = a.Unmap()
	}
	slices.SortFunc(addrs, netip.Addr.Compare)
	return slices.Compact(addrs), err
}

// close ends a session and its sub-sessions: their processes are killed,
// their cgroups and rules removed, and the closes recorded.
func (m *manager) close(id, reason string) error {
	m.mu.Lock()
	s := m.sessions[id]
	if s == nil {
		m.mu.Unlock()
		return fmt.Errorf("session %s: %w", id, ErrNoSession)
	}
	// Take the session and its sub-sessions, deepest first, out of the
	// table; their records keep their identity through m.closed.
	tree := m.subtreeLocked(s)
	for _, c := range tree {
		delete(m.sessions, c.ID)
		delete(m.byNum, c.Num)
		m.closed.Add(c.ID, c)
	}
	m.mu.Unlock()

	// Killing can take a while: it runs unlocked, so that recording and
	// other calls go on.
	var errs []error
	for _, c := range tree {
		why := reason
		if c != s {
			why = "parent closed"
		}
		errs = append(errs, m.end(c, why))
	}
	m.mu.Lock()
	errs = append(errs, m.saveLocked())
	m.mu.Unlock()
	return errors.Join(errs...)
}

// subtreeLocked returns s and the sessions below it, children before
// their parents.
func (m *manager) subtreeLocked(s *Session) []*Session {
	var out []*Session
	for _, c := range m.sessions {
		if c.Parent == s.ID {
			out = append(out, m.subtreeLocked(c)...)
		}
	}
	return append(out, s)
}

// end resets a closed session's connections, kills its processes while
// its rules still hold, then drops the rules and records the close.
func (m *manager) end(s *Session, reason string) error {
	if _, err := cutConnections(s.Cgroup, nil); err != nil {
		m.log.Warn("cut connections", "session", s.ID, "err", err)
	}
	errs := []error{cgroup.Kill(s.Cgroup, 5*time.Second), m.loader.Remove(s.CgroupID)}
	_, err := m.rec.Append(&recordpb.Record{Body: &recordpb.Record_SessionClose{
		SessionClose: &recordpb.SessionClose{SessionId: s.ID, Reason: reason}}})
	errs = append(errs, err)
	m.log.Info("session closed", "session", s.ID, "reason", reason)
	return errors.Join(errs...)
}

// expire closes the sessions whose time is up.
func (m *manager) expire(now time.Time) {
	for _, s := range m.list() {
		if now.After(s.Expires) {
			if err := m.close(s.ID, "expired"); err != nil && !errors.Is(err, ErrNoSession) {
				m.log.Error("close expired session", "session", s.ID, "err", err)
			}
		}
	}
}

// approve widens a session by one escalated action.
func (m *manager) approve(id, escID, by string) (*Session, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.sessions[id]
	if s == nil {
		return nil, fmt.Errorf("session %s: %w", id, ErrNoSession)
	}
	i := slices.IndexFunc(s.Escalations, func(e *Escalation) bool { return e.ID == escID })
	if i < 0 {
		return nil, fmt.Errorf("escalation %s of session %s: %w", escID, id, ErrNoEscalate)
	}
	e := s.Escalations[i]
	if e.State == "approved" {
		return nil, fmt.Errorf("escalation %s of session %s: already approved by %s: %w",
			escID, id, e.ApprovedBy, ErrApproved)
	}
	wider, err := intent.Widen(s.compiled, e.Action)
	if err != nil {
		return nil, fmt.Errorf("widen session %s: %w", id, err)
	}
	if err := m.loader.Apply(s.CgroupID, s.Num, wider); err != nil {
		return nil, err
	}
	s.compiled = wider
	e.State, e.ApprovedBy = "approved", by
	if _, err := m.rec.Append(&recordpb.Record{Body: &recordpb.Record_Approval{Approval: &recordpb.Approval{
		SessionId: id, EscalationId: escID, ApprovedBy: by}}}); err != nil {
		return nil, err
	}
	m.log.Info("escalation approved", "session", id, "escalation", escID, "by", by)
	return s, m.saveLocked()
}

// escalate raises an escalation for a refused action, unless the same
// action is already pending. It returns the escalation's ID.
func (m *manager) escalate(s *Session, a intent.Action, desc string) (string, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, e := range s.Escalations {
		if e.State == "pending" && e.Desc == desc {
			return e.ID, false
		}
	}
	s.nextEsc++
	e := &Escalation{ID: fmt.Sprintf("e%d", s.nextEsc), Action: a, Desc: desc, State: "pending"}
	s.Escalations = append(s.Escalations, e)
	if err := m.saveLocked(); err != nil {
		m.log.Error("save sessions", "err", err)
	}
	return e.ID, true
}

func (m *manager) saveLocked() error {
	all := make([]*Session, 0, len(m.sessions))
	for _, s := range m.sessions {
		all = append(all, s)
	}
	sort.Slice(all, func(i, j int) bool { return all[i].Created.Before(all[j].Created) })
	return saveSessions(m.statePath, all)
}

// restore takes back the sessions of the state directory after a restart:
// their policies are applied anew (atomically replacing the pinned ones),
// and kernel sessions the state does not know are removed with their
// processes.
func (m *manager) restore() error {
	saved, err := loadSessions(m.statePath)
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()

	known := make(map[uint64]bool)
	for _, s := range saved {
		if err := s.build(); err != nil {
			m.log.Error("restore session", "session", s.ID, "err", err)
			continue
		}
		id, err := cgroup.ID(s.Cgroup)
		if err != nil || id != s.CgroupID {
			m.log.Warn("session cgroup gone", "session", s.ID, "cgroup", s.Cgroup)
			m.loader.Remove(s.CgroupID)
			continue
		}
		if err := m.loader.Apply(s.CgroupID, s.Num, s.compiled); err != nil {
			m.log.Error("restore session policy", "session", s.ID, "err", err)
			continue
		}
		m.sessions[s.ID] = s
		m.byNum[s.Num] = s
		known[s.CgroupID] = true
	}
	for _, ks := range m.loader.Sessions() {
		if !known[ks.CgroupID] {
			m.log.Warn("removing session unknown to the state directory", "cgroup_id", ks.CgroupID)
			m.loader.Remove(ks.CgroupID)
		}
	}
	m.log.Info("sessions restored", "count", len(m.sessions))
	return m.saveLocked()
}

func openRecord(s *Session) *recordpb.Record {
	so := &recordpb.SessionOpen{
		SessionId:  s.ID,
		ParentId:   s.Parent,
		Ancestors:  s.Ancestors,
		CgroupPath: s.Cgroup,
		CgroupId:   s.CgroupID,
		Principal:  s.Principal,
		Identity:   identityRecord(s, true),
		Intent:     &recordpb.IntentRef{Name: s.intent.Name, Hash: []byte(s.intent.Hash()), Canonical: s.Canonical},
		ExpiresNs:  s.Expires.UnixNano(),
	}
	hosts := make([]string, 0, len(s.Hosts))
	for h := range s.Hosts {
		hosts = append(hosts, h)
	}
	sort.Strings(hosts)
	for _, h := range hosts {
		ha := &recordpb.HostAddrs{Host: h}
		for _, a := range s.Hosts[h] {
			ha.Addrs = append(ha.Addrs, a.AsSlice())
		}
		so.Hosts = append(so.Hosts, ha)
	}
	paths := make([]string, 0, len(s.Files))
	for p := range s.Files {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		f := s.Files[p]
		so.ExecFiles = append(so.ExecFiles, &recordpb.ExecFile{Path: p, Dev: f.Dev, Ino: f.Ino})
	}
	return &recordpb.Record{Body: &recordpb.Record_SessionOpen{SessionOpen: so}}
}

// identityRecord is the identity stamped on the session's records; the
// attested facts only when withFacts (session records: kernel records
// name the session, which holds them).
func identityRecord(s *Session, withFacts bool) *recordpb.Identity {
	id := &recordpb.Identity{
		SpiffeId:    s.Identity.SPIFFEID,
		Fingerprint: []byte(s.Identity.Fingerprint),
		Principal:   s.Principal,
	}
	switch s.Identity.Strength {
	case attest.StrengthSVID:
		id.Strength = recordpb.Strength_STRENGTH_SVID
	case attest.StrengthAttested:
		id.Strength = recordpb.Strength_STRENGTH_ATTESTED
	case attest.StrengthBearer:
		id.Strength = recordpb.Strength_STRENGTH_BEARER
	}
	if f := s.Identity.Facts; f != nil && withFacts {
		sum, _ := hex.DecodeString(f.ExeSHA256)
		id.Attested = &recordpb.Attested{Uid: f.UID, Gid: f.GID, ExePath: f.ExePath,
			ExeSha256: sum, Cgroup: f.CgroupPath}
	}
	return id
}
