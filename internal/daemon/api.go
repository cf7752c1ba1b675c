package daemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/user"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/idend/idend/internal/api/apipb"
	"github.com/idend/idend/internal/attest"
	"github.com/idend/idend/internal/cgroup"
	"github.com/idend/idend/internal/events"
	"github.com/idend/idend/internal/events/recordpb"
	"github.com/idend/idend/internal/intent"
	"github.com/idend/idend/internal/loader"
)

// server implements the API. Every call first finds out who calls: an
// administrator (root or the admin group, outside any session) may do
// everything; a process inside a session only acts within that session's
// subtree and may never approve.
type server struct {
	apipb.UnimplementedIdendServer
	d *Daemon
}

// scope returns the caller and, when it runs inside a session, that
// session. A caller in a cgroup under idend's root that is no session, and
// a caller outside that is no administrator, are refused.
func (sv *server) scope(ctx context.Context) (*caller, *Session, error) {
	c, err := callerOf(ctx)
	if err != nil {
		return nil, nil, status.Error(codes.PermissionDenied, err.Error())
	}
	m := sv.d.m
	rootRel := strings.TrimPrefix(m.root, sv.d.mount)
	if c.cgroup == rootRel || strings.HasPrefix(c.cgroup, rootRel+"/") {
		s := m.sessionOfCgroup(sv.d.mount + c.cgroup)
		if s == nil {
			return nil, nil, status.Error(codes.PermissionDenied, "caller is in no session")
		}
		return c, s, nil
	}
	if !isAdmin(c, m.cfg.AdminGroup) {
		msg := "only root may manage sessions"
		if m.cfg.AdminGroup != "" {
			msg = "only root and group " + m.cfg.AdminGroup + " may manage sessions"
		}
		return nil, nil, status.Error(codes.PermissionDenied, msg)
	}
	return c, nil, nil
}

// target returns the caller and session id, when the caller may act on it.
func (sv *server) target(ctx context.Context, id string) (*caller, *Session, error) {
	c, own, err := sv.scope(ctx)
	if err != nil {
		return nil, nil, err
	}
	s, err := sv.d.m.get(id)
	if err != nil {
		return nil, nil, apiError(err)
	}
	if err := within(own, s); err != nil {
		return nil, nil, err
	}
	return c, s, nil
}

// within checks that a caller inside session own may act on target.
func within(own *Session, target *Session) error {
	if own == nil || target.isWithin(own.ID) {
		return nil
	}
	return status.Errorf(codes.PermissionDenied, "session %s is outside the caller's session %s", target.ID, own.ID)
}

func (sv *server) Challenge(ctx context.Context, _ *apipb.ChallengeRequest) (*apipb.ChallengeResponse, error) {
	if _, _, err := sv.scope(ctx); err != nil {
		return nil, err
	}
	if sv.d.m.verifier == nil {
		return nil, status.Error(codes.FailedPrecondition, "no SPIFFE agent configured: SVIDs cannot be verified")
	}
	return &apipb.ChallengeResponse{Challenge: sv.d.m.verifier.NewChallenge()}, nil
}

func (sv *server) OpenSession(ctx context.Context, req *apipb.OpenSessionRequest) (*apipb.Session, error) {
	c, own, err := sv.scope(ctx)
	if err != nil {
		return nil, err
	}
	or := openRequest{
		file:      req.IntentFile,
		yaml:      req.Intent,
		parent:    req.Parent,
		principal: req.Principal,
		ttl:       time.Duration(req.TtlSeconds) * time.Second,
		caller:    c,
	}
	if or.file == "" {
		or.file = "intent"
	}
	if own != nil {
		// A sub-session acts for whoever triggered the session above it.
		or.principal = ""
		if or.parent == "" {
			or.parent = own.ID
		}
		p, err := sv.d.m.get(or.parent)
		if err != nil {
			return nil, apiError(err)
		}
		if err := within(own, p); err != nil {
			return nil, err
		}
	}
	if or.principal == "" && own == nil {
		or.principal = userName(c.uid)
	}
	if or.identity, err = sv.identity(c, req); err != nil {
		return nil, apiError(err)
	}
	s, err := sv.d.m.open(ctx, or)
	if err != nil {
		return nil, apiError(err)
	}
	return sv.d.m.info(s), nil
}

