package loader

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/idend/idend/internal/cgroup"
	"github.com/idend/idend/internal/intent"
	"github.com/idend/idend/internal/testutil"
)

// lsmActive reports whether the loader refuses forbidden execs with
// BPF-LSM on this kernel rather than killing them at the exec tracepoint.
// It probes the way Open does. Needs root.
var lsmActive = sync.OnceValue(func() bool { return probeLSM() == nil })

// refusedOutput is what run returns as output for a program whose execve
// BPF-LSM refused.
const refusedOutput = testutil.RefusedOutput

// stopVerdict is the verdict on the record of a forbidden exec.
func stopVerdict() netIdendVerdict {
	if lsmActive() {
		return netIdendVerdictVERDICT_LSM_DENIED
	}
	return netIdendVerdictVERDICT_KILLED
}

func stopWord() string {
	if lsmActive() {
		return "refused with EPERM"
	}
	return "killed"
}

// refused reports whether execve failed with EPERM: for Go, when starting
// the process; for python, when os.execv raised and nothing caught it.
func (p proc) refused() bool {
	return errors.Is(p.err, syscall.EPERM) || strings.Contains(p.out, "PermissionError: [Errno 1]")
}

// stopped reports whether p's forbidden exec was stopped the way this
// kernel stops it.
func (p proc) stopped() bool {
	if lsmActive() {
		return p.refused()
	}
	return p.killed() && p.out == ""
}

// checkNoArgv checks a record of a refused exec: the new program's argv is
// not readable before the exec is done, and the record says nothing of it.
func checkNoArgv(t *testing.T, ev *netExecEvent) {
	t.Helper()
	if ev.ArgvLen != 0 || ev.has(netIdendEventFlagEVENT_F_ARGV_TRUNCATED) {
		t.Errorf("refused exec: argv of %d bytes, flags %#x: want none", ev.ArgvLen, ev.Hdr.Flags)
	}
}

// Without BPF-LSM, what the tests of newLSMTracer and newLSMSocketTracer
// check is done otherwise, or not at all.
const (
	execWithoutLSM   = "forbidden execs are killed at the exec tracepoint instead"
	socketWithoutLSM = "sockets of families other than inet are not judged"
)

// newLSMTracer is newTracer for tests of BPF-LSM exec enforcement, which
// skip where it is not active.
func newLSMTracer(t *testing.T) *tracer {
	t.Helper()
	return newLSMTracerWithout(t, execWithoutLSM)
}

// newLSMSocketTracer is newTracer for tests of BPF-LSM socket enforcement.
func newLSMSocketTracer(t *testing.T) *tracer {
	t.Helper()
	return newLSMTracerWithout(t, socketWithoutLSM)
}

func newLSMTracerWithout(t *testing.T, without string) *tracer {
	t.Helper()
	tr := newTracer(t)
	if f := tr.l.Features(); !f.LSM {
		for _, x := range f.List {
			if x.Name == "bpf_lsm" {
				t.Skipf("BPF-LSM is not active on this kernel, %s (test/vm's 6.1-debian and "+
					"6.12-bpflsm entries run this test): %v", without, x.Err)
			}
		}
		t.Skipf("BPF-LSM is not active on this kernel, %s", without)
	}
	return tr
}

// pyExecv is a python program that execs argv[1:] with os.execv and, when
// that raises, prints the errno and goes on to exec argv[1] of what follows
// "--", if anything does.
const pyExecv = `import os, sys
args = sys.argv[1:]
first, then = (args[:args.index('--')], args[args.index('--')+1:]) if '--' in args else (args, [])
try:
    os.execv(first[0], first)
except OSError as e:
    print('errno', e.errno, flush=True)
if then:
    os.execv(then[0], then)
`

