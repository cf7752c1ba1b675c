package loader

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"

	"github.com/idend/idend/internal/cgroup"
	"github.com/idend/idend/internal/testutil"
)

func connectTCP(host string, port int) string {
	return fmt.Sprintf("socket.create_connection((%q, %d), timeout=3).close()", host, port)
}

func connectTCP6(host string, port int) string {
	return fmt.Sprintf("s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)\n"+
		"s.settimeout(3)\ns.connect((%q, %d))\ns.close()", host, port)
}

func TestConnectTCP(t *testing.T) {
	e := newEnv(t, Options{})
	allowed := listen(t, "tcp4", "127.0.0.1:0")
	other := listen(t, "tcp4", "127.0.0.1:0")
	dir, _ := e.session(fmt.Sprintf(`
name: tcp
purpose: reach one loopback port
network:
  egress:
    - to: 127.0.0.1
      ports: [%d]
      protocol: tcp
`, allowed))

	if got := py(t, dir, connectTCP("127.0.0.1", allowed)); got != "ok" {
		t.Errorf("connect to allowed port: %s", got)
	}
	if got := py(t, dir, connectTCP("127.0.0.1", other)); got != eperm {
		t.Errorf("connect to other port: %s, want %s", got, eperm)
	}
	// 0.0.0.0 reaches the local host; it gets no implicit pass.
	if got := py(t, dir, connectTCP("0.0.0.0", allowed)); got != eperm {
		t.Errorf("connect to 0.0.0.0: %s, want %s", got, eperm)
	}
	// TCP Fast Open sends data with the SYN through sendto.
	tfo := fmt.Sprintf("s = socket.socket()\ns.sendto(b'x', socket.MSG_FASTOPEN, ('127.0.0.1', %d))", other)
	if got := py(t, dir, tfo); got != eperm {
		t.Errorf("TCP fast open to other port: %s, want %s", got, eperm)
	}
	if _, err := os.Stat("/usr/bin/curl"); err == nil {
		out, code := run(t, dir, "curl", "-sS", "-m", "3", fmt.Sprintf("http://127.0.0.1:%d/", other))
		if code == 0 || !strings.Contains(out, "ermission denied") && !strings.Contains(out, "Failed to connect") {
			t.Errorf("curl to other port: exit %d, %q", code, out)
		}
	}
}

func TestConnectIPv6(t *testing.T) {
	e := newEnv(t, Options{})
	allowed := listen(t, "tcp6", "[::1]:0")
	other := listen(t, "tcp6", "[::1]:0")
	v4 := listen(t, "tcp4", "127.0.0.1:0")
	dir, _ := e.session(fmt.Sprintf(`
name: tcp6
purpose: reach one IPv6 loopback port
network:
  egress:
    - to: ::1
      ports: [%d]
`, allowed))

	if got := py(t, dir, connectTCP6("::1", allowed)); got != "ok" {
		t.Errorf("connect to allowed [::1] port: %s", got)
	}
	if got := py(t, dir, connectTCP6("::1", other)); got != eperm {
		t.Errorf("connect to other [::1] port: %s, want %s", got, eperm)
	}
	// An IPv4-mapped address is judged by the IPv4 rules, which allow
	// nothing here.
	if got := py(t, dir, connectTCP6("::ffff:127.0.0.1", v4)); got != eperm {
		t.Errorf("connect to ::ffff:127.0.0.1: %s, want %s", got, eperm)
	}
	if got := py(t, dir, connectTCP6("::", allowed)); got != eperm {
		t.Errorf("connect to [::]: %s, want %s", got, eperm)
	}
}

func TestConnectV4Mapped(t *testing.T) {
	e := newEnv(t, Options{})
	allowed := listen(t, "tcp4", "127.0.0.1:0")
	other := listen(t, "tcp4", "127.0.0.1:0")
	dir, _ := e.session(fmt.Sprintf(`
name: mapped
purpose: reach one IPv4 port through an IPv6 socket
network:
  egress:
    - to: 127.0.0.1/32
      ports: [%d]
`, allowed))

	if got := py(t, dir, connectTCP6("::ffff:127.0.0.1", allowed)); got != "ok" {
		t.Errorf("v4-mapped connect to allowed port: %s", got)
	}
	if got := py(t, dir, connectTCP6("::ffff:127.0.0.1", other)); got != eperm {
		t.Errorf("v4-mapped connect to other port: %s, want %s", got, eperm)
	}
}

