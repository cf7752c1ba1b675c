package main

import (
	"crypto/x509"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/idend/idend/internal/api/apipb"
	"github.com/idend/idend/internal/attest"
	"github.com/idend/idend/internal/attest/attesttest"
)

// writeIntent writes a small intent file and returns its path.
func writeIntent(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "agent.yaml")
	writeFile(t, path, []byte("name: agent\npurpose: test\n"))
	return path
}

// sessionJSON parses one line of session JSON.
func sessionJSON(t *testing.T, line string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(line), &m); err != nil {
		t.Fatalf("%v: %q", err, line)
	}
	return m
}

func field(m map[string]any, path string) any {
	var v any = m
	for _, k := range strings.Split(path, ".") {
		obj, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = obj[k]
	}
	return v
}

func TestSessionOpenJSON(t *testing.T) {
	api := startTestAPI(t)
	r := idend(t, nil, "session", "open", "--socket", api.socket, "--intent", writeIntent(t),
		"--principal", "bob", "--ttl", "10m", "--json")
	if r.status != exitOK || strings.Count(r.stdout, "\n") != 1 {
		t.Fatalf("want one line of JSON, got %s", r)
	}
	m := sessionJSON(t, r.stdout)
	for _, f := range []string{"id", "parent", "cgroup", "principal", "identity.spiffe_id",
		"identity.strength", "intent.name", "intent.hash", "expires"} {
		if _, ok := field(m, f).(string); !ok {
			t.Errorf("field %s missing: %s", f, r.stdout)
		}
	}
	if field(m, "id") != "s-test1" || field(m, "principal") != "bob" || field(m, "parent") != "" {
		t.Errorf("got %s", r.stdout)
	}
	expires, err := time.Parse(time.RFC3339, field(m, "expires").(string))
	if err != nil || time.Until(expires) > 10*time.Minute || time.Until(expires) < 9*time.Minute {
		t.Errorf("expires %v, want in 10m (%v)", expires, err)
	}
}

func TestSessionOpenPrincipal(t *testing.T) {
	api := startTestAPI(t)
	intentFile := writeIntent(t)
	for _, tt := range []struct {
		env  []string
		want string
	}{
		{[]string{"SUDO_USER=carol", "USER=root"}, "carol"},
		{[]string{"SUDO_USER=", "USER=dave"}, "dave"},
	} {
		r := idend(t, tt.env, "session", "open", "--socket", api.socket, "--intent", intentFile)
		if r.status != exitOK {
			t.Fatal(r)
		}
		id := strings.TrimSpace(r.stdout)
		r = idend(t, nil, "session", "show", "--socket", api.socket, id, "--json")
		if got := field(sessionJSON(t, r.stdout), "principal"); got != tt.want {
			t.Errorf("env %v: principal %v, want %s", tt.env, got, tt.want)
		}
	}
}

// startSVIDTestAPI serves the API with a verifier trusting one CA.
func startSVIDTestAPI(t *testing.T) (*testAPI, *attesttest.CA) {
	api := startTestAPI(t)
	ca := attesttest.NewCA(t, "example.org")
	b := spiffebundle.FromX509Authorities(ca.TrustDomain, []*x509.Certificate{ca.Cert})
	b.AddJWTAuthority(ca.JWTKeyID, ca.JWTKey.Public())
	api.verifier = attest.NewVerifier(spiffebundle.NewSet(b), attest.VerifierConfig{})
	return api, ca
}

// writeSVID writes the certificate chain and the key of svid as PEM files.
func writeSVID(t *testing.T, svid *x509svid.SVID) (certFile, keyFile string) {
	t.Helper()
	certs, key, err := svid.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "svid.pem"), filepath.Join(dir, "key.pem")
	writeFile(t, certFile, certs)
	writeFile(t, keyFile, key)
	return certFile, keyFile
}

