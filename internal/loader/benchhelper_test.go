package loader

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"

	"github.com/idend/idend/internal/cgroup"
	"github.com/idend/idend/internal/intent"
	"github.com/idend/idend/internal/testutil"
)

// The benchmarks' workloads run in this test binary, re-executed inside a
// cgroup (see TestMain): a Go benchmark's own process cannot sit in a
// session. Each loops over the call it measures, pinned to the last CPU,
// and prints "WALL CPU FAILED ERRNO": the loop's duration and the CPU time
// it took (its own and its waited-for children's) in nanoseconds, how many
// calls failed, and the errno of the last failure.
func init() {
	helpers["bench_connect"] = benchConnect
	helpers["bench_sendto"] = benchSendto
	helpers["bench_exec"] = benchExec
}

// loopResult is what a workload loop reports.
type loopResult struct {
	wall, cpu int64
	failed    int
	errno     unix.Errno
}

// per returns the result's cost per call.
func (r loopResult) per(calls int) cost {
	return cost{cpu: float64(r.cpu) / float64(calls), wall: float64(r.wall) / float64(calls)}
}

// cpuTime returns the CPU time of this process and its waited-for
// children.
func cpuTime() int64 {
	var self, children unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &self)
	unix.Getrusage(unix.RUSAGE_CHILDREN, &children)
	var ns int64
	for _, tv := range []unix.Timeval{self.Utime, self.Stime, children.Utime, children.Stime} {
		ns += tv.Nano()
	}
	return ns
}

// timeLoop calls call n times on the last CPU and prints the result.
func timeLoop(n int, call func() error) error {
	runtime.LockOSThread()
	var cpus unix.CPUSet
	cpus.Set(runtime.NumCPU() - 1)
	if err := unix.SchedSetaffinity(0, &cpus); err != nil {
		return fmt.Errorf("pin to a CPU: %w", err)
	}

	var r loopResult
	cpu := cpuTime()
	start := time.Now()
	for range n {
		if err := call(); err != nil {
			r.failed++
			errors.As(err, &r.errno)
		}
	}
	r.wall = time.Since(start).Nanoseconds()
	r.cpu = cpuTime() - cpu
	fmt.Printf("%d %d %d %d\n", r.wall, r.cpu, r.failed, int(r.errno))
	return nil
}

// loopArgs parses "ADDR PORT N".
func loopArgs(args []string) (*unix.SockaddrInet4, int, error) {
	if len(args) != 3 {
		return nil, 0, fmt.Errorf("want ADDR PORT N, got %q", args)
	}
	addr, err := netip.ParseAddr(args[0])
	if err != nil {
		return nil, 0, err
	}
	port, err := strconv.Atoi(args[1])
	if err != nil {
		return nil, 0, err
	}
	n, err := strconv.Atoi(args[2])
	if err != nil {
		return nil, 0, err
	}
	return &unix.SockaddrInet4{Addr: addr.As4(), Port: port}, n, nil
}

// benchConnect makes N TCP connects to ADDR:PORT, each on a new socket
// closed right after.
func benchConnect(args []string) error {
	sa, n, err := loopArgs(args)
	if err != nil {
		return err
	}
	// A reset on close leaves no TIME_WAIT sockets to slow later
	// connects down.
	linger := &unix.Linger{Onoff: 1}
	return timeLoop(n, func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		if err := unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, linger); err != nil {
			return err
		}
		return unix.Connect(fd, sa)
	})
}

