package daemon

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/idend/idend/internal/api/apipb"
	"github.com/idend/idend/internal/events"
	"github.com/idend/idend/internal/events/recordpb"
	"github.com/idend/idend/internal/testutil"
)

// fakeResolver answers host lookups from a table the test changes.
type fakeResolver struct {
	mu    sync.Mutex
	addrs map[string][]netip.Addr
}

func (f *fakeResolver) lookup(_ context.Context, host string) ([]netip.Addr, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	a, ok := f.addrs[host]
	if !ok {
		return nil, fmt.Errorf("no such host %s", host)
	}
	return a, nil
}

func (f *fakeResolver) set(host string, addrs ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []netip.Addr
	for _, a := range addrs {
		out = append(out, netip.MustParseAddr(a))
	}
	f.addrs[host] = out
}

// startDaemonWith starts a test daemon as startDaemon does, with its
// configuration changed by change first.
func startDaemonWith(t *testing.T, change func(*Config)) *testDaemon {
	t.Helper()
	requireRoot(t)
	d := newTestDaemon(t)
	change(&d.cfg)
	d.start()
	return d
}

// eventually polls cond until it holds or a minute passes (emulated
// kernels in test/vm are slow).
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); {
		if cond() {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: not within a minute", what)
}

// Host names are resolved again; new addresses are allowed, old ones
// withdrawn, and the change recorded.
func TestHostNamesFollowResolution(t *testing.T) {
	res := &fakeResolver{addrs: map[string][]netip.Addr{}}
	res.set("logs.test", "127.0.0.1")
	old := lookupHost
	lookupHost = res.lookup
	t.Cleanup(func() { lookupHost = old })

	d := startDaemonWith(t, func(c *Config) { c.Refresh.Hosts = 100 * time.Millisecond })
	first := tcpListener(t)
	ln, err := net.Listen("tcp4", fmt.Sprintf("127.0.0.2:%d", first))
	if err != nil {
		t.Skipf("port %d busy on 127.0.0.2: %v", first, err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	s := d.open(fmt.Sprintf("name: dns\npurpose: test\nnetwork:\n  egress:\n    - to: logs.test\n      ports: [%d]\n", first), "")
	connect := func(host string) string {
		prog := strings.Replace(connectProg, "'127.0.0.1'", "'"+host+"'", 1)
		out, _ := runIn(t, s.Cgroup, nil, "/usr/bin/python3", "-c", prog, fmt.Sprint(first))
		return strings.TrimSpace(out)
	}
	if got := connect("127.0.0.1"); got != "ok" {
		t.Fatalf("connect to the resolved address: %s", got)
	}
	if got := connect("127.0.0.2"); got != "errno 1" {
		t.Fatalf("connect to another address: %s", got)
	}

	res.set("logs.test", "127.0.0.2")
	eventually(t, "new address allowed", func() bool { return connect("127.0.0.2") == "ok" })
	if got := connect("127.0.0.1"); got != "errno 1" {
		t.Errorf("connect to the withdrawn address: %s, want errno 1", got)
	}

	d.stop()
	found := false
	forEachRecord(t, d.cfg.StateDir, func(r *recordpb.Record) {
		if h := r.GetHostResolution(); h != nil && h.Host == "logs.test" && h.SessionId == s.Id &&
			len(h.Addrs) == 1 && netip.AddrFrom4([4]byte(h.Addrs[0])) == netip.MustParseAddr("127.0.0.2") {
			found = true
		}
	})
	if !found {
		t.Error("no host resolution record for logs.test -> 127.0.0.2")
	}
}

// An allowed program replaced by a new file at its path (a package
// upgrade) stays allowed, and the change is recorded.
func TestExecAllowListFollowsUpgrade(t *testing.T) {
	d := startDaemonWith(t, func(c *Config) { c.Refresh.Executables = 100 * time.Millisecond })
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	tool := filepath.Join(dir, "tool")
	install := func() {
		tmp := tool + ".new"
		copyFile(t, "/bin/true", tmp)
		if err := os.Rename(tmp, tool); err != nil {
			t.Fatal(err)
		}
	}
	install()
	s := d.open(fmt.Sprintf("name: upgrade\npurpose: test\nexec:\n  allow: [%s]\n", tool), "")
	if _, code := runIn(t, s.Cgroup, nil, tool); code != 0 {
		t.Fatalf("allowed tool: exit %d", code)
	}
	var before syscall.Stat_t
	syscall.Stat(tool, &before)
	install()
	eventually(t, "upgraded tool runs", func() bool {
		_, code := runIn(t, s.Cgroup, nil, tool)
		return code == 0
	})

	d.stop()
	found := false
	forEachRecord(t, d.cfg.StateDir, func(r *recordpb.Record) {
		if e := r.GetExecRefresh(); e != nil && e.Path == tool && e.OldIno == before.Ino && e.NewIno != before.Ino {
			found = true
		}
	})
	if !found {
		t.Error("no exec refresh record for the upgraded tool")
	}
}

// At the end of its ttl a session's processes are killed, their
// connections cut, and the session closed.
func TestTTLExpiry(t *testing.T) {
	d := startDaemon(t)
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	s, err := d.client.OpenSession(context.Background(), &apipb.OpenSessionRequest{
		Intent:     []byte(fmt.Sprintf("name: short\npurpose: test\nnetwork:\n  egress:\n    - to: 127.0.0.1\n      ports: [%d]\n", port)),
		Credential: []byte("t"), TtlSeconds: 2})
	if err != nil {
		t.Fatal(err)
	}
	prog := fmt.Sprintf("import socket, time\ns = socket.create_connection(('127.0.0.1', %d))\ntime.sleep(60)\n", port)
	done := make(chan int, 1)
	go func() {
		_, code := runIn(t, s.Cgroup, nil, "/usr/bin/python3", "-c", prog)
		done <- code
	}()
	conn, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Read(make([]byte, 1)); err != io.EOF && !isReset(err) {
		t.Errorf("connection of the expired session: %v, want closed", err)
	}
	select {
	case code := <-done:
		if code != -1 {
			t.Errorf("process of the expired session: exit %d, want killed", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("process of the expired session still running")
	}
	eventually(t, "session gone", func() bool {
		_, err := d.client.GetSession(context.Background(), &apipb.GetSessionRequest{Id: s.Id})
		return err != nil
	})
}

func isReset(err error) bool {
	return err != nil && strings.Contains(err.Error(), "reset")
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, data, 0o755); err != nil {
		t.Fatal(err)
	}
}

func forEachRecord(t *testing.T, stateDir string, fn func(*recordpb.Record)) {
	t.Helper()
	rd, err := events.OpenReader(filepath.Join(stateDir, "recordings"))
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	for r, err := range rd.All() {
		if err != nil {
			t.Fatal(err)
		}
		fn(r)
	}
}

// When a host name stops resolving to an address, the session's
// established connections to it are cut, with a reset the peer sees.
func TestNarrowingCutsConnections(t *testing.T) {
	res := &fakeResolver{addrs: map[string][]netip.Addr{}}
	res.set("db.test", "127.0.0.1")
	old := lookupHost
	lookupHost = res.lookup
	t.Cleanup(func() { lookupHost = old })
	d := startDaemonWith(t, func(c *Config) { c.Refresh.Hosts = 100 * time.Millisecond })

	for _, network := range []string{"tcp4", "tcp6"} {
		host, addr := "127.0.0.1", "127.0.0.1:0"
		if network == "tcp6" {
			host, addr = "::1", "[::1]:0"
		}
		res.set("db.test", host)
		ln, err := net.Listen(network, addr)
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		port := ln.Addr().(*net.TCPAddr).Port
		s := d.open(fmt.Sprintf("name: cut\npurpose: test\nnetwork:\n  egress:\n    - to: db.test\n      ports: [%d]\n", port), "")
		prog := fmt.Sprintf("import socket, time\ns = socket.create_connection((%q, %d))\ntry:\n    s.recv(1)\n    print('eof')\nexcept OSError as e:\n    print('errno', e.errno)\n", host, port)
		out := make(chan string, 1)
		go func() {
			o, _ := runIn(t, s.Cgroup, nil, "/usr/bin/python3", "-c", prog)
			out <- strings.TrimSpace(o)
		}()
		conn, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		res.set("db.test", "192.0.2.1")
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := conn.Read(make([]byte, 1)); !isReset(err) {
			t.Errorf("%s: peer of a withdrawn connection: %v, want reset", network, err)
		}
		conn.Close()
		select {
		case got := <-out:
			if got != "errno 103" && got != "errno 104" {
				t.Errorf("%s: process whose connection was cut: %q, want ECONNABORTED", network, got)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("%s: process still blocked on a withdrawn connection", network)
		}
	}
}

// Processes already in a session when the daemon starts are recorded with
// their process key and parent, so that lineage is never empty.
func TestExistingProcessesFound(t *testing.T) {
	d := startDaemon(t)
	s := d.open("name: found\npurpose: test\n", "")
	d.stop()

	sleeper := exec.Command("/bin/sleep", "30")
	if err := testutil.Start(s.Cgroup, sleeper); err != nil {
		t.Fatal(err)
	}
	defer func() {
		sleeper.Process.Kill()
		sleeper.Wait()
	}()

	d.start()
	d.stop()
	pid := uint32(sleeper.Process.Pid)
	var found *recordpb.ProcessFound
	forEachRecord(t, d.cfg.StateDir, func(r *recordpb.Record) {
		if f := r.GetProcessFound(); f != nil && f.Process.GetPid() == pid {
			found = f
		}
	})
	if found == nil {
		t.Fatal("no process_found record for the process that was in the session")
	}
	self := events.ProcessKey(uint32(os.Getpid()), startTicks(t, os.Getpid()))
	if found.SessionId != s.Id || found.ExePath != "/usr/bin/sleep" || found.Process.ParentKey != self ||
		found.Process.Key != events.ProcessKey(pid, startTicks(t, int(pid))) {
		t.Errorf("process_found %v: want session %s, /usr/bin/sleep, parent %s", found, s.Id, self)
	}
}

// startTicks reads a process's start time from /proc, in clock ticks.
func startTicks(t *testing.T, pid int) uint64 {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	fields := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+2:]))
	var ticks uint64
	fmt.Sscan(fields[19], &ticks)
	return ticks
}
