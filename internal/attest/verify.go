package attest

import (
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// DefaultAudience is the audience a JWT-SVID must be issued for.
const DefaultAudience = "idend"

// VerifierConfig configures a Verifier.
type VerifierConfig struct {
	// Audience a JWT-SVID must name; DefaultAudience when empty.
	Audience string
	// TrustDomains, when not empty, are the only trust domains whose
	// SVIDs are accepted. Otherwise any trust domain with a bundle is.
	TrustDomains []spiffeid.TrustDomain
}

// Verifier verifies X.509-SVIDs with proof of possession and JWT-SVIDs
// against the current trust bundles, and issues the challenges the proofs
// sign. It is safe for concurrent use.
type Verifier struct {
	bundles    BundleSource
	audience   string
	domains    []spiffeid.TrustDomain
	challenges *challengeStore
	now        func() time.Time
}

// NewVerifier returns a Verifier of SVIDs against bundles.
func NewVerifier(bundles BundleSource, cfg VerifierConfig) *Verifier {
	if cfg.Audience == "" {
		cfg.Audience = DefaultAudience
	}
	return &Verifier{
		bundles:    bundles,
		audience:   cfg.Audience,
		domains:    slices.Clone(cfg.TrustDomains),
		challenges: newChallengeStore(ChallengeTTL),
		now:        time.Now,
	}
}

// NewChallenge returns a fresh challenge of ChallengeSize random bytes. It
// can be redeemed by VerifyX509 once, within ChallengeTTL.
func (v *Verifier) NewChallenge() []byte {
	return v.challenges.issue()
}

// VerifyX509 verifies an X.509-SVID given as its DER chain, leaf first, and
// the signature of challenge made with SignChallenge by the SVID's key. The
// challenge is consumed whatever the outcome. It returns an identity of
// strength svid, or an error wrapping ErrChallenge, ErrInvalidSVID,
// ErrNotReady, ErrTrustDomain, ErrExpired, ErrUntrusted or ErrProof.
func (v *Verifier) VerifyX509(chainDER [][]byte, challenge, signature []byte) (*Identity, error) {
	if err := v.challenges.redeem(challenge); err != nil {
		return nil, fmt.Errorf("verify x509-svid: %w", err)
	}

	certs, id, err := parseChain(chainDER)
	if err != nil {
		return nil, fmt.Errorf("verify x509-svid: %w", err)
	}

	if err := v.verifyChain(certs, id); err != nil {
		return nil, fmt.Errorf("verify x509-svid %s: %w", id, err)
	}

	if err := verifyChallenge(certs[0].PublicKey, challenge, signature); err != nil {
		return nil, fmt.Errorf("verify x509-svid %s: %w", id, err)
	}

	return &Identity{SPIFFEID: id.String(), Strength: StrengthSVID, Expires: certs[0].NotAfter}, nil
}

// parseChain parses a DER chain and the SPIFFE ID of its leaf.
func parseChain(chainDER [][]byte) ([]*x509.Certificate, spiffeid.ID, error) {
	if len(chainDER) == 0 {
		return nil, spiffeid.ID{}, fmt.Errorf("empty chain: %w", ErrInvalidSVID)
	}

	certs := make([]*x509.Certificate, 0, len(chainDER))
	for i, der := range chainDER {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, spiffeid.ID{}, fmt.Errorf("certificate %d: %w: %w", i, err, ErrInvalidSVID)
		}
		certs = append(certs, c)
	}

	id, err := x509svid.IDFromCert(certs[0])
	if err != nil {
		return nil, spiffeid.ID{}, fmt.Errorf("leaf: %w: %w", err, ErrInvalidSVID)
	}
	return certs, id, nil
}

// verifyChain verifies certs, the chain of the SVID id, against the X.509
// bundle of id's trust domain.
func (v *Verifier) verifyChain(certs []*x509.Certificate, id spiffeid.ID) error {
	if err := v.checkTrustDomain(id.TrustDomain()); err != nil {
		return err
	}
	if _, err := v.bundles.GetX509BundleForTrustDomain(id.TrustDomain()); err != nil {
		return bundleError(id.TrustDomain(), err)
	}

	_, _, err := x509svid.Verify(certs, v.bundles, x509svid.WithTime(v.now()))
	var invalid x509.CertificateInvalidError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		return fmt.Errorf("%w: %w", ErrExpired, err)
	default:
		return fmt.Errorf("%w: %w", ErrUntrusted, err)
	}
}

