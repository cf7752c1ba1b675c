// Package attest owns the identity of a session: the facts the kernel reports
// about a launching process, the registration entries that map those facts to
// a SPIFFE ID, the verification of X.509- and JWT-SVIDs against trust bundles
// kept current from a SPIFFE Workload API, and the keyed fingerprints that
// stand in for bearer credentials.
//
// Every identity carries its Strength: svid (verified against the trust
// bundle), attested (kernel facts matched by a registration entry) or bearer
// (only a fingerprint of a copyable secret).
//
// Opening a session with an X.509-SVID takes one round trip: the daemon
// hands the launcher a challenge from Verifier.NewChallenge, the launcher
// answers with its SVID chain and SignChallenge's signature made with the
// SVID key, and Verifier.VerifyX509 checks both. The SVID's SPIFFE ID must
// then agree with the registry's match for the launching process
// (CheckConsistent). Executables change on exec: attest again after each.
package attest
