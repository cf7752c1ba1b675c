package loader

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"

	"github.com/idend/idend/internal/intent"
	"github.com/idend/idend/internal/testutil"
)

// tracer is an env whose rings the test reads.
type tracer struct {
	*env
	events, denials *ringbuf.Reader
}

func newTracer(t *testing.T) *tracer {
	t.Helper()
	e := newEnv(t, Options{})
	events, denials, err := e.l.Rings()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		events.Close()
		denials.Close()
	})
	return &tracer{env: e, events: events, denials: denials}
}

// records holds decoded ring records.
type records struct {
	execs []netExecEvent
	forks []netForkEvent
	exits []netExitEvent
	nets  []netNetEvent
	unix  []netUnixEvent
}

// read drains both rings and decodes what they held. Every record of a
// process that has been waited for is in a ring by then: the kernel writes
// them before the process's parent is told it exited.
func (tr *tracer) read() *records {
	tr.t.Helper()
	r := &records{}
	for _, rd := range []*ringbuf.Reader{tr.events, tr.denials} {
		for {
			rd.SetDeadline(time.Now().Add(30 * time.Millisecond))
			rec, err := rd.Read()
			if errors.Is(err, os.ErrDeadlineExceeded) {
				break
			}
			if err != nil {
				tr.t.Fatal(err)
			}
			r.add(tr.t, rec.RawSample)
		}
	}
	return r
}

// readUntil reads both rings until done says the records it needs are in,
// for at most five seconds.
func (tr *tracer) readUntil(done func(*records) bool) *records {
	tr.t.Helper()
	r := &records{}
	for end := time.Now().Add(5 * time.Second); !done(r) && time.Now().Before(end); {
		for _, rd := range []*ringbuf.Reader{tr.events, tr.denials} {
			for {
				rd.SetDeadline(time.Now().Add(2 * time.Millisecond))
				rec, err := rd.Read()
				if errors.Is(err, os.ErrDeadlineExceeded) {
					break
				}
				if err != nil {
					tr.t.Fatal(err)
				}
				r.add(tr.t, rec.RawSample)
			}
		}
	}
	return r
}

func (r *records) add(t *testing.T, raw []byte) {
	t.Helper()
	var h netEventHeader
	if !decode(raw, &h) {
		t.Fatalf("record of %d bytes", len(raw))
	}
	ok := true
	switch netIdendEventKind(h.Kind) {
	case netIdendEventKindEVENT_EXEC:
		r.execs = append(r.execs, netExecEvent{})
		ok = decode(raw, &r.execs[len(r.execs)-1])
	case netIdendEventKindEVENT_FORK:
		r.forks = append(r.forks, netForkEvent{})
		ok = decode(raw, &r.forks[len(r.forks)-1])
	case netIdendEventKindEVENT_EXIT:
		r.exits = append(r.exits, netExitEvent{})
		ok = decode(raw, &r.exits[len(r.exits)-1])
	case netIdendEventKindEVENT_CONNECT, netIdendEventKindEVENT_SENDMSG, netIdendEventKindEVENT_SOCKET:
		r.nets = append(r.nets, netNetEvent{})
		ok = decode(raw, &r.nets[len(r.nets)-1])
	case netIdendEventKindEVENT_UNIX_CONNECT, netIdendEventKindEVENT_UNIX_SENDMSG:
		r.unix = append(r.unix, netUnixEvent{})
		ok = decode(raw, &r.unix[len(r.unix)-1])
	}
	if !ok {
		t.Fatalf("record of kind %d: %d bytes, too short", h.Kind, len(raw))
	}
}

// decode copies a record into the generated struct v.
func decode[T any](raw []byte, v *T) bool {
	if len(raw) < int(unsafe.Sizeof(*v)) {
		return false
	}
	*v = *(*T)(unsafe.Pointer(&raw[0]))
	return true
}

// exec returns the last exec record of process pid. Pid 0 stands for a
// child of the test whose execve BPF-LSM refused: Go never learns its pid.
func (r *records) exec(pid int) *netExecEvent {
	for i := len(r.execs) - 1; i >= 0; i-- {
		ev := &r.execs[i]
		if pid == 0 && ev.Ppid == uint32(os.Getpid()) && ev.Hdr.Verdict == uint8(netIdendVerdictVERDICT_LSM_DENIED) {
			return ev
		}
		if pid != 0 && ev.Hdr.Pid == uint32(pid) {
			return ev
		}
	}
	return nil
}

