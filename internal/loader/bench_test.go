package loader

import (
	"fmt"
	"os"
	"strconv"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// What idend costs a workload: each benchmark runs the same loop of calls
// in a process inside a session and in a process in a cgroup outside
// idend's root (where no idend program runs), alternating between them,
// and reports the CPU time per call at both (ns/CALL, base-ns/CALL), the
// median of their ratios round by round (x-base) and the same ratio of
// wall-clock times (wall-x-base). The rings are drained in the background
// as the daemon drains them; "lost" counts records that found a ring full.
// See docs/BENCHMARKS.md.

// listenerIntent allows TCP and UDP to the given ports of 127.0.0.1: one
// prefix.
func listenerIntent(ports ...int) string {
	list := ""
	for i, p := range ports {
		if i > 0 {
			list += ", "
		}
		list += strconv.Itoa(p)
	}
	return fmt.Sprintf(`
name: bench
purpose: reach the benchmark's listeners
network:
  egress:
    - to: 127.0.0.1
      ports: [%s]
`, list)
}

// egressCase is one session a workload runs in, against the baseline and,
// for large rule sets, against the one-rule session.
type egressCase struct {
	name string
	dir  string
	port int
	deny bool
	vs1  bool
}

// egressCases creates the sessions: the listener's rule alone, with 1,000
// and 100,000 prefixes, with 100,000 next to the listener's address, and
// the deny path (a port the one-rule session does not allow).
func egressCases(e *benchEnv, allowed, other int) []egressCase {
	one := benchCompile(e.tb, listenerIntent(allowed))
	dir1 := e.session(one)
	return []egressCase{
		{name: "rules=1", dir: dir1, port: allowed},
		{name: "rules=1000", dir: e.session(withPrefixes(one, 1000, false)), port: allowed, vs1: true},
		{name: "rules=100000", dir: e.session(withPrefixes(one, 100_000, false)), port: allowed, vs1: true},
		{name: "rules=100000-adjacent", dir: e.session(withPrefixes(one, 100_000, true)), port: allowed, vs1: true},
		{name: "deny", dir: dir1, port: other, deny: true},
	}
}

// runEgress runs the cases' sub-benchmarks for one workload helper.
func runEgress(b *testing.B, e *benchEnv, cases []egressCase, helper, call string) {
	one := cases[0].dir
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			lost := e.lost(b)
			sites := []site{{dir: e.base}, {dir: c.dir, deny: c.deny}}
			if c.vs1 {
				sites = append(sites, site{dir: one})
			}
			r := e.compare(b, b.N, sites, helper, "127.0.0.1", strconv.Itoa(c.port))
			reportVs(b, call, r)
			if c.vs1 {
				b.ReportMetric(r.ratio(1, 2, cpuOf), "x-rules1")
			}
			b.ReportMetric(float64(e.lost(b)-lost), "lost")
		})
	}
}

// BenchmarkConnect measures a TCP connect to a loopback listener: socket,
// connect, close.
func BenchmarkConnect(b *testing.B) {
	e := newBenchEnv(b, Options{MaxPrefixes: 1 << 20})
	allowed, other := benchListenTCP(b), benchListenTCP(b)
	runEgress(b, e, egressCases(e, allowed, other), "bench_connect", "connect")
}

// BenchmarkSendto measures sendto of one-byte UDP datagrams to a loopback
// socket.
func BenchmarkSendto(b *testing.B) {
	e := newBenchEnv(b, Options{MaxPrefixes: 1 << 20})
	allowed, other := benchListenUDP(b), benchListenUDP(b)
	runEgress(b, e, egressCases(e, allowed, other), "bench_sendto", "sendto")
}

func execIntentText(paths ...string) string {
	list := ""
	for i, p := range paths {
		if i > 0 {
			list += ", "
		}
		list += strconv.Quote(p)
	}
	return fmt.Sprintf("name: bench-exec\npurpose: run true\nexec:\n  allow: [%s]\n", list)
}