// With BPF-LSM, a forbidden exec fails with EPERM and the caller goes on
// running: here it execs an allowed program next, which runs. The refusal
// is recorded once, as LSM_DENIED, with the file the kernel would have run.
func TestLSMRefusesExec(t *testing.T) {
	tr := newLSMTracer(t)
	f := newExecFixture(t)
	dir, _ := tr.session(execIntent(python3Path, f.tool))
	marker := filepath.Join(f.dir, "marker")
	refused := filepath.Join(f.dir, "not-created")

	p := pyExec(t, dir, pyExecv, f.symCopy, refused, "--", f.tool, marker)
	if p.out != "errno 1\n" || p.status.ExitStatus() != 0 {
		t.Fatalf("python exec of a forbidden program, then an allowed one: %v; want errno 1, exit 0", p)
	}
	checkRan(t, p, marker, true)
	if _, err := os.Stat(refused); err == nil {
		t.Error("the refused program ran")
	}

	var refusedRecs, toolRecs []netExecEvent
	for _, ev := range tr.read().execs {
		switch {
		case ev.Hdr.Pid != uint32(p.pid):
		case ev.Hdr.Verdict == uint8(netIdendVerdictVERDICT_LSM_DENIED):
			refusedRecs = append(refusedRecs, ev)
		case ev.Hdr.Verdict == uint8(netIdendVerdictVERDICT_ALLOW) && ev.path() == f.tool:
			toolRecs = append(toolRecs, ev)
		case ev.Hdr.Verdict != uint8(netIdendVerdictVERDICT_ALLOW):
			t.Errorf("exec record of %s with verdict %d", ev.path(), ev.Hdr.Verdict)
		}
	}
	if len(refusedRecs) != 1 || len(toolRecs) != 1 {
		t.Fatalf("%d LSM_DENIED and %d allowed records of the tool, want one of each", len(refusedRecs), len(toolRecs))
	}
	checkExecRecord(t, &refusedRecs[0], execWant{file: fileID(t, f.copy), path: f.copy, filename: f.symCopy})
	checkExecRecord(t, &toolRecs[0], execWant{
		ran: true, file: fileID(t, f.tool), path: f.tool, filename: f.tool, argv: []string{f.tool, marker},
	})
}

// execve from Go fails with EPERM too, before the child runs anything.
func TestLSMRefusesExecve(t *testing.T) {
	tr := newLSMTracer(t)
	f := newExecFixture(t)
	dir, _ := tr.session(execIntent(f.tool))
	marker := filepath.Join(f.dir, "marker")

	p := spawn(t, dir, "", f.copy, marker)
	if !errors.Is(p.err, syscall.EPERM) {
		t.Fatalf("exec of a forbidden program: %v, want EPERM from execve", p)
	}
	checkRan(t, p, marker, false)
	checkExecRecord(t, tr.read().exec(0), execWant{file: fileID(t, f.copy), path: f.copy, filename: f.copy})
}

// The same cases as the tracepoint's, where the LSM hook must judge the
// same file: a script by its interpreter, `ld.so prog` by ld.so.
func TestLSMJudgesTheFileRun(t *testing.T) {
	tr := newLSMTracer(t)
	f := newExecFixture(t)
	for i, c := range []struct {
		name  string
		allow []string
		argv  []string
		ran   bool
		file  string
	}{
		{"script, interpreter allowed", []string{python3Path}, []string{f.pyScript}, true, python3Path},
		{"script allowed, interpreter not", []string{f.shScript, f.tool}, []string{f.shScript}, false, shPath},
		{"ld.so", []string{f.tool}, []string{loaderPath, f.tool}, false, loaderPath},
	} {
		t.Run(c.name, func(t *testing.T) {
			marker := filepath.Join(f.dir, fmt.Sprintf("marker-%d", i))
			dir, _ := tr.session(execIntent(c.allow...))
			p := spawn(t, dir, "", append(c.argv, marker)...)
			checkRan(t, p, marker, c.ran)
			if !c.ran && !errors.Is(p.err, syscall.EPERM) {
				t.Errorf("want EPERM from execve, got %v", p)
			}
			checkExecRecord(t, tr.read().exec(p.pid), execWant{
				ran: c.ran, file: fileID(t, c.file), path: resolved(t, c.file), filename: c.argv[0],
			})
		})
	}
}

// In audit mode the LSM hook lets a forbidden program run and leaves the
// record to the tracepoint: one record, AUDIT, outside the intent.
func TestLSMAuditMode(t *testing.T) {
	tr := newLSMTracer(t)
	f := newExecFixture(t)
	dir, _ := tr.session(execIntent(f.tool) + "on_violation: audit\n")
	marker := filepath.Join(f.dir, "marker")

	p := spawn(t, dir, "", f.copy, marker)
	checkRan(t, p, marker, true)
	var recs []netExecEvent
	for _, ev := range tr.read().execs {
		if ev.Hdr.Pid == uint32(p.pid) {
			recs = append(recs, ev)
		}
	}
	if len(recs) != 1 {
		t.Fatalf("%d exec records, want 1", len(recs))
	}
	if recs[0].Hdr.Verdict != uint8(netIdendVerdictVERDICT_AUDIT) || !recs[0].has(netIdendEventFlagEVENT_F_OUTSIDE) {
		t.Errorf("verdict %d, flags %#x: want AUDIT, outside the intent", recs[0].Hdr.Verdict, recs[0].Hdr.Flags)
	}
}