// exit returns the exit record of process pid.
func (r *records) exit(pid int) *netExitEvent {
	for i := range r.exits {
		if r.exits[i].Hdr.Pid == uint32(pid) {
			return &r.exits[i]
		}
	}
	return nil
}

func bytesOf(s []int8) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(s))), len(s))
}

func cstring(s []int8) string {
	b := bytesOf(s)
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// path returns the resolved path: the last PathLen bytes of Path.
func (ev *netExecEvent) path() string {
	b := bytesOf(ev.Path[:])
	if int(ev.PathLen) > len(b) {
		return fmt.Sprintf("<path_len %d>", ev.PathLen)
	}
	return string(b[len(b)-int(ev.PathLen):])
}

func (ev *netExecEvent) argv() []string {
	if int(ev.ArgvLen) > len(ev.Argv) {
		return []string{fmt.Sprintf("<argv_len %d>", ev.ArgvLen)}
	}
	s := string(bytesOf(ev.Argv[:ev.ArgvLen]))
	return strings.Split(strings.TrimSuffix(s, "\x00"), "\x00")
}

func (ev *netExecEvent) has(f netIdendEventFlag) bool { return ev.Hdr.Flags&uint32(f) != 0 }

// proc is a program that ran in a session and ended, or whose execve
// failed (err; pid and status are then unknown).
type proc struct {
	pid    int
	out    string
	status syscall.WaitStatus
	err    error
}

func (p proc) killed() bool { return p.status.Signaled() && p.status.Signal() == syscall.SIGKILL }

func (p proc) String() string {
	if p.err != nil {
		return fmt.Sprintf("execve: %v", p.err)
	}
	if p.status.Signaled() {
		return fmt.Sprintf("pid %d killed by %v, output %q", p.pid, p.status.Signal(), p.out)
	}
	return fmt.Sprintf("pid %d exit %d, output %q", p.pid, p.status.ExitStatus(), p.out)
}

// spawn execs argv[0] as given (relative to cwd when relative) in the
// session cgroup dir and waits for it.
func spawn(t *testing.T, dir, cwd string, argv ...string) proc {
	t.Helper()
	return spawnIn(t, dir, cwd, nil, argv...)
}

// spawnEnv is spawn with variables added to the test's environment.
func spawnEnv(t *testing.T, dir string, env []string, argv ...string) proc {
	t.Helper()
	return spawnIn(t, dir, "", append(os.Environ(), env...), argv...)
}

func spawnIn(t *testing.T, dir, cwd string, env []string, argv ...string) proc {
	t.Helper()
	var out bytes.Buffer
	cmd := &exec.Cmd{Path: argv[0], Args: argv, Dir: cwd, Env: env, Stdout: &out, Stderr: &out}
	err := testutil.Start(dir, cmd)
	if errors.Is(err, syscall.EPERM) {
		return proc{err: err}
	} else if err != nil {
		t.Fatalf("start %s: %v", argv[0], err)
	}
	err = cmd.Wait()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("wait %s: %v", argv[0], err)
	}
	return proc{pid: cmd.Process.Pid, out: out.String(), status: cmd.ProcessState.Sys().(syscall.WaitStatus)}
}

// execIntent is an intent allowing exactly the programs at paths.
func execIntent(paths ...string) string {
	q := make([]string, len(paths))
	for i, p := range paths {
		q[i] = fmt.Sprintf("%q", p)
	}
	return fmt.Sprintf("name: exec\npurpose: run some programs\nexec:\n  allow: [%s]\n", strings.Join(q, ", "))
}

// execFixture holds programs in a temporary directory. Each program's
// first action creates the file named by its last argument.
type execFixture struct {
	dir      string // the temporary directory, symlinks resolved
	bin      string // dir/bin
	tool     string // a copy of touch
	copy     string // another copy of touch
	hardlink string // a hard link of tool
	symTool  string // a relative symlink to tool
	symCopy  string // an absolute symlink to copy
	shScript string // a shell script: #!/bin/sh
	pyScript string // a python script: #!/usr/bin/python3
	bbTouch  string // a symlink "touch" to busybox
	bbSh     string // a symlink "sh" to busybox
}

