package daemon

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/idend/idend/internal/api/apipb"
	"github.com/idend/idend/internal/events/recordpb"
)

// A refused action in an escalate-mode session becomes an escalation;
// approving it widens the session by exactly that action.
func TestEscalationApproval(t *testing.T) {
	d := startDaemon(t)
	allowed, wanted, other := tcpListener(t), tcpListener(t), tcpListener(t)
	s := d.open(fmt.Sprintf(`name: esc
purpose: test
on_violation: escalate
network:
  egress:
    - to: 127.0.0.1
      ports: [%d]
`, allowed), "")
	connect := func(port int) string {
		out, _ := runIn(t, s.Cgroup, nil, "/usr/bin/python3", "-c", connectProg, fmt.Sprint(port))
		return strings.TrimSpace(out)
	}
	if got := connect(wanted); got != "errno 1" {
		t.Fatalf("connect outside the intent: %s, want errno 1", got)
	}
	connect(wanted) // the same action again raises no second escalation

	var esc *apipb.EscalationInfo
	eventually(t, "escalation raised", func() bool {
		got, err := d.client.GetSession(context.Background(), &apipb.GetSessionRequest{Id: s.Id})
		if err != nil || len(got.Escalations) == 0 {
			return false
		}
		if len(got.Escalations) != 1 {
			t.Fatalf("escalations %v, want one", got.Escalations)
		}
		esc = got.Escalations[0]
		return true
	})
	if esc.State != "pending" || !strings.Contains(esc.Action, fmt.Sprintf("127.0.0.1:%d", wanted)) {
		t.Errorf("escalation %v, want pending connect to port %d", esc, wanted)
	}

	if _, err := d.client.Approve(context.Background(), &apipb.ApproveRequest{Session: s.Id, Escalation: esc.Id}); err != nil {
		t.Fatal(err)
	}
	if got := connect(wanted); got != "ok" {
		t.Errorf("approved connect: %s", got)
	}
	if got := connect(other); got != "errno 1" {
		t.Errorf("connect to a port never approved: %s, want errno 1", got)
	}
	if got := connect(allowed); got != "ok" {
		t.Errorf("connect inside the intent after approval: %s", got)
	}

	d.stop()
	var escalations, approvals, escalated int
	forEachRecord(t, d.cfg.StateDir, func(r *recordpb.Record) {
		switch {
		case r.GetEscalation() != nil:
			escalations++
		case r.GetApproval() != nil:
			approvals++
			if a := r.GetApproval(); a.ApprovedBy != "root" || a.EscalationId != esc.Id {
				t.Errorf("approval record %v", a)
			}
		case r.GetConnect().GetVerdict() == recordpb.Verdict_VERDICT_ESCALATE:
			escalated++
		}
	})
	// Two escalations: the approved port's, and the other port's after it.
	if escalations != 2 || approvals != 1 || escalated != 3 {
		t.Errorf("recorded %d escalations, %d approvals, %d escalated connects; want 2, 1, 3",
			escalations, approvals, escalated)
	}
}

// A session's processes are bounded where the cgroup v2 pids controller
// is available: a fork bomb stops at the limit.
func TestProcessLimit(t *testing.T) {
	d := startDaemonWith(t, func(c *Config) { c.Limits.MaxProcesses = 20 })
	s := d.open("name: bomb\npurpose: test\n", "")
	if _, err := os.Stat(filepath.Join(s.Cgroup, "pids.max")); err != nil {
		t.Skip("the cgroup v2 pids controller is not available here (on this host it is bound to cgroup v1)")
	}
	prog := `import os, time
n = 0
for i in range(60):
    try:
        if os.fork() == 0:
            time.sleep(5)
            os._exit(0)
        n += 1
    except OSError:
        pass
print(n)
`
	out, _ := runIn(t, s.Cgroup, nil, "/usr/bin/python3", "-c", prog)
	var forked int
	fmt.Sscan(strings.TrimSpace(out), &forked)
	if forked < 1 || forked >= 20 {
		t.Errorf("forked %d children under a limit of 20 tasks (output %q)", forked, out)
	}
}
