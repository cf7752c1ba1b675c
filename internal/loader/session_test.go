package loader

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/idend/idend/internal/cgroup"
	"github.com/idend/idend/internal/intent"
	"github.com/idend/idend/internal/testutil"
)

// env is a loader on a cgroup root and bpffs directory of its own.
type env struct {
	t        *testing.T
	l        *Loader
	opts     Options
	sessions atomic.Uint64
}

// requireRoot skips privileged tests for unprivileged runs.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: loads BPF programs and creates cgroups")
	}
}

func randomName(prefix string) string {
	b := make([]byte, 4)
	rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// newEnv opens a loader on a fresh cgroup root; cleanup removes it all.
func newEnv(t *testing.T, opts Options) *env {
	t.Helper()
	requireRoot(t)

	mnt, err := cgroup.Mount()
	if err != nil {
		t.Fatal(err)
	}
	name := randomName("idend-test-")
	opts.CgroupRoot = filepath.Join(mnt, name)
	opts.BPFFSDir = filepath.Join("/sys/fs/bpf", name)
	if err := cgroup.Create(opts.CgroupRoot); err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, opts: opts}
	e.l = e.open()
	t.Cleanup(func() {
		if e.l != nil {
			e.l.Close()
		}
		if err := cgroup.Kill(opts.CgroupRoot, 5*time.Second); err != nil {
			t.Error(err)
		}
		if err := Cleanup(opts.BPFFSDir); err != nil {
			t.Error(err)
		}
	})
	return e
}

func (e *env) open() *Loader {
	e.t.Helper()
	l, err := Open(e.opts)
	if err != nil {
		e.t.Fatalf("open loader: %v", err)
	}
	return l
}

// compile compiles an intent given as YAML text.
func compile(t *testing.T, text string) *intent.Compiled {
	t.Helper()
	in, err := intent.Parse("test.yaml", []byte(text))
	if err != nil {
		t.Fatalf("parse intent: %v", err)
	}
	files, err := intent.ResolveExec(in.Exec.Paths)
	if err != nil {
		t.Fatal(err)
	}
	c, err := intent.Compile(in, nil, files)
	if err != nil {
		t.Fatalf("compile intent: %v", err)
	}
	return c
}

// session creates a session cgroup with the intent text and returns its
// directory and cgroup id.
func (e *env) session(text string) (string, uint64) {
	e.t.Helper()
	id := e.sessions.Add(1)
	dir := filepath.Join(e.opts.CgroupRoot, fmt.Sprintf("s%d", id))
	if err := cgroup.Create(dir); err != nil {
		e.t.Fatal(err)
	}
	cg, err := cgroup.ID(dir)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := e.l.Apply(cg, id, compile(e.t, text)); err != nil {
		e.t.Fatalf("apply: %v", err)
	}
	return dir, cg
}

// run runs a real program inside the cgroup dir and returns its combined
// output and exit status.
func run(t *testing.T, dir string, name string, args ...string) (string, int) {
	t.Helper()
	return testutil.Run(t, dir, nil, name, args...)
}

// py runs a python3 program in dir. The programs print "ok" on success and
// "errno N" when the call under test fails with an OSError.
func py(t *testing.T, dir, program string) string {
	t.Helper()
	src := "import socket, sys, os\ntry:\n" + indent(program) +
		"\n    print('ok')\nexcept OSError as e:\n    print('errno', e.errno)\n"
	out, _ := run(t, dir, python(t), "-c", src)
	return strings.TrimSpace(out)
}

// python returns the system python3: a real binary rather than a version
// manager's shim script, which would exec helpers of its own.
func python(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"/usr/bin/python3", "/usr/local/bin/python3"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	p, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 not installed")
	}
	return p
}

func indent(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	for i, l := range lines {
		lines[i] = "    " + l
	}
	return strings.Join(lines, "\n")
}

const eperm = "errno 1"

// listen starts a TCP listener outside any session and accepts in the
// background.
func listen(t *testing.T, network, addr string) int {
	t.Helper()
	return testutil.Listen(t, network, addr)
}

func udpListen(t *testing.T, network, addr string) int {
	t.Helper()
	c, err := net.ListenPacket(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.LocalAddr().(*net.UDPAddr).Port
}