const (
	loaderPath  = "/lib64/ld-linux-x86-64.so.2"
	busyboxPath = "/bin/busybox"
	touchPath   = "/usr/bin/touch"
	shPath      = "/bin/sh"
	python3Path = "/usr/bin/python3"
)

func newExecFixture(t *testing.T) *execFixture {
	t.Helper()
	for _, p := range []string{loaderPath, busyboxPath, touchPath, shPath, python3Path} {
		if _, err := os.Stat(p); err != nil {
			t.Skipf("needs %s: %v", p, err)
		}
	}
	dir, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	// Others must be able to traverse into the programs' directories.
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "bin")
	f := &execFixture{
		dir: dir, bin: bin,
		tool: filepath.Join(bin, "tool"), copy: filepath.Join(bin, "copy"),
		hardlink: filepath.Join(bin, "hardlink"),
		symTool:  filepath.Join(bin, "sym-tool"), symCopy: filepath.Join(bin, "sym-copy"),
		shScript: filepath.Join(bin, "script.sh"), pyScript: filepath.Join(bin, "script.py"),
		bbTouch: filepath.Join(bin, "touch"), bbSh: filepath.Join(bin, "sh"),
	}
	must(t, os.Mkdir(bin, 0o755))
	copyFile(t, touchPath, f.tool)
	copyFile(t, touchPath, f.copy)
	must(t, os.Link(f.tool, f.hardlink))
	must(t, os.Symlink("tool", f.symTool))
	must(t, os.Symlink(f.copy, f.symCopy))
	must(t, os.WriteFile(f.shScript, []byte("#!/bin/sh\n: > \"$1\"\n"), 0o755))
	must(t, os.WriteFile(f.pyScript, []byte("#!/usr/bin/python3\nimport sys\nopen(sys.argv[1], 'w')\n"), 0o755))
	must(t, os.Symlink(busyboxPath, f.bbTouch))
	must(t, os.Symlink(busyboxPath, f.bbSh))
	return f
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	src, err := os.Open(from)
	must(t, err)
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o755)
	must(t, err)
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	must(t, dst.Close())
}

func resolved(t *testing.T, p string) string {
	t.Helper()
	r, err := filepath.EvalSymlinks(p)
	must(t, err)
	return r
}

func fileID(t *testing.T, p string) intent.FileID {
	t.Helper()
	id, err := intent.FileIDOf(p)
	must(t, err)
	return id
}

// execCase is one exec in a session allowing the programs in allow: argv
// plus a marker file that the program creates if it runs.
type execCase struct {
	name  string
	allow []string
	cwd   string
	argv  []string
	ran   bool
	// file is the file the kernel executes, whose (dev, ino) and path
	// are on the record; path overrides its resolved path.
	file, path string
	// recArgv is the argv on the record, when it differs from argv.
	recArgv []string
}

func execCases(f *execFixture) []execCase {
	l := func(s ...string) []string { return s }
	return []execCase{
		{name: "allowed", allow: l(f.tool), argv: l(f.tool), ran: true, file: f.tool},
		{name: "symlink to allowed", allow: l(f.tool), argv: l(f.symTool), ran: true, file: f.tool},
		{name: "symlink to forbidden", allow: l(f.tool), argv: l(f.symCopy), file: f.copy},
		{name: "relative path", allow: l(f.tool), cwd: f.bin, argv: l("./tool"), ran: true, file: f.tool},
		{name: "relative path to forbidden", allow: l(f.tool), cwd: f.bin, argv: l("./copy"), file: f.copy},
		{name: "relative dotdot", allow: l(f.tool), cwd: f.bin, argv: l("../bin/./tool"), ran: true, file: f.tool},
		{name: "hardlink of allowed", allow: l(f.tool), argv: l(f.hardlink), ran: true, file: f.hardlink},
		{name: "allowed by its other link", allow: l(f.hardlink), argv: l(f.tool), ran: true, file: f.tool},
		{name: "copy of allowed", allow: l(f.tool), argv: l(f.copy), file: f.copy},
		{
			name: "shebang, interpreter forbidden", allow: l(f.tool, f.shScript),
			argv: l(f.shScript), file: shPath, recArgv: l(shPath, f.shScript),
		},
		{
			name: "shebang, interpreter allowed", allow: l(python3Path),
			argv: l(f.pyScript), ran: true, file: python3Path, recArgv: l(python3Path, f.pyScript),
		},
		{name: "dynamic loader", allow: l(f.tool), argv: l(loaderPath, f.tool), file: loaderPath},
		// Allowing the loader allows whatever it is asked to load.
		{name: "dynamic loader allowed", allow: l(loaderPath), argv: l(loaderPath, f.copy), ran: true, file: loaderPath},
		// A multi-call binary is one file: allowing it allows every applet.
		{name: "busybox applet", allow: l(busyboxPath), argv: l(f.bbTouch), ran: true, file: busyboxPath},
		{name: "busybox sh", allow: l(busyboxPath), argv: l(f.bbSh, "-c", `: > "$0"`), ran: true, file: busyboxPath},
		{name: "busybox applet forbidden", allow: l(f.tool, touchPath), argv: l(f.bbTouch), file: busyboxPath},
		{name: "busybox sh forbidden", allow: l(f.tool, shPath), argv: l(f.bbSh, "-c", `: > "$0"`), file: busyboxPath},
	}
}

