package main

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/idend/idend/internal/loader"
	"github.com/idend/idend/internal/testutil"
)

// testDaemon is `idend daemon` run as a process of its own, with its own
// state directory, pins, cgroup root and socket.
type testDaemon struct {
	state  string
	socket string
	flags  []string // the flags naming its state, pins, cgroups and socket
	cmd    *exec.Cmd
	log    *os.File
}

func startTestDaemon(t *testing.T) *testDaemon {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the daemon needs root: it loads BPF programs and creates cgroups")
	}
	b := make([]byte, 4)
	rand.Read(b)
	name := "idend-clitest-" + hex.EncodeToString(b)
	dir, err := os.MkdirTemp("", "idend-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)

	d := &testDaemon{state: filepath.Join(dir, "state"), socket: filepath.Join(dir, "idend.sock")}
	d.flags = []string{"--state-dir", d.state, "--bpffs-dir", "/sys/fs/bpf/" + name,
		"--cgroup-root", name, "--socket", d.socket}
	d.log, err = os.Create(filepath.Join(dir, "daemon.log"))
	if err != nil {
		t.Fatal(err)
	}
	d.cmd = idendCmd(nil, append([]string{"daemon", "--verbose"}, d.flags...)...)
	d.cmd.Stdout, d.cmd.Stderr = d.log, d.log
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.stop(t, name) })

	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("unix", d.socket); err == nil {
			c.Close()
			return d
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon did not listen:\n%s", readFile(t, d.log.Name()))
		}
	}
}

// stop ends the daemon with SIGTERM and removes what it left in the
// kernel with daemon --cleanup.
func (d *testDaemon) stop(t *testing.T, name string) {
	d.cmd.Process.Signal(syscall.SIGTERM)
	if err := d.cmd.Wait(); err != nil {
		t.Errorf("daemon: %v:\n%s", err, readFile(t, d.log.Name()))
	}
	if r := idend(t, nil, append([]string{"daemon", "--cleanup"}, d.flags...)...); r.status != 0 {
		t.Errorf("daemon --cleanup: %s", r)
	}
	if _, err := os.Stat("/sys/fs/bpf/" + name); !os.IsNotExist(err) {
		t.Errorf("pins left after daemon --cleanup: %v", err)
	}
}

// idend runs idend against the daemon.
func (d *testDaemon) idend(t *testing.T, args ...string) result {
	t.Helper()
	return idend(t, []string{socketEnv + "=" + d.socket}, args...)
}

// writeTestIntent writes an intent allowing TCP to 127.0.0.1:port and
// python3 alone.
func writeTestIntent(t *testing.T, port int) (intentFile, credFile string) {
	t.Helper()
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("the test agent is a python3 program; no python3")
	}
	dir := t.TempDir()
	intentFile = filepath.Join(dir, "agent.yaml")
	writeFile(t, intentFile, fmt.Appendf(nil, `name: cli-test
purpose: run a test agent through idend run
on_violation: block
network:
  egress:
    - to: 127.0.0.1
      ports: [%d]
      protocol: tcp
exec:
  allow: [/usr/bin/python3]
`, port))
	credFile = filepath.Join(dir, "token")
	writeFile(t, credFile, []byte("cli-test-token\n"))
	return intentFile, credFile
}

const agentProg = `import os, socket, sys
print(open("/proc/self/cgroup").read().strip().split("\n")[-1])
for port in sys.argv[1:]:
    try:
        socket.create_connection(("127.0.0.1", int(port)), timeout=3).close()
        print(port, "ok")
    except OSError as e:
        print(port, "errno", e.errno)
sys.exit(5)
`

func TestDaemonRun(t *testing.T) {
	d := startTestDaemon(t)
	allowed, other := tcpListener(t), tcpListener(t)
	intentFile, credFile := writeTestIntent(t, allowed)

	r := d.idend(t, "run", "--intent", intentFile, "--credential-file", credFile, "--user", "nobody",
		"--", "python3", "-c", agentProg, fmt.Sprint(allowed), fmt.Sprint(other))
	if r.status != 5 {
		t.Fatalf("want the agent's exit 5, got %s", r)
	}
	id := strings.TrimSuffix(strings.TrimPrefix(r.stderr, "idend: session "), "\n")
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 3 || !strings.HasSuffix(lines[0], "/"+id) ||
		lines[1] != fmt.Sprint(allowed, " ok") || lines[2] != fmt.Sprint(other, " errno 1") {
		t.Fatalf("want the agent in session %s's cgroup, its allowed connect through and "+
			"the other refused with EPERM, got %s", id, r)
	}

	// The session run opened is closed.
	if r := d.idend(t, "session", "list", "--json"); r.status != 0 || r.stdout != "" {
		t.Fatalf("sessions left open: %s", r)
	}

	// The refusal is recorded, with the session's identity strength.
	deadline := time.Now().Add(5 * time.Second)
	for {
		r = d.idend(t, "events", "--state-dir", d.state, "--session", id, "--verdict", "deny", "--json")
		if r.status == 0 && r.stdout != "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no denied action recorded: %s", r)
		}
		time.Sleep(50 * time.Millisecond)
	}
	var rec map[string]any
	if err := json.Unmarshal([]byte(strings.Split(r.stdout, "\n")[0]), &rec); err != nil {
		t.Fatal(err)
	}
	if rec["kind"] != "connect" || rec["session"] != id || !strings.Contains(r.stdout, fmt.Sprint(other)) {
		t.Fatalf("denied record: %s", r.stdout)
	}

	if r := d.idend(t, "audit", "verify", "--state-dir", d.state); r.status != 0 {
		t.Fatalf("audit verify: %s", r)
	}
	if r := d.idend(t, "replay", "--state-dir", d.state); r.status != 0 ||
		!strings.Contains(r.stdout, "\n0 differences\n") {
		t.Fatalf("replay of the recorded verdicts: %s", r)
	}
}

