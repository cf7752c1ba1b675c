package events

import (
	"fmt"
	"iter"
	"maps"
	"net/netip"
	"slices"

	"github.com/idend/idend/internal/events/recordpb"
	"github.com/idend/idend/internal/intent"
)

// ReplayOptions configure Replay.
type ReplayOptions struct {
	// Intent, when set, is evaluated in place of the recorded intents (of
	// every session, or of Session), and Replay reports the actions it
	// would have decided differently from the kernel. Its host names match
	// the addresses the recording resolved them to; its executables match
	// the files the recording shows at their paths. Approvals granted
	// under the recorded intent are not carried over.
	Intent *intent.Intent
	// Session, when set, limits the replay to one session.
	Session string
	// OnDifference, when set, receives each difference as Replay finds it,
	// and the report does not keep them: a strict intent replayed over a
	// long recording can differ from millions of actions.
	OnDifference func(Difference)
}

// Replay rebuilds every session of a recording from its control records
// and evaluates each kernel action (connect, sendmsg, socket, unix
// connect and sendmsg, exec) again with the evaluator the daemon uses.
// Without opts.Intent, it reports each action whose recorded verdict
// differs from the evaluator's: a bug or tampering. A KILLED or LSM_DENIED
// exec counts as denied. With opts.Intent, it reports each action that
// intent would have decided differently from the recorded verdict.
//
// The report depends only on the records: the same input gives the same
// report. When records yields an error, Replay returns it with the report
// of the records before it.
func Replay(records iter.Seq2[*recordpb.Record, error], opts ReplayOptions) (*ReplayReport, error) {
	rp := &replayer{
		opts:     opts,
		sessions: map[string]*replaySession{},
		rep:      newReplayReport(opts),
		warned:   map[string]bool{},

		noSession: &decider{memo: map[intent.Action]intent.Decision{}},
	}
	for r, err := range records {
		if err != nil {
			return rp.finish(), fmt.Errorf("replay after record %d: %w", rp.rep.LastSeq, err)
		}
		rp.record(r)
	}
	return rp.finish(), nil
}

type replayer struct {
	opts     ReplayOptions
	sessions map[string]*replaySession
	rep      *ReplayReport
	warned   map[string]bool
	// noSession decides for tasks in no session (a nil Compiled).
	noSession *decider
	last      *replaySession
}

// replaySession is a session as the control records have built it so far.
type replaySession struct {
	id          string
	recorded    *intent.Intent
	hosts       map[string][]netip.Addr
	files       map[string]intent.FileID
	escalations map[string]intent.Action
	approved    []intent.Action
	// learned holds files exec records showed at the override intent's
	// exec paths that the control records did not resolve.
	learned map[string]intent.FileID

	// compiled and override are the recorded intent (with approvals) and
	// opts.Intent compiled against hosts and files; nil until needed
	// after a change.
	compiled, override *decider
}

// decider evaluates actions against one compiled intent, remembering
// decisions: a flood repeats the same few actions, and Evaluate formats a
// reason each time.
type decider struct {
	c    *intent.Compiled
	err  error
	memo map[intent.Action]intent.Decision
}

const maxMemo = 1 << 14

func (d *decider) evaluate(a intent.Action) intent.Decision {
	if dec, ok := d.memo[a]; ok {
		return dec
	}
	if len(d.memo) >= maxMemo {
		clear(d.memo)
	}
	dec := intent.Evaluate(d.c, a)
	d.memo[a] = dec
	return dec
}

func (rp *replayer) warn(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if !rp.warned[msg] {
		rp.warned[msg] = true
		rp.rep.Warnings = append(rp.rep.Warnings, msg)
	}
}

func (rp *replayer) record(r *recordpb.Record) {
	rp.rep.Records++
	rp.rep.LastSeq = r.GetSeq()
	if rp.opts.Session != "" && SessionID(r) != rp.opts.Session {
		return
	}
	if KernelAction(r) != nil {
		rp.action(r)
		return
	}
	rp.control(r)
}