// Each exec is judged on the file the kernel runs, whatever path led to
// it: allowed programs run, forbidden ones are killed before their first
// instruction, and the record names the file, the path as resolved, the
// filename as passed and argv.
func TestExecJudgedOnTheFileRun(t *testing.T) {
	tr := newTracer(t)
	f := newExecFixture(t)
	for i, c := range execCases(f) {
		t.Run(c.name, func(t *testing.T) {
			marker := filepath.Join(f.dir, fmt.Sprintf("marker-%d", i))
			argv := append(slices.Clone(c.argv), marker)
			recArgv := argv
			if c.recArgv != nil {
				recArgv = append(slices.Clone(c.recArgv), marker)
			}
			dir, _ := tr.session(execIntent(c.allow...))
			p := spawn(t, dir, c.cwd, argv...)
			checkRan(t, p, marker, c.ran)

			path := c.path
			if path == "" {
				path = resolved(t, c.file)
			}
			recs := tr.read()
			checkExecRecord(t, recs.exec(p.pid), execWant{
				ran: c.ran, file: fileID(t, c.file), path: path, filename: argv[0], argv: recArgv,
			})
			checkExit(t, recs, p)
		})
	}
}

// checkRan checks that p ran and created marker, or was stopped before it
// could: killed, or refused where BPF-LSM is active.
func checkRan(t *testing.T, p proc, marker string, ran bool) {
	t.Helper()
	_, err := os.Stat(marker)
	created := err == nil
	switch {
	case ran && (p.err != nil || p.status.ExitStatus() != 0 || !created):
		t.Errorf("want the program to run: %v, marker created %v", p, created)
	case !ran && (!p.stopped() || created):
		t.Errorf("want the program %s before it runs: %v, marker created %v", stopWord(), p, created)
	}
}

// checkExit checks the exit record of p against its wait status.
func checkExit(t *testing.T, r *records, p proc) {
	t.Helper()
	if p.err != nil {
		return // no pid to look for
	}
	ex := r.exit(p.pid)
	if ex == nil {
		t.Errorf("no exit record for %v", p)
		return
	}
	if syscall.WaitStatus(ex.ExitCode) != p.status {
		t.Errorf("exit record code %#x, wait status %#x", ex.ExitCode, uint32(p.status))
	}
}

type execWant struct {
	ran      bool
	file     intent.FileID
	path     string
	filename string
	argv     []string
	flags    netIdendEventFlag // flags that must be set
}

