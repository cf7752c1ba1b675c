package daemon

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/idend/idend/internal/api/apipb"
	"github.com/idend/idend/internal/cgroup"
	"github.com/idend/idend/internal/events"
	"github.com/idend/idend/internal/events/recordpb"
	"github.com/idend/idend/internal/intent"
	"github.com/idend/idend/internal/loader"
	"github.com/idend/idend/internal/testutil"
)

// The benchmarks re-execute this test binary in roles: a daemon in a
// process of its own, whose resident set is then the daemon's alone, and
// the workloads that run inside sessions. A role runs before TestMain.
func init() {
	role := os.Getenv("IDEND_BENCH_ROLE")
	if role == "" {
		return
	}
	var err error
	switch role {
	case "daemon":
		err = daemonRole(os.Args[1:])
	case "flood":
		err = floodRole(os.Args[1:])
	case "spawn":
		err = spawnRole(os.Args[1:])
	default:
		err = fmt.Errorf("unknown role %q", role)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// daemonRole runs a daemon with the config file args[0] until SIGTERM.
func daemonRole(args []string) error {
	cfg, err := LoadConfig(args[0])
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	return Run(ctx, cfg, log)
}

// floodRole sends one-byte UDP datagrams to 127.0.0.1:args[0] for
// args[1] or until it has sent args[3] (0: no limit), at args[2]
// datagrams a second (0: as fast as it can), and prints how many it sent
// and in how many nanoseconds.
func floodRole(args []string) error {
	if len(args) != 4 {
		return fmt.Errorf("want PORT DURATION RATE LIMIT, got %q", args)
	}
	d, err := time.ParseDuration(args[1])
	var port, rate, limit int
	if _, serr := fmt.Sscan(args[0]+" "+args[2]+" "+args[3], &port, &rate, &limit); err == nil {
		err = serr
	}
	if err != nil {
		return fmt.Errorf("flood arguments: %w", err)
	}
	if limit == 0 {
		limit = int(^uint(0) >> 1)
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	sa := &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}, Port: port}
	payload := []byte{'x'}

	start := time.Now()
	sent := 0
	for elapsed := time.Duration(0); elapsed < d && sent < limit; elapsed = time.Since(start) {
		// Send what the rate allows by now, in bursts of at most 100.
		due := min(100, limit-sent)
		if rate > 0 {
			due = min(due, int(elapsed.Seconds()*float64(rate))-sent)
		}
		if due <= 0 {
			time.Sleep(100 * time.Microsecond)
			continue
		}
		for range due {
			if err := unix.Sendto(fd, payload, 0, sa); err != nil {
				return fmt.Errorf("sendto: %w", err)
			}
		}
		sent += due
	}
	fmt.Println(sent, time.Since(start).Nanoseconds())
	return nil
}

// spawnRole runs args[0] args[1] times, one after the other.
func spawnRole(args []string) error {
	n, err := strconv.Atoi(args[1])
	if err != nil {
		return err
	}
	for range n {
		if err := exec.Command(args[0]).Run(); err != nil {
			return err
		}
	}
	return nil
}

// runRole runs this binary in a role inside the cgroup dir and returns its
// output.
func runRole(tb testing.TB, dir, role string, args ...string) string {
	tb.Helper()
	out, status := testutil.Run(tb, dir, []string{"IDEND_BENCH_ROLE=" + role}, os.Args[0], args...)
	if status != 0 {
		tb.Fatalf("%s in %s: exit %d: %s", role, dir, status, out)
	}
	return out
}

func requireRootB(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root: loads BPF programs and creates cgroups")
	}
}

func benchName() string {
	buf := make([]byte, 4)
	rand.Read(buf)
	return "idend-bench-" + hex.EncodeToString(buf)
}

// udpSink starts a UDP socket on 127.0.0.1 that reads and drops datagrams.
func udpSink(tb testing.TB) int {
	tb.Helper()
	return testutil.UDPSink(tb)
}

