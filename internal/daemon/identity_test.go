package daemon

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/idend/idend/internal/api/apipb"
	"github.com/idend/idend/internal/attest"
	"github.com/idend/idend/internal/attest/attesttest"
	"github.com/idend/idend/internal/attest/spiretest"
	"github.com/idend/idend/internal/events/recordpb"
)

// openX509 opens a session over the API with an X.509-SVID chain, proving
// possession with key: Challenge, sign, OpenSession.
func (d *testDaemon) openX509(text string, chain [][]byte,
	key crypto.Signer) (*apipb.Session, error) {
	d.t.Helper()
	ctx := context.Background()
	ch, err := d.client.Challenge(ctx, &apipb.ChallengeRequest{})
	if err != nil {
		return nil, err
	}
	sig, err := attest.SignChallenge(key, ch.Challenge)
	if err != nil {
		d.t.Fatal(err)
	}
	return d.client.OpenSession(ctx, &apipb.OpenSessionRequest{Intent: []byte(text),
		SvidChain: chain, Challenge: ch.Challenge, ChallengeSignature: sig})
}

func (d *testDaemon) openJWT(text, token string) (*apipb.Session, error) {
	return d.client.OpenSession(context.Background(),
		&apipb.OpenSessionRequest{Intent: []byte(text), JwtSvid: token})
}

func svidChain(svid *x509svid.SVID) [][]byte {
	var der [][]byte
	for _, c := range svid.Certificates {
		der = append(der, c.Raw)
	}
	return der
}

// checkSVIDIdentity checks the identity the API reports for a session.
func checkSVIDIdentity(t *testing.T, s *apipb.Session, id string) {
	t.Helper()
	if s.Identity.GetStrength() != "svid" || s.Identity.GetSpiffeId() != id {
		t.Errorf("session %s identity %v, want svid %s", s.Id, s.Identity, id)
	}
}

// connectDenyIntent allows one port only, so that a connect elsewhere is
// refused and recorded.
func connectDenyIntent(name string, port int) string {
	return fmt.Sprintf("name: %s\npurpose: identity test\nnetwork:\n  egress:\n"+
		"    - to: 127.0.0.1\n      ports: [%d]\n", name, port)
}