func checkExecRecord(t *testing.T, ev *netExecEvent, w execWant) {
	t.Helper()
	if ev == nil {
		t.Fatal("no exec record for the process")
	}
	verdict, flags := netIdendVerdictVERDICT_ALLOW, w.flags
	if !w.ran {
		verdict = stopVerdict()
		flags |= netIdendEventFlagEVENT_F_OUTSIDE
	}
	if ev.Hdr.Verdict != uint8(verdict) {
		t.Errorf("verdict %d, want %d", ev.Hdr.Verdict, verdict)
	}
	if got := netIdendEventFlag(ev.Hdr.Flags); got&flags != flags {
		t.Errorf("flags %#x, want %#x set", got, flags)
	}
	if w.flags&netIdendEventFlagEVENT_F_PATH_TRUNCATED == 0 && ev.has(netIdendEventFlagEVENT_F_PATH_TRUNCATED) {
		t.Errorf("path truncated flag set for %s", w.path)
	}
	if got := (intent.FileID{Dev: ev.Dev, Ino: ev.Ino}); w.file != (intent.FileID{}) && got != w.file {
		t.Errorf("file %v, want %v", got, w.file)
	}
	if w.path != "" && ev.path() != w.path {
		t.Errorf("path %q (len %d), want %q", ev.path(), ev.PathLen, w.path)
	}
	if got := cstring(ev.Filename[:]); w.filename != "" && got != w.filename {
		t.Errorf("filename %q, want %q", got, w.filename)
	}
	if verdict == netIdendVerdictVERDICT_LSM_DENIED {
		checkNoArgv(t, ev)
	} else if w.argv != nil && !slices.Equal(ev.argv(), w.argv) {
		t.Errorf("argv %q, want %q", ev.argv(), w.argv)
	}
	if w.argv != nil && ev.has(netIdendEventFlagEVENT_F_ARGV_TRUNCATED) {
		t.Errorf("argv truncated flag set for %q", w.argv)
	}
}

// pyExec runs a python3 program in dir with args, python3 being allowed.
func pyExec(t *testing.T, dir, prog string, args ...string) proc {
	t.Helper()
	return spawn(t, dir, "", append([]string{python3Path, "-c", prog}, args...)...)
}

// A program without a link (a memfd, a deleted file) is denied in a
// restricted session even when its inode is on the allow list.
func TestExecFileless(t *testing.T) {
	tr := newTracer(t)
	f := newExecFixture(t)
	deleted := filepath.Join(f.bin, "deleted")
	kept := filepath.Join(f.bin, "kept")
	copyFile(t, touchPath, deleted)
	copyFile(t, touchPath, kept)
	deletedID := fileID(t, deleted)
	dir, _ := tr.session(execIntent(python3Path, f.tool, deleted, kept))

	memfd := fmt.Sprintf("import os, sys\nfd = os.memfd_create('tool')\n"+
		"os.write(fd, open(%q, 'rb').read())\n", f.tool)
	cases := []struct {
		name, prog string
		ran        bool
		file       intent.FileID // zero: not checked
		path       string
		filename   string // a prefix
	}{{
		name:     "memfd through /proc/self/fd",
		prog:     memfd + "os.execv('/proc/self/fd/%d' % fd, ['tool', sys.argv[1]])\n",
		path:     "/memfd:tool",
		filename: "/proc/self/fd/",
	}, {
		name:     "memfd with fexecve",
		prog:     memfd + "os.execve(fd, ['tool', sys.argv[1]], os.environ)\n",
		path:     "/memfd:tool",
		filename: "/dev/fd/",
	}, {
		name: "deleted file",
		prog: fmt.Sprintf("import os, sys\nfd = os.open(%q, os.O_RDONLY)\nos.unlink(%[1]q)\n"+
			"os.execve(fd, ['tool', sys.argv[1]], os.environ)\n", deleted),
		file: deletedID, path: deleted, filename: "/dev/fd/",
	}, {
		name: "allowed file with fexecve",
		prog: fmt.Sprintf("import os, sys\nfd = os.open(%q, os.O_RDONLY)\n"+
			"os.execve(fd, ['tool', sys.argv[1]], os.environ)\n", kept),
		ran: true, file: fileID(t, kept), path: kept, filename: "/dev/fd/",
	}}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			marker := filepath.Join(f.dir, fmt.Sprintf("marker-%d", i))
			p := pyExec(t, dir, c.prog, marker)
			checkRan(t, p, marker, c.ran)

			recs := tr.read()
			ev := recs.exec(p.pid)
			checkExecRecord(t, ev, execWant{ran: c.ran, file: c.file, path: c.path, argv: []string{"tool", marker}})
			if c.ran {
				return
			}
			if !ev.has(netIdendEventFlagEVENT_F_DELETED) || ev.Nlink != 0 {
				t.Errorf("flags %#x, nlink %d: want the deleted flag, no link", ev.Hdr.Flags, ev.Nlink)
			}
			if got := cstring(ev.Filename[:]); !strings.HasPrefix(got, c.filename) {
				t.Errorf("filename %q, want %s...", got, c.filename)
			}
			checkExit(t, recs, p)
		})
	}
}

