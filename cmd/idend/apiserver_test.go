package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/idend/idend/internal/api/apipb"
	"github.com/idend/idend/internal/attest"
)

// testAPI serves the daemon's gRPC API on a real unix socket, keeping
// sessions in memory, so that the client side of every command can be
// driven without root or a kernel. It records the kernel credentials of
// each process that enters a session, as the daemon reads them.
type testAPI struct {
	apipb.UnimplementedIdendServer

	socket string
	// verifier, when set, verifies the SVIDs sessions are opened with.
	verifier *attest.Verifier

	mu       sync.Mutex
	next     int
	sessions map[string]*apipb.Session
	opened   []*apipb.OpenSessionRequest
	closed   []string
	entered  map[string][]unix.Ucred
}

func startTestAPI(t *testing.T) *testAPI {
	t.Helper()
	// A short directory: sun_path holds 108 bytes.
	dir, err := os.MkdirTemp("", "idend-api-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}

	api := &testAPI{
		socket:   filepath.Join(dir, "idend.sock"),
		sessions: map[string]*apipb.Session{},
		entered:  map[string][]unix.Ucred{},
	}
	l, err := net.Listen("unix", api.socket)
	if err != nil {
		t.Fatal(err)
	}
	// Processes run as nobody connect too.
	if err := os.Chmod(api.socket, 0o777); err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(peerCreds{}))
	apipb.RegisterIdendServer(srv, api)
	go srv.Serve(l)
	t.Cleanup(srv.Stop)
	return api
}

// addSession adds an open session as the daemon would hold it.
func (a *testAPI) addSession(s *apipb.Session) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.sessions[s.Id] = s
}

func (a *testAPI) OpenSession(_ context.Context, req *apipb.OpenSessionRequest) (*apipb.Session, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if req.Parent != "" && a.sessions[req.Parent] == nil {
		return nil, status.Errorf(codes.NotFound, "parent session %s not found", req.Parent)
	}
	identity, err := a.identify(req)
	if err != nil {
		return nil, err
	}
	a.next++
	id := fmt.Sprintf("s-test%d", a.next)
	ttl := time.Hour
	if req.TtlSeconds > 0 {
		ttl = time.Duration(req.TtlSeconds) * time.Second
	}
	s := &apipb.Session{
		Id: id, Parent: req.Parent, Cgroup: "/sys/fs/cgroup/idend/" + id,
		Principal: req.Principal,
		Identity:  identity,
		Intent:    &apipb.IntentInfo{Name: "test-intent", Hash: "sha256:00", OnViolation: "block"},
		Created:   time.Now().UTC().Format(time.RFC3339),
		Expires:   time.Now().Add(ttl).UTC().Format(time.RFC3339),
		Compiled:  "egress: none\n",
	}
	a.sessions[id] = s
	a.opened = append(a.opened, req)
	return s, nil
}

func (a *testAPI) Challenge(context.Context, *apipb.ChallengeRequest) (*apipb.ChallengeResponse, error) {
	if a.verifier == nil {
		return nil, status.Error(codes.FailedPrecondition, "no SPIFFE trust bundle")
	}
	return &apipb.ChallengeResponse{Challenge: a.verifier.NewChallenge()}, nil
}

// identify verifies the SVID of req, as the daemon does.
func (a *testAPI) identify(req *apipb.OpenSessionRequest) (*apipb.Identity, error) {
	var id *attest.Identity
	var err error
	switch {
	case len(req.SvidChain) > 0 && a.verifier != nil:
		id, err = a.verifier.VerifyX509(req.SvidChain, req.Challenge, req.ChallengeSignature)
	case req.JwtSvid != "" && a.verifier != nil:
		id, err = a.verifier.VerifyJWT(req.JwtSvid)
	default:
		return &apipb.Identity{Strength: "bearer", Fingerprint: "hmac-sha256:00"}, nil
	}
	if err != nil {
		return nil, status.Error(codes.Unauthenticated, err.Error())
	}
	return &apipb.Identity{SpiffeId: id.SPIFFEID, Strength: id.Strength.String()}, nil
}

