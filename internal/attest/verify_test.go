package attest

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/idend/idend/internal/attest/attesttest"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

const agentID = "spiffe://example.org/agent/payments"

// svidErrors are the refusals VerifyX509 and VerifyJWT tell apart.
var svidErrors = []error{
	ErrChallenge, ErrInvalidSVID, ErrNotReady, ErrTrustDomain, ErrExpired,
	ErrUntrusted, ErrProof, ErrAudience,
}

// testBundles serves the bundles of ca (and of the others) from an
// in-process Workload API and returns them once received.
func testBundles(t *testing.T, ca *attesttest.CA, others ...*attesttest.CA) *Bundles {
	t.Helper()
	own := ca.IssueX509(t, "spiffe://example.org/idend", attesttest.X509Options{})
	api := attesttest.StartWorkloadAPI(t, own, append([]*attesttest.CA{ca}, others...)...)

	b, err := StartBundles(api.Addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	return b
}

func chainDER(svid *x509svid.SVID) [][]byte {
	var der [][]byte
	for _, c := range svid.Certificates {
		der = append(der, c.Raw)
	}
	return der
}

// prove answers a fresh challenge of v with key.
func prove(t *testing.T, v *Verifier, key crypto.Signer) (challenge, sig []byte) {
	t.Helper()
	challenge = v.NewChallenge()
	sig, err := SignChallenge(key, challenge)
	if err != nil {
		t.Fatal(err)
	}
	return challenge, sig
}

// checkRefused checks that err is want and none of the other refusals.
func checkRefused(t *testing.T, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("got %v, want %v", err, want)
	}
	for _, other := range svidErrors {
		if other != want && errors.Is(err, other) {
			t.Errorf("error %q is also %q", err, other)
		}
	}
}

func TestVerifyX509(t *testing.T) {
	ca := attesttest.NewCA(t, "example.org")
	evil := attesttest.NewCA(t, "evil.org")
	impostor := attesttest.NewCA(t, "example.org") // same name, not in the bundle
	v := NewVerifier(testBundles(t, ca), VerifierConfig{})

	valid := ca.IssueX509(t, agentID, attesttest.X509Options{})
	c, sig := prove(t, v, valid.PrivateKey)
	id, err := v.VerifyX509(chainDER(valid), c, sig)
	if err != nil {
		t.Fatal(err)
	}
	if id.SPIFFEID != agentID || id.Strength != StrengthSVID {
		t.Errorf("identity %+v", id)
	}
	if !id.Expires.Equal(valid.Certificates[0].NotAfter) {
		t.Errorf("expires %v, want %v", id.Expires, valid.Certificates[0].NotAfter)
	}

	expired := ca.IssueX509(t, agentID, attesttest.X509Options{
		NotBefore: time.Now().Add(-2 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
	otherTD := evil.IssueX509(t, "spiffe://evil.org/agent", attesttest.X509Options{})
	untrusted := impostor.IssueX509(t, agentID, attesttest.X509Options{})

	tests := []struct {
		name string
		svid *x509svid.SVID
		key  crypto.Signer
		want error
		msg  string
	}{
		{"expired", expired, expired.PrivateKey, ErrExpired, "svid expired"},
		{"wrong trust domain", otherTD, otherTD.PrivateKey, ErrTrustDomain,
			`no trust bundle for "evil.org"`},
		{"untrusted chain", untrusted, untrusted.PrivateKey, ErrUntrusted, "not signed by trust bundle"},
		{"wrong key", valid, newECKey(t), ErrProof, "challenge not signed by the svid's key"},
	}
	msgs := make(map[string]string)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, sig := prove(t, v, tt.key)
			_, err := v.VerifyX509(chainDER(tt.svid), c, sig)
			checkRefused(t, err, tt.want)
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("message %q does not say %q", err, tt.msg)
			}
			if prev, ok := msgs[err.Error()]; ok {
				t.Errorf("same message as %s: %q", prev, err)
			}
			msgs[err.Error()] = tt.name
		})
	}
}