func TestUDP(t *testing.T) {
	e := newEnv(t, Options{})
	allowed := udpListen(t, "udp4", "127.0.0.1:0")
	other := udpListen(t, "udp4", "127.0.0.1:0")
	tcpOnly := udpListen(t, "udp4", "127.0.0.1:0")
	dir, _ := e.session(fmt.Sprintf(`
name: udp
purpose: send datagrams to one port
network:
  egress:
    - to: 127.0.0.0/8
      ports: [%d]
      protocol: udp
    - to: 127.0.0.1
      ports: [%d]
      protocol: tcp
`, allowed, tcpOnly))

	send := func(port int) string {
		return fmt.Sprintf("s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.sendto(b'x', ('127.0.0.1', %d))", port)
	}
	connected := func(port int) string {
		return fmt.Sprintf("s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.connect(('127.0.0.1', %d))\ns.send(b'x')", port)
	}
	if got := py(t, dir, send(allowed)); got != "ok" {
		t.Errorf("sendto allowed port: %s", got)
	}
	if got := py(t, dir, send(other)); got != eperm {
		t.Errorf("sendto other port: %s, want %s", got, eperm)
	}
	if got := py(t, dir, send(tcpOnly)); got != eperm {
		t.Errorf("sendto a port allowed for tcp only: %s, want %s", got, eperm)
	}
	if got := py(t, dir, connected(allowed)); got != "ok" {
		t.Errorf("connected UDP to allowed port: %s", got)
	}
	if got := py(t, dir, connected(other)); got != eperm {
		t.Errorf("connected UDP to other port: %s, want %s", got, eperm)
	}
	// sendmmsg goes through the same hook for each message.
	if got := helper(t, dir, "sendmmsg", fmt.Sprint(other)); got != eperm {
		t.Errorf("sendmmsg to other port: %s, want %s", got, eperm)
	}
	if got := helper(t, dir, "sendmmsg", fmt.Sprint(allowed)); got != "ok" {
		t.Errorf("sendmmsg to allowed port: %s", got)
	}
}

func TestRawAndPacketSockets(t *testing.T) {
	e := newEnv(t, Options{})
	closed, _ := e.session(`
name: noraw
purpose: no raw sockets
`)
	open, _ := e.session(`
name: raw
purpose: raw sockets allowed
network:
  raw_sockets: true
`)
	cases := map[string]string{
		"raw icmp":   "socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)",
		"raw icmpv6": "socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)",
		// UDP-Lite is sent through udp_sendmsg but is no protocol an
		// intent names.
		"udplite": "socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDPLITE)",
	}
	for name, prog := range cases {
		if got := py(t, closed, prog); got != eperm {
			t.Errorf("%s without raw_sockets: %s, want %s", name, got, eperm)
		}
	}
	// The test runs as root, so only idend stands between the session
	// and a raw socket.
	if got := py(t, open, cases["raw icmp"]); got != "ok" {
		t.Errorf("raw icmp with raw_sockets: %s", got)
	}
	if got := py(t, closed, "socket.socket(socket.AF_INET, socket.SOCK_STREAM)"); got != "ok" {
		t.Errorf("plain TCP socket: %s", got)
	}
}