func (a *testAPI) session(id string) (*apipb.Session, error) {
	s := a.sessions[id]
	if s == nil {
		return nil, status.Errorf(codes.NotFound, "session %s not found", id)
	}
	return s, nil
}

func (a *testAPI) ListSessions(context.Context, *apipb.ListSessionsRequest) (*apipb.ListSessionsResponse, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	resp := &apipb.ListSessionsResponse{}
	for i := 1; i <= a.next; i++ {
		if s := a.sessions[fmt.Sprintf("s-test%d", i)]; s != nil {
			resp.Sessions = append(resp.Sessions, s)
		}
	}
	return resp, nil
}

func (a *testAPI) GetSession(_ context.Context, req *apipb.GetSessionRequest) (*apipb.Session, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.session(req.Id)
}

func (a *testAPI) CloseSession(_ context.Context, req *apipb.CloseSessionRequest) (*apipb.CloseSessionResponse, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, err := a.session(req.Id); err != nil {
		return nil, err
	}
	delete(a.sessions, req.Id)
	a.closed = append(a.closed, req.Id)
	return &apipb.CloseSessionResponse{}, nil
}

func (a *testAPI) Approve(_ context.Context, req *apipb.ApproveRequest) (*apipb.Session, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	s, err := a.session(req.Session)
	if err != nil {
		return nil, err
	}
	for _, e := range s.Escalations {
		if e.Id == req.Escalation {
			e.State, e.ApprovedBy = "approved", "root"
			return s, nil
		}
	}
	return nil, status.Errorf(codes.NotFound, "escalation %s of session %s not found", req.Escalation, req.Session)
}

func (a *testAPI) EnterSession(ctx context.Context, req *apipb.EnterSessionRequest) (*apipb.EnterSessionResponse, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	s, err := a.session(req.Session)
	if err != nil {
		return nil, err
	}
	p, _ := peer.FromContext(ctx)
	info, ok := p.AuthInfo.(peerInfo)
	if !ok {
		return nil, status.Error(codes.Internal, "no peer credentials")
	}
	a.entered[req.Session] = append(a.entered[req.Session], info.cred)
	return &apipb.EnterSessionResponse{Cgroup: s.Cgroup}, nil
}

// enteredPids returns the pids that entered session id.
func (a *testAPI) enteredPids(id string) []int32 {
	a.mu.Lock()
	defer a.mu.Unlock()
	var pids []int32
	for _, c := range a.entered[id] {
		pids = append(pids, c.Pid)
	}
	return pids
}

func (a *testAPI) closedIDs() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.closed...)
}

func (a *testAPI) openRequests() []*apipb.OpenSessionRequest {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]*apipb.OpenSessionRequest(nil), a.opened...)
}

// peerCreds are transport credentials that read the peer's SO_PEERCRED
// and pass nothing else: the client dials with insecure credentials.
type peerCreds struct{}

type peerInfo struct {
	credentials.CommonAuthInfo
	cred unix.Ucred
}

func (peerInfo) AuthType() string { return "peercred" }

func (peerCreds) ServerHandshake(c net.Conn) (net.Conn, credentials.AuthInfo, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return nil, nil, fmt.Errorf("not a unix socket: %T", c)
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return nil, nil, err
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return nil, nil, err
	}
	if credErr != nil {
		return nil, nil, credErr
	}
	info := peerInfo{cred: *cred}
	info.SecurityLevel = credentials.NoSecurity
	return c, info, nil
}

func (peerCreds) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, fmt.Errorf("server credentials only")
}

func (peerCreds) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "insecure"}
}

func (peerCreds) Clone() credentials.TransportCredentials { return peerCreds{} }

func (peerCreds) OverrideServerName(string) error { return nil }
