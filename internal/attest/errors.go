package attest

import "errors"

// Errors callers branch on. They are wrapped with context; test with
// errors.Is.
var (
	// ErrProcessGone: the process exited, or the PID now names another
	// process than the one asked about.
	ErrProcessGone = errors.New("process gone")

	// ErrNoEntry: no registration entry matches the attested facts.
	ErrNoEntry = errors.New("no registration entry matches")
	// ErrAmbiguous: registration entries with different SPIFFE IDs match
	// the same facts.
	ErrAmbiguous = errors.New("ambiguous registration entries")
	// ErrInvalidEntry: a registration entry is malformed or conflicts
	// with another.
	ErrInvalidEntry = errors.New("invalid registration entry")

	// ErrNotReady: no trust bundle has been received from the Workload
	// API yet.
	ErrNotReady = errors.New("trust bundles not available yet")
	// ErrInvalidSVID: the SVID cannot be parsed or names no SPIFFE ID.
	ErrInvalidSVID = errors.New("malformed svid")
	// ErrExpired: the SVID is outside its validity period.
	ErrExpired = errors.New("svid expired")
	// ErrTrustDomain: the SVID belongs to a trust domain idend does not
	// trust.
	ErrTrustDomain = errors.New("svid from untrusted trust domain")
	// ErrUntrusted: the SVID does not chain to, or was not signed by, an
	// authority of its trust bundle.
	ErrUntrusted = errors.New("svid not signed by trust bundle")
	// ErrProof: the signature over the challenge was not made with the
	// key of the X.509-SVID.
	ErrProof = errors.New("bad proof of possession")
	// ErrChallenge: the challenge is unknown, already used or expired.
	ErrChallenge = errors.New("unknown, used or expired challenge")
	// ErrAudience: the JWT-SVID was not issued for idend's audience.
	ErrAudience = errors.New("jwt-svid audience mismatch")
	// ErrMismatch: the SVID's SPIFFE ID contradicts the identity attested
	// for the launching process.
	ErrMismatch = errors.New("svid contradicts attested identity")
)
