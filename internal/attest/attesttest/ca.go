// Package attesttest provides what tests of SVID handling need without a
// SPIRE deployment: certificate authorities that issue X.509- and
// JWT-SVIDs, and a SPIFFE Workload API served in-process on a unix socket.
package attesttest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net/url"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// CA is the authority of one trust domain: a self-signed X.509 root and a
// JWT signing key. It is not safe for concurrent use.
type CA struct {
	TrustDomain spiffeid.TrustDomain
	Cert        *x509.Certificate
	Key         crypto.Signer
	JWTKey      crypto.Signer
	JWTKeyID    string
}

// NewCA returns a CA of the trust domain td ("example.org").
func NewCA(t testing.TB, td string) *CA {
	t.Helper()
	trustDomain := spiffeid.RequireTrustDomainFromString(td)
	key := newKey(t)

	tmpl := &x509.Certificate{
		SerialNumber:          serial(t),
		Subject:               pkix.Name{Organization: []string{"idend test"}, CommonName: td},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		URIs:                  []*url.URL{trustDomain.ID().URL()},
	}
	cert := createCert(t, tmpl, tmpl, key.Public(), key)

	return &CA{
		TrustDomain: trustDomain,
		Cert:        cert,
		Key:         key,
		JWTKey:      newKey(t),
		JWTKeyID:    rand.Text(),
	}
}

// X509Options shape an X.509-SVID. Zero fields take defaults: valid from a
// minute ago for an hour, with a new P-256 key.
type X509Options struct {
	NotBefore, NotAfter time.Time
	Key                 crypto.Signer
}

// IssueX509 returns an X.509-SVID for the SPIFFE ID id signed by ca.
func (ca *CA) IssueX509(t testing.TB, id string, opts X509Options) *x509svid.SVID {
	t.Helper()
	spiffeID := spiffeid.RequireFromString(id)
	if opts.Key == nil {
		opts.Key = newKey(t)
	}
	if opts.NotBefore.IsZero() {
		opts.NotBefore = time.Now().Add(-time.Minute)
	}
	if opts.NotAfter.IsZero() {
		opts.NotAfter = time.Now().Add(time.Hour)
	}

	tmpl := &x509.Certificate{
		SerialNumber: serial(t),
		NotBefore:    opts.NotBefore,
		NotAfter:     opts.NotAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		URIs:         []*url.URL{spiffeID.URL()},
	}
	cert := createCert(t, tmpl, ca.Cert, opts.Key.Public(), ca.Key)

	return &x509svid.SVID{ID: spiffeID, Certificates: []*x509.Certificate{cert}, PrivateKey: opts.Key}
}

// SignJWT returns a JWT-SVID for id with the given audience and expiry,
// signed with the CA's JWT key.
func (ca *CA) SignJWT(t testing.TB, id string, audience []string, expiry time.Time) string {
	t.Helper()
	return signJWT(t, ca.JWTKey, ca.JWTKeyID, id, audience, expiry)
}

// SignJWTWith is SignJWT with another key claiming the CA's key id: a
// forgery.
func (ca *CA) SignJWTWith(t testing.TB, key crypto.Signer, id string, audience []string) string {
	t.Helper()
	return signJWT(t, key, ca.JWTKeyID, id, audience, time.Now().Add(time.Hour))
}

// JWTBundle returns the JWT bundle of the CA.
func (ca *CA) JWTBundle() *jwtbundle.Bundle {
	return jwtbundle.FromJWTAuthorities(ca.TrustDomain,
		map[string]crypto.PublicKey{ca.JWTKeyID: ca.JWTKey.Public()})
}

func signJWT(t testing.TB, key crypto.Signer, kid, id string, aud []string, exp time.Time) string {
	t.Helper()
	signer, err := jose.NewSigner(
		jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: key, KeyID: kid}},
		(&jose.SignerOptions{}).WithType("JWT"),
	)
	if err != nil {
		t.Fatal(err)
	}

	claims := jwt.Claims{
		Subject:  id,
		Audience: aud,
		Expiry:   jwt.NewNumericDate(exp),
		IssuedAt: jwt.NewNumericDate(time.Now().Add(-time.Minute)),
	}
	token, err := jwt.Signed(signer).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return token
}

func newKey(t testing.TB) crypto.Signer {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func serial(t testing.TB) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func createCert(t testing.TB, tmpl, parent *x509.Certificate, pub crypto.PublicKey,
	key crypto.Signer) *x509.Certificate {
	t.Helper()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}