func TestSessionOpenX509SVID(t *testing.T) {
	api, ca := startSVIDTestAPI(t)
	const id = "spiffe://example.org/agent/retry"
	cert, key := writeSVID(t, ca.IssueX509(t, id, attesttest.X509Options{}))

	r := idend(t, nil, "session", "open", "--socket", api.socket, "--intent", writeIntent(t),
		"--svid", cert, "--svid-key", key, "--json")
	if r.status != exitOK {
		t.Fatal(r)
	}
	m := sessionJSON(t, r.stdout)
	if field(m, "identity.spiffe_id") != id || field(m, "identity.strength") != "svid" {
		t.Fatalf("want the SVID's identity, got %s", r.stdout)
	}

	// The key of another SVID proves nothing.
	_, otherKey := writeSVID(t, ca.IssueX509(t, id, attesttest.X509Options{}))
	r = idend(t, nil, "session", "open", "--socket", api.socket, "--intent", writeIntent(t),
		"--svid", cert, "--svid-key", otherKey)
	if r.status != exitFailure || !strings.HasPrefix(r.stderr, "idend: ") {
		t.Fatalf("want exit 1 for a key that does not match, got %s", r)
	}
}

func TestSessionOpenJWTSVID(t *testing.T) {
	api, ca := startSVIDTestAPI(t)
	const id = "spiffe://example.org/agent/jwt"
	tokenFile := filepath.Join(t.TempDir(), "jwt")
	writeFile(t, tokenFile, []byte(ca.SignJWT(t, id, []string{"idend"}, time.Now().Add(time.Hour))+"\n"))

	r := idend(t, nil, "session", "open", "--socket", api.socket, "--intent", writeIntent(t),
		"--jwt-svid", tokenFile, "--json")
	if r.status != exitOK {
		t.Fatal(r)
	}
	if m := sessionJSON(t, r.stdout); field(m, "identity.spiffe_id") != id {
		t.Fatalf("want the JWT-SVID's identity, got %s", r.stdout)
	}
}

func TestSessionLifecycle(t *testing.T) {
	api := startTestAPI(t)
	sock := []string{"--socket", api.socket}
	open := func(args ...string) string {
		r := idend(t, nil, append(append([]string{"session", "open", "--intent", writeIntent(t)}, sock...), args...)...)
		if r.status != exitOK {
			t.Fatal(r)
		}
		return strings.TrimSpace(r.stdout)
	}
	parent := open("--principal", "alice")
	child := open("--parent", parent)

	r := idend(t, nil, append([]string{"session", "list"}, sock...)...)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if r.status != exitOK || len(lines) != 3 || strings.Join(strings.Fields(lines[0]), " ") !=
		"ID PARENT PRINCIPAL INTENT STRENGTH EXPIRES" {
		t.Fatalf("want a header and two sessions, got %s", r)
	}
	if f := strings.Fields(lines[2]); f[0] != child || f[1] != parent || f[3] != "test-intent" ||
		f[4] != "bearer" || f[5] != "in" {
		t.Fatalf("sub-session row: %q", lines[2])
	}

	r = idend(t, nil, append([]string{"session", "list", "--json"}, sock...)...)
	if got := strings.Split(strings.TrimSpace(r.stdout), "\n"); len(got) != 2 ||
		field(sessionJSON(t, got[1]), "parent") != parent {
		t.Fatalf("want two JSON lines, got %s", r)
	}

	api.mu.Lock()
	api.sessions[child].Escalations = []*apipb.EscalationInfo{
		{Id: "e-1", Action: "connect tcp 10.0.0.1:443", State: "pending"}}
	api.mu.Unlock()
	r = idend(t, nil, append([]string{"session", "show", child}, sock...)...)
	for _, want := range []string{"ID:", child, "Parent:", "Identity:", "(bearer)",
		"e-1  pending  connect tcp 10.0.0.1:443", "Rules in force:\n  egress: none"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("show lacks %q: %s", want, r)
		}
	}

	r = idend(t, nil, append([]string{"session", "approve", child, "e-1"}, sock...)...)
	if r.status != exitOK || r.stdout != "approved e-1: connect tcp 10.0.0.1:443\n" {
		t.Fatalf("approve: %s", r)
	}
	r = idend(t, nil, append([]string{"session", "approve", child, "e-9"}, sock...)...)
	if r.status != exitFailure || r.stderr != "idend: escalation e-9 of session "+child+" not found\n" {
		t.Fatalf("approve of an unknown escalation: %s", r)
	}

	r = idend(t, nil, append([]string{"session", "close", parent}, sock...)...)
	if r.status != exitOK || r.stdout != "" {
		t.Fatalf("close: %s", r)
	}
	r = idend(t, nil, append([]string{"session", "show", parent}, sock...)...)
	if r.status != exitFailure || r.stderr != "idend: session "+parent+" not found\n" {
		t.Fatalf("want the daemon's message alone, got %s", r)
	}
}