func udpIntent(name string, port int) string {
	return fmt.Sprintf(`name: %s
purpose: send datagrams to the benchmark
network:
  egress:
    - to: 127.0.0.1
      ports: [%d]
      protocol: udp
`, name, port)
}

// BenchmarkRingToRecording measures the user-space path of a kernel
// record on one core (GOMAXPROCS 1): read from the ring, decoded and
// appended to a recording with the daemon's default fsync policy, one
// Append per record as the daemon's pipeline does ("append"), or up to 64
// records per AppendBatch ("batch"). A session's UDP sends fill half the
// ring first, outside the timer; the ring is then read as the daemon reads
// it, polled. An iteration is one send's record. records/s
// divides by the time taken, records/cpu-s by the CPU time used, which on
// a busy machine leaves out the time the benchmark waited for its core.
func BenchmarkRingToRecording(b *testing.B) {
	requireRootB(b)
	l, dir := benchLoader(b)
	port := udpSink(b)
	cg, err := cgroup.ID(dir)
	if err != nil {
		b.Fatal(err)
	}
	if err := l.Apply(cg, 1, compileB(b, udpIntent("ring", port))); err != nil {
		b.Fatal(err)
	}
	evRing, denRing, err := l.Rings()
	if err != nil {
		b.Fatal(err)
	}
	defer evRing.Close()
	denRing.Close()

	for _, batch := range []int{1, 64} {
		name := "append"
		if batch > 1 {
			name = "batch"
		}
		b.Run(name, func(b *testing.B) {
			rec, err := events.OpenRecorder(b.TempDir(), events.RecorderOptions{})
			if err != nil {
				b.Fatal(err)
			}
			defer rec.Close()
			defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
			p := &ringPath{rd: evRing, rec: rec, batch: make([]*recordpb.Record, 0, batch)}

			// A fill takes at most half the ring, sendmsg records
			// being 104 bytes, so that none is lost.
			fill := evRing.BufferSize() / 2 / 104
			b.ResetTimer()
			records, cpu := 0, time.Duration(0)
			for done := 0; done < b.N; {
				k := min(b.N-done, fill)
				b.StopTimer()
				runRole(b, dir, "flood", strconv.Itoa(port), "1h", "0", strconv.Itoa(k))
				checkNoLoss(b, l)
				b.StartTimer()
				start := cpuTime()
				records += p.record(b, k)
				cpu += cpuTime() - start
				done += k
			}
			b.StopTimer()
			b.ReportMetric(0, "ns/op")
			b.ReportMetric(float64(records)/b.Elapsed().Seconds(), "records/s")
			b.ReportMetric(float64(records)/cpu.Seconds(), "records/cpu-s")
		})
	}
}

// checkNoLoss fails the benchmark when a sendmsg record found the events
// ring full.
func checkNoLoss(b *testing.B, l *loader.Loader) {
	if l, err := l.Losses(); err != nil || l[loader.RingEvents][loader.KindSendmsg] != 0 {
		b.Fatalf("sendmsg records lost: %v %v", l, err)
	}
}

