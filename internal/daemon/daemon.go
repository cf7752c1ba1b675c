package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"

	"github.com/idend/idend/internal/api/apipb"
	"github.com/idend/idend/internal/attest"
	"github.com/idend/idend/internal/cgroup"
	"github.com/idend/idend/internal/events"
	"github.com/idend/idend/internal/events/recordpb"
	"github.com/idend/idend/internal/intent"
	"github.com/idend/idend/internal/loader"
)

// lookupHost resolves the host names of intents; tests replace it with a
// resolver of their own.
var lookupHost = defaultLookupHost

// Version is idend's version, set at build time.
var Version = "0.1.0-dev"

// Daemon is a running idend daemon.
type Daemon struct {
	cfg   Config
	log   *slog.Logger
	mount string // cgroup2 mount
	m     *manager
	p     *pipeline
}

// Run runs the daemon until ctx ends: it loads or adopts the kernel
// programs, restores sessions, records, and serves the API. Enforcement
// stays pinned after it returns.
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	if err := cfg.validate(); err != nil {
		return err
	}
	d := &Daemon{cfg: cfg, log: log}

	mount, err := cgroup.Mount()
	if err != nil {
		return err
	}
	d.mount = mount
	root := filepath.Join(mount, cfg.CgroupRoot)
	if err := os.MkdirAll(root, 0o755); err != nil {
		return fmt.Errorf("create cgroup root: %w", err)
	}
	// Top-level sessions get pids.max where the pids controller is in
	// cgroup v2 (not when a cgroup v1 hierarchy holds it).
	pids := cfg.Limits.MaxProcesses > 0
	if pids {
		if err := cgroup.EnableControllerBelow(mount, root, "pids"); err != nil {
			log.Warn("sessions' process counts not bounded", "err", err)
			pids = false
		}
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return fmt.Errorf("create state directory: %w", err)
	}

	l, err := loader.Open(loader.Options{
		BPFFSDir:        cfg.BPFFSDir,
		CgroupRoot:      root,
		MaxPrefixes:     cfg.Limits.MaxPrefixes,
		MaxPaths:        cfg.Limits.MaxPaths,
		EventsRingBytes: uint32(cfg.Limits.EventsRingBytes),
	})
	if err != nil {
		return err
	}
	defer l.Close()
	if r := l.Replaced(); len(r) > 0 {
		log.Warn("replaced pinned state of another layout version", "layouts", r,
			"layout", loader.LayoutVersion)
	}
	log.Info("programs attached", "cgroup_root", root, "bpffs", cfg.BPFFSDir,
		"unix_sockets", l.Features().UnixHooks, "bpf_lsm", l.Features().LSM)

	m, cleanup, err := d.newManager(ctx, root, l)
	if err != nil {
		return err
	}
	defer cleanup()
	d.m = m
	m.pidsMax = pids
	d.p = newPipeline(m)
	if err := m.restore(); err != nil {
		return err
	}
	m.recordExisting()
	return d.serve(ctx)
}

// newManager opens the recorder and the identity sources.
func (d *Daemon) newManager(ctx context.Context, root string, l *loader.Loader) (*manager, func(), error) {
	cfg := d.cfg
	fsync, err := events.ParseFsyncPolicy(cfg.Recording.Fsync)
	if err != nil {
		return nil, nil, err
	}
	rec, err := events.OpenRecorder(filepath.Join(cfg.StateDir, "recordings"), events.RecorderOptions{
		Fsync:           fsync,
		MaxSegmentBytes: cfg.Recording.MaxSegmentBytes,
		MaxTotalBytes:   cfg.Recording.MaxTotalBytes,
	})
	if err != nil {
		return nil, nil, err
	}
	if r := rec.Recovery(); r != nil {
		d.log.Warn("recording damaged at its end; sealed with a gap record",
			"file", r.File, "offset", r.Offset, "bytes", r.Bytes, "cut", r.Truncated)
	}
	registry, err := attest.NewRegistry(cfg.Registrations)
	if err != nil {
		rec.Close()
		return nil, nil, err
	}
	attester, err := attest.NewAttester(attest.AttesterConfig{CgroupMount: d.mount})
	if err != nil {
		rec.Close()
		return nil, nil, err
	}
	key, err := attest.LoadOrCreateNodeKey(cfg.StateDir)
	if err != nil {
		rec.Close()
		return nil, nil, err
	}
	m := &manager{
		log: d.log, cfg: cfg, root: root,
		statePath:  filepath.Join(cfg.StateDir, "sessions.json"),
		loader:     l,
		rec:        rec,
		registry:   registry,
		attester:   attester,
		nodeKey:    key,
		limits:     intent.Limits{MaxPrefixes: cfg.Limits.MaxPrefixes, MaxUnix: cfg.Limits.MaxPaths, MaxExec: cfg.Limits.MaxPaths},
		lookupHost: lookupHost,
		sessions:   make(map[string]*Session),
		byNum:      make(map[uint64]*Session),
	}
	m.closed, _ = lru.New[string, *Session](1024)
	var bundles *attest.Bundles
	if cfg.SPIFFE.AgentSocket != "" {
		bundles, err = attest.StartBundles(cfg.SPIFFE.AgentSocket)
		if err != nil {
			rec.Close()
			return nil, nil, err
		}
		m.verifier = attest.NewVerifier(bundles, attest.VerifierConfig{Audience: cfg.SPIFFE.Audience})
	}
	_, err = rec.Append(&recordpb.Record{Body: &recordpb.Record_DaemonStart{DaemonStart: &recordpb.DaemonStart{
		Version: Version, Kernel: kernelRelease(), Enforcement: enforced(l.Features()), Hostname: hostname()}}})
	if err != nil {
		rec.Close()
		return nil, nil, err
	}
	cleanup := func() {
		if bundles != nil {
			bundles.Close()
		}
		if err := rec.Close(); err != nil {
			d.log.Error("close recording", "err", err)
		}
	}
	return m, cleanup, nil
}

