package attesttest

import (
	"bytes"
	"crypto/x509"
	"net"
	"path/filepath"
	"sync"
	"testing"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// WorkloadAPI is a SPIFFE Workload API served on a unix socket in a test's
// temporary directory. It streams one X.509-SVID with the bundles of its
// CAs, and their JWT bundles; SetCAs pushes new bundles to every watcher.
// It is safe for concurrent use and stops at the end of the test.
type WorkloadAPI struct {
	workload.UnimplementedSpiffeWorkloadAPIServer

	// Addr is the address for go-spiffe clients: "unix:///path".
	Addr string
	// Path is the socket path.
	Path string

	mu      sync.Mutex
	svid    *x509svid.SVID
	cas     []*CA
	changed chan struct{} // closed and replaced on every SetCAs
}

// StartWorkloadAPI serves svid, the caller's own X.509-SVID, with the
// bundles of cas (the first is the SVID's own trust domain).
func StartWorkloadAPI(t testing.TB, svid *x509svid.SVID, cas ...*CA) *WorkloadAPI {
	t.Helper()
	w := NewWorkloadAPI(t, svid, cas...)
	w.Serve(t)
	return w
}

// NewWorkloadAPI returns a WorkloadAPI that does not listen yet; Serve
// starts it.
func NewWorkloadAPI(t testing.TB, svid *x509svid.SVID, cas ...*CA) *WorkloadAPI {
	t.Helper()
	path := filepath.Join(t.TempDir(), "agent.sock")
	return &WorkloadAPI{
		Addr:    "unix://" + path,
		Path:    path,
		svid:    svid,
		cas:     cas,
		changed: make(chan struct{}),
	}
}

// Serve listens on w.Path and serves until the end of the test. It lets a
// test start the server later than its clients.
func (w *WorkloadAPI) Serve(t testing.TB) {
	t.Helper()
	l, err := net.Listen("unix", w.Path)
	if err != nil {
		t.Fatal(err)
	}

	srv := grpc.NewServer()
	workload.RegisterSpiffeWorkloadAPIServer(srv, w)
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(srv.Stop)
}

// SetCAs replaces the CAs whose bundles are served and notifies watchers.
func (w *WorkloadAPI) SetCAs(cas ...*CA) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.cas = cas
	close(w.changed)
	w.changed = make(chan struct{})
}

// snapshot returns the current CAs and the channel closed on their change.
func (w *WorkloadAPI) snapshot() ([]*CA, <-chan struct{}) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.cas, w.changed
}

// FetchX509SVID implements the Workload API.
func (w *WorkloadAPI) FetchX509SVID(_ *workload.X509SVIDRequest,
	stream grpc.ServerStreamingServer[workload.X509SVIDResponse]) error {
	if err := checkHeader(stream); err != nil {
		return err
	}
	return watch(stream, w, w.x509Response)
}

// FetchJWTBundles implements the Workload API.
func (w *WorkloadAPI) FetchJWTBundles(_ *workload.JWTBundlesRequest,
	stream grpc.ServerStreamingServer[workload.JWTBundlesResponse]) error {
	if err := checkHeader(stream); err != nil {
		return err
	}
	return watch(stream, w, jwtResponse)
}

// watch sends a response built from the current CAs, then another on every
// change, until the client goes away.
func watch[R any](stream grpc.ServerStreamingServer[R], w *WorkloadAPI,
	build func([]*CA) (*R, error)) error {
	for {
		cas, changed := w.snapshot()
		resp, err := build(cas)
		if err != nil {
			return status.Error(codes.Internal, err.Error())
		}
		if err := stream.Send(resp); err != nil {
			return err
		}

		select {
		case <-stream.Context().Done():
			return nil
		case <-changed:
		}
	}
}

func (w *WorkloadAPI) x509Response(cas []*CA) (*workload.X509SVIDResponse, error) {
	key, err := x509.MarshalPKCS8PrivateKey(w.svid.PrivateKey)
	if err != nil {
		return nil, err
	}

	resp := &workload.X509SVIDResponse{FederatedBundles: make(map[string][]byte)}
	var own bytes.Buffer
	for _, ca := range cas {
		if ca.TrustDomain == w.svid.ID.TrustDomain() {
			own.Write(ca.Cert.Raw)
			continue
		}
		resp.FederatedBundles[ca.TrustDomain.IDString()] = ca.Cert.Raw
	}

	resp.Svids = []*workload.X509SVID{{
		SpiffeId:    w.svid.ID.String(),
		X509Svid:    concatDER(w.svid.Certificates),
		X509SvidKey: key,
		Bundle:      own.Bytes(),
	}}
	return resp, nil
}

func jwtResponse(cas []*CA) (*workload.JWTBundlesResponse, error) {
	resp := &workload.JWTBundlesResponse{Bundles: make(map[string][]byte)}
	for _, ca := range cas {
		b, err := ca.JWTBundle().Marshal()
		if err != nil {
			return nil, err
		}
		resp.Bundles[ca.TrustDomain.IDString()] = b
	}
	return resp, nil
}

func concatDER(certs []*x509.Certificate) []byte {
	var b bytes.Buffer
	for _, c := range certs {
		b.Write(c.Raw)
	}
	return b.Bytes()
}

// checkHeader enforces the metadata every Workload API client must send.
func checkHeader(stream grpc.ServerStream) error {
	md, _ := metadata.FromIncomingContext(stream.Context())
	if v := md.Get("workload.spiffe.io"); len(v) != 1 || v[0] != "true" {
		return status.Error(codes.InvalidArgument, "security header missing from request")
	}
	return nil
}