// identity verifies what the launcher presented; nil means none was.
func (sv *server) identity(c *caller, req *apipb.OpenSessionRequest) (*attest.Identity, error) {
	m := sv.d.m
	switch {
	case len(req.SvidChain) > 0 || req.JwtSvid != "":
		if m.verifier == nil {
			return nil, errors.New("no SPIFFE agent configured: SVIDs cannot be verified")
		}
		var id *attest.Identity
		var err error
		if len(req.SvidChain) > 0 {
			id, err = m.verifier.VerifyX509(req.SvidChain, req.Challenge, req.ChallengeSignature)
		} else {
			id, err = m.verifier.VerifyJWT(req.JwtSvid)
		}
		if err != nil {
			return nil, err
		}
		return id, sv.consistent(c, id)
	case len(req.Credential) > 0:
		fp := attest.Fingerprint(m.nodeKey, bytes.TrimSpace(req.Credential))
		id := &attest.Identity{Strength: attest.StrengthBearer, Fingerprint: fp}
		// The launcher's kernel facts are recorded whatever credential
		// it presents.
		if facts, err := m.attester.Attest(c.pid); err == nil {
			id.Facts = facts
		}
		return id, nil
	}
	return nil, nil
}

// consistent refuses an SVID whose SPIFFE ID contradicts the attested
// identity of the process presenting it.
func (sv *server) consistent(c *caller, id *attest.Identity) error {
	m := sv.d.m
	facts, err := m.attester.Attest(c.pid)
	if err != nil {
		return fmt.Errorf("attest calling process: %w", err)
	}
	id.Facts = facts
	if m.registry.Len() == 0 {
		return nil
	}
	att, err := m.registry.Match(facts)
	if errors.Is(err, attest.ErrNoEntry) {
		return nil
	}
	if err != nil {
		return err
	}
	svid, err := spiffeID(id.SPIFFEID)
	if err != nil {
		return err
	}
	return attest.CheckConsistent(svid, &att)
}

func (sv *server) ListSessions(ctx context.Context, _ *apipb.ListSessionsRequest) (*apipb.ListSessionsResponse, error) {
	_, own, err := sv.scope(ctx)
	if err != nil {
		return nil, err
	}
	out := &apipb.ListSessionsResponse{}
	for _, s := range sv.d.m.list() {
		if within(own, s) == nil {
			out.Sessions = append(out.Sessions, sv.d.m.info(s))
		}
	}
	return out, nil
}

func (sv *server) GetSession(ctx context.Context, req *apipb.GetSessionRequest) (*apipb.Session, error) {
	_, s, err := sv.target(ctx, req.Id)
	if err != nil {
		return nil, err
	}
	return sv.d.m.info(s), nil
}

func (sv *server) CloseSession(ctx context.Context, req *apipb.CloseSessionRequest) (*apipb.CloseSessionResponse, error) {
	c, s, err := sv.target(ctx, req.Id)
	if err != nil {
		return nil, err
	}
	reason := "closed by " + userName(c.uid)
	if req.Reason != "" {
		reason = req.Reason + " (" + reason + ")"
	}
	if err := sv.d.m.close(s.ID, reason); err != nil {
		return nil, apiError(err)
	}
	return &apipb.CloseSessionResponse{}, nil
}

func (sv *server) Approve(ctx context.Context, req *apipb.ApproveRequest) (*apipb.Session, error) {
	c, own, err := sv.scope(ctx)
	if err != nil {
		return nil, err
	}
	if own != nil {
		return nil, status.Error(codes.PermissionDenied, "a process inside a session cannot approve escalations")
	}
	s, err := sv.d.m.approve(req.Session, req.Escalation, userName(c.uid))
	if err != nil {
		return nil, apiError(err)
	}
	return sv.d.m.info(s), nil
}

func (sv *server) EnterSession(ctx context.Context, req *apipb.EnterSessionRequest) (*apipb.EnterSessionResponse, error) {
	c, s, err := sv.target(ctx, req.Session)
	if err != nil {
		return nil, err
	}
	if err := cgroup.Enter(s.Cgroup, c.pid); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	sv.d.m.mu.RLock()
	raw := s.compiled != nil && s.compiled.RawSockets
	sv.d.m.mu.RUnlock()
	return &apipb.EnterSessionResponse{Cgroup: s.Cgroup, RawSockets: raw}, nil
}