// control applies a control record to the session it concerns.
func (rp *replayer) control(r *recordpb.Record) {
	if o := r.GetSessionOpen(); o != nil {
		rp.open(r.GetSeq(), o)
		return
	}
	s := rp.sessions[SessionID(r)]
	if s == nil {
		return
	}
	switch b := r.GetBody().(type) {
	case *recordpb.Record_IntentChange:
		rp.changeIntent(s, r.GetSeq(), b.IntentChange)
	case *recordpb.Record_HostResolution:
		s.hosts[b.HostResolution.GetHost()] = addrsOf(b.HostResolution.GetAddrs())
		s.compiled, s.override = nil, nil
	case *recordpb.Record_ExecRefresh:
		e := b.ExecRefresh
		s.files[e.GetPath()] = intent.FileID{Dev: e.GetNewDev(), Ino: e.GetNewIno()}
		s.compiled, s.override = nil, nil
	case *recordpb.Record_Escalation:
		if a, ok := escalatedAction(b.Escalation); ok {
			s.escalations[b.Escalation.GetEscalationId()] = a
		}
	case *recordpb.Record_Approval:
		rp.approve(s, r.GetSeq(), b.Approval)
	}
}

func (rp *replayer) open(seq uint64, o *recordpb.SessionOpen) {
	s := &replaySession{
		id:          o.GetSessionId(),
		hosts:       map[string][]netip.Addr{},
		files:       map[string]intent.FileID{},
		escalations: map[string]intent.Action{},
		learned:     map[string]intent.FileID{},
	}
	for _, h := range o.GetHosts() {
		s.hosts[h.GetHost()] = addrsOf(h.GetAddrs())
	}
	for _, f := range o.GetExecFiles() {
		s.files[f.GetPath()] = intent.FileID{Dev: f.GetDev(), Ino: f.GetIno()}
	}
	in, err := intent.FromCanonical(o.GetIntent().GetCanonical())
	if err != nil {
		rp.warn("session %s (record %d): recorded intent unreadable: %v", s.id, seq, err)
	}
	s.recorded = in
	rp.sessions[s.id] = s
	rp.last = nil
	rp.rep.Sessions++
}

func (rp *replayer) changeIntent(s *replaySession, seq uint64, c *recordpb.IntentChange) {
	in, err := intent.FromCanonical(c.GetIntent().GetCanonical())
	if err != nil {
		rp.warn("session %s (record %d): changed intent unreadable: %v", s.id, seq, err)
	}
	s.recorded, s.approved, s.compiled = in, nil, nil
}

func (rp *replayer) approve(s *replaySession, seq uint64, a *recordpb.Approval) {
	act, ok := s.escalations[a.GetEscalationId()]
	if !ok {
		rp.warn("session %s (record %d): approval of unknown escalation %s",
			s.id, seq, a.GetEscalationId())
		return
	}
	s.approved = append(s.approved, act)
	s.compiled = nil
}

func addrsOf(raw [][]byte) []netip.Addr {
	addrs := make([]netip.Addr, 0, len(raw))
	for _, b := range raw {
		if a, ok := netip.AddrFromSlice(b); ok {
			addrs = append(addrs, a)
		}
	}
	return addrs
}

// recordedDecider compiles the recorded intent, with its approvals, when
// it changed.
func (rp *replayer) recordedDecider(s *replaySession) *decider {
	if s.compiled != nil {
		return s.compiled
	}
	d := &decider{memo: map[intent.Action]intent.Decision{}}
	s.compiled = d
	if s.recorded == nil {
		d.err = fmt.Errorf("no readable intent")
		return d
	}
	d.c, d.err = intent.Compile(s.recorded, s.hosts, s.files)
	for _, a := range s.approved {
		if d.err != nil {
			break
		}
		d.c, d.err = intent.Widen(d.c, a)
	}
	if d.err != nil {
		rp.warn("session %s: recorded intent does not compile: %v", s.id, d.err)
	}
	return d
}