// BenchmarkExec measures fork, exec and wait of /bin/true. The baseline
// runs with idend's programs detached, because the exec, fork and exit
// tracepoints run for every process on the host: "allowlist" is a session
// with an exec allow list, "any" a session that tracks execs without one,
// and "outside" a process outside any session while idend runs, what
// every other process on the host pays.
func BenchmarkExec(b *testing.B) {
	e := newBenchEnv(b, Options{})
	self, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	allow := e.session(benchCompile(b, execIntentText(self, "/bin/true")))
	anyExec := e.session(benchCompile(b, "name: bench-any\npurpose: run anything\n"))

	for _, c := range []struct{ name, dir string }{
		{"allowlist", allow}, {"any", anyExec}, {"outside", e.base},
	} {
		b.Run(c.name, func(b *testing.B) {
			lost := e.lost(b)
			reportVs(b, "exec", e.compareAttached(b, b.N, c.dir, "bench_exec", "/bin/true"))
			b.ReportMetric(float64(e.lost(b)-lost), "lost")
		})
	}
}

// compareAttached is compare between two sites: the baseline cgroup with
// idend's programs detached (site 0) and dir with them attached (site 1).
func (e *benchEnv) compareAttached(tb testing.TB, n int, dir, helper string, args ...string) rounds {
	tb.Helper()
	nr := min(benchRounds, n)
	per := n / nr
	r := make(rounds, 2)
	for k := range nr {
		for j := range 2 {
			attached := (j+k)%2 == 1
			switch {
			case attached && e.l == nil:
				e.attach(tb)
			case !attached && e.l != nil:
				e.detach(tb)
			}
			s := site{dir: e.base}
			if attached {
				s.dir = dir
			}
			res := runLoop(tb, s.dir, helper, append(args, strconv.Itoa(per))...)
			checkLoop(tb, res, per, s)
			i := 0
			if attached {
				i = 1
			}
			r[i] = append(r[i], res.per(per))
		}
	}
	if e.l == nil {
		e.attach(tb)
	}
	return r
}

// BenchmarkProgramRunTime reports, from the kernel's BPF statistics, how
// long each program runs per call of a workload in a session, and how
// often it runs per call (NAME-ns/run, NAME-runs/op). The tracepoints also
// count runs for processes outside the session, which return early.
func BenchmarkProgramRunTime(b *testing.B) {
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		b.Skipf("BPF run-time statistics: %v", err)
	}
	defer stats.Close()

	e := newBenchEnv(b, Options{MaxPrefixes: 1 << 20})
	tcp, other, udp := benchListenTCP(b), benchListenTCP(b), benchListenUDP(b)
	self, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	one := benchCompile(b, listenerIntent(tcp, udp))
	dir1 := e.session(one)
	dirBig := e.session(withPrefixes(one, 100_000, true))
	dirExec := e.session(benchCompile(b, execIntentText(self, "/bin/true")))

	for _, w := range []struct {
		name, dir, helper string
		args              []string
		deny              bool
		progs             []string
	}{
		{"connect", dir1, "bench_connect", loopTo(tcp), false, []string{"connect4", "sock_create"}},
		{"connect-rules=100000-adjacent", dirBig, "bench_connect", loopTo(tcp), false, []string{"connect4"}},
		{"connect-deny", dir1, "bench_connect", loopTo(other), true, []string{"connect4"}},
		{"sendto", dir1, "bench_sendto", loopTo(udp), false, []string{"sendmsg4"}},
		{"exec", dirExec, "bench_exec", []string{"/bin/true"}, false,
			[]string{"sched_fork", "sched_exec", "sched_exit"}},
	} {
		b.Run(w.name, func(b *testing.B) {
			before := e.stats(b)
			r := runLoop(b, w.dir, w.helper, append(w.args, strconv.Itoa(b.N))...)
			checkLoop(b, r, b.N, site{dir: w.dir, deny: w.deny})
			delta := statsDelta(before, e.stats(b))
			b.ReportMetric(0, "ns/op")
			for _, p := range w.progs {
				d := delta[p]
				b.ReportMetric(float64(d.PerRun().Nanoseconds()), p+"-ns/run")
				b.ReportMetric(float64(d.RunCount)/float64(b.N), p+"-runs/op")
			}
		})
	}
}

func loopTo(port int) []string { return []string{"127.0.0.1", strconv.Itoa(port)} }

func (e *benchEnv) stats(tb testing.TB) []ProgramStats {
	tb.Helper()
	st, err := e.l.Stats()
	if err != nil {
		tb.Fatal(err)
	}
	return st
}
