// Package spiretest runs a real SPIRE server and agent on loopback for
// end-to-end tests: the server with a sqlite datastore, join-token node
// attestation and an in-memory key manager; the agent with the unix
// workload attestor. The binaries are built by test/spire/build.sh.
package spiretest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// BinEnv names the environment variable holding the directory of the
// spire-server and spire-agent binaries.
const BinEnv = "IDEND_SPIRE_BIN"

// TrustDomain is the trust domain of the SPIRE deployment.
const TrustDomain = "idend.test"

// startTimeout bounds each step of bringing SPIRE up.
const startTimeout = 60 * time.Second

// SPIRE is a running SPIRE server and agent. They stop at the end of the
// test that started them.
type SPIRE struct {
	// TrustDomain is the trust domain served.
	TrustDomain spiffeid.TrustDomain
	// AgentSocket is the path of the agent's Workload API socket.
	AgentSocket string
	// AgentAddr is AgentSocket as a go-spiffe address: "unix:///path".
	AgentAddr string
	// AgentID is the SPIFFE ID the agent was attested as.
	AgentID spiffeid.ID
	// WorkloadID is the SPIFFE ID registered for the effective uid of
	// the test process (selector unix:uid:<euid>).
	WorkloadID spiffeid.ID

	dir          string
	bin          string
	serverSocket string
}

// BinDir returns the directory holding spire-server and spire-agent: $BinEnv
// when set, else test/spire/bin of the idend module. It skips the test when
// the binaries are absent and $BinEnv is not set, and fails it when $BinEnv
// names a directory without them.
func BinDir(t testing.TB) string {
	t.Helper()
	if dir := os.Getenv(BinEnv); dir != "" {
		if !haveBinaries(dir) {
			t.Fatalf("%s=%s: no spire-server and spire-agent there", BinEnv, dir)
		}
		return dir
	}

	root, err := moduleRoot()
	if err != nil {
		t.Skipf("SPIRE binaries not found (%v): run test/spire/build.sh or set %s", err, BinEnv)
	}
	dir := filepath.Join(root, "test", "spire", "bin")
	if !haveBinaries(dir) {
		t.Skipf("SPIRE binaries not in %s: run test/spire/build.sh or set %s", dir, BinEnv)
	}
	return dir
}

func haveBinaries(dir string) bool {
	for _, name := range []string{"spire-server", "spire-agent"} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil || fi.Mode()&0o111 == 0 {
			return false
		}
	}
	return true
}

// moduleRoot returns the directory of the idend go.mod above the working
// directory.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.HasPrefix(b, []byte("module github.com/idend/idend\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no idend go.mod above the working directory")
		}
		dir = parent
	}
}

// Start brings up a SPIRE server and agent from the binaries in binDir,
// registers WorkloadID for the test process's effective uid and returns
// once the agent serves that SVID.
func Start(t testing.TB, binDir string) *SPIRE {
	t.Helper()
	dir, err := os.MkdirTemp("", "spire") // short: socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })

	s := &SPIRE{
		TrustDomain:  spiffeid.RequireTrustDomainFromString(TrustDomain),
		AgentSocket:  filepath.Join(dir, "agent.sock"),
		dir:          dir,
		bin:          binDir,
		serverSocket: filepath.Join(dir, "server.sock"),
	}
	s.AgentAddr = "unix://" + s.AgentSocket
	s.WorkloadID = spiffeid.RequireFromPath(s.TrustDomain, "/idend/uid-"+strconv.Itoa(os.Geteuid()))

	port := freePort(t)
	s.startServer(t, port)
	token := s.generateToken(t)
	s.AgentID = spiffeid.RequireFromPath(s.TrustDomain, "/spire/agent/join_token/"+token)
	s.CreateEntry(t, s.WorkloadID, "unix:uid:"+strconv.Itoa(os.Geteuid()))
	s.startAgent(t, port, token)
	s.WaitForSVID(t, s.WorkloadID)
	return s
}

// CreateEntry registers id, a child of the agent, for selectors.
func (s *SPIRE) CreateEntry(t testing.TB, id spiffeid.ID, selectors ...string) {
	t.Helper()
	args := []string{"entry", "create", "-socketPath", s.serverSocket,
		"-parentID", s.AgentID.String(), "-spiffeID", id.String()}
	for _, sel := range selectors {
		args = append(args, "-selector", sel)
	}
	s.server(t, args...)
}

// WaitForSVID waits until the agent serves the test process an X.509-SVID
// for id, and returns it.
func (s *SPIRE) WaitForSVID(t testing.TB, id spiffeid.ID) *x509svid.SVID {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()

	var last error
	for ctx.Err() == nil {
		svids, err := workloadapi.FetchX509SVIDs(ctx, workloadapi.WithAddr(s.AgentAddr))
		for _, svid := range svids {
			if svid.ID == id {
				return svid
			}
		}
		last = err
		time.Sleep(200 * time.Millisecond)
	}
	s.dumpLogs(t)
	t.Fatalf("agent served no svid for %s: %v", id, last)
	return nil
}