// An exec from a thread that is not the leader is judged like any other,
// and keeps the process key: the kernel gives the execing thread the
// leader's pid and start time.
func TestExecFromThread(t *testing.T) {
	tr := newTracer(t)
	f := newExecFixture(t)
	dir, _ := tr.session(execIntent(python3Path, f.tool))
	prog := `import os, socket, sys, threading
try:
    socket.create_connection(('127.0.0.1', 9), timeout=2).close()
except OSError:
    pass
def run():
    open(sys.argv[1], 'w').write(str(threading.get_native_id()))
    os.execv(sys.argv[2], sys.argv[2:])
th = threading.Thread(target=run)
th.start()
th.join()
`
	for i, c := range []struct {
		name, file string
		ran        bool
	}{{"allowed", f.tool, true}, {"forbidden", f.copy, false}} {
		t.Run(c.name, func(t *testing.T) {
			marker := filepath.Join(f.dir, fmt.Sprintf("marker-%d", i))
			tidFile := filepath.Join(f.dir, fmt.Sprintf("tid-%d", i))
			p := pyExec(t, dir, prog, tidFile, c.file, marker)
			checkRan(t, p, marker, c.ran)
			tid, _ := os.ReadFile(tidFile)
			if string(tid) == fmt.Sprint(p.pid) || len(tid) == 0 {
				t.Fatalf("thread id %q, pid %d: want a thread that is not the leader", tid, p.pid)
			}

			recs := tr.read()
			ev := recs.exec(p.pid)
			checkExecRecord(t, ev, execWant{
				ran: c.ran, file: fileID(t, c.file), path: c.file, filename: c.file,
				argv: []string{c.file, marker},
			})
			checkExit(t, recs, p)
			switch {
			case !c.ran && lsmActive():
				// Refused: no thread became the leader.
				if fmt.Sprint(ev.Hdr.Tid) != string(tid) {
					t.Errorf("exec record tid %d, want the calling thread's, %s", ev.Hdr.Tid, tid)
				}
			case ev.Hdr.Tid != ev.Hdr.Pid:
				t.Errorf("exec record tid %d, pid %d: want the thread to have become the leader", ev.Hdr.Tid, ev.Hdr.Pid)
			}
			// The key on python's own exec and connect records.
			var keys []uint64
			for _, x := range recs.execs {
				if x.Hdr.Pid == uint32(p.pid) {
					keys = append(keys, x.Hdr.StartNs)
				}
			}
			for _, n := range recs.nets {
				if n.Hdr.Pid == uint32(p.pid) {
					keys = append(keys, n.Hdr.StartNs)
				}
			}
			if ex := recs.exit(p.pid); ex != nil {
				keys = append(keys, ex.Hdr.StartNs)
			}
			same := func(k uint64) bool { return k == keys[0] }
			if len(keys) != 4 || !all(keys, same) {
				t.Errorf("start times on python's exec, thread exec, connect and exit records: %v, want 4 equal", keys)
			}
		})
	}
}