func TestVerifyX509Challenge(t *testing.T) {
	ca := attesttest.NewCA(t, "example.org")
	v := NewVerifier(testBundles(t, ca), VerifierConfig{})
	svid := ca.IssueX509(t, agentID, attesttest.X509Options{})

	c, sig := prove(t, v, svid.PrivateKey)
	if _, err := v.VerifyX509(chainDER(svid), c, sig); err != nil {
		t.Fatal(err)
	}
	_, err := v.VerifyX509(chainDER(svid), c, sig)
	checkRefused(t, err, ErrChallenge)

	// A challenge not issued by this verifier.
	own := make([]byte, ChallengeSize)
	rand.Read(own)
	sig, _ = SignChallenge(svid.PrivateKey, own)
	_, err = v.VerifyX509(chainDER(svid), own, sig)
	checkRefused(t, err, ErrChallenge)

	// A challenge redeemed after ChallengeTTL.
	c, sig = prove(t, v, svid.PrivateKey)
	v.challenges.now = func() time.Time { return time.Now().Add(ChallengeTTL) }
	_, err = v.VerifyX509(chainDER(svid), c, sig)
	checkRefused(t, err, ErrChallenge)
}

func TestVerifyX509Malformed(t *testing.T) {
	ca := attesttest.NewCA(t, "example.org")
	v := NewVerifier(testBundles(t, ca), VerifierConfig{})

	c, _ := prove(t, v, newECKey(t))
	_, err := v.VerifyX509([][]byte{[]byte("not a certificate")}, c, nil)
	checkRefused(t, err, ErrInvalidSVID)

	c, _ = prove(t, v, newECKey(t))
	_, err = v.VerifyX509(nil, c, nil)
	checkRefused(t, err, ErrInvalidSVID)
}

func TestVerifyTrustDomainsConfigured(t *testing.T) {
	ca := attesttest.NewCA(t, "example.org")
	partner := attesttest.NewCA(t, "partner.org")
	bundles := testBundles(t, ca, partner)
	svid := partner.IssueX509(t, "spiffe://partner.org/agent", attesttest.X509Options{})

	// Any trust domain with a bundle is accepted by default.
	v := NewVerifier(bundles, VerifierConfig{})
	c, sig := prove(t, v, svid.PrivateKey)
	if _, err := v.VerifyX509(chainDER(svid), c, sig); err != nil {
		t.Fatalf("federated svid refused: %v", err)
	}

	v = NewVerifier(bundles, VerifierConfig{
		TrustDomains: []spiffeid.TrustDomain{ca.TrustDomain}})
	c, sig = prove(t, v, svid.PrivateKey)
	_, err := v.VerifyX509(chainDER(svid), c, sig)
	checkRefused(t, err, ErrTrustDomain)

	hour := time.Now().Add(time.Hour)
	token := partner.SignJWT(t, "spiffe://partner.org/agent", []string{"idend"}, hour)
	_, err = v.VerifyJWT(token)
	checkRefused(t, err, ErrTrustDomain)
}

