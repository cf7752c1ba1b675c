package daemon

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/idend/idend/internal/api/apipb"
	"github.com/idend/idend/internal/events"
	"github.com/idend/idend/internal/events/recordpb"
	"github.com/idend/idend/internal/testutil"
)

// The test binary doubles as an API client run inside a session: with
// IDEND_TEST_CLIENT set it makes one call and prints the status code.
func TestMain(m *testing.M) {
	if call := os.Getenv("IDEND_TEST_CLIENT"); call != "" {
		fmt.Println(clientCall(call, os.Getenv("IDEND_SOCKET"), os.Args[1:]))
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func clientCall(call, sock string, args []string) string {
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err.Error()
	}
	defer conn.Close()
	c := apipb.NewIdendClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	switch call {
	case "open":
		_, err = c.OpenSession(ctx, &apipb.OpenSessionRequest{Intent: []byte(args[0]), Parent: args[1]})
	case "close":
		_, err = c.CloseSession(ctx, &apipb.CloseSessionRequest{Id: args[0]})
	case "approve":
		_, err = c.Approve(ctx, &apipb.ApproveRequest{Session: args[0], Escalation: args[1]})
	case "show":
		_, err = c.GetSession(ctx, &apipb.GetSessionRequest{Id: args[0]})
	}
	return status.Code(err).String()
}

type testDaemon struct {
	t      *testing.T
	cfg    Config
	cancel context.CancelFunc
	done   chan error
	client apipb.IdendClient
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: loads BPF programs and creates cgroups")
	}
}

func startDaemon(t *testing.T) *testDaemon {
	t.Helper()
	requireRoot(t)
	d := newTestDaemon(t)
	d.start()
	return d
}

// newTestDaemon configures a daemon on paths of its own; cleanup stops it
// and removes what it left.
func newTestDaemon(t *testing.T) *testDaemon {
	t.Helper()
	b := make([]byte, 4)
	rand.Read(b)
	name := "idend-dtest-" + hex.EncodeToString(b)
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	cfg := DefaultConfig()
	cfg.Socket = filepath.Join(dir, "idend.sock")
	cfg.StateDir = filepath.Join(dir, "state")
	cfg.BPFFSDir = filepath.Join("/sys/fs/bpf", name)
	cfg.CgroupRoot = name
	d := &testDaemon{t: t, cfg: cfg}
	t.Cleanup(func() {
		d.stop()
		if err := Cleanup(cfg); err != nil {
			t.Error(err)
		}
	})
	return d
}