// The process key (pid, leader start time) is the same on every record of
// a process: exec, connect, fork and exit; a child has a key of its own and
// carries its parent's.
func TestProcessKeyOnEveryRecord(t *testing.T) {
	tr := newTracer(t)
	port := listen(t, "tcp4", "127.0.0.1:0")
	dir, _ := tr.session(fmt.Sprintf(`
name: keys
purpose: connect, fork and exit
network:
  egress:
    - to: 127.0.0.1
      ports: [%d]
`, port))
	prog := fmt.Sprintf(`import os, socket, sys
socket.create_connection(('127.0.0.1', %d), timeout=3).close()
a = os.fork()
if a == 0:
    os._exit(7)
b = os.fork()
if b == 0:
    os.execv('/bin/true', ['true'])
os.waitpid(a, 0)
os.waitpid(b, 0)
print(a, b)
sys.exit(3)
`, port)
	p := pyExec(t, dir, prog)
	var a, b int
	if _, err := fmt.Sscan(p.out, &a, &b); err != nil || p.status.ExitStatus() != 3 {
		t.Fatalf("%v", p)
	}
	recs := tr.read()

	ev := recs.exec(p.pid)
	if ev == nil || ev.Hdr.Verdict != uint8(netIdendVerdictVERDICT_ALLOW) {
		t.Fatalf("exec record of python: %+v", ev)
	}
	key := ev.Hdr.StartNs
	if ev.Ppid != uint32(os.Getpid()) {
		t.Errorf("python's exec record: ppid %d, want %d", ev.Ppid, os.Getpid())
	}
	conn := findNet(recs, p.pid)
	if conn == nil || conn.Hdr.StartNs != key || conn.Port != uint16(port) || conn.Hdr.Verdict != uint8(netIdendVerdictVERDICT_ALLOW) {
		t.Errorf("connect record %+v, want pid %d start %d port %d allowed", conn, p.pid, key, port)
	}

	children := map[int]uint64{}
	for _, fk := range recs.forks {
		if fk.Hdr.Pid != uint32(p.pid) {
			continue
		}
		if fk.Hdr.StartNs != key {
			t.Errorf("fork record of child %d: parent start %d, want %d", fk.ChildPid, fk.Hdr.StartNs, key)
		}
		children[int(fk.ChildPid)] = fk.ChildStartNs
	}
	if len(children) != 2 || children[a] == 0 || children[b] == 0 || children[a] == key {
		t.Fatalf("fork records: children %v, want %d and %d with keys of their own", children, a, b)
	}
	checkExitRecord(t, recs, p.pid, key, 3<<8)
	checkExitRecord(t, recs, a, children[a], 7<<8)
	checkExitRecord(t, recs, b, children[b], 0)

	// The child that exec'd carries its own key and its parent's.
	cev := recs.exec(b)
	if cev == nil || cev.Hdr.StartNs != children[b] || cev.Ppid != uint32(p.pid) || cev.ParentStartNs != key {
		t.Errorf("exec record of child %d: %+v, want start %d, parent %d start %d", b, cev.Hdr, children[b], p.pid, key)
	}
}

func all[T any](s []T, f func(T) bool) bool {
	for _, v := range s {
		if !f(v) {
			return false
		}
	}
	return true
}

func findNet(r *records, pid int) *netNetEvent {
	for i := range r.nets {
		if r.nets[i].Hdr.Pid == uint32(pid) {
			return &r.nets[i]
		}
	}
	return nil
}

func checkExitRecord(t *testing.T, r *records, pid int, key uint64, code uint32) {
	t.Helper()
	ex := r.exit(pid)
	switch {
	case ex == nil:
		t.Errorf("no exit record for %d", pid)
	case ex.Hdr.StartNs != key || ex.ExitCode != code:
		t.Errorf("exit record of %d: start %d code %#x, want start %d code %#x", pid, ex.Hdr.StartNs, ex.ExitCode, key, code)
	}
}

// longPath returns a path of exactly n bytes below base, made of
// directories of 200-byte names and a file name of the rest.
func longPath(base string, n int) string {
	p := base
	for n-len(p)-1 > 255 {
		p += "/" + strings.Repeat("d", min(200, n-len(p)-1-1-50))
	}
	return p + "/" + strings.Repeat("f", n-len(p)-1)
}