func (s *SPIRE) startServer(t testing.TB, port int) {
	t.Helper()
	conf := fmt.Sprintf(serverConf, port, s.serverSocket, TrustDomain,
		filepath.Join(s.dir, "server"), filepath.Join(s.dir, "server", "datastore.sqlite3"))
	path := s.writeFile(t, "server.conf", conf)

	s.run(t, "spire-server", "server.log", "run", "-config", path)
	s.waitHealthy(t, "spire-server", "healthcheck", "-socketPath", s.serverSocket)
}

func (s *SPIRE) generateToken(t testing.TB) string {
	t.Helper()
	out := s.server(t, "token", "generate", "-socketPath", s.serverSocket, "-output", "json")

	var resp struct {
		Value string `json:"value"`
	}
	if err := json.Unmarshal(out, &resp); err != nil || resp.Value == "" {
		t.Fatalf("token generate printed %q: %v", out, err)
	}
	return resp.Value
}

func (s *SPIRE) startAgent(t testing.TB, port int, token string) {
	t.Helper()
	bundle := s.server(t, "bundle", "show", "-socketPath", s.serverSocket)
	bundlePath := s.writeFile(t, "bundle.pem", string(bundle))

	conf := fmt.Sprintf(agentConf, filepath.Join(s.dir, "agent"), port,
		s.AgentSocket, bundlePath, TrustDomain)
	path := s.writeFile(t, "agent.conf", conf)

	s.run(t, "spire-agent", "agent.log", "run", "-config", path, "-joinToken", token)
	s.waitHealthy(t, "spire-agent", "healthcheck", "-socketPath", s.AgentSocket)
}

// server runs a spire-server command and returns its standard output.
func (s *SPIRE) server(t testing.TB, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(filepath.Join(s.bin, "spire-server"), args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		s.dumpLogs(t)
		t.Fatalf("spire-server %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr.Bytes())
	}
	return out
}

// run starts a long-running SPIRE process logging to logName, and stops it
// at the end of the test.
func (s *SPIRE) run(t testing.TB, name, logName string, args ...string) {
	t.Helper()
	logFile, err := os.Create(filepath.Join(s.dir, logName))
	if err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command(filepath.Join(s.bin, name), args...)
	cmd.Dir = s.dir
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}

	t.Cleanup(func() {
		stop(cmd)
		logFile.Close()
	})
}

// stop terminates cmd, killing it when it does not exit within seconds.
func stop(cmd *exec.Cmd) {
	_ = cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

// waitHealthy runs a healthcheck command until it succeeds.
func (s *SPIRE) waitHealthy(t testing.TB, name string, args ...string) {
	t.Helper()
	deadline := time.Now().Add(startTimeout)
	for {
		out, err := exec.Command(filepath.Join(s.bin, name), args...).CombinedOutput()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			s.dumpLogs(t)
			t.Fatalf("%s not healthy: %v\n%s", name, err, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (s *SPIRE) writeFile(t testing.TB, name, content string) string {
	t.Helper()
	path := filepath.Join(s.dir, name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// dumpLogs writes the server and agent logs to the test log.
func (s *SPIRE) dumpLogs(t testing.TB) {
	t.Helper()
	for _, name := range []string{"server.log", "agent.log"} {
		if b, err := os.ReadFile(filepath.Join(s.dir, name)); err == nil {
			t.Logf("%s:\n%s", name, b)
		}
	}
}

// freePort returns a TCP port free on the loopback address now.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// serverConf: bind port, API socket, trust domain, data dir, sqlite file.
const serverConf = `server {
    bind_address = "127.0.0.1"
    bind_port = "%d"
    socket_path = %q
    trust_domain = %q
    data_dir = %q
    log_level = "INFO"
    default_x509_svid_ttl = "1h"
    default_jwt_svid_ttl = "5m"
    ca_ttl = "24h"
    experimental {
        cache_reload_interval = "1s"
    }
}

plugins {
    DataStore "sql" {
        plugin_data {
            database_type = "sqlite3"
            connection_string = %q
        }
    }
    NodeAttestor "join_token" {
        plugin_data {}
    }
    KeyManager "memory" {
        plugin_data {}
    }
}
`

// agentConf: data dir, server port, Workload API socket, bundle, trust
// domain.
const agentConf = `agent {
    data_dir = %q
    log_level = "INFO"
    server_address = "127.0.0.1"
    server_port = "%d"
    socket_path = %q
    trust_bundle_path = %q
    trust_domain = %q
    experimental {
        sync_interval = "1s"
    }
}

plugins {
    NodeAttestor "join_token" {
        plugin_data {}
    }
    KeyManager "memory" {
        plugin_data {}
    }
    WorkloadAttestor "unix" {
        plugin_data {}
    }
}
`
