package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/cilium/ebpf/link"

	"github.com/idend/idend/internal/cgroup"
)

// lsmActive reports whether the loader refuses forbidden execs with
// BPF-LSM on this kernel rather than killing them at the exec tracepoint.
// It probes the way Open does. Needs root.
var lsmActive = sync.OnceValue(func() bool { return probeLSM() == nil })

// refusedOutput is what run returns as output for a program whose execve
// BPF-LSM refused.
const refusedOutput = "execve: operation not permitted"

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

// newLSMTracer is newTracer for tests of BPF-LSM enforcement, which skip
// where it is not active.
func newLSMTracer(t *testing.T) *tracer {
	t.Helper()
	tr := newTracer(t)
	if f := tr.l.Features(); !f.LSM {
		for _, x := range f.List {
			if x.Name == "bpf_lsm" {
				t.Skipf("BPF-LSM is not active on this kernel, forbidden execs are killed at the "+
					"exec tracepoint instead (test/vm's 6.12-bpflsm entry runs this test): %v", x.Err)
			}
		}
		t.Skip("BPF-LSM is not active on this kernel")
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
