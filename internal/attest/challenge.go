package attest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"fmt"
	"sync"
	"time"
)

// ChallengeSize is the size in bytes of a proof-of-possession challenge.
const ChallengeSize = 32

// ChallengeTTL is how long an issued challenge can be redeemed.
const ChallengeTTL = 60 * time.Second

// challengeContext separates idend's challenge signatures from signatures
// the same key makes for any other purpose.
const challengeContext = "idend-session-challenge-v1"

// maxPendingChallenges bounds the challenges kept; past it the oldest are
// dropped.
const maxPendingChallenges = 1 << 16

// ChallengeDigest returns the message a launcher signs to prove possession
// of its X.509-SVID key: sha256("idend-session-challenge-v1" || challenge).
func ChallengeDigest(challenge []byte) []byte {
	h := sha256.New()
	h.Write([]byte(challengeContext))
	h.Write(challenge)
	return h.Sum(nil)
}

// SignChallenge signs the ChallengeDigest of challenge with key: ECDSA
// (ASN.1 signature) and RSA-PSS (salt length equal to the hash) over the
// SHA-256 digest, Ed25519 over the digest bytes.
func SignChallenge(key crypto.Signer, challenge []byte) ([]byte, error) {
	digest := ChallengeDigest(challenge)

	var opts crypto.SignerOpts
	switch key.Public().(type) {
	case *ecdsa.PublicKey:
		opts = crypto.SHA256
	case *rsa.PublicKey:
		opts = &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256}
	case ed25519.PublicKey:
		opts = crypto.Hash(0)
	default:
		return nil, fmt.Errorf("sign challenge: key type %T not supported", key.Public())
	}

	sig, err := key.Sign(rand.Reader, digest, opts)
	if err != nil {
		return nil, fmt.Errorf("sign challenge: %w", err)
	}
	return sig, nil
}

// verifyChallenge checks that sig is SignChallenge's signature of
// challenge by the private key of pub.
func verifyChallenge(pub crypto.PublicKey, challenge, sig []byte) error {
	digest := ChallengeDigest(challenge)

	var ok bool
	switch pub := pub.(type) {
	case *ecdsa.PublicKey:
		ok = ecdsa.VerifyASN1(pub, digest, sig)
	case *rsa.PublicKey:
		opts := &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash}
		ok = rsa.VerifyPSS(pub, crypto.SHA256, digest, sig, opts) == nil
	case ed25519.PublicKey:
		ok = ed25519.Verify(pub, digest, sig)
	default:
		return fmt.Errorf("key type %T not supported: %w", pub, ErrProof)
	}

	if !ok {
		return fmt.Errorf("challenge not signed by the svid's key: %w", ErrProof)
	}
	return nil
}

// challengeStore holds issued challenges until they are redeemed or expire.
// It is safe for concurrent use.
type challengeStore struct {
	ttl time.Duration
	now func() time.Time

	mu      sync.Mutex
	pending map[[ChallengeSize]byte]time.Time // challenge to its expiry
	order   [][ChallengeSize]byte             // issue order, oldest first
}

// newChallengeStore returns an empty store of challenges valid for ttl.
func newChallengeStore(ttl time.Duration) *challengeStore {
	return &challengeStore{
		ttl:     ttl,
		now:     time.Now,
		pending: make(map[[ChallengeSize]byte]time.Time),
	}
}

// issue returns a new random challenge.
func (s *challengeStore) issue() []byte {
	var c [ChallengeSize]byte
	rand.Read(c[:])

	s.mu.Lock()
	defer s.mu.Unlock()

	now := s.now()
	s.prune(now)
	s.pending[c] = now.Add(s.ttl)
	s.order = append(s.order, c)
	return c[:]
}

// redeem consumes challenge. It fails with ErrChallenge when the challenge
// was not issued, was already redeemed or has expired.
func (s *challengeStore) redeem(challenge []byte) error {
	if len(challenge) != ChallengeSize {
		return fmt.Errorf("challenge of %d bytes: %w", len(challenge), ErrChallenge)
	}
	c := [ChallengeSize]byte(challenge)

	s.mu.Lock()
	defer s.mu.Unlock()

	expiry, ok := s.pending[c]
	delete(s.pending, c)
	if !ok || !s.now().Before(expiry) {
		return ErrChallenge
	}
	return nil
}

// prune drops expired and redeemed challenges from the head of the issue
// order, and the oldest ones past maxPendingChallenges.
func (s *challengeStore) prune(now time.Time) {
	for len(s.order) > 0 {
		c := s.order[0]
		expiry, ok := s.pending[c]
		if ok && now.Before(expiry) && len(s.pending) < maxPendingChallenges {
			break
		}
		delete(s.pending, c)
		s.order = s.order[1:]
	}
}
