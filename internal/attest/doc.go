// Package attest owns the identity of a session: the facts the kernel reports
// about a launching process, the registration entries that map those facts to
// a SPIFFE ID, the verification of X.509- and JWT-SVIDs against trust bundles
// kept current from a SPIFFE Workload API, and the keyed fingerprints that
// stand in for bearer credentials.
//
// Every identity carries its Strength: svid (verified against the trust
// bundle), attested (kernel facts matched by a registration entry) or bearer
// (only a fingerprint of a copyable secret).
package attest