func TestDaemonRunForbiddenExec(t *testing.T) {
	d := startTestDaemon(t)
	intentFile, credFile := writeTestIntent(t, tcpListener(t))

	// With BPF-LSM the exec fails with EPERM; without, it is killed.
	lsm := loader.Probe().LSM

	// The command itself is outside the intent.
	r := d.idend(t, "run", "--intent", intentFile, "--credential-file", credFile, "--user", "nobody",
		"--", "sh", "-c", "echo should not run")
	want := 128 + int(syscall.SIGKILL)
	if lsm {
		want = 126
	}
	if r.status != want || strings.Contains(r.stdout, "should not run") {
		t.Fatalf("want sh stopped at exec (exit %d), got %s", want, r)
	}

	// A program the agent starts is outside the intent.
	r = d.idend(t, "run", "--intent", intentFile, "--credential-file", credFile, "--user", "nobody",
		"--", "python3", "-c", `import os; os.execv("/usr/bin/id", ["id"])`)
	switch {
	case lsm && (r.status != 1 || !strings.Contains(r.stderr, "PermissionError")):
		t.Fatalf("want the agent's exec of id refused with EPERM, got %s", r)
	case !lsm && (r.status != 128+int(syscall.SIGKILL) || r.stdout != ""):
		t.Fatalf("want the agent killed at its exec of id (exit 137), got %s", r)
	}
}

func TestDaemonCloseEndsRun(t *testing.T) {
	d := startTestDaemon(t)
	intentFile, credFile := writeTestIntent(t, tcpListener(t))
	r := d.idend(t, "session", "open", "--intent", intentFile, "--credential-file", credFile)
	if r.status != 0 {
		t.Fatal(r)
	}
	id := strings.TrimSpace(r.stdout)

	// Shells complete session IDs from the daemon.
	r = d.idend(t, "__complete", "session", "show", "")
	if !strings.HasPrefix(r.stdout, id+"\tcli-test\n") {
		t.Fatalf("completion of session show lacks %s: %s", id, r)
	}

	cmd, out := startRun(t, []string{"run", "--socket", d.socket, "--session", id, "--user", "nobody",
		"--", "python3", "-c", `import signal, sys, time
signal.signal(signal.SIGTERM, lambda *_: (print("got SIGTERM", flush=True), sys.exit(3)))
print("ready", flush=True)
time.sleep(60)`})
	if l := nextLine(out); l != "ready" {
		t.Fatalf("agent did not start: %q", l)
	}

	// Signals reach the agent inside the session.
	cmd.Process.Signal(syscall.SIGTERM)
	if l := nextLine(out); l != "got SIGTERM" {
		t.Fatalf("agent did not get SIGTERM: %q", l)
	}
	cmd.Wait()
	if got := cmd.ProcessState.ExitCode(); got != 3 {
		t.Fatalf("want the agent's exit 3, got %d", got)
	}

	// Closing the session kills what runs in it.
	cmd, out = startRun(t, []string{"run", "--socket", d.socket, "--session", id, "--user", "nobody",
		"--", "python3", "-c", `import time; print("ready", flush=True); time.sleep(60)`})
	if l := nextLine(out); l != "ready" {
		t.Fatalf("agent did not start: %q", l)
	}
	if r := d.idend(t, "session", "close", id); r.status != 0 {
		t.Fatal(r)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("idend run still running after its session closed")
	}
	if got := cmd.ProcessState.Sys().(syscall.WaitStatus); got.ExitStatus() != 128+int(syscall.SIGKILL) {
		t.Fatalf("want exit 137, got %v", got)
	}
}

func TestDaemonBadConfig(t *testing.T) {
	r := idend(t, nil, "daemon", "--config", "/nonexistent/idend.yaml")
	if r.status != exitFailure || !strings.Contains(r.stderr, "/nonexistent/idend.yaml") {
		t.Fatalf("want exit 1 naming the config file, got %s", r)
	}
}

// tcpListener accepts TCP connections on 127.0.0.1 and returns its port.
func tcpListener(t *testing.T) int {
	t.Helper()
	return testutil.Listen(t, "tcp4", "127.0.0.1:0")
}