// cpuTime returns the CPU time this process has used.
func cpuTime() time.Duration {
	var ru unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// ringPath is the pipeline's path from a ring to a recording.
type ringPath struct {
	rd    *ringbuf.Reader
	rec   *events.Recorder
	batch []*recordpb.Record
	raw   ringbuf.Record
}

// record records the ring's records until k sendmsg records are in, and
// returns how many records it wrote. It reads as the daemon's pipeline
// does (readRing): the events ring wakes its reader only for a backlog,
// so each read waits at most pollInterval.
func (p *ringPath) record(b *testing.B, k int) int {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	wallOffset := time.Now().UnixNano() - ts.Nano()
	n, idle := 0, 0
	for sends := 0; sends < k; n++ {
		p.rd.SetDeadline(time.Now().Add(pollInterval))
		if err := p.rd.ReadInto(&p.raw); errors.Is(err, os.ErrDeadlineExceeded) {
			if idle++; idle == 100 {
				b.Fatalf("no record for %v, %d of %d sends in", 100*pollInterval, sends, k)
			}
			n--
			continue
		} else if err != nil {
			b.Fatal(err)
		}
		idle = 0
		r, err := events.DecodeKernel(p.raw.RawSample)
		if err != nil {
			b.Fatal(err)
		}
		r.WallNs = int64(r.MonoNs) + wallOffset
		if r.GetConnect() != nil {
			sends++
		}
		p.batch = append(p.batch, r)
		if len(p.batch) == cap(p.batch) || sends == k || p.rd.AvailableBytes() == 0 {
			p.flush(b)
		}
	}
	return n
}

func (p *ringPath) flush(b *testing.B) {
	var err error
	if len(p.batch) == 1 {
		_, err = p.rec.Append(p.batch[0])
	} else {
		_, err = p.rec.AppendBatch(p.batch)
	}
	if err != nil {
		b.Fatal(err)
	}
	p.batch = p.batch[:0]
}

// benchLoader opens a loader on a cgroup root and bpffs directory of its
// own and returns it with a session cgroup below the root.
func benchLoader(b *testing.B) (*loader.Loader, string) {
	mnt, err := cgroup.Mount()
	if err != nil {
		b.Fatal(err)
	}
	name := benchName()
	root := filepath.Join(mnt, name)
	if err := cgroup.Create(root); err != nil {
		b.Fatal(err)
	}
	bpffs := filepath.Join("/sys/fs/bpf", name)
	b.Cleanup(func() {
		if err := errors.Join(cgroup.Kill(root, 5*time.Second), loader.Cleanup(bpffs)); err != nil {
			b.Error(err)
		}
	})
	l, err := loader.Open(loader.Options{BPFFSDir: bpffs, CgroupRoot: root})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { l.Close() })
	dir := filepath.Join(root, "s1")
	if err := cgroup.Create(dir); err != nil {
		b.Fatal(err)
	}
	return l, dir
}

func compileB(b *testing.B, text string) *intent.Compiled {
	in, err := intent.Parse("bench.yaml", []byte(text))
	if err != nil {
		b.Fatal(err)
	}
	c, err := intent.Compile(in, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	return c
}

// benchDaemon is a daemon running in a process of its own.
type benchDaemon struct {
	cfg     Config
	cmd     *exec.Cmd
	stderr  bytes.Buffer
	client  apipb.IdendClient
	metrics string
}

// startBenchDaemon starts a daemon on a cgroup root, bpffs directory and
// state directory of its own, with metrics on a free loopback port.
func startBenchDaemon(b *testing.B) *benchDaemon {
	requireRootB(b)
	name := benchName()
	dir := b.TempDir()
	d := &benchDaemon{cfg: DefaultConfig()}
	d.cfg.Socket = filepath.Join(dir, "idend.sock")
	d.cfg.StateDir = filepath.Join(dir, "state")
	d.cfg.BPFFSDir = filepath.Join("/sys/fs/bpf", name)
	d.cfg.CgroupRoot = name
	d.cfg.MetricsAddress = freeAddr(b)
	d.metrics = "http://" + d.cfg.MetricsAddress + "/metrics"
	config := fmt.Sprintf("socket: %s\nstate_dir: %s\nbpffs_dir: %s\ncgroup_root: %s\nmetrics_address: %s\n",
		d.cfg.Socket, d.cfg.StateDir, d.cfg.BPFFSDir, d.cfg.CgroupRoot, d.cfg.MetricsAddress)
	path := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		b.Fatal(err)
	}

	d.cmd = exec.Command(os.Args[0], path)
	d.cmd.Env = append(os.Environ(), "IDEND_BENCH_ROLE=daemon")
	d.cmd.Stderr = &d.stderr
	if err := d.cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		d.stop(b)
		if err := Cleanup(d.cfg); err != nil {
			b.Error(err)
		}
	})
	d.waitReady(b)
	conn, err := grpc.NewClient("unix://"+d.cfg.Socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	d.client = apipb.NewIdendClient(conn)
	return d
}