// A task under idend's root in no session may exec nothing, and the
// record says it was in no session.
func TestLSMNoSession(t *testing.T) {
	tr := newLSMTracer(t)
	dir := filepath.Join(tr.opts.CgroupRoot, "stray")
	must(t, cgroup.Create(dir))

	p := spawn(t, dir, "", "/bin/true")
	if !errors.Is(p.err, syscall.EPERM) {
		t.Fatalf("exec in a cgroup in no session: %v, want EPERM", p)
	}
	ev := tr.read().exec(0)
	checkExecRecord(t, ev, execWant{file: fileID(t, "/bin/true"), filename: "/bin/true"})
	if !ev.has(netIdendEventFlagEVENT_F_NO_SESSION) || ev.Hdr.Session != 0 {
		t.Errorf("session %d, flags %#x: want no session", ev.Hdr.Session, ev.Hdr.Flags)
	}
}

// The LSM link is pinned: with the loader closed forbidden execs are still
// refused, and a new loader adopts the same link rather than attaching
// another.
func TestLSMPinnedAndAdopted(t *testing.T) {
	tr := newLSMTracer(t)
	f := newExecFixture(t)
	dir, _ := tr.session(execIntent(f.tool))
	pin := filepath.Join(tr.l.pinDir, "links", lsmProgBprmCredsFile)
	before := linkID(t, pin)

	tr.l.Close()
	tr.l = nil
	if p := spawn(t, dir, "", f.copy); !errors.Is(p.err, syscall.EPERM) {
		t.Errorf("with no loader running: %v, want EPERM", p)
	}

	tr.l = tr.open()
	if after := linkID(t, pin); after != before {
		t.Errorf("link %d after reopening, want the pinned link %d adopted", after, before)
	}
	if p := spawn(t, dir, "", f.copy); !errors.Is(p.err, syscall.EPERM) {
		t.Errorf("after adoption: %v, want EPERM", p)
	}
}

func linkID(t *testing.T, pin string) link.ID {
	t.Helper()
	lk, err := link.LoadPinnedLink(pin, nil)
	must(t, err)
	defer lk.Close()
	info, err := lk.Info()
	must(t, err)
	return info.ID
}

func init() {
	helpers["socket"] = socketHelper
	helpers["unshare_net"] = unshareNet
	helpers["wait_then"] = waitThen
}

// socketHelper creates a socket of family args[0], type args[1] and
// protocol args[2], then closes it.
func socketHelper(args []string) error {
	var n [3]int
	for i := range n {
		v, err := strconv.Atoi(args[i])
		if err != nil {
			return err
		}
		n[i] = v
	}
	fd, err := unix.Socket(n[0], n[1], n[2])
	if err != nil {
		return err
	}
	return unix.Close(fd)
}

// unshareNet moves the calling thread into a new network namespace, which
// makes the kernel create sockets of its own (netlink, ICMP) in the
// caller's context.
func unshareNet([]string) error {
	runtime.LockOSThread()
	return unix.Unshare(unix.CLONE_NEWNET)
}

// waitThen says "ready", reads a line from stdin, then runs the helper
// args[0].
func waitThen(args []string) error {
	fmt.Println("ready")
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		return err
	}
	return helpers[args[0]](args[1:])
}

// waiting is a helper process started with waitThen.
type waiting struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Reader
}

// startWaiting starts the helper name in the cgroup dir and returns once
// its exec is over, tracepoint included; the helper runs when finish is
// called.
func startWaiting(t *testing.T, dir, name string, args ...string) *waiting {
	t.Helper()
	fd, err := syscall.Open(dir, syscall.O_DIRECTORY|syscall.O_RDONLY, 0)
	must(t, err)
	defer syscall.Close(fd)

	w := &waiting{cmd: exec.Command(os.Args[0], append([]string{name}, args...)...)}
	w.cmd.Env = append(os.Environ(), "IDEND_TEST_HELPER=wait_then")
	w.cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd}
	w.stdin, err = w.cmd.StdinPipe()
	must(t, err)
	stdout, err := w.cmd.StdoutPipe()
	must(t, err)
	must(t, w.cmd.Start())
	t.Cleanup(func() { w.cmd.Process.Kill() })

	w.out = bufio.NewReader(stdout)
	if line, err := w.out.ReadString('\n'); line != "ready\n" {
		t.Fatalf("helper %s: %q, %v; want ready", name, line, err)
	}
	return w
}

