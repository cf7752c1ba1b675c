package main

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/idend/idend/internal/events"
)

// idendBin is the idend binary built for the tests.
var idendBin string

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "idend-cli-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	// Others (the user nobody, in run tests) must be able to reach it.
	if err := os.Chmod(dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}

	// A prebuilt binary serves where there is no Go toolchain (the
	// test/vm guests).
	if bin := os.Getenv("IDEND_BIN"); bin != "" {
		idendBin = bin
		return m.Run()
	}
	idendBin = filepath.Join(dir, "idend")
	build := exec.Command("go", "build", "-o", idendBin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build idend: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

// result is how an idend process ended.
type result struct {
	stdout, stderr string
	status         int
}

// idend runs the idend binary with args and env added to the test's
// environment, without IDEND_SOCKET unless env sets it.
func idend(t *testing.T, env []string, args ...string) result {
	t.Helper()
	cmd := idendCmd(env, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("run idend %v: %v", args, err)
	}
	return result{stdout: stdout.String(), stderr: stderr.String(), status: cmd.ProcessState.ExitCode()}
}

func idendCmd(env []string, args ...string) *exec.Cmd {
	cmd := exec.Command(idendBin, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, socketEnv+"=") && !strings.HasPrefix(kv, sessionEnv+"=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	return cmd
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.status, r.stdout, r.stderr)
}

func TestBadUsage(t *testing.T) {
	tests := []struct {
		args []string
		want string // in stderr
	}{
		{[]string{"bogus"}, `unknown command "bogus"`},
		{[]string{"session", "bogus"}, `unknown command "bogus" for "idend session"`},
		{[]string{"session", "list", "--bogus"}, "unknown flag: --bogus"},
		{[]string{"session", "list", "-x"}, "unknown shorthand flag: 'x'"},
		{[]string{"session", "open", "--intent", "i.yaml", "--ttl", "soon"}, `"--ttl" flag`},
		{[]string{"session", "open"}, "--intent"},
		{[]string{"session", "open", "--intent", "i.yaml", "--svid", "c.pem"}, "--svid-key"},
		{[]string{"session", "open", "--intent", "i.yaml", "--ttl", "-5m"}, "--ttl"},
		{[]string{"session", "show"}, "missing argument ID"},
		{[]string{"session", "close", "a", "b"}, `unexpected argument "b"`},
		{[]string{"session", "approve", "s1"}, "missing argument ESCALATION-ID"},
		{[]string{"session", "list", "--json=maybe"}, `"--json" flag`},
		{[]string{"daemon", "--state-dir"}, "flag needs an argument: --state-dir"},
		{[]string{"daemon", "--socket", ""}, "--socket"},
		{[]string{"daemon", "--cgroup-root="}, "--cgroup-root"},
		{[]string{"intent", "check"}, "missing argument FILE"},
		{[]string{"intent", "check", "a.yaml", "--parent"}, "flag needs an argument: --parent"},
		{[]string{"events", "--kind", "exec,bogus"}, "--kind"},
		{[]string{"events", "--verdict", "maybe"}, "--verdict"},
		{[]string{"events", "extra"}, "takes no arguments"},
		{[]string{"replay", "--bogus"}, "unknown flag: --bogus"},
		{[]string{"doctor", "extra"}, `takes no arguments, got "extra"`},
		{[]string{"run", "--session", "s1"}, "missing argument CMD"},
		{[]string{"run", "--", "true"}, "--session ID or --intent FILE"},
		{[]string{"run", "--session", "s1", "--intent", "i.yaml", "--", "true"}, "--session and --intent"},
		{[]string{"run", "--session", "s1", "--user", "no-such-user-here", "--", "true"}, "--user"},
		{[]string{"run", "--session", "s1", "--ttl", "5m", "--", "true"}, "--ttl opens a session"},
		{[]string{"audit", "verify", "a", "b"}, `unexpected argument "b"`},
		{[]string{"version", "x"}, "takes no arguments"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			r := idend(t, nil, tt.args...)
			if r.status != exitUsage {
				t.Fatalf("want exit %d, got %s", exitUsage, r)
			}
			if !strings.HasPrefix(r.stderr, "idend: ") || !strings.Contains(r.stderr, tt.want) {
				t.Fatalf("want stderr starting with \"idend: \" and naming %q, got %s", tt.want, r)
			}
			if !strings.Contains(r.stderr, "--help' for usage") {
				t.Fatalf("want a pointer to --help, got %s", r)
			}
		})
	}
}