// freeAddr returns a loopback address with a port free a moment ago.
func freeAddr(b *testing.B) string {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func (d *benchDaemon) waitReady(b *testing.B) {
	for range 200 {
		if _, err := os.Stat(d.cfg.Socket); err == nil {
			if _, err := d.scrape(); err == nil {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	b.Fatalf("daemon not ready after 10s: %s", d.stderr.String())
}

func (d *benchDaemon) stop(b *testing.B) {
	if d.cmd.Process == nil || d.cmd.ProcessState != nil {
		return
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	if err := d.cmd.Wait(); err != nil {
		b.Errorf("daemon: %v: %s", err, d.stderr.String())
	}
}

func (d *benchDaemon) open(b *testing.B, text string) *apipb.Session {
	s, err := d.client.OpenSession(context.Background(), &apipb.OpenSessionRequest{
		Intent: []byte(text), IntentFile: "bench.yaml", Credential: []byte("bench-token")})
	if err != nil {
		b.Fatalf("open session: %v", err)
	}
	return s
}

// scrape reads the daemon's metrics and sums each metric over its labels.
func (d *benchDaemon) scrape() (map[string]float64, error) {
	resp, err := http.Get(d.metrics)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := make(map[string]float64)
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		name, _, _ := strings.Cut(line[:i], "{")
		out[name] += v
	}
	return out, sc.Err()
}

func (d *benchDaemon) metric(b *testing.B, name string) float64 {
	m, err := d.scrape()
	if err != nil {
		b.Fatal(err)
	}
	return m[name]
}

// settle waits until the daemon has recorded at least want kernel records
// more than it had at from, or until its count stops moving for a second,
// and returns the count.
func (d *benchDaemon) settle(b *testing.B, from, want float64) float64 {
	last, still := d.metric(b, "idend_kernel_records_total"), time.Now()
	for last < from+want && time.Since(still) < time.Second {
		time.Sleep(50 * time.Millisecond)
		if n := d.metric(b, "idend_kernel_records_total"); n != last {
			last, still = n, time.Now()
		}
	}
	return last
}

// memory is the daemon's memory as /proc reports it, in MiB.
type memory struct {
	rss, peak float64
	// anon is the daemon's own: heap, stacks, runtime.
	anon float64
	// rings is the part of rss that the event rings' pages take. They are
	// kernel memory, allocated when the rings are created and pinned with
	// or without a daemon; the reader maps each ring's data twice, and rss
	// counts both.
	rings float64
}

// memory reads /proc/PID/status and /proc/PID/smaps.
func (d *benchDaemon) memory(b *testing.B) memory {
	pid := d.cmd.Process.Pid
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	var m memory
	fields := map[string]*float64{"VmRSS:": &m.rss, "VmHWM:": &m.peak, "RssAnon:": &m.anon}
	for _, line := range strings.Split(string(status), "\n") {
		f := strings.Fields(line)
		if v := fields[firstOf(f)]; v != nil && len(f) > 1 {
			*v = kibToMiB(f[1])
		}
	}
	smaps, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		b.Fatal(err)
	}
	ring := false
	for _, line := range strings.Split(string(smaps), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 5 && strings.Contains(f[0], "-"):
			ring = len(f) == 6 && f[5] == "anon_inode:bpf-map"
		case ring && firstOf(f) == "Rss:" && len(f) > 1:
			m.rings += kibToMiB(f[1])
		}
	}
	return m
}

func firstOf(f []string) string {
	if len(f) == 0 {
		return ""
	}
	return f[0]
}

func kibToMiB(s string) float64 {
	kib, _ := strconv.ParseFloat(s, 64)
	return kib / 1024
}

// BenchmarkFlood sends UDP datagrams from a session at a steady rate for
// three seconds, one kernel record each, through a daemon in a process of
// its own, and reports the records the daemon recorded and lost (the
// daemon's own metrics) and the rate reached. rate=0 sends as fast as one
// process can.
func BenchmarkFlood(b *testing.B) {
	d := startBenchDaemon(b)
	port := udpSink(b)
	s := d.open(b, udpIntent("flood", port))
	for _, rate := range []int{100_000, 0} {
		b.Run(fmt.Sprintf("rate=%d", rate), func(b *testing.B) {
			var sent, recorded, lost, ns float64
			for range b.N {
				m0, err := d.scrape()
				if err != nil {
					b.Fatal(err)
				}
				out := runRole(b, s.Cgroup, "flood", strconv.Itoa(port), "3s", strconv.Itoa(rate), "0")
				var n, t float64
				if _, err := fmt.Sscan(out, &n, &t); err != nil {
					b.Fatalf("flood output %q: %v", out, err)
				}
				got := d.settle(b, m0["idend_kernel_records_total"], n)
				sent, ns = sent+n, ns+t
				recorded += got - m0["idend_kernel_records_total"]
				lost += d.metric(b, "idend_kernel_records_lost_total") - m0["idend_kernel_records_lost_total"]
			}
			b.ReportMetric(0, "ns/op")
			b.ReportMetric(sent/(ns/1e9), "sent/s")
			b.ReportMetric(recorded, "recorded")
			b.ReportMetric(lost, "lost")
		})
	}
}

// BenchmarkDaemonMemory reports the daemon's resident set (MiB): idle;
// with 100 sessions open; after 10,000 and 20,000 processes ran in them,
// each tracked (fork, exec and exit recorded); after the sessions closed;
// and its peak. own-MiB is the resident set less the rings' pages
// (rings-MiB), anon-MiB the anonymous memory, both after 20,000 processes.
func BenchmarkDaemonMemory(b *testing.B) {
	for range b.N {
		d := startBenchDaemon(b)
		// Idle: once the garbage of loading the programs has been
		// collected and given back.
		time.Sleep(5 * time.Second)
		idle := d.memory(b)

		var sessions []*apipb.Session
		for i := range 100 {
			text := fmt.Sprintf("name: mem-%d\npurpose: run processes\nnetwork:\n  egress:\n"+
				"    - to: 10.%d.0.0/16\n      ports: [443]\n", i, i)
			sessions = append(sessions, d.open(b, text))
		}
		open := d.memory(b)
		d.spawnAll(b, sessions, 100)
		procs10k := d.memory(b)
		d.spawnAll(b, sessions, 100)
		procs20k := d.memory(b)
		for _, s := range sessions {
			if _, err := d.client.CloseSession(context.Background(), &apipb.CloseSessionRequest{Id: s.Id}); err != nil {
				b.Fatal(err)
			}
		}
		closed := d.memory(b)

		b.ReportMetric(0, "ns/op")
		b.ReportMetric(idle.rss, "idle-MiB")
		b.ReportMetric(open.rss, "sessions100-MiB")
		b.ReportMetric(procs10k.rss, "procs10k-MiB")
		b.ReportMetric(procs20k.rss, "procs20k-MiB")
		b.ReportMetric(closed.rss, "closed-MiB")
		b.ReportMetric(closed.peak, "peak-MiB")
		b.ReportMetric(procs20k.rings, "rings-MiB")
		b.ReportMetric(procs20k.rss-procs20k.rings, "own-MiB")
		b.ReportMetric(procs20k.anon, "anon-MiB")
	}
}

// spawnAll runs n processes in each session, then waits until the daemon
// has recorded their fork, exec and exit records.
func (d *benchDaemon) spawnAll(b *testing.B, sessions []*apipb.Session, n int) {
	from := d.metric(b, "idend_kernel_records_total")
	for _, s := range sessions {
		runRole(b, s.Cgroup, "spawn", "/bin/true", strconv.Itoa(n))
	}
	d.settle(b, from, float64(3*n*len(sessions)))
}