// overrideDecider compiles opts.Intent against the session's hosts and
// files when they changed.
func (rp *replayer) overrideDecider(s *replaySession) *decider {
	if s.override != nil {
		return s.override
	}
	d := &decider{memo: map[intent.Action]intent.Decision{}}
	s.override = d
	files := s.files
	if len(s.learned) > 0 {
		files = maps.Clone(s.files)
		for p, f := range s.learned {
			if _, ok := files[p]; !ok {
				files[p] = f
			}
		}
	}
	d.c, d.err = intent.Compile(rp.opts.Intent, s.hosts, files)
	if d.err != nil {
		rp.warn("session %s: intent does not compile: %v", s.id, d.err)
	}
	return d
}

// warnUnresolved names, once the recording is read, the host names and
// executables of the override intent that the recording never resolved
// for a session, in session order.
func (rp *replayer) warnUnresolved() {
	if rp.opts.Intent == nil {
		return
	}
	for _, id := range slices.Sorted(maps.Keys(rp.sessions)) {
		d := rp.overrideDecider(rp.sessions[id])
		if d.err != nil {
			continue
		}
		for _, u := range d.c.Unresolved {
			rp.warn("session %s: the intent's %s is not resolved in the recording; "+
				"its rules allow nothing", id, u)
		}
	}
}

// learnExec teaches the override intent the file the recording shows at
// one of its exec paths that no control record resolved, as resolving the
// path would have given it.
func (rp *replayer) learnExec(s *replaySession, a intent.Action) {
	if a.Kind != intent.Exec || a.FileDeleted ||
		!slices.Contains(rp.opts.Intent.Exec.Paths, a.Path) {
		return
	}
	if _, ok := s.files[a.Path]; ok {
		return
	}
	if _, ok := s.learned[a.Path]; !ok {
		s.learned[a.Path] = a.File
		s.override = nil
	}
}

// action evaluates one kernel action and records how its verdict compares.
func (rp *replayer) action(r *recordpb.Record) {
	a, ok := actionOf(r)
	if !ok {
		return
	}
	ka := KernelAction(r)
	d := rp.deciderFor(ka.GetSessionId(), a)
	if d == nil || d.err != nil {
		rp.rep.Skipped++
		return
	}

	dec := d.evaluate(a)
	old := recordedVerdict(ka.GetVerdict())
	sum := rp.rep.summary(r)
	sum.Actions++
	rp.rep.Actions++
	if old == dec.Verdict {
		return
	}
	sum.Differ++
	rp.rep.Differ++
	switch {
	case old.Allowed() && !dec.Verdict.Allowed():
		sum.NewlyDenied++
	case !old.Allowed() && dec.Verdict.Allowed():
		sum.NewlyAllowed++
	}
	diff := Difference{
		Seq: r.GetSeq(), WallNs: r.GetWallNs(), Session: ka.GetSessionId(),
		Process: ka.GetProcess().GetKey(), Kind: Kind(r), What: describe(r),
		Recorded: orDash(VerdictName(ka.GetVerdict())), Evaluated: dec.Verdict.String(),
		Reason: dec.Reason,
	}
	if rp.opts.OnDifference != nil {
		rp.opts.OnDifference(diff)
		return
	}
	rp.rep.Differences = append(rp.rep.Differences, diff)
}

// deciderFor returns what decides action a of a session, or nil when the
// recording does not say how the session was opened.
func (rp *replayer) deciderFor(id string, a intent.Action) *decider {
	if id == "" {
		// A task under idend's cgroup root in no session: everything is
		// denied.
		return rp.noSession
	}
	s := rp.session(id)
	if s == nil {
		rp.warn("session %s: actions recorded without its session_open (opened before "+
			"the recording starts?) were not evaluated", id)
		return nil
	}
	if rp.opts.Intent != nil {
		rp.learnExec(s, a)
		return rp.overrideDecider(s)
	}
	return rp.recordedDecider(s)
}

// session returns the session with ID id, remembering the last one: a
// recording holds long runs of one session's actions.
func (rp *replayer) session(id string) *replaySession {
	if rp.last != nil && rp.last.id == id {
		return rp.last
	}
	s := rp.sessions[id]
	if s != nil {
		rp.last = s
	}
	return s
}