// deepLink makes a directory chain below base deeper than PATH_MAX, one
// directory at a time, and hard-links target into it as "tool". It
// returns the components and the full path.
func deepLink(t *testing.T, base, target string, depth int) ([]string, string) {
	t.Helper()
	fd, err := unix.Open(base, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	must(t, err)
	var names []string
	for i := range depth {
		name := fmt.Sprintf("%03d%s", i, strings.Repeat("d", 197))
		must(t, unix.Mkdirat(fd, name, 0o755))
		next, err := unix.Openat(fd, name, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
		unix.Close(fd)
		must(t, err)
		fd = next
		names = append(names, name)
	}
	defer unix.Close(fd)
	must(t, unix.Linkat(unix.AT_FDCWD, target, fd, "tool", 0))
	return names, base + "/" + strings.Join(names, "/") + "/tool"
}

// Paths longer than 255 bytes and up to PATH_MAX are on the record whole;
// a longer one, reached by relative steps, is marked truncated and keeps
// its last part.
func TestExecLongPaths(t *testing.T) {
	tr := newTracer(t)
	f := newExecFixture(t)
	for _, n := range []int{300, unix.PathMax - 1} {
		t.Run(fmt.Sprintf("%d bytes", n), func(t *testing.T) {
			p := longPath(f.dir, n)
			must(t, os.MkdirAll(filepath.Dir(p), 0o755))
			copyFile(t, touchPath, p)
			marker := filepath.Join(f.dir, fmt.Sprintf("marker-%d", n))
			dir, _ := tr.session(execIntent(p))

			pr := spawn(t, dir, "", p, marker)
			checkRan(t, pr, marker, true)
			var argv []string // past ARGV_MAX for the longest
			if n < len(netExecEvent{}.Argv) {
				argv = []string{p, marker}
			}
			checkExecRecord(t, tr.read().exec(pr.pid), execWant{
				ran: true, file: fileID(t, p), path: p, filename: p[:255], argv: argv,
			})
		})
	}

	t.Run("beyond PATH_MAX", func(t *testing.T) {
		names, full := deepLink(t, f.dir, f.tool, 25)
		marker := filepath.Join(f.dir, "marker-deep")
		dir, _ := tr.session(execIntent(python3Path, f.tool))
		prog := "import os, sys\nfor d in sys.argv[2:]:\n    os.chdir(d)\n" +
			"os.execv('./tool', ['./tool', sys.argv[1]])\n"
		pr := pyExec(t, dir, prog, append([]string{marker, f.dir}, names...)...)
		checkRan(t, pr, marker, true)

		ev := tr.read().exec(pr.pid)
		checkExecRecord(t, ev, execWant{
			ran: true, file: fileID(t, f.tool), filename: "./tool",
			argv: []string{"./tool", marker}, flags: netIdendEventFlagEVENT_F_PATH_TRUNCATED,
		})
		if got := ev.path(); !strings.HasSuffix(full, got) || len(got) < unix.PathMax-256 || got[0] != '/' {
			t.Errorf("path %q (%d bytes): want the last part of the %d-byte path", got, len(got), len(full))
		}
	})
}

// argv is kept up to ARGV_MAX bytes and marked truncated beyond.
func TestExecArgvTruncated(t *testing.T) {
	tr := newTracer(t)
	f := newExecFixture(t)
	dir, _ := tr.session(execIntent(f.tool))
	marker := filepath.Join(f.dir, "marker")
	argv := []string{f.tool}
	for len(strings.Join(argv, "\x00")) < 2*len(netExecEvent{}.Argv) {
		argv = append(argv, marker)
	}
	p := spawn(t, dir, "", argv...)
	checkRan(t, p, marker, true)

	ev := tr.read().exec(p.pid)
	checkExecRecord(t, ev, execWant{ran: true, file: fileID(t, f.tool), flags: netIdendEventFlagEVENT_F_ARGV_TRUNCATED})
	want := strings.Join(argv, "\x00")[:len(ev.Argv)]
	if int(ev.ArgvLen) != len(ev.Argv) || string(bytesOf(ev.Argv[:])) != want {
		t.Errorf("argv of %d bytes: %q, want the first %d bytes", ev.ArgvLen, bytesOf(ev.Argv[:]), len(want))
	}
}

// A process that gets the pid of an earlier one has another key: the
// start time tells them apart.
func TestProcessKeyOutlivesPIDReuse(t *testing.T) {
	tr := newTracer(t)
	dir, _ := tr.session("name: reuse\npurpose: two processes, one pid\n")
	first := spawn(t, dir, "", "/bin/true")
	ev := tr.read().exec(first.pid)
	if ev == nil {
		t.Fatalf("no exec record for %v", first)
	}
	key := ev.Hdr.StartNs

	// Ask for the same pid again: the next pid the kernel hands out is
	// ns_last_pid + 1. Another fork on the host can take it first.
	for range 20 {
		if err := os.WriteFile("/proc/sys/kernel/ns_last_pid", []byte(fmt.Sprint(first.pid-1)), 0); err != nil {
			t.Skipf("cannot choose the next pid: %v", err)
		}
		second := spawn(t, dir, "", "/bin/true")
		recs := tr.read()
		if second.pid != first.pid {
			continue
		}
		ev := recs.exec(second.pid)
		if ev == nil || ev.Hdr.StartNs == key || ev.Hdr.StartNs == 0 {
			t.Fatalf("exec record of the second process with pid %d: %+v, want a start time other than %d", second.pid, ev, key)
		}
		if ex := recs.exit(second.pid); ex == nil || ex.Hdr.StartNs != ev.Hdr.StartNs {
			t.Errorf("exit record of the second process: %+v, want start %d", ex, ev.Hdr.StartNs)
		}
		return
	}
	t.Skip("could not get the same pid twice: the host forks too often")
}