// benchSendto sends N one-byte UDP datagrams to ADDR:PORT from one
// unconnected socket.
func benchSendto(args []string) error {
	sa, n, err := loopArgs(args)
	if err != nil {
		return err
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	payload := []byte{'x'}
	return timeLoop(n, func() error { return unix.Sendto(fd, payload, 0, sa) })
}

var errExitStatus = errors.New("exit status not zero")

// benchExec runs PATH N times, each with fork, exec and wait.
func benchExec(args []string) error {
	if len(args) != 2 {
		return fmt.Errorf("want PATH N, got %q", args)
	}
	n, err := strconv.Atoi(args[1])
	if err != nil {
		return err
	}
	path := args[0]
	attr := &syscall.ProcAttr{}
	return timeLoop(n, func() error {
		pid, err := syscall.ForkExec(path, []string{path}, attr)
		if err != nil {
			return err
		}
		var ws syscall.WaitStatus
		if _, err := syscall.Wait4(pid, &ws, 0, nil); err != nil {
			return err
		}
		if ws != 0 {
			return errExitStatus
		}
		return nil
	})
}

// benchEnv is a loader on a cgroup root and bpffs directory of its own,
// with a cgroup outside that root for baselines: no idend program runs for
// the tasks in it. The rings are drained as the daemon would.
type benchEnv struct {
	tb    testing.TB
	opts  Options
	base  string
	l     *Loader
	drain *drainer

	next     uint64
	sessions []benchSession
	// earlier counts the losses of the maps of earlier attachments.
	earlier uint64
}

type benchSession struct {
	dir string
	id  uint64
	c   *intent.Compiled
}

func newBenchEnv(b *testing.B, opts Options) *benchEnv {
	b.Helper()
	if os.Geteuid() != 0 {
		b.Skip("needs root: loads BPF programs and creates cgroups")
	}
	mnt, err := cgroup.Mount()
	if err != nil {
		b.Fatal(err)
	}
	name := randomName("idend-bench-")
	opts.CgroupRoot = filepath.Join(mnt, name)
	opts.BPFFSDir = filepath.Join("/sys/fs/bpf", name)
	e := &benchEnv{tb: b, opts: opts, base: filepath.Join(mnt, name+"-base")}
	for _, dir := range []string{opts.CgroupRoot, e.base} {
		if err := cgroup.Create(dir); err != nil {
			b.Fatal(err)
		}
	}
	b.Cleanup(e.cleanup)
	e.attach(b)
	return e
}

// attach opens the loader, which attaches the programs, and applies the
// sessions' policies.
func (e *benchEnv) attach(tb testing.TB) {
	tb.Helper()
	l, err := Open(e.opts)
	if err != nil {
		tb.Fatalf("open loader: %v", err)
	}
	e.l = l
	if e.drain, err = startDrain(l); err != nil {
		tb.Fatal(err)
	}
	for _, s := range e.sessions {
		e.apply(tb, s)
	}
}

// detach removes every program and map: afterwards no idend program runs
// anywhere.
func (e *benchEnv) detach(tb testing.TB) {
	tb.Helper()
	e.drain.stop()
	e.earlier = e.lost(tb)
	if err := errors.Join(e.l.Close(), Cleanup(e.opts.BPFFSDir)); err != nil {
		tb.Fatal(err)
	}
	e.l = nil
}

func (e *benchEnv) cleanup() {
	if e.l != nil {
		e.detach(e.tb)
	}
	for _, dir := range []string{e.opts.CgroupRoot, e.base} {
		if err := cgroup.Kill(dir, 5*time.Second); err != nil {
			e.tb.Error(err)
		}
	}
}

// session creates a session cgroup with policy c and returns its directory.
func (e *benchEnv) session(c *intent.Compiled) string {
	e.tb.Helper()
	e.next++
	s := benchSession{dir: filepath.Join(e.opts.CgroupRoot, fmt.Sprintf("s%d", e.next)), id: e.next, c: c}
	if err := cgroup.Create(s.dir); err != nil {
		e.tb.Fatal(err)
	}
	e.apply(e.tb, s)
	e.sessions = append(e.sessions, s)
	return s.dir
}

func (e *benchEnv) apply(tb testing.TB, s benchSession) {
	tb.Helper()
	cg, err := cgroup.ID(s.dir)
	if err != nil {
		tb.Fatal(err)
	}
	if err := e.l.Apply(cg, s.id, s.c); err != nil {
		tb.Fatalf("apply %d prefixes: %v", len(s.c.V4), err)
	}
}

// lost sums the records lost to full rings since the environment began.
func (e *benchEnv) lost(tb testing.TB) uint64 {
	tb.Helper()
	if e.l == nil {
		return e.earlier
	}
	losses, err := e.l.Losses()
	if err != nil {
		tb.Fatal(err)
	}
	n := e.earlier
	for _, ring := range losses {
		for _, k := range ring {
			n += k
		}
	}
	return n
}

// runLoop runs a workload helper in the cgroup dir and returns its result.
func runLoop(tb testing.TB, dir, helper string, args ...string) loopResult {
	tb.Helper()
	out, status := testutil.Run(tb, dir, []string{"IDEND_TEST_HELPER=" + helper}, os.Args[0], args...)
	if status != 0 {
		tb.Fatalf("%s in %s: exit %d: %s", helper, dir, status, out)
	}
	var r loopResult
	var errno int
	line, _, _ := strings.Cut(out, "\n")
	if _, err := fmt.Sscan(line, &r.wall, &r.cpu, &r.failed, &errno); err != nil {
		tb.Fatalf("%s in %s: %q: %v", helper, dir, out, err)
	}
	r.errno = unix.Errno(errno)
	return r
}

// site is where a workload runs, and whether its calls must all be
// refused with EPERM rather than all succeed.
type site struct {
	dir  string
	deny bool
}

// benchRounds is how many times compare alternates between its sites, so
// that drift and noise on the machine fall on each alike.
const benchRounds = 10

// cost is nanoseconds per call: of CPU time, and of wall-clock time. On
// a busy machine the CPU time is the steadier of the two: it leaves out
// the time the workload waited for a CPU.
type cost struct{ cpu, wall float64 }

func cpuOf(c cost) float64  { return c.cpu }
func wallOf(c cost) float64 { return c.wall }

// rounds holds the costs per call, by site and round.
type rounds [][]cost

// median returns site i's median cost per call.
func (r rounds) median(i int, of func(cost) float64) float64 {
	v := make([]float64, len(r[i]))
	for k, c := range r[i] {
		v[k] = of(c)
	}
	return median(v)
}

// ratio returns the median over the rounds of site i's cost per call over
// site j's in the same round.
func (r rounds) ratio(i, j int, of func(cost) float64) float64 {
	v := make([]float64, len(r[i]))
	for k := range v {
		v[k] = of(r[i][k]) / of(r[j][k])
	}
	return median(v)
}

// compare runs a workload at each site in turn, benchRounds times with
// n/benchRounds calls each, every other round in reverse order, and checks
// the calls came to what each site says.
func (e *benchEnv) compare(tb testing.TB, n int, sites []site, helper string, args ...string) rounds {
	tb.Helper()
	nr := min(benchRounds, n)
	per := n / nr
	r := make(rounds, len(sites))
	for k := range nr {
		for j := range sites {
			i := j
			if k%2 == 1 {
				i = len(sites) - 1 - j
			}
			res := runLoop(tb, sites[i].dir, helper, append(args, strconv.Itoa(per))...)
			checkLoop(tb, res, per, sites[i])
			r[i] = append(r[i], res.per(per))
		}
	}
	return r
}

func checkLoop(tb testing.TB, r loopResult, calls int, s site) {
	tb.Helper()
	switch {
	case s.deny && (r.failed != calls || r.errno != unix.EPERM):
		tb.Fatalf("in %s: %d of %d calls failed, last with %v; want all refused with EPERM",
			s.dir, r.failed, calls, r.errno)
	case !s.deny && r.failed != 0:
		tb.Fatalf("in %s: %d of %d calls failed, last with %v", s.dir, r.failed, calls, r.errno)
	}
}

func median(v []float64) float64 {
	s := slices.Sorted(slices.Values(v))
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// reportVs reports the CPU time per call at site 1 and at its baseline,
// site 0, and their ratio, and the ratio of their wall-clock times. The
// built-in ns/op, which counts every site and the workloads' start-up, is
// suppressed.
func reportVs(b *testing.B, call string, r rounds) {
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(r.median(1, cpuOf), "ns/"+call)
	b.ReportMetric(r.median(0, cpuOf), "base-ns/"+call)
	b.ReportMetric(r.ratio(1, 0, cpuOf), "x-base")
	b.ReportMetric(r.ratio(1, 0, wallOf), "wall-x-base")
}

// drainer reads both rings as the daemon's pipeline reads them, so that
// the kernel writes into rings with room and wakes their reader as it does
// under a daemon.
type drainer struct {
	rings []*ringbuf.Reader
	wg    sync.WaitGroup
}

func startDrain(l *Loader) (*drainer, error) {
	events, denials, err := l.Rings()
	if err != nil {
		return nil, err
	}
	d := &drainer{rings: []*ringbuf.Reader{events, denials}}
	for _, rd := range d.rings {
		d.wg.Go(func() { pollDrain(rd) })
	}
	return d, nil
}

// drainPoll is how long a read waits for a record, as in the daemon
// (pollInterval in internal/daemon/pipeline.go): the events ring wakes its
// reader only for a backlog (WAKEUP_BYTES in bpf/maps.h), and a reader
// that only waits to be woken leaves up to that much unread.
const drainPoll = 10 * time.Millisecond

// pollDrain empties rd until it is closed. The records are dropped, not
// decoded: the workloads are measured.
func pollDrain(rd *ringbuf.Reader) {
	var rec ringbuf.Record
	for {
		rd.SetDeadline(time.Now().Add(drainPoll))
		err := rd.ReadInto(&rec)
		if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			return
		}
	}
}

func (d *drainer) stop() {
	for _, rd := range d.rings {
		rd.Close()
	}
	d.wg.Wait()
}

// benchCompile compiles an intent given as YAML text.
func benchCompile(tb testing.TB, text string) *intent.Compiled {
	tb.Helper()
	in, err := intent.Parse("bench.yaml", []byte(text))
	if err != nil {
		tb.Fatalf("parse intent: %v", err)
	}
	files, err := intent.ResolveExec(in.Exec.Paths)
	if err != nil {
		tb.Fatal(err)
	}
	c, err := intent.Compile(in, nil, files)
	if err != nil {
		tb.Fatalf("compile intent: %v", err)
	}
	return c
}

// withPrefixes returns a copy of c grown to n IPv4 prefixes with /32 rules
// for port 443/tcp: addresses in 10.0.0.0/8, or, when adjacent, the
// addresses right after 127.0.0.1, which share the longest prefixes with
// it and make its lookup walk the deepest path in the trie. Intents are
// limited to intent.DefaultLimits prefixes; the kernel maps hold more, and
// the loader is what is measured here.
func withPrefixes(c *intent.Compiled, n int, adjacent bool) *intent.Compiled {
	out := *c
	out.V4 = slices.Clone(c.V4)
	first := netip.MustParseAddr("10.0.0.1")
	if adjacent {
		first = netip.MustParseAddr("127.0.0.2")
	}
	ports := []intent.PortRule{{Lo: 443, Hi: 443, Proto: intent.ProtoTCP}}
	for a := first; len(out.V4) < n; a = a.Next() {
		out.V4 = append(out.V4, intent.PrefixRule{Prefix: netip.PrefixFrom(a, 32), Ports: ports})
	}
	slices.SortFunc(out.V4, func(x, y intent.PrefixRule) int { return x.Prefix.Addr().Compare(y.Prefix.Addr()) })
	return &out
}

// benchListenTCP starts a TCP listener on 127.0.0.1 outside any session
// that accepts and closes connections in the background.
func benchListenTCP(tb testing.TB) int {
	tb.Helper()
	return testutil.Listen(tb, "tcp4", "127.0.0.1:0")
}

// benchListenUDP starts a UDP socket on 127.0.0.1 that reads and drops
// datagrams in the background.
func benchListenUDP(tb testing.TB) int {
	tb.Helper()
	return testutil.UDPSink(tb)
}

// statsDelta returns the run count and run time each program gained
// between two Stats snapshots, by program name.
func statsDelta(before, after []ProgramStats) map[string]ProgramStats {
	out := make(map[string]ProgramStats)
	for i, a := range after {
		d := a
		if i < len(before) && before[i].Name == a.Name {
			d.RunCount -= before[i].RunCount
			d.RunTime -= before[i].RunTime
			d.RecursionMisses -= before[i].RecursionMisses
		}
		out[a.Name] = d
	}
	return out
}
