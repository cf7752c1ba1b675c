package loader

import (
	"fmt"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// Stats names every attached program and counts the runs of the one a
// session's connect went through.
func TestStats(t *testing.T) {
	e := newEnv(t, Options{})
	enabled, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		t.Skipf("BPF run-time statistics not supported: %v", err)
	}
	defer enabled.Close()
	port := listen(t, "tcp4", "127.0.0.1:0")
	dir, _ := e.session(listenerIntent(port))

	before := statsByName(t, e.l)
	for _, name := range []string{"connect4", "connect6", "sendmsg4", "sendmsg6", "sock_create",
		"sched_exec", "sched_fork", "sched_exit"} {
		if _, ok := before[name]; !ok {
			t.Errorf("no statistics for program %s; have %v", name, before)
		}
	}

	const connects = 3
	args := make([]string, connects)
	for i := range args {
		args[i] = fmt.Sprintf("connect,tcp,4,127.0.0.1,%d", port)
	}
	if got := helper(t, dir, "net_batch", args...); got != "ok\nok\nok\nok" {
		t.Fatalf("connects: %q", got)
	}

	after := statsByName(t, e.l)["connect4"]
	runs := after.RunCount - before["connect4"].RunCount
	if runs < connects {
		t.Errorf("connect4 ran %d times for %d connects", runs, connects)
	}
	if after.RunTime <= before["connect4"].RunTime || after.PerRun() <= 0 {
		t.Errorf("connect4 run time %v after %v, per run %v", after.RunTime,
			before["connect4"].RunTime, after.PerRun())
	}
}

func statsByName(t *testing.T, l *Loader) map[string]ProgramStats {
	t.Helper()
	st, err := l.Stats()
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]ProgramStats)
	for _, s := range st {
		out[s.Name] = s
	}
	return out
}