// checkTrustDomain refuses a trust domain outside the configured ones.
func (v *Verifier) checkTrustDomain(td spiffeid.TrustDomain) error {
	if len(v.domains) == 0 || slices.Contains(v.domains, td) {
		return nil
	}
	return fmt.Errorf("trust domain %q not configured: %w", td, ErrTrustDomain)
}

// bundleError explains why no bundle of td could be found.
func bundleError(td spiffeid.TrustDomain, err error) error {
	if errors.Is(err, ErrNotReady) {
		return err
	}
	return fmt.Errorf("no trust bundle for %q: %w", td, ErrTrustDomain)
}

// VerifyJWT verifies a JWT-SVID against the JWT bundle of its trust domain
// and the configured audience. It returns an identity of strength svid, or
// an error wrapping ErrInvalidSVID, ErrNotReady, ErrTrustDomain,
// ErrUntrusted, ErrExpired or ErrAudience.
func (v *Verifier) VerifyJWT(token string) (*Identity, error) {
	svid, err := jwtsvid.ParseAndValidate(token, v.bundles, []string{v.audience})
	if err != nil {
		return nil, fmt.Errorf("verify jwt-svid: %w", v.jwtError(token, err))
	}

	if err := v.checkTrustDomain(svid.ID.TrustDomain()); err != nil {
		return nil, fmt.Errorf("verify jwt-svid %s: %w", svid.ID, err)
	}
	return &Identity{SPIFFEID: svid.ID.String(), Strength: StrengthSVID, Expires: svid.Expiry}, nil
}

// jwtAlgorithms are the signature algorithms JWT-SVIDs may use.
var jwtAlgorithms = []jose.SignatureAlgorithm{
	jose.RS256, jose.RS384, jose.RS512, jose.ES256, jose.ES384, jose.ES512,
	jose.PS256, jose.PS384, jose.PS512,
}

// jwtError tells why go-spiffe refused token with err. It repeats the
// checks in the order go-spiffe makes them: trust domain, signature, then
// claims; the refusal itself is go-spiffe's.
func (v *Verifier) jwtError(token string, err error) error {
	tok, perr := jwt.ParseSigned(token, jwtAlgorithms)
	if perr != nil {
		return fmt.Errorf("%w: %w", ErrInvalidSVID, err)
	}

	var claims jwt.Claims
	if tok.UnsafeClaimsWithoutVerification(&claims) != nil {
		return fmt.Errorf("%w: %w", ErrInvalidSVID, err)
	}
	id, ierr := spiffeid.FromString(claims.Subject)
	if ierr != nil {
		return fmt.Errorf("%w: %w", ErrInvalidSVID, err)
	}

	if err := v.checkTrustDomain(id.TrustDomain()); err != nil {
		return fmt.Errorf("%s: %w", id, err)
	}
	bundle, berr := v.bundles.GetJWTBundleForTrustDomain(id.TrustDomain())
	if berr != nil {
		return fmt.Errorf("%s: %w", id, bundleError(id.TrustDomain(), berr))
	}

	key, ok := bundle.FindJWTAuthority(tok.Headers[0].KeyID)
	if !ok || tok.Claims(key, &claims) != nil {
		return fmt.Errorf("%s: %w: %w", id, ErrUntrusted, err)
	}

	return fmt.Errorf("%s: %w", id, v.claimsError(claims, err))
}

// claimsError tells which validated claim of a JWT-SVID was refused.
func (v *Verifier) claimsError(claims jwt.Claims, err error) error {
	verr := claims.Validate(jwt.Expected{Time: v.now()})
	switch {
	case errors.Is(verr, jwt.ErrExpired), errors.Is(verr, jwt.ErrNotValidYet),
		errors.Is(verr, jwt.ErrIssuedInTheFuture):
		return fmt.Errorf("%w: %w", ErrExpired, err)
	case !slices.Contains(claims.Audience, v.audience):
		return fmt.Errorf("%w: want %q, token for %q", ErrAudience, v.audience, []string(claims.Audience))
	}
	return fmt.Errorf("%w: %w", ErrInvalidSVID, err)
}

// CheckConsistent refuses an SVID whose SPIFFE ID contradicts the identity
// attested for the launching process. attested is nil when no registration
// entry matched, which contradicts nothing.
func CheckConsistent(svidID spiffeid.ID, attested *spiffeid.ID) error {
	if attested == nil || *attested == svidID {
		return nil
	}
	return fmt.Errorf("svid %s, launching process attested as %s: %w", svidID, *attested, ErrMismatch)
}