// TestSPIREIdentity opens sessions with an X.509-SVID and a JWT-SVID that
// a real SPIRE agent issued, and checks that the session, its recorded
// opening and the kernel's records of what it did carry the SPIFFE ID with
// strength svid.
func TestSPIREIdentity(t *testing.T) {
	requireRoot(t)
	if testing.Short() {
		t.Skip("starts a SPIRE server and agent")
	}
	spire := spiretest.Start(t, spiretest.BinDir(t))
	workloadID := spire.WorkloadID.String()
	d := startDaemonWith(t, func(cfg *Config) {
		cfg.SPIFFE = SPIFFEConfig{AgentSocket: spire.AgentAddr, Audience: "idend"}
		// idend's own attestation of root agrees with SPIRE's entry.
		cfg.Registrations = []attest.Entry{{SPIFFEID: workloadID, Selectors: []string{"unix:uid:0"}}}
	})

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client, err := workloadapi.New(ctx, workloadapi.WithAddr(spire.AgentAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	svid, err := client.FetchX509SVID(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if svid.ID != spire.WorkloadID {
		t.Fatalf("agent served %s, want %s", svid.ID, spire.WorkloadID)
	}

	watch := d.watch()
	allowed, other := tcpListener(t), tcpListener(t)
	s := openWhenReady(t, func() (*apipb.Session, error) {
		return d.openX509(connectDenyIntent("spire-x509", allowed), svidChain(svid), svid.PrivateKey)
	})
	checkSVIDIdentity(t, s, workloadID)
	if out := connectFrom(t, s, other); out != "errno 1" {
		t.Errorf("connect outside the intent: %q, want errno 1", out)
	}
	watch.await(t, deniedConnect(s.Id, other))

	jwt, err := client.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "idend", Subject: spire.WorkloadID})
	if err != nil {
		t.Fatal(err)
	}
	js, err := d.openJWT(connectDenyIntent("spire-jwt", allowed), jwt.Marshal())
	if err != nil {
		t.Fatalf("open with jwt-svid: %v", err)
	}
	checkSVIDIdentity(t, js, workloadID)

	checkSPIREMismatch(t, d, spire)

	d.stop()
	recs := readRecording(t, d.cfg.StateDir)
	for _, id := range []string{s.Id, js.Id} {
		checkRecordedOpen(t, recs, id, workloadID)
	}
	c := findOne(t, recs, "denied connect", deniedConnect(s.Id, other)).GetConnect()
	checkRecordedSVID(t, "denied connect", c.Identity, workloadID)
}

// checkRecordedOpen checks the identity recorded with the opening of
// session id: the SVID's, with the facts idend attested for root.
func checkRecordedOpen(t *testing.T, recs []*recordpb.Record, id, spiffeID string) {
	t.Helper()
	open := findOne(t, recs, "session_open of "+id, func(r *recordpb.Record) bool {
		return r.GetSessionOpen().GetSessionId() == id
	}).GetSessionOpen()
	checkRecordedSVID(t, "session_open of "+id, open.Identity, spiffeID)
	if f := open.Identity.GetAttested(); f == nil || f.GetUid() != 0 {
		t.Errorf("session_open of %s: attested facts %v, want uid 0", id, f)
	}
}

// checkSPIREMismatch registers a second SPIFFE ID for the test process in
// SPIRE, which idend's registration entry does not give it: a session
// opened with that SVID is refused.
func checkSPIREMismatch(t *testing.T, d *testDaemon, spire *spiretest.SPIRE) {
	t.Helper()
	otherID := spiffeid.RequireFromPath(spire.TrustDomain, "/idend/other")
	spire.CreateEntry(t, otherID, "unix:uid:0")
	svid := spire.WaitForSVID(t, otherID)
	_, err := d.openX509("name: mismatch\npurpose: identity test\n", svidChain(svid), svid.PrivateKey)
	checkRefusal(t, err, codes.PermissionDenied, "svid contradicts attested identity")
}

func checkRecordedSVID(t *testing.T, what string, id *recordpb.Identity, spiffeID string) {
	t.Helper()
	if id.GetStrength() != recordpb.Strength_STRENGTH_SVID || id.GetSpiffeId() != spiffeID {
		t.Errorf("%s recorded with identity %v, want %s of strength svid", what, id, spiffeID)
	}
}

// openWhenReady opens a session with an SVID, retrying while the daemon
// has not received its first trust bundles.
func openWhenReady(t *testing.T, open func() (*apipb.Session, error)) *apipb.Session {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		s, err := open()
		if err == nil {
			return s
		}
		if !strings.Contains(err.Error(), attest.ErrNotReady.Error()) || time.Now().After(deadline) {
			t.Fatalf("open with svid: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// checkRefusal checks that err is a gRPC status of code whose message
// says want.
func checkRefusal(t *testing.T, err error, code codes.Code, want string) string {
	t.Helper()
	st := status.Convert(err)
	if err == nil || st.Code() != code || !strings.Contains(st.Message(), want) {
		t.Errorf("got %v, want %s saying %q", err, code, want)
	}
	return st.Message()
}

const (
	testTrustDomain = "example.org"
	launcherID      = "spiffe://example.org/launcher"
	plainIntent     = "name: ident\npurpose: identity test\n"
)

// svidDaemon starts a daemon trusting an in-process Workload API that
// serves ca's bundles, with a registration entry giving root launcherID.
func svidDaemon(t *testing.T, ca *attesttest.CA) *testDaemon {
	t.Helper()
	own := ca.IssueX509(t, "spiffe://example.org/idend", attesttest.X509Options{})
	api := attesttest.StartWorkloadAPI(t, own, ca)
	return startDaemonWith(t, func(cfg *Config) {
		cfg.SPIFFE = SPIFFEConfig{AgentSocket: api.Addr, Audience: "idend"}
		cfg.Registrations = []attest.Entry{{SPIFFEID: launcherID, Selectors: []string{"unix:uid:0"}}}
	})
}

// TestSVIDRefusals presents SVIDs that must not open a session, each
// refused through the API with its own message, after a valid X.509-SVID
// and JWT-SVID of the same CA opened one.
func TestSVIDRefusals(t *testing.T) {
	ca := attesttest.NewCA(t, testTrustDomain)
	d := svidDaemon(t, ca)
	valid := ca.IssueX509(t, launcherID, attesttest.X509Options{})
	s := openWhenReady(t, func() (*apipb.Session, error) {
		return d.openX509(plainIntent, svidChain(valid), valid.PrivateKey)
	})
	checkSVIDIdentity(t, s, launcherID)
	hour := time.Now().Add(time.Hour)
	js, err := d.openJWT(plainIntent, ca.SignJWT(t, launcherID, []string{"idend"}, hour))
	if err != nil {
		t.Fatalf("open with jwt-svid: %v", err)
	}
	checkSVIDIdentity(t, js, launcherID)

	msgs := map[string]string{}
	for _, tt := range svidRefusals(t, ca, valid) {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.open(d)
			msg := checkRefusal(t, err, codes.Unauthenticated, tt.want)
			if prev, ok := msgs[msg]; ok {
				t.Errorf("same message as %s: %q", prev, msg)
			}
			msgs[msg] = tt.name
		})
	}
}

type svidRefusal struct {
	name string
	open func(d *testDaemon) (*apipb.Session, error)
	want string
}

func svidRefusals(t *testing.T, ca *attesttest.CA, valid *x509svid.SVID) []svidRefusal {
	expired := ca.IssueX509(t, launcherID, attesttest.X509Options{
		NotBefore: time.Now().Add(-2 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
	evil := attesttest.NewCA(t, "evil.org")
	otherTD := evil.IssueX509(t, "spiffe://evil.org/launcher", attesttest.X509Options{})
	impostor := attesttest.NewCA(t, testTrustDomain).IssueX509(t, launcherID, attesttest.X509Options{})
	hour := time.Now().Add(time.Hour)

	x509 := func(svid *x509svid.SVID, key crypto.Signer) func(*testDaemon) (*apipb.Session, error) {
		return func(d *testDaemon) (*apipb.Session, error) {
			return d.openX509(plainIntent, svidChain(svid), key)
		}
	}
	jwt := func(token string) func(*testDaemon) (*apipb.Session, error) {
		return func(d *testDaemon) (*apipb.Session, error) { return d.openJWT(plainIntent, token) }
	}
	return []svidRefusal{
		{"expired", x509(expired, expired.PrivateKey), "svid expired"},
		{"wrong trust domain", x509(otherTD, otherTD.PrivateKey), `no trust bundle for "evil.org"`},
		{"untrusted chain", x509(impostor, impostor.PrivateKey), "svid not signed by trust bundle"},
		{"wrong key", x509(valid, newKey(t)), "challenge not signed by the svid's key"},
		{"reused challenge", reusedChallenge(valid), "unknown, used or expired challenge"},
		{"jwt wrong audience", jwt(ca.SignJWT(t, launcherID, []string{"billing"}, hour)),
			`jwt-svid audience mismatch: want "idend"`},
		{"jwt expired", jwt(ca.SignJWT(t, launcherID, []string{"idend"}, time.Now().Add(-time.Minute))),
			"svid expired"},
		{"jwt forged", jwt(ca.SignJWTWith(t, newKey(t), launcherID, []string{"idend"})),
			"svid not signed by trust bundle"},
	}
}

// reusedChallenge presents a valid proof a second time.
func reusedChallenge(svid *x509svid.SVID) func(*testDaemon) (*apipb.Session, error) {
	return func(d *testDaemon) (*apipb.Session, error) {
		ctx := context.Background()
		ch, err := d.client.Challenge(ctx, &apipb.ChallengeRequest{})
		if err != nil {
			return nil, err
		}
		sig, err := attest.SignChallenge(svid.PrivateKey, ch.Challenge)
		if err != nil {
			d.t.Fatal(err)
		}
		req := &apipb.OpenSessionRequest{Intent: []byte(plainIntent),
			SvidChain: svidChain(svid), Challenge: ch.Challenge, ChallengeSignature: sig}
		if _, err := d.client.OpenSession(ctx, req); err != nil {
			d.t.Fatalf("first use of the challenge: %v", err)
		}
		return d.client.OpenSession(ctx, req)
	}
}

func newKey(t *testing.T) crypto.Signer {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// TestSVIDContradictsAttested refuses a valid SVID, X.509 or JWT, whose
// SPIFFE ID is not the one idend's registration entry attests for the
// launching process.
func TestSVIDContradictsAttested(t *testing.T) {
	ca := attesttest.NewCA(t, testTrustDomain)
	d := svidDaemon(t, ca)
	const agentID = "spiffe://example.org/agent/payments"
	svid := ca.IssueX509(t, agentID, attesttest.X509Options{})
	_, err := openWhenReadyErr(func() (*apipb.Session, error) {
		return d.openX509(plainIntent, svidChain(svid), svid.PrivateKey)
	})
	want := "svid " + agentID + ", launching process attested as " + launcherID
	checkRefusal(t, err, codes.PermissionDenied, want)

	hour := time.Now().Add(time.Hour)
	_, err = d.openJWT(plainIntent, ca.SignJWT(t, agentID, []string{"idend"}, hour))
	checkRefusal(t, err, codes.PermissionDenied, want)

	list, err := d.client.ListSessions(context.Background(), &apipb.ListSessionsRequest{})
	if err != nil || len(list.Sessions) != 0 {
		t.Errorf("sessions after refusals: %v, %v; want none", list.GetSessions(), err)
	}
}

// openWhenReadyErr is openWhenReady for an open that must fail: it
// returns the first error that is not the bundles' absence.
func openWhenReadyErr(open func() (*apipb.Session, error)) (*apipb.Session, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		s, err := open()
		if err == nil || !strings.Contains(err.Error(), attest.ErrNotReady.Error()) ||
			time.Now().After(deadline) {
			return s, err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestAttestedAndBearerIdentity opens a session with the identity a
// registration entry gives the launching process, and one with a bearer
// credential, and checks what is recorded of each: the attested facts,
// the credential's fingerprint, and never the credential itself.
func TestAttestedAndBearerIdentity(t *testing.T) {
	d := startDaemonWith(t, func(cfg *Config) {
		cfg.Registrations = []attest.Entry{{SPIFFEID: launcherID, Selectors: []string{"unix:uid:0"}}}
	})
	watch := d.watch()
	allowed, other := tcpListener(t), tcpListener(t)

	att, err := d.client.OpenSession(context.Background(), &apipb.OpenSessionRequest{
		Intent: []byte(connectDenyIntent("attested", allowed))})
	if err != nil {
		t.Fatal(err)
	}
	if att.Identity.GetStrength() != "attested" || att.Identity.GetSpiffeId() != launcherID {
		t.Errorf("identity %v, want attested %s", att.Identity, launcherID)
	}

	secret := []byte("sk-live-" + rand.Text())
	bearer, err := d.client.OpenSession(context.Background(), &apipb.OpenSessionRequest{
		Intent: []byte(connectDenyIntent("bearer", allowed)), Credential: append(secret, '\n')})
	if err != nil {
		t.Fatal(err)
	}
	fp := bearer.Identity.GetFingerprint()
	if bearer.Identity.GetStrength() != "bearer" || !strings.HasPrefix(fp, "hmac-sha256:") ||
		bearer.Identity.GetSpiffeId() != "" {
		t.Errorf("identity %v, want a bearer fingerprint", bearer.Identity)
	}

	for _, s := range []*apipb.Session{att, bearer} {
		if out := connectFrom(t, s, other); out != "errno 1" {
			t.Errorf("session %s: connect outside the intent: %q", s.Id, out)
		}
		watch.await(t, deniedConnect(s.Id, other))
	}
	sessions, err := os.ReadFile(filepath.Join(d.cfg.StateDir, "sessions.json"))
	if err != nil {
		t.Fatal(err)
	}
	d.stop()

	recs := readRecording(t, d.cfg.StateDir)
	checkAttestedRecords(t, recs, att.Id, other)
	checkBearerRecords(t, recs, bearer.Id, other, fp)
	checkSecretAbsent(t, d.cfg.StateDir, sessions, secret, fp)
}

func checkAttestedRecords(t *testing.T, recs []*recordpb.Record, id string, port int) {
	t.Helper()
	open := findOne(t, recs, "attested session_open", func(r *recordpb.Record) bool {
		return r.GetSessionOpen().GetSessionId() == id
	}).GetSessionOpen()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	exe, _ = filepath.EvalSymlinks(exe)
	facts := open.Identity.GetAttested()
	if open.Identity.GetStrength() != recordpb.Strength_STRENGTH_ATTESTED ||
		open.Identity.GetSpiffeId() != launcherID || facts.GetUid() != 0 ||
		facts.GetExePath() != exe || len(facts.GetExeSha256()) == 0 {
		t.Errorf("attested session_open identity %v, want %s attested for uid 0 running %s",
			open.Identity, launcherID, exe)
	}
	c := findOne(t, recs, "attested denied connect", deniedConnect(id, port)).GetConnect()
	if c.Identity.GetStrength() != recordpb.Strength_STRENGTH_ATTESTED ||
		c.Identity.GetSpiffeId() != launcherID {
		t.Errorf("attested denied connect identity %v", c.Identity)
	}
}

func checkBearerRecords(t *testing.T, recs []*recordpb.Record, id string, port int, fp string) {
	t.Helper()
	open := findOne(t, recs, "bearer session_open", func(r *recordpb.Record) bool {
		return r.GetSessionOpen().GetSessionId() == id
	}).GetSessionOpen()
	c := findOne(t, recs, "bearer denied connect", deniedConnect(id, port)).GetConnect()
	recorded := map[string]*recordpb.Identity{"session_open": open.Identity, "connect": c.Identity}
	for what, ident := range recorded {
		if ident.GetStrength() != recordpb.Strength_STRENGTH_BEARER ||
			string(ident.GetFingerprint()) != fp || ident.GetSpiffeId() != "" {
			t.Errorf("bearer %s identity %v, want fingerprint %s", what, ident, fp)
		}
	}
}

// checkSecretAbsent looks for the secret's bytes in sessions.json as it
// was while the session was open and in every file of the state
// directory. The fingerprint must be found where the secret is not, or
// the search proves nothing.
func checkSecretAbsent(t *testing.T, stateDir string, sessions, secret []byte, fp string) {
	t.Helper()
	if bytes.Contains(sessions, secret) {
		t.Error("sessions.json holds the bearer secret")
	}
	if !bytes.Contains(sessions, []byte(fp)) {
		t.Error("sessions.json does not hold the fingerprint: the search looks in the wrong place")
	}
	var recorded bool
	err := filepath.WalkDir(stateDir, func(path string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if bytes.Contains(data, secret) {
			t.Errorf("%s holds the bearer secret", path)
		}
		if filepath.Dir(path) == filepath.Join(stateDir, "recordings") {
			recorded = recorded || bytes.Contains(data, []byte(fp))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !recorded {
		t.Error("no recording file holds the fingerprint: the search looks in the wrong place")
	}
}