func (w *waiting) finish(t *testing.T) string {
	t.Helper()
	_, err := w.stdin.Write([]byte("go\n"))
	must(t, err)
	out, err := io.ReadAll(w.out)
	must(t, err)
	must(t, w.cmd.Wait())
	return strings.TrimSpace(string(out))
}

// outsideResult is what creating a socket gives the test itself, outside
// idend's root: "ok", or the errno of a family this kernel lacks.
func outsideResult(family, typ, proto int) string {
	return result(socketHelper([]string{fmt.Sprint(family), fmt.Sprint(typ), fmt.Sprint(proto)}))
}

// socketRecords returns the socket records of the cgroup cg.
func socketRecords(r *records, cg uint64) []netNetEvent {
	var out []netNetEvent
	for _, ev := range r.nets {
		if ev.Hdr.Kind == uint16(netIdendEventKindEVENT_SOCKET) && ev.Hdr.CgroupId == cg {
			out = append(out, ev)
		}
	}
	return out
}

func htons(v uint16) int { return int(v>>8 | v<<8&0xff00) }

type sockCase struct {
	name               string
	family, typ, proto int
	raw                bool // needs raw_sockets
}

var sockCases = []sockCase{
	{"packet raw", unix.AF_PACKET, unix.SOCK_RAW, htons(unix.ETH_P_ALL), true},
	{"packet dgram", unix.AF_PACKET, unix.SOCK_DGRAM, htons(unix.ETH_P_IP), true},
	{"vsock", unix.AF_VSOCK, unix.SOCK_STREAM, 0, true},
	{"xdp", unix.AF_XDP, unix.SOCK_RAW, 0, true},
	{"can raw", unix.AF_CAN, unix.SOCK_RAW, unix.CAN_RAW, true},
	{"netlink raw", unix.AF_NETLINK, unix.SOCK_RAW, unix.NETLINK_ROUTE, false},
	{"netlink dgram", unix.AF_NETLINK, unix.SOCK_DGRAM, unix.NETLINK_ROUTE, false},
	{"unix raw", unix.AF_UNIX, unix.SOCK_RAW, 0, false},
	{"unix stream", unix.AF_UNIX, unix.SOCK_STREAM, 0, false},
}

// With BPF-LSM, sockets of the families the cgroup hooks never see are
// judged at creation: packet, vsock and every family but unix and netlink
// need raw_sockets. A refusal is EPERM from socket(), whether or not the
// kernel has the family, and one DENY record; with raw_sockets the kernel
// decides as it would outside idend, and the record says ALLOW; in audit
// mode, AUDIT outside the intent. Unix and netlink sockets of any type are
// ordinary and not recorded. intent.Evaluate reaches the same verdicts.
func TestLSMSocketFamilies(t *testing.T) {
	tr := newLSMSocketTracer(t)
	type sess struct {
		name, text string
		dir        string
		cg         uint64
		verdict    netIdendVerdict // of a socket that needs raw_sockets
	}
	sessions := []*sess{
		{name: "without raw_sockets", text: "name: noraw\npurpose: no raw sockets\n",
			verdict: netIdendVerdictVERDICT_DENY},
		{name: "with raw_sockets", text: "name: raw\npurpose: raw sockets\nnetwork:\n  raw_sockets: true\n",
			verdict: netIdendVerdictVERDICT_ALLOW},
		{name: "in audit mode", text: "name: audit\npurpose: audit\non_violation: audit\n",
			verdict: netIdendVerdictVERDICT_AUDIT},
	}
	for _, s := range sessions {
		s.dir, s.cg = tr.session(s.text)
	}

	for _, c := range sockCases {
		t.Run(c.name, func(t *testing.T) {
			args := []string{fmt.Sprint(c.family), fmt.Sprint(c.typ), fmt.Sprint(c.proto)}
			outside := outsideResult(c.family, c.typ, c.proto)
			tr.read()

			for _, s := range sessions {
				want := outside
				if c.raw && s.verdict == netIdendVerdictVERDICT_DENY {
					want = eperm
				}
				if got := helper(t, s.dir, "socket", args...); got != want {
					t.Errorf("%s: %s, want %s", s.name, got, want)
				}
			}

			r := tr.read()
			act := intent.Action{Kind: intent.Socket, Family: c.family, SockType: c.typ, SockProto: c.proto}
			for _, s := range sessions {
				d := intent.Evaluate(compile(t, s.text), act)
				recs := socketRecords(r, s.cg)
				if !c.raw {
					if len(recs) != 0 || !d.InIntent {
						t.Errorf("%s: %d records, evaluator %v (%s); want none, in the intent",
							s.name, len(recs), d.InIntent, d.Reason)
					}
					continue
				}
				checkSocketRecord(t, recs, c, s.verdict, s.verdict != netIdendVerdictVERDICT_ALLOW)
				if uint8(d.Verdict) != uint8(s.verdict) {
					t.Errorf("%s: evaluator says %s (%s), the kernel %d", s.name, d.Verdict, d.Reason, s.verdict)
				}
			}
		})
	}
}

