package main

import (
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/idend/idend/internal/testutil"
)

// restart starts the daemon again on the same state, pins and socket.
func (d *testDaemon) restart(t *testing.T) {
	t.Helper()
	d.cmd = idendCmd(nil, append([]string{"daemon", "--verbose"}, d.flags...)...)
	d.cmd.Stdout, d.cmd.Stderr = d.log, d.log
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("unix", d.socket); err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("restarted daemon did not listen:\n%s", readFile(t, d.log.Name()))
		}
	}
}

// runInCgroup runs python3 with a program inside a cgroup directory.
func runInCgroup(t *testing.T, dir string, args ...string) string {
	t.Helper()
	out, _ := testutil.Run(t, dir, nil, "/usr/bin/python3", args...)
	return strings.TrimSpace(out)
}

// kill -9 of the daemon leaves every session's enforcement exactly as it
// was; what the kernel records meanwhile waits in the pinned rings; a new
// daemon adopts the sessions and records it.
func TestDaemonKilledEnforcementHolds(t *testing.T) {
	d := startTestDaemon(t)
	allowed, other := tcpListener(t), tcpListener(t)
	intentFile, credFile := writeTestIntent(t, allowed)
	r := d.idend(t, "session", "open", "--intent", intentFile, "--credential-file", credFile, "--json")
	if r.status != 0 {
		t.Fatalf("session open: %s", r)
	}
	var s struct {
		ID     string `json:"id"`
		Cgroup string `json:"cgroup"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &s); err != nil {
		t.Fatalf("session open --json: %v: %s", err, r.stdout)
	}
	connect := func(port int) string {
		return runInCgroup(t, s.Cgroup, "-c", "import os, socket, sys\n"+agentProg[strings.Index(agentProg, "for port"):strings.Index(agentProg, "sys.exit")], fmt.Sprint(port))
	}

	if err := d.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	d.cmd.Wait()

	if got := connect(other); got != fmt.Sprint(other, " errno 1") {
		t.Errorf("with the daemon killed, connect outside the intent: %q", got)
	}
	if got := connect(allowed); got != fmt.Sprint(allowed, " ok") {
		t.Errorf("with the daemon killed, connect inside the intent: %q", got)
	}

	d.restart(t)
	if r := d.idend(t, "session", "show", s.ID, "--json"); r.status != 0 || !strings.Contains(r.stdout, s.ID) {
		t.Fatalf("session after restart: %s", r)
	}
	if got := connect(other); got != fmt.Sprint(other, " errno 1") {
		t.Errorf("after restart, connect outside the intent: %q", got)
	}

	// The denial made while no daemon ran reaches the recording.
	deadline := time.Now().Add(5 * time.Second)
	for {
		r = d.idend(t, "events", "--state-dir", d.state, "--session", s.ID, "--verdict", "deny", "--json")
		if r.status == 0 && strings.Count(r.stdout, "\n") >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("want both denials recorded (one made while the daemon was dead), got %s", r)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if r := d.idend(t, "audit", "verify", "--state-dir", d.state); r.status != 0 {
		t.Errorf("audit verify after kill -9: %s", r)
	}
}