func TestUnixSockets(t *testing.T) {
	e := newEnv(t, Options{})
	if !e.l.Features().UnixHooks {
		t.Skip("kernel lacks cgroup connect_unix (Linux 6.7+)")
	}
	tmp := t.TempDir()
	allowed := filepath.Join(tmp, "allowed.sock")
	other := filepath.Join(tmp, "other.sock")
	for _, p := range []string{allowed, other} {
		ln, err := net.Listen("unix", p)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
	}
	link := filepath.Join(tmp, "link.sock")
	if err := os.Symlink(other, link); err != nil {
		t.Fatal(err)
	}
	dir, _ := e.session(fmt.Sprintf(`
name: unix
purpose: one local socket
network:
  unix: [%s]
`, allowed))

	conn := func(p string) string {
		return fmt.Sprintf("s = socket.socket(socket.AF_UNIX)\ns.connect(%q)", p)
	}
	if got := py(t, dir, conn(allowed)); got != "ok" {
		t.Errorf("connect to allowed socket: %s", got)
	}
	if got := py(t, dir, conn(other)); got != eperm {
		t.Errorf("connect to other socket: %s, want %s", got, eperm)
	}
	if got := py(t, dir, conn(link)); got != eperm {
		t.Errorf("connect through a symlink: %s, want %s", got, eperm)
	}
	if got := py(t, dir, "s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\ns.sendto(b'x', '"+other+"')"); got != eperm && got != "errno 91" {
		t.Errorf("sendto other socket: %s, want %s", got, eperm)
	}
}

// A grandchild that left its parent with a double fork and setsid is still
// in the session's cgroup and still judged.
func TestDoubleForkSetsid(t *testing.T) {
	e := newEnv(t, Options{})
	other := listen(t, "tcp4", "127.0.0.1:0")
	dir, _ := e.session(`
name: orphan
purpose: nothing at all
`)
	out := filepath.Join(t.TempDir(), "result")
	prog := fmt.Sprintf(`import os, socket, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        time.sleep(0.2)
        try:
            socket.create_connection(('127.0.0.1', %d), timeout=3)
            r = 'ok'
        except OSError as e:
            r = 'errno %%d' %% e.errno
        open(%q, 'w').write(r)
    os._exit(0)
`, other, out)
	run(t, dir, python(t), "-c", prog)
	var got []byte
	for range 50 {
		got, _ = os.ReadFile(out)
		if len(got) > 0 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if string(got) != eperm {
		t.Errorf("grandchild after double fork and setsid: %q, want %q", got, eperm)
	}
}

// A task under idend's root in a cgroup that is no session is denied
// everything: its exec is stopped before the program runs, and a process
// that was there already cannot connect.
func TestUnknownCgroupDenied(t *testing.T) {
	e := newEnv(t, Options{})
	port := listen(t, "tcp4", "127.0.0.1:0")
	dir := filepath.Join(e.opts.CgroupRoot, "stray")
	if err := cgroup.Create(dir); err != nil {
		t.Fatal(err)
	}
	if p := spawn(t, dir, "", python(t), "-c", "print('ran')"); !p.stopped() || p.out != "" {
		t.Errorf("exec in a cgroup in no session: %v; want %s, no output", p, stopWord())
	}

	// A process that entered before the session was removed.
	sdir, cg := e.session("name: gone\npurpose: removed while running\n")
	cmd := exec.Command(python(t), "-c", fmt.Sprintf(`import socket, sys, time
sys.stdin.readline()
try:
    socket.create_connection(('127.0.0.1', %d), timeout=3)
    print('ok')
except OSError as e:
    print('errno', e.errno)
`, port))
	stdin, _ := cmd.StdinPipe()
	var buf strings.Builder
	cmd.Stdout = &buf
	if err := testutil.Start(sdir, cmd); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if err := e.l.Remove(cg); err != nil {
		t.Fatal(err)
	}
	stdin.Write([]byte("go\n"))
	cmd.Wait()
	if got := strings.TrimSpace(buf.String()); got != eperm {
		t.Errorf("connect after the session was removed: %q, want %s", got, eperm)
	}
}

// Enforcement holds with the daemon's handles gone, and a new loader
// adopts the pinned state without a gap.
func TestPinnedStateSurvivesAndIsAdopted(t *testing.T) {
	e := newEnv(t, Options{})
	allowed := listen(t, "tcp4", "127.0.0.1:0")
	other := listen(t, "tcp4", "127.0.0.1:0")
	dir, cg := e.session(fmt.Sprintf(`
name: pinned
purpose: survive the daemon
network:
  egress:
    - to: 127.0.0.1
      ports: [%d]
`, allowed))

	e.l.Close()
	e.l = nil
	if got := py(t, dir, connectTCP("127.0.0.1", other)); got != eperm {
		t.Errorf("with no loader running, connect to other port: %s, want %s", got, eperm)
	}
	if got := py(t, dir, connectTCP("127.0.0.1", allowed)); got != "ok" {
		t.Errorf("with no loader running, connect to allowed port: %s", got)
	}

	e.l = e.open()
	sessions := e.l.Sessions()
	if len(sessions) != 1 || sessions[0].CgroupID != cg {
		t.Fatalf("adopted sessions: %+v, want one for cgroup %d", sessions, cg)
	}
	if got := py(t, dir, connectTCP("127.0.0.1", other)); got != eperm {
		t.Errorf("after adoption, connect to other port: %s, want %s", got, eperm)
	}
	// The adopted session's policy can be replaced.
	if err := e.l.Apply(cg, sessions[0].ID, compile(t, fmt.Sprintf(`
name: pinned
purpose: wider
network:
  egress:
    - to: 127.0.0.1
      ports: [%d, %d]
`, allowed, other))); err != nil {
		t.Fatal(err)
	}
	if got := py(t, dir, connectTCP("127.0.0.1", other)); got != "ok" {
		t.Errorf("after replacing the policy, connect to other port: %s", got)
	}
}

// A rule set over capacity is refused whole and the old one stays.
func TestOverCapacityRejectedWhole(t *testing.T) {
	e := newEnv(t, Options{MaxPrefixes: 4})
	allowed := listen(t, "tcp4", "127.0.0.1:0")
	dir, cg := e.session(fmt.Sprintf(`
name: small
purpose: fits
network:
  egress:
    - to: 127.0.0.1
      ports: [%d]
`, allowed))

	big := compile(t, `
name: big
purpose: too many prefixes
network:
  egress:
    - to: 10.0.0.1
    - to: 10.0.0.3
    - to: 10.0.0.5
    - to: 10.0.0.7
    - to: 10.0.0.9
`)
	err := e.l.Apply(cg, 1, big)
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("apply over capacity: %v, want ErrTooLarge", err)
	}
	if got := py(t, dir, connectTCP("127.0.0.1", allowed)); got != "ok" {
		t.Errorf("after refused update, connect to allowed port: %s", got)
	}
}