func TestVerifyJWT(t *testing.T) {
	ca := attesttest.NewCA(t, "example.org")
	evil := attesttest.NewCA(t, "evil.org")
	v := NewVerifier(testBundles(t, ca), VerifierConfig{})
	hour := time.Now().Add(time.Hour)

	id, err := v.VerifyJWT(ca.SignJWT(t, agentID, []string{"other", "idend"}, hour))
	if err != nil {
		t.Fatal(err)
	}
	if id.SPIFFEID != agentID || id.Strength != StrengthSVID {
		t.Errorf("identity %+v", id)
	}

	tests := []struct {
		name  string
		token string
		want  error
		msg   string
	}{
		{"wrong audience", ca.SignJWT(t, agentID, []string{"billing"}, hour),
			ErrAudience, `want "idend", token for ["billing"]`},
		{"expired", ca.SignJWT(t, agentID, []string{"idend"}, time.Now().Add(-2*time.Minute)),
			ErrExpired, "svid expired"},
		{"wrong trust domain", evil.SignJWT(t, "spiffe://evil.org/agent", []string{"idend"}, hour),
			ErrTrustDomain, `no trust bundle for "evil.org"`},
		{"wrong key", ca.SignJWTWith(t, newECKey(t), agentID, []string{"idend"}),
			ErrUntrusted, "not signed by trust bundle"},
		{"not a jwt", "e30.e30.", ErrInvalidSVID, "malformed svid"},
	}
	msgs := make(map[string]string)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := v.VerifyJWT(tt.token)
			checkRefused(t, err, tt.want)
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("message %q does not say %q", err, tt.msg)
			}
			if prev, ok := msgs[err.Error()]; ok {
				t.Errorf("same message as %s: %q", prev, err)
			}
			msgs[err.Error()] = tt.name
		})
	}
}

func TestVerifyJWTAudienceConfigured(t *testing.T) {
	ca := attesttest.NewCA(t, "example.org")
	v := NewVerifier(testBundles(t, ca), VerifierConfig{Audience: "idend-node-7"})

	_, err := v.VerifyJWT(ca.SignJWT(t, agentID, []string{"idend"}, time.Now().Add(time.Hour)))
	checkRefused(t, err, ErrAudience)

	_, err = v.VerifyJWT(ca.SignJWT(t, agentID, []string{"idend-node-7"}, time.Now().Add(time.Hour)))
	if err != nil {
		t.Fatal(err)
	}
}

func TestSignChallengeKeyTypes(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string]crypto.Signer{"ecdsa": newECKey(t), "rsa": rsaKey, "ed25519": edKey}

	challenge := make([]byte, ChallengeSize)
	rand.Read(challenge)
	for name, key := range keys {
		sig, err := SignChallenge(key, challenge)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if err := verifyChallenge(key.Public(), challenge, sig); err != nil {
			t.Errorf("%s: own signature refused: %v", name, err)
		}
		err = verifyChallenge(key.Public(), ChallengeDigest(challenge), sig)
		if !errors.Is(err, ErrProof) {
			t.Errorf("%s: signature over another challenge accepted: %v", name, err)
		}
		for other, okey := range keys {
			if other != name && verifyChallenge(okey.Public(), challenge, sig) == nil {
				t.Errorf("%s signature accepted for %s key", name, other)
			}
		}
	}
}

func TestVerifyX509Ed25519(t *testing.T) {
	ca := attesttest.NewCA(t, "example.org")
	v := NewVerifier(testBundles(t, ca), VerifierConfig{})
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	svid := ca.IssueX509(t, agentID, attesttest.X509Options{Key: key})

	c, sig := prove(t, v, key)
	if _, err := v.VerifyX509(chainDER(svid), c, sig); err != nil {
		t.Fatal(err)
	}
	if _, ok := svid.Certificates[0].PublicKey.(ed25519.PublicKey); !ok {
		t.Fatalf("leaf key %T", svid.Certificates[0].PublicKey)
	}
}

func TestCheckConsistent(t *testing.T) {
	svid := spiffeid.RequireFromString(agentID)
	same := spiffeid.RequireFromString(agentID)
	other := spiffeid.RequireFromString("spiffe://example.org/agent/billing")

	if err := CheckConsistent(svid, nil); err != nil {
		t.Errorf("no attested identity: %v", err)
	}
	if err := CheckConsistent(svid, &same); err != nil {
		t.Errorf("same identity: %v", err)
	}
	err := CheckConsistent(svid, &other)
	if !errors.Is(err, ErrMismatch) || !strings.Contains(err.Error(), agentID) ||
		!strings.Contains(err.Error(), other.String()) {
		t.Errorf("contradiction: %v", err)
	}
}

func newECKey(t *testing.T) crypto.Signer {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}