// serve runs the pipeline, the expiry loop and the API until ctx ends.
func (d *Daemon) serve(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	evRing, denRing, err := d.m.loader.Rings()
	if err != nil {
		return err
	}
	ln, err := listen(d.cfg.Socket)
	if err != nil {
		evRing.Close()
		denRing.Close()
		return err
	}
	srv := grpc.NewServer(grpc.Creds(peerCreds{}))
	apipb.RegisterIdendServer(srv, &server{d: d})

	var wg sync.WaitGroup
	errs := make(chan error, 4)
	wg.Go(func() { errs <- d.p.readRing(ctx, denRing) })
	wg.Go(func() { errs <- d.p.readRing(ctx, evRing) })
	wg.Go(func() { d.p.pollLosses(ctx) })
	wg.Go(func() { d.expireLoop(ctx) })
	wg.Go(func() { d.refreshLoop(ctx) })
	wg.Go(func() { errs <- srv.Serve(ln) })
	stopMetrics := d.serveMetrics()
	d.log.Info("listening", "socket", d.cfg.Socket)

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errs:
	}
	d.log.Info("shutting down", "reason", reason(ctx, runErr))
	cancel()
	srv.Stop()
	stopMetrics()
	evRing.Close()
	denRing.Close()
	wg.Wait()
	os.Remove(d.cfg.Socket)
	d.m.rec.Append(&recordpb.Record{Body: &recordpb.Record_DaemonStop{DaemonStop: &recordpb.DaemonStop{
		Reason: reason(ctx, runErr)}}})
	if errors.Is(runErr, grpc.ErrServerStopped) {
		runErr = nil
	}
	return runErr
}

func reason(ctx context.Context, err error) string {
	if err != nil {
		return err.Error()
	}
	if ctx.Err() != nil {
		return "signal"
	}
	return "stopped"
}

func (d *Daemon) expireLoop(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			d.m.expire(now)
		}
	}
}

// listen creates the API socket. It is world-connectable: who may do what
// is decided per call from the caller's kernel credentials, and processes
// in sessions, whatever their user, may open sub-sessions.
func listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("create socket directory: %w", err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove stale socket: %w", err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o666); err != nil {
		ln.Close()
		return nil, fmt.Errorf("set socket permissions: %w", err)
	}
	return ln, nil
}

func (d *Daemon) serveMetrics() func() {
	if d.cfg.MetricsAddress == "" {
		return func() {}
	}
	srv := &http.Server{Addr: d.cfg.MetricsAddress, Handler: metricsHandler(d), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			d.log.Error("serve metrics", "err", err)
		}
	}()
	d.log.Info("serving metrics", "address", d.cfg.MetricsAddress)
	return func() { srv.Close() }
}

// Cleanup removes everything the daemon with cfg left in the kernel and
// the cgroup tree: pinned programs and maps, and the session cgroups with
// their processes. Recordings stay.
func Cleanup(cfg Config) error {
	mount, err := cgroup.Mount()
	if err != nil {
		return err
	}
	root := filepath.Join(mount, cfg.CgroupRoot)
	errs := []error{cgroup.Kill(root, 5*time.Second), loader.Cleanup(cfg.BPFFSDir)}
	errs = append(errs, os.Remove(filepath.Join(cfg.StateDir, "sessions.json")))
	if errors.Is(errs[2], os.ErrNotExist) {
		errs[2] = nil
	}
	return errors.Join(errs...)
}

// sessionByName returns an open session, or one closed recently.
func (m *manager) sessionByName(id string) *Session {
	if id == "" {
		return nil
	}
	m.mu.RLock()
	s := m.sessions[id]
	m.mu.RUnlock()
	if s == nil {
		s, _ = m.closed.Get(id)
	}
	return s
}

// sessionOfCgroup returns the session whose cgroup is dir, or nil.
func (m *manager) sessionOfCgroup(dir string) *Session {
	m.mu.RLock()
	defer m.mu.RUnlock()
	for _, s := range m.sessions {
		if s.Cgroup == dir {
			return s
		}
	}
	return nil
}

func spiffeID(s string) (spiffeid.ID, error) {
	return spiffeid.FromString(s)
}

func kernelRelease() string {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return ""
	}
	return unix.ByteSliceToString(u.Release[:])
}

func hostname() string {
	h, _ := os.Hostname()
	return h
}

// enforced lists the features the daemon enforces on this kernel.
func enforced(f loader.Features) []string {
	out := []string{"connect", "sendmsg", "raw_sockets", "exec_kill"}
	if f.UnixHooks {
		out = append(out, "unix_sockets")
	}
	if f.LSM {
		out = append(out, "exec_lsm")
	}
	return strings.Fields(strings.Join(out, " "))
}
