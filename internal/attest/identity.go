package attest

import "time"

// Strength says how an identity is known, from strongest to weakest.
type Strength string

// Identity strengths, as recorded with every session and action.
const (
	// StrengthSVID: an X.509- or JWT-SVID verified against the trust
	// bundle.
	StrengthSVID Strength = "svid"
	// StrengthAttested: kernel-attested process facts mapped to a SPIFFE
	// ID by a registration entry.
	StrengthAttested Strength = "attested"
	// StrengthBearer: only a keyed fingerprint of a bearer credential.
	StrengthBearer Strength = "bearer"
)

// String returns the strength as written in recordings and JSON.
func (s Strength) String() string {
	return string(s)
}

// Identity is who a session acts as and how strongly that is known.
//
// SPIFFEID is empty for bearer identities; Fingerprint is set only for them.
// Facts, when set, are the kernel-attested facts of the launching process.
type Identity struct {
	SPIFFEID    string    `json:"spiffe_id,omitempty"`
	Strength    Strength  `json:"strength"`
	Fingerprint string    `json:"fingerprint,omitempty"`
	Expires     time.Time `json:"expires,omitzero"`
	Facts       *Facts    `json:"facts,omitempty"`
}
