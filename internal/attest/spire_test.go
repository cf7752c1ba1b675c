package attest

import (
	"context"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/idend/idend/internal/attest/spiretest"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// TestSPIREEndToEnd verifies SVIDs issued by a real SPIRE server through a
// real agent, with the trust bundles idend keeps from that agent.
func TestSPIREEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a SPIRE server and agent")
	}
	spire := spiretest.Start(t, spiretest.BinDir(t))

	bundles, err := StartBundles(spire.AgentAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer bundles.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := bundles.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}

	v := NewVerifier(bundles, VerifierConfig{
		TrustDomains: []spiffeid.TrustDomain{spire.TrustDomain}})
	client, err := workloadapi.New(ctx, workloadapi.WithAddr(spire.AgentAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()

	t.Run("x509-svid", func(t *testing.T) { checkSPIREX509(t, ctx, v, client, spire) })
	t.Run("jwt-svid", func(t *testing.T) { checkSPIREJWT(t, ctx, v, client, spire) })
	t.Run("attested", func(t *testing.T) { checkSPIREAttested(t, spire) })
}

func checkSPIREX509(t *testing.T, ctx context.Context, v *Verifier, c *workloadapi.Client,
	spire *spiretest.SPIRE) {
	svid, err := c.FetchX509SVID(ctx)
	if err != nil {
		t.Fatal(err)
	}

	challenge := v.NewChallenge()
	sig, err := SignChallenge(svid.PrivateKey, challenge)
	if err != nil {
		t.Fatal(err)
	}
	id, err := v.VerifyX509(chainDER(svid), challenge, sig)
	if err != nil {
		t.Fatal(err)
	}
	if id.Strength != StrengthSVID || id.SPIFFEID != spire.WorkloadID.String() {
		t.Errorf("identity %+v, want svid %s", id, spire.WorkloadID)
	}

	// The same SVID presented with a key SPIRE never issued for it.
	challenge = v.NewChallenge()
	sig, _ = SignChallenge(newECKey(t), challenge)
	_, err = v.VerifyX509(chainDER(svid), challenge, sig)
	checkRefused(t, err, ErrProof)
}

func checkSPIREJWT(t *testing.T, ctx context.Context, v *Verifier, c *workloadapi.Client,
	spire *spiretest.SPIRE) {
	svid, err := c.FetchJWTSVID(ctx, jwtsvid.Params{Audience: DefaultAudience})
	if err != nil {
		t.Fatal(err)
	}
	id, err := v.VerifyJWT(svid.Marshal())
	if err != nil {
		t.Fatal(err)
	}
	if id.Strength != StrengthSVID || id.SPIFFEID != spire.WorkloadID.String() {
		t.Errorf("identity %+v, want svid %s", id, spire.WorkloadID)
	}

	other, err := c.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "billing"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = v.VerifyJWT(other.Marshal())
	checkRefused(t, err, ErrAudience)
}

// checkSPIREAttested checks that idend's own attestation, with the entry
// SPIRE was given, names the SVID's SPIFFE ID: the two agree.
func checkSPIREAttested(t *testing.T, spire *spiretest.SPIRE) {
	a := newTestAttester(t, AttesterConfig{})
	facts, err := a.Attest(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}

	r, err := NewRegistry([]Entry{{
		SPIFFEID:  spire.WorkloadID.String(),
		Selectors: []string{"unix:uid:" + strconv.Itoa(os.Geteuid())},
	}})
	if err != nil {
		t.Fatal(err)
	}
	attested, err := r.Match(facts)
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckConsistent(spire.WorkloadID, &attested); err != nil {
		t.Error(err)
	}
}