func checkSocketRecord(t *testing.T, recs []netNetEvent, c sockCase, v netIdendVerdict, outside bool) {
	t.Helper()
	if len(recs) != 1 {
		t.Errorf("%d socket records, want one with verdict %d", len(recs), v)
		return
	}
	ev := recs[0]
	if ev.Hdr.Verdict != uint8(v) || (ev.Hdr.Flags&uint32(netIdendEventFlagEVENT_F_OUTSIDE) != 0) != outside {
		t.Errorf("verdict %d, flags %#x: want verdict %d, outside the intent %v", ev.Hdr.Verdict, ev.Hdr.Flags, v, outside)
	}
	if int(ev.Family) != c.family || int(ev.Type) != c.typ || int(ev.Protocol) != c.proto {
		t.Errorf("record of socket(%d, %d, %d), want socket(%d, %d, %d)",
			ev.Family, ev.Type, ev.Protocol, c.family, c.typ, c.proto)
	}
	if ev.Hdr.Session == 0 || ev.Hdr.Pid == 0 {
		t.Errorf("record of session %d, pid %d: want the session and the caller", ev.Hdr.Session, ev.Hdr.Pid)
	}
}

// Inet sockets are left to cgroup/sock_create: a raw inet socket allowed by
// raw_sockets has one record, not one from each hook.
func TestLSMInetSocketsOnce(t *testing.T) {
	tr := newLSMSocketTracer(t)
	open, cg := tr.session("name: raw\npurpose: raw sockets\nnetwork:\n  raw_sockets: true\n")

	args := []string{fmt.Sprint(unix.AF_INET), fmt.Sprint(unix.SOCK_RAW), fmt.Sprint(unix.IPPROTO_ICMP)}
	if got := helper(t, open, "socket", args...); got != "ok" {
		t.Fatalf("raw inet socket with raw_sockets: %s", got)
	}
	c := sockCase{family: unix.AF_INET, typ: unix.SOCK_RAW, proto: unix.IPPROTO_ICMP}
	checkSocketRecord(t, socketRecords(tr.read(), cg), c, netIdendVerdictVERDICT_ALLOW, false)
}

// A task under idend's root in no session may create no socket, unix
// sockets included, and the record says it was in no session. Sockets the
// kernel creates for itself in the task's context pass: the netlink and
// ICMP sockets of a new network namespace.
func TestLSMSocketNoSession(t *testing.T) {
	tr := newLSMSocketTracer(t)
	dir, cg := tr.session("name: gone\npurpose: removed while running\n")
	sock := startWaiting(t, dir, "socket", fmt.Sprint(unix.AF_UNIX), fmt.Sprint(unix.SOCK_STREAM), "0")
	netns := startWaiting(t, dir, "unshare_net")
	must(t, tr.l.Remove(cg))

	if got := sock.finish(t); got != eperm {
		t.Errorf("unix socket in no session: %s, want %s", got, eperm)
	}
	if got := netns.finish(t); got != "ok" {
		t.Errorf("new network namespace in no session: %s, want ok", got)
	}
	recs := socketRecords(tr.read(), cg)
	if len(recs) != 1 {
		t.Fatalf("%d socket records, want one: the unix socket", len(recs))
	}
	ev := recs[0]
	if ev.Family != unix.AF_UNIX || ev.Hdr.Verdict != uint8(netIdendVerdictVERDICT_DENY) ||
		ev.Hdr.Session != 0 || ev.Hdr.Flags&uint32(netIdendEventFlagEVENT_F_NO_SESSION) == 0 {
		t.Errorf("record: family %d, verdict %d, session %d, flags %#x: want AF_UNIX, DENY, no session",
			ev.Family, ev.Hdr.Verdict, ev.Hdr.Session, ev.Hdr.Flags)
	}
}