func (d *testDaemon) start() {
	ctx, cancel := context.WithCancel(context.Background())
	d.cancel, d.done = cancel, make(chan error, 1)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	go func() { d.done <- Run(ctx, d.cfg, log) }()
	// Loading the programs takes a while under emulation (test/vm).
	for deadline := time.Now().Add(2 * time.Minute); ; {
		if _, err := os.Stat(d.cfg.Socket); err == nil {
			break
		}
		if time.Now().After(deadline) {
			d.t.Fatal("daemon did not listen within 2 minutes")
		}
		select {
		case err := <-d.done:
			d.t.Fatalf("daemon stopped: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	conn, err := grpc.NewClient("unix://"+d.cfg.Socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		d.t.Fatal(err)
	}
	d.t.Cleanup(func() { conn.Close() })
	d.client = apipb.NewIdendClient(conn)
}

func (d *testDaemon) stop() {
	if d.cancel == nil {
		return
	}
	d.cancel()
	if err := <-d.done; err != nil {
		d.t.Errorf("daemon: %v", err)
	}
	d.cancel = nil
}

func (d *testDaemon) open(text, parent string) *apipb.Session {
	d.t.Helper()
	s, err := d.client.OpenSession(context.Background(), &apipb.OpenSessionRequest{
		Intent: []byte(text), IntentFile: "test.yaml", Parent: parent, Credential: []byte("token-123")})
	if err != nil {
		d.t.Fatalf("open session: %v", err)
	}
	return s
}

// runIn runs a program in a session's cgroup.
func runIn(t *testing.T, cgroupDir string, env []string, name string, args ...string) (string, int) {
	t.Helper()
	return testutil.Run(t, cgroupDir, env, name, args...)
}

func tcpListener(t *testing.T) int {
	return testutil.Listen(t, "tcp4", "127.0.0.1:0")
}

const connectProg = `import socket, sys
try:
    socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=3)
    print('ok')
except OSError as e:
    print('errno', e.errno)
`

// A session opened over the API is enforced, recorded with its identity,
// survives a restart, and closing it kills its processes.
func TestSessionLifecycle(t *testing.T) {
	started := time.Now()
	d := startDaemon(t)
	allowed, other := tcpListener(t), tcpListener(t)
	s := d.open(fmt.Sprintf("name: life\npurpose: test\nnetwork:\n  egress:\n    - to: 127.0.0.1\n      ports: [%d]\n", allowed), "")
	if s.Identity.Strength != "bearer" || !strings.HasPrefix(s.Identity.Fingerprint, "hmac-sha256:") {
		t.Errorf("identity %+v, want a bearer fingerprint", s.Identity)
	}

	if out, _ := runIn(t, s.Cgroup, nil, "/usr/bin/python3", "-c", connectProg, fmt.Sprint(other)); strings.TrimSpace(out) != "errno 1" {
		t.Errorf("connect to other port: %q", out)
	}
	d.stop()
	if out, _ := runIn(t, s.Cgroup, nil, "/usr/bin/python3", "-c", connectProg, fmt.Sprint(other)); strings.TrimSpace(out) != "errno 1" {
		t.Errorf("with the daemon stopped, connect to other port: %q", out)
	}
	d.start()
	got, err := d.client.GetSession(context.Background(), &apipb.GetSessionRequest{Id: s.Id})
	if err != nil {
		t.Fatalf("session after restart: %v", err)
	}
	if got.Intent.GetHash() != s.Intent.GetHash() {
		t.Errorf("intent hash after restart %q, want %q", got.Intent.GetHash(), s.Intent.GetHash())
	}
	if out, _ := runIn(t, s.Cgroup, nil, "/usr/bin/python3", "-c", connectProg, fmt.Sprint(allowed)); strings.TrimSpace(out) != "ok" {
		t.Errorf("after restart, connect to allowed port: %q", out)
	}

	sleeper := exec.Command("sleep", "60")
	if err := testutil.Start(s.Cgroup, sleeper); err != nil {
		t.Fatal(err)
	}
	if _, err := d.client.CloseSession(context.Background(), &apipb.CloseSessionRequest{Id: s.Id}); err != nil {
		t.Fatal(err)
	}
	err = sleeper.Wait()
	if ws, ok := sleeper.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
		t.Errorf("process of closed session: %v, want killed", err)
	}

	d.stop()
	rd, err := events.OpenReader(filepath.Join(d.cfg.StateDir, "recordings"))
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	var denied, opens int
	for r, err := range rd.All() {
		if err != nil {
			t.Fatal(err)
		}
		if c := r.GetConnect(); c != nil && c.Verdict == recordpb.Verdict_VERDICT_DENY && c.Port == uint32(other) {
			denied++
			if c.Identity.GetStrength() != recordpb.Strength_STRENGTH_BEARER || c.SessionId != s.Id {
				t.Errorf("denied connect record without the session's identity: %v", c)
			}
			// The record carries the kernel's time of the action.
			if at := time.Unix(0, r.WallNs); at.Before(started) || at.After(time.Now()) {
				t.Errorf("denied connect recorded at %v, outside the test's run from %v", at, started)
			}
		}
		if r.GetSessionOpen() != nil {
			opens++
		}
	}
	if denied != 2 || opens != 1 {
		t.Errorf("recorded %d denied connects and %d session opens, want 2 and 1", denied, opens)
	}
}

// A process inside a session cannot open a wider session, close another,
// or approve escalations.
func TestAPIAuthorization(t *testing.T) {
	d := startDaemon(t)
	parent := d.open(fmt.Sprintf(`name: parent
purpose: may call the daemon
network:
  egress:
    - to: 127.0.0.1
      ports: [80]
  unix: [%s]
`, d.cfg.Socket), "")
	other := d.open("name: other\npurpose: someone else\n", "")
	env := []string{"IDEND_SOCKET=" + d.cfg.Socket}
	call := func(args ...string) string {
		out, _ := runIn(t, parent.Cgroup, append(env, "IDEND_TEST_CLIENT="+args[0]), os.Args[0], args[1:]...)
		return strings.TrimSpace(out)
	}

	if got := call("open", "name: narrow\npurpose: sub\nnetwork:\n  egress:\n    - to: 127.0.0.1\n      ports: [80]\n", parent.Id); got != "OK" {
		t.Errorf("open a narrower sub-session: %s", got)
	}
	if got := call("open", "name: wide\npurpose: sub\nnetwork:\n  egress:\n    - to: 127.0.0.0/8\n", parent.Id); got != "InvalidArgument" {
		t.Errorf("open a wider sub-session: %s, want InvalidArgument", got)
	}
	if got := call("open", "name: sibling\npurpose: escape\n", other.Id); got != "PermissionDenied" {
		t.Errorf("open under another session: %s, want PermissionDenied", got)
	}
	if got := call("close", other.Id); got != "PermissionDenied" {
		t.Errorf("close another session: %s, want PermissionDenied", got)
	}
	if got := call("show", other.Id); got != "PermissionDenied" {
		t.Errorf("inspect another session: %s, want PermissionDenied", got)
	}
	if got := call("approve", parent.Id, "e1"); got != "PermissionDenied" {
		t.Errorf("approve own escalation: %s, want PermissionDenied", got)
	}
	if _, err := d.client.CloseSession(context.Background(), &apipb.CloseSessionRequest{Id: other.Id}); err != nil {
		t.Errorf("root closes a session: %v", err)
	}
	_, err := d.client.GetSession(context.Background(), &apipb.GetSessionRequest{Id: other.Id})
	if status.Code(err) != codes.NotFound {
		t.Errorf("closed session: %v, want NotFound", err)
	}
}
