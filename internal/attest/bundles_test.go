package attest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/idend/idend/internal/attest/attesttest"
)

func TestBundlesAgentDown(t *testing.T) {
	ca := attesttest.NewCA(t, "example.org")
	own := ca.IssueX509(t, "spiffe://example.org/idend", attesttest.X509Options{})
	api := attesttest.NewWorkloadAPI(t, own, ca) // not listening yet

	start := time.Now()
	b, err := StartBundles(api.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if d := time.Since(start); d > time.Second {
		t.Errorf("StartBundles blocked for %v", d)
	}

	if _, err := b.GetX509BundleForTrustDomain(ca.TrustDomain); !errors.Is(err, ErrNotReady) {
		t.Errorf("lookup before agent: got %v, want ErrNotReady", err)
	}
	waitFor(t, "status error", func() bool { return b.Status().Err != nil })
	if st := b.Status(); st.Ready || st.Addr != api.Addr {
		t.Errorf("status %+v", st)
	}

	// The agent comes up: bundles arrive without a restart.
	api.Serve(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := b.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	if st := b.Status(); !st.Ready || st.Err != nil || st.Updated.IsZero() {
		t.Errorf("status once ready %+v", st)
	}
	if _, err := b.GetJWTBundleForTrustDomain(ca.TrustDomain); err != nil {
		t.Errorf("jwt bundle: %v", err)
	}
}

func TestBundlesRotation(t *testing.T) {
	ca := attesttest.NewCA(t, "example.org")
	next := attesttest.NewCA(t, "example.org")
	own := ca.IssueX509(t, "spiffe://example.org/idend", attesttest.X509Options{})
	api := attesttest.StartWorkloadAPI(t, own, ca)

	b, err := StartBundles(api.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}

	v := NewVerifier(b, VerifierConfig{})
	svid := next.IssueX509(t, agentID, attesttest.X509Options{})
	c, sig := prove(t, v, svid.PrivateKey)
	_, err = v.VerifyX509(chainDER(svid), c, sig)
	checkRefused(t, err, ErrUntrusted)

	// The trust domain moves to a new authority; the verifier follows.
	api.SetCAs(next)
	waitFor(t, "rotated bundle", func() bool {
		bundle, err := b.GetX509BundleForTrustDomain(ca.TrustDomain)
		return err == nil && bundle.HasX509Authority(next.Cert)
	})
	c, sig = prove(t, v, svid.PrivateKey)
	if _, err := v.VerifyX509(chainDER(svid), c, sig); err != nil {
		t.Fatalf("svid of the new authority refused: %v", err)
	}
	token := next.SignJWT(t, agentID, []string{"idend"}, time.Now().Add(time.Hour))
	if _, err := v.VerifyJWT(token); err != nil {
		t.Fatalf("jwt of the new authority refused: %v", err)
	}
}

func TestBundlesBadAddress(t *testing.T) {
	for _, addr := range []string{"", "relative/agent.sock", "http://127.0.0.1:80", "unix://"} {
		if b, err := StartBundles(addr); err == nil {
			b.Close()
			t.Errorf("address %q accepted", addr)
		}
	}
}

func TestBundlesClose(t *testing.T) {
	b, err := StartBundles("unix://" + t.TempDir() + "/absent.sock")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		b.Close()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close blocked while connecting")
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}