// A flood of allowed traffic fills the events ring; the losses are counted
// and every denial still arrives on its own ring.
func TestRingFloodKeepsDenials(t *testing.T) {
	e := newEnv(t, Options{EventsRingBytes: 1 << 16, DenialsRingBytes: 1 << 20})
	allowed := udpListen(t, "udp4", "127.0.0.1:0")
	denied := listen(t, "tcp4", "127.0.0.1:0")
	dir, _ := e.session(fmt.Sprintf(`
name: flood
purpose: flood the events ring
network:
  egress:
    - to: 127.0.0.1
      ports: [%d]
      protocol: udp
`, allowed))

	events, denials, err := e.l.Rings()
	if err != nil {
		t.Fatal(err)
	}
	defer events.Close()
	defer denials.Close()

	const floods, denies = 5000, 200
	prog := fmt.Sprintf(`import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(%d):
    s.sendto(b'x', ('127.0.0.1', %d))
for i in range(%d):
    try:
        socket.create_connection(('127.0.0.1', %d), timeout=1)
    except OSError:
        pass
`, floods, allowed, denies, denied)
	if out, code := run(t, dir, python(t), "-c", prog); code != 0 {
		t.Fatalf("flood: exit %d: %s", code, out)
	}

	got := drainKind(t, denials, netIdendEventKindEVENT_CONNECT)
	if got != denies {
		t.Errorf("denial records: %d, want %d", got, denies)
	}
	losses, err := e.l.Losses()
	if err != nil {
		t.Fatal(err)
	}
	lostSendmsg := losses[netIdendRingRING_EVENTS][netIdendEventKindEVENT_SENDMSG]
	kept := drain(t, events)
	if lostSendmsg == 0 {
		t.Errorf("no sendmsg losses counted with a 64 KiB ring and %d sends", floods)
	}
	if int(lostSendmsg)+kept < floods {
		t.Errorf("events kept %d + lost %d < %d sent", kept, lostSendmsg, floods)
	}
	if n := losses[netIdendRingRING_DENIALS][netIdendEventKindEVENT_CONNECT]; n != 0 {
		t.Errorf("denial losses: %d, want 0", n)
	}
}

