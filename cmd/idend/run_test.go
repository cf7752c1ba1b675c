package main

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/idend/idend/internal/api/apipb"
)

// asUser returns the flags that make run drop to nobody when the tests run
// as root, as run requires; unprivileged, commands run as the caller.
func asUser() []string {
	if os.Geteuid() == 0 {
		return []string{"--user", "nobody"}
	}
	return nil
}

// runArgs builds "run --socket S --session ID [--user nobody] -- argv...".
func runArgs(api *testAPI, session string, argv ...string) []string {
	args := append([]string{"run", "--socket", api.socket, "--session", session}, asUser()...)
	return append(append(args, "--"), argv...)
}

func startTestAPIWithSession(t *testing.T) *testAPI {
	api := startTestAPI(t)
	api.addSession(&apipb.Session{Id: "s1", Cgroup: "/sys/fs/cgroup/idend/s1"})
	return api
}

func TestRunExitStatus(t *testing.T) {
	api := startTestAPIWithSession(t)

	dir, err := os.MkdirTemp("", "idend-run-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	notExec := filepath.Join(dir, "not-executable")
	if err := os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name    string
		session string
		argv    []string
		status  int
		stderr  string
	}{
		{"success", "s1", []string{"true"}, 0, ""},
		{"failure", "s1", []string{"sh", "-c", "exit 7"}, 7, ""},
		{"killed", "s1", []string{"sh", "-c", "kill -TERM $$"}, 128 + int(unix.SIGTERM), ""},
		{"not found", "s1", []string{"idend-test-no-such-command"}, exitNotFound, "idend-test-no-such-command"},
		{"no such path", "s1", []string{"/nonexistent/cmd"}, exitNotFound, "/nonexistent/cmd"},
		{"not executable", "s1", []string{notExec}, exitNotExecutable, notExec},
		{"no session", "s-missing", []string{"true"}, exitFailure,
			"idend: enter session s-missing: session s-missing not found\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := idend(t, nil, runArgs(api, tt.session, tt.argv...)...)
			if r.status != tt.status {
				t.Fatalf("want exit %d, got %s", tt.status, r)
			}
			if tt.stderr != "" && !strings.Contains(r.stderr, tt.stderr) {
				t.Fatalf("want stderr naming %q, got %s", tt.stderr, r)
			}
		})
	}
}

func TestRunEnvironment(t *testing.T) {
	api := startTestAPIWithSession(t)
	r := idend(t, []string{"HOME=/root", "USER=root"}, runArgs(api, "s1", "sh", "-c",
		`echo $$; echo "$IDEND_SESSION"; echo "$IDEND_SOCKET"; `+
			`grep NoNewPrivs /proc/self/status; id -u; id -G; echo "$HOME $USER"`)...)
	if r.status != 0 {
		t.Fatal(r)
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 7 {
		t.Fatalf("want 7 lines, got %s", r)
	}

	// The process that entered the session is the one that became CMD.
	pid, _ := strconv.Atoi(lines[0])
	if entered := api.enteredPids("s1"); !slices.Equal(entered, []int32{int32(pid)}) {
		t.Errorf("pids that entered s1: %v, want [%d], the command's", entered, pid)
	}
	if lines[1] != "s1" || lines[2] != api.socket {
		t.Errorf("IDEND_SESSION=%q IDEND_SOCKET=%q, want s1 and %s", lines[1], lines[2], api.socket)
	}
	if lines[3] != "NoNewPrivs:\t1" {
		t.Errorf("got %q, want no_new_privs set", lines[3])
	}
	if os.Geteuid() == 0 {
		if lines[4] != "65534" || lines[5] != "65534" || lines[6] != "/nonexistent nobody" {
			t.Errorf("want uid, groups, HOME and USER of nobody, got %q", lines[4:])
		}
	}
}

func TestRunOpensAndClosesSession(t *testing.T) {
	api := startTestAPI(t)
	dir := t.TempDir()
	intentFile := filepath.Join(dir, "agent.yaml")
	intentData := []byte("name: agent\npurpose: test\n")
	credFile := filepath.Join(dir, "token")
	if err := os.WriteFile(intentFile, intentData, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(credFile, []byte("secret-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	args := []string{"run", "--socket", api.socket, "--intent", intentFile, "--principal", "alice",
		"--ttl", "90s", "--credential-file", credFile}
	args = append(append(args, asUser()...), "--", "sh", "-c", `echo "$IDEND_SESSION"; exit 3`)
	r := idend(t, nil, args...)
	if r.status != 3 {
		t.Fatalf("want the command's exit 3, got %s", r)
	}
	if r.stderr != "idend: session s-test1\n" || r.stdout != "s-test1\n" {
		t.Fatalf("want the session announced on stderr and in the environment, got %s", r)
	}
	if closed := api.closedIDs(); !slices.Equal(closed, []string{"s-test1"}) {
		t.Fatalf("closed sessions %v, want [s-test1]", closed)
	}

	req := api.openRequests()[0]
	if string(req.Intent) != string(intentData) || req.IntentFile != intentFile ||
		req.Principal != "alice" || req.TtlSeconds != 90 || string(req.Credential) != "secret-token" {
		t.Fatalf("open request: %v", req)
	}
}

// startRun starts idend run and returns it with its stdout lines.
func startRun(t *testing.T, args []string) (*exec.Cmd, <-chan string) {
	t.Helper()
	cmd := idendCmd(nil, args...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })

	lines := make(chan string, 16)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	return cmd, lines
}

// nextLine returns the next line the command prints, or "" when it prints
// none within 10 seconds.
func nextLine(lines <-chan string) string {
	select {
	case l := <-lines:
		return l
	case <-time.After(10 * time.Second):
		return ""
	}
}

func TestRunForwardsSignals(t *testing.T) {
	api := startTestAPIWithSession(t)
	for _, sig := range []unix.Signal{unix.SIGINT, unix.SIGTERM, unix.SIGHUP, unix.SIGQUIT} {
		name := unix.SignalName(sig)
		t.Run(name, func(t *testing.T) {
			script := `trap 'echo got ` + name + `; exit 3' ` + strings.TrimPrefix(name, "SIG") +
				`; echo ready; while :; do sleep 0.05; done`
			cmd, out := startRun(t, runArgs(api, "s1", "sh", "-c", script))
			if l := nextLine(out); l != "ready" {
				t.Fatalf("command did not start: %q", l)
			}

			if err := cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			if l := nextLine(out); l != "got "+name {
				t.Fatalf("command did not get %s: %q", name, l)
			}
			err := cmd.Wait()
			if cmd.ProcessState.ExitCode() != 3 {
				t.Fatalf("want the command's exit 3, got %v", err)
			}
		})
	}
}

func TestRunCommandDiesWithRun(t *testing.T) {
	api := startTestAPIWithSession(t)
	cmd, out := startRun(t, runArgs(api, "s1", "sh", "-c", "echo $$; exec sleep 60"))
	pid, err := strconv.Atoi(nextLine(out))
	if err != nil {
		t.Fatal(err)
	}

	cmd.Process.Kill()
	cmd.Wait()
	deadline := time.Now().Add(5 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			unix.Kill(pid, unix.SIGKILL)
			t.Fatalf("command %d outlived idend run", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// alive reports whether pid runs and is not a zombie.
func alive(pid int) bool {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if errors.Is(err, os.ErrNotExist) {
		return false
	}
	fields := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+1:]))
	return len(fields) > 0 && fields[0] != "Z"
}
