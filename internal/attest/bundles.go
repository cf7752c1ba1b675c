package attest

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// BundleSource supplies the X.509 and JWT trust bundles SVIDs are verified
// against. *Bundles, *workloadapi.BundleSource and *spiffebundle.Set
// implement it.
type BundleSource interface {
	x509bundle.Source
	jwtbundle.Source
}

// retryDelay is the pause before the connection to the Workload API is
// attempted again after the client gave up on it.
const retryDelay = 5 * time.Second

// BundleStatus reports the state of a Bundles.
type BundleStatus struct {
	// Addr is the Workload API address.
	Addr string
	// Ready is true once a first set of bundles has been received. The
	// last bundles received stay in use when the agent goes away.
	Ready bool
	// Updated is when bundles were last received.
	Updated time.Time
	// Err is the last error reported by the Workload API client, nil
	// when none was reported since the last update.
	Err error
}

// Bundles keeps the trust bundles current from a SPIFFE Workload API. It
// connects in the background and never blocks its creator: until the first
// bundles arrive, lookups fail with ErrNotReady and Status says why. It is
// safe for concurrent use; Close stops it.
type Bundles struct {
	addr   string
	cancel context.CancelFunc
	done   chan struct{}
	ready  chan struct{}

	mu      sync.Mutex
	source  *workloadapi.BundleSource
	updated time.Time
	lastErr error
}

// StartBundles validates addr ("unix:///path/to/agent.sock", or a plain
// absolute socket path) and starts watching the Workload API there.
func StartBundles(addr string) (*Bundles, error) {
	if strings.HasPrefix(addr, "/") {
		addr = "unix://" + addr
	}
	if err := workloadapi.ValidateAddress(addr); err != nil {
		return nil, fmt.Errorf("workload api address %q: %w", addr, err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	b := &Bundles{
		addr:   addr,
		cancel: cancel,
		done:   make(chan struct{}),
		ready:  make(chan struct{}),
	}
	go b.run(ctx)
	return b, nil
}

// run connects to the Workload API until it succeeds or ctx is done, then
// records every update.
func (b *Bundles) run(ctx context.Context) {
	defer close(b.done)

	src := b.connect(ctx)
	if src == nil {
		return
	}
	defer src.Close()

	b.setSource(src)
	for {
		select {
		case <-ctx.Done():
			return
		case <-src.Updated():
			b.setUpdated()
		}
	}
}

// connect opens a BundleSource, retrying until it receives bundles or ctx
// is done (nil).
func (b *Bundles) connect(ctx context.Context) *workloadapi.BundleSource {
	opt := workloadapi.WithClientOptions(
		workloadapi.WithAddr(b.addr),
		workloadapi.WithLogger(statusLogger{b}),
	)
	for {
		src, err := workloadapi.NewBundleSource(ctx, opt)
		if err == nil {
			return src
		}
		if ctx.Err() != nil {
			return nil
		}
		b.setErr(err)

		select {
		case <-ctx.Done():
			return nil
		case <-time.After(retryDelay):
		}
	}
}

func (b *Bundles) setSource(src *workloadapi.BundleSource) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.source, b.updated, b.lastErr = src, time.Now(), nil
	close(b.ready)
}

func (b *Bundles) setUpdated() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.updated, b.lastErr = time.Now(), nil
}

func (b *Bundles) setErr(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.lastErr = err
}

// Ready returns a channel closed once the first bundles are received.
func (b *Bundles) Ready() <-chan struct{} {
	return b.ready
}

// WaitReady waits until the first bundles are received or ctx is done.
func (b *Bundles) WaitReady(ctx context.Context) error {
	select {
	case <-b.ready:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("wait for trust bundles from %s: %w (last error: %v)",
			b.addr, ctx.Err(), b.Status().Err)
	}
}

// Status returns the current state of the connection and bundles.
func (b *Bundles) Status() BundleStatus {
	b.mu.Lock()
	defer b.mu.Unlock()
	return BundleStatus{
		Addr:    b.addr,
		Ready:   b.source != nil,
		Updated: b.updated,
		Err:     b.lastErr,
	}
}

// GetX509BundleForTrustDomain returns the current X.509 bundle of td. It
// implements x509bundle.Source.
func (b *Bundles) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	src, err := b.current()
	if err != nil {
		return nil, err
	}
	return src.GetX509BundleForTrustDomain(td)
}

// GetJWTBundleForTrustDomain returns the current JWT bundle of td. It
// implements jwtbundle.Source.
func (b *Bundles) GetJWTBundleForTrustDomain(td spiffeid.TrustDomain) (*jwtbundle.Bundle, error) {
	src, err := b.current()
	if err != nil {
		return nil, err
	}
	return src.GetJWTBundleForTrustDomain(td)
}

// current returns the source once it is ready.
func (b *Bundles) current() (*workloadapi.BundleSource, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.source == nil {
		if b.lastErr != nil {
			return nil, fmt.Errorf("%w from %s: %w", ErrNotReady, b.addr, b.lastErr)
		}
		return nil, fmt.Errorf("%w from %s", ErrNotReady, b.addr)
	}
	return b.source, nil
}

// Close stops watching the Workload API and waits for the watcher to end.
// Lookups fail afterwards.
func (b *Bundles) Close() error {
	b.cancel()
	<-b.done
	return nil
}

// statusLogger records the errors the Workload API client reports, so that
// Status can say why no bundles arrive. It writes no log.
type statusLogger struct{ b *Bundles }

func (l statusLogger) Debugf(string, ...any) {}
func (l statusLogger) Infof(string, ...any)  {}
func (l statusLogger) Warnf(string, ...any)  {}

func (l statusLogger) Errorf(format string, args ...any) {
	l.b.setErr(fmt.Errorf(format, args...))
}