// drain reads a ring until it is empty and counts its records.
func drain(t *testing.T, rd *ringbuf.Reader) int {
	return drainKind(t, rd, 0)
}

// drainKind reads a ring until it is empty and counts its records of one
// kind, or of every kind for 0.
func drainKind(t *testing.T, rd *ringbuf.Reader, kind netIdendEventKind) int {
	t.Helper()
	n := 0
	for {
		rd.SetDeadline(time.Now().Add(50 * time.Millisecond))
		rec, err := rd.Read()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return n
		}
		if err != nil {
			t.Fatal(err)
		}
		h := (*netEventHeader)(unsafe.Pointer(&rec.RawSample[0]))
		if kind == 0 || h.Kind == uint16(kind) {
			n++
		} else {
			t.Logf("kind %d verdict %d pid %d comm %s session %d", h.Kind, h.Verdict, h.Pid, unix.ByteSliceToString((*[16]byte)(unsafe.Pointer(&h.Comm))[:]), h.Session)
		}
	}
}

// An io_uring connect is judged like connect(2), also when io_uring runs
// it from a worker thread.
func TestIOUringConnect(t *testing.T) {
	e := newEnv(t, Options{})
	allowed := listen(t, "tcp4", "127.0.0.1:0")
	other := listen(t, "tcp4", "127.0.0.1:0")
	dir, _ := e.session(fmt.Sprintf(`
name: uring
purpose: one port, also through io_uring
network:
  egress:
    - to: 127.0.0.1
      ports: [%d]
`, allowed))

	got := helper(t, dir, "io_uring_connect", fmt.Sprint(allowed))
	if strings.Contains(got, "io_uring_setup") {
		t.Skipf("io_uring unavailable: %s", got)
	}
	if got != "ok" {
		t.Errorf("io_uring connect to allowed port: %s", got)
	}
	if got := helper(t, dir, "io_uring_connect", fmt.Sprint(other)); got != eperm {
		t.Errorf("io_uring connect to other port: %s, want %s", got, eperm)
	}
}

// Pinned state of another layout version is replaced, and its programs
// detached, once the current programs are attached.
func TestOtherLayoutReplaced(t *testing.T) {
	e := newEnv(t, Options{})
	port := listen(t, "tcp4", "127.0.0.1:0")
	dir, _ := e.session("name: old\npurpose: denies everything\n")
	e.l.Close()
	e.l = nil

	// Move the pins aside as if an older daemon had written them.
	cur := filepath.Join(e.opts.BPFFSDir, fmt.Sprintf("v%d", LayoutVersion))
	old := filepath.Join(e.opts.BPFFSDir, "v0")
	if err := os.Rename(cur, old); err != nil {
		t.Fatal(err)
	}
	e.l = e.open()
	if got := e.l.Replaced(); len(got) != 1 || got[0] != "v0" {
		t.Errorf("replaced layouts %v, want [v0]", got)
	}
	if _, err := os.Stat(old); !os.IsNotExist(err) {
		t.Errorf("old layout still pinned: %v", err)
	}
	// The session's rules went with the old layout: its cgroup is now no
	// session, and denied: python's exec is killed (no output) or refused
	// by BPF-LSM, or, were it let through, its connect fails.
	if got := py(t, dir, connectTCP("127.0.0.1", port)); got != "" && got != eperm && got != refusedOutput {
		t.Errorf("connect after replacement: %q, want denied", got)
	}
}

// Pinned rings keep their size when a loader asks for another: they may
// hold records no one has read yet.
func TestPinnedRingKeepsSize(t *testing.T) {
	e := newEnv(t, Options{EventsRingBytes: 1 << 16})
	e.l.Close()
	e.opts.EventsRingBytes = 1 << 17
	e.l = e.open()
	if got := e.l.net.EventsRing.MaxEntries(); got != 1<<16 {
		t.Errorf("events ring of %d bytes after reopening, want the pinned 65536", got)
	}
}