func (sv *server) Events(req *apipb.EventsRequest, stream apipb.Idend_EventsServer) error {
	_, own, err := sv.scope(stream.Context())
	if err != nil {
		return err
	}
	ch, cancel := sv.d.m.rec.Subscribe(4096)
	defer cancel()
	for {
		select {
		case <-stream.Context().Done():
			return nil
		case r, ok := <-ch:
			if !ok {
				return nil
			}
			if !sv.visible(own, req.Session, r) {
				continue
			}
			if err := stream.Send(r); err != nil {
				return err
			}
		}
	}
}

// visible reports whether a record belongs to the requested session and
// to what the caller may see.
func (sv *server) visible(own *Session, want string, r *recordpb.Record) bool {
	id := events.SessionID(r)
	if want != "" && id != want {
		return false
	}
	if own == nil {
		return true
	}
	s := sv.d.m.sessionByName(id)
	return s != nil && s.isWithin(own.ID)

}

func (sv *server) Status(ctx context.Context, _ *apipb.StatusRequest) (*apipb.StatusResponse, error) {
	if _, _, err := sv.scope(ctx); err != nil {
		return nil, err
	}
	d := sv.d
	out := &apipb.StatusResponse{
		Version:  Version,
		Kernel:   kernelRelease(),
		Sessions: uint64(len(d.m.list())),
		Records:  d.p.records.Load(),
		Lost:     d.p.lostTotal.Load(),
	}
	for _, f := range d.m.loader.Features().List {
		pf := &apipb.Feature{Name: f.Name, Ok: f.OK, Required: f.Required, Gives: f.Gives}
		if f.Err != nil {
			pf.Detail = f.Err.Error()
		}
		out.Features = append(out.Features, pf)
	}
	return out, nil
}

func sessionInfo(s *Session) *apipb.Session {
	out := &apipb.Session{
		Id:        s.ID,
		Parent:    s.Parent,
		Ancestors: s.Ancestors,
		Cgroup:    s.Cgroup,
		Principal: s.Principal,
		Identity: &apipb.Identity{
			SpiffeId:    s.Identity.SPIFFEID,
			Strength:    string(s.Identity.Strength),
			Fingerprint: s.Identity.Fingerprint,
		},
		Created: s.Created.UTC().Format(time.RFC3339),
		Expires: s.Expires.UTC().Format(time.RFC3339),
	}
	if s.intent != nil {
		out.Intent = &apipb.IntentInfo{Name: s.intent.Name, Hash: s.intent.Hash(),
			Purpose: s.intent.Purpose, OnViolation: s.intent.OnViolation.String()}
	}
	if s.compiled != nil {
		var b strings.Builder
		s.compiled.Describe(&b)
		out.Compiled = b.String()
	}
	for _, e := range s.Escalations {
		out.Escalations = append(out.Escalations, &apipb.EscalationInfo{
			Id: e.ID, Action: e.Desc, State: e.State, ApprovedBy: e.ApprovedBy})
	}
	return out
}

// apiError maps errors to gRPC status codes, keeping their messages.
func apiError(err error) error {
	if _, ok := status.FromError(err); ok {
		return err
	}
	code := codes.Internal
	var ve *intent.ValidationError
	var se *intent.SubsetError
	switch {
	case errors.Is(err, ErrNoSession), errors.Is(err, ErrNoEscalate):
		code = codes.NotFound
	case errors.As(err, &ve), errors.As(err, &se):
		code = codes.InvalidArgument
	case errors.Is(err, loader.ErrTooLarge), errors.Is(err, intent.ErrTooLarge):
		code = codes.ResourceExhausted
	case errors.Is(err, ErrDenied), errors.Is(err, attest.ErrMismatch):
		code = codes.PermissionDenied
	case errors.Is(err, attest.ErrNotReady):
		code = codes.Unavailable
	case errors.Is(err, ErrApproved):
		code = codes.FailedPrecondition
	case isIdentityError(err):
		code = codes.Unauthenticated
	}
	return status.Error(code, err.Error())
}

func isIdentityError(err error) bool {
	for _, e := range []error{attest.ErrChallenge, attest.ErrInvalidSVID, attest.ErrTrustDomain,
		attest.ErrExpired, attest.ErrUntrusted, attest.ErrProof, attest.ErrAudience, attest.ErrNoEntry} {
		if errors.Is(err, e) {
			return true
		}
	}
	return strings.HasPrefix(err.Error(), "no identity")
}

func userName(uid int) string {
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil {
		return u.Username
	}
	return "uid " + strconv.Itoa(uid)
}

// info describes a session for the API, under the lock that guards its
// escalations and compiled rules.
func (m *manager) info(s *Session) *apipb.Session {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return sessionInfo(s)
}