func TestRootRefused(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the refusal to run as root applies when idend runs as root; not root")
	}
	r := idend(t, nil, "run", "--session", "s1", "--", "true")
	if r.status != exitUsage || !strings.Contains(r.stderr, "refusing to run the command as root") ||
		!strings.Contains(r.stderr, "--allow-root") {
		t.Fatalf("want exit 2 refusing root, got %s", r)
	}
}

func TestGroupWithoutCommand(t *testing.T) {
	for _, args := range [][]string{{}, {"session"}, {"audit"}} {
		r := idend(t, nil, args...)
		if r.status != exitUsage || !strings.Contains(r.stderr, "Available Commands:") {
			t.Fatalf("idend %v: want help on stderr and exit 2, got %s", args, r)
		}
	}
}

func TestHelp(t *testing.T) {
	for _, args := range [][]string{
		{"--help"}, {"daemon", "--help"}, {"doctor", "--help"}, {"intent", "check", "--help"},
		{"session", "open", "--help"}, {"session", "list", "--help"}, {"session", "show", "--help"},
		{"session", "close", "--help"}, {"session", "approve", "--help"}, {"run", "--help"},
		{"events", "--help"}, {"audit", "verify", "--help"}, {"replay", "--help"},
		{"version", "--help"},
	} {
		r := idend(t, nil, args...)
		if r.status != exitOK {
			t.Fatalf("idend %v: %s", args, r)
		}
		for _, section := range []string{"Usage:", "Examples:", "--socket"} {
			if !strings.Contains(r.stdout, section) {
				t.Errorf("idend %v: help lacks %q:\n%s", args, section, r.stdout)
			}
		}
	}
	if r := idend(t, nil, "--help"); strings.Contains(r.stdout, "__exec") {
		t.Errorf("help shows the internal __exec command:\n%s", r.stdout)
	}
}

func TestCompletion(t *testing.T) {
	r := idend(t, nil, "completion", "bash")
	if r.status != exitOK || !strings.Contains(r.stdout, "__start_idend") {
		t.Fatalf("want a bash completion script, got %s", r)
	}
	r = idend(t, nil, "__complete", "session", "")
	for _, sub := range []string{"open", "list", "show", "close", "approve"} {
		if !strings.Contains(r.stdout, sub) {
			t.Errorf("completion of \"session \" lacks %s: %s", sub, r)
		}
	}
}

func TestCompleteFilterValues(t *testing.T) {
	for _, v := range verdicts {
		if err := (events.Filter{Verdict: v}).Validate(); err != nil {
			t.Errorf("completion offers a verdict events refuses: %v", err)
		}
	}
	r := idend(t, nil, "__complete", "events", "--kind", "exec,")
	if !strings.Contains(r.stdout, "exec,connect\n") || !strings.Contains(r.stdout, "exec,session_open\n") {
		t.Errorf("completion of --kind exec,: %s", r)
	}
}

func TestVersion(t *testing.T) {
	r := idend(t, nil, "version")
	if r.status != exitOK || !strings.HasPrefix(r.stdout, "idend ") || !strings.Contains(r.stdout, "go1.") {
		t.Fatalf("got %s", r)
	}
}

func TestDaemonUnreachable(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.sock")

	// A socket file nobody listens on any more.
	stale := filepath.Join(dir, "stale.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()

	tests := []struct {
		name   string
		env    []string
		args   []string
		socket string
	}{
		{"flag", nil, []string{"session", "list", "--socket", missing}, missing},
		{"env", []string{socketEnv + "=" + missing}, []string{"session", "list"}, missing},
		{"flag over env", []string{socketEnv + "=/nowhere"}, []string{"session", "show", "s1", "--socket", missing}, missing},
		{"stale", nil, []string{"session", "close", "s1", "--socket", stale}, stale},
		{"run", nil, []string{"run", "--allow-root", "--intent", "i.yaml", "--socket", missing, "--", "true"}, missing},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := idend(t, tt.env, tt.args...)
			want := "idend: cannot reach idend at " + tt.socket + ": is the daemon running?\n"
			if r.status != exitFailure || r.stderr != want {
				t.Fatalf("want exit 1 and %q, got %s", want, r)
			}
		})
	}
}
