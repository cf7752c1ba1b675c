package loader

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cilium/ebpf/link"

	"github.com/idend/idend/internal/cgroup"
)

// replacedLinks names the links attachReplacing keeps or replaces.
func replacedLinks(l *Loader) []string {
	names := []string{execProgSchedExec, execProgSchedFork, execProgSchedExit}
	if l.lsm != nil {
		names = append(names, lsmProgBprmCredsFile, lsmProgSocketCreate)
	}
	return names
}

// pinnedLinkIDs returns the ids of the links pinned under links/ by name.
func pinnedLinkIDs(t *testing.T, l *Loader, names ...string) map[string]link.ID {
	t.Helper()
	ids := make(map[string]link.ID)
	for _, name := range names {
		ids[name] = linkID(t, filepath.Join(l.pinDir, "links", name))
	}
	return ids
}

// reopen closes the env's loader and opens one on the cgroup root.
func (e *env) reopen(root string) {
	e.t.Helper()
	e.l.Close()
	e.opts.CgroupRoot = root
	e.l = e.open()
}

// denied reports whether a task in the cgroup dir is stopped at exec, or
// refused a connect to port.
func checkDenied(t *testing.T, what, dir string, port int) {
	t.Helper()
	if got := py(t, dir, connectTCP("127.0.0.1", port)); got != "" && got != eperm && got != refusedOutput {
		t.Errorf("%s: %q, want denied", what, got)
	}
}

// A daemon restarted on another cgroup root judges the new root with every
// program. The cgroup hooks are attached there; the process tracepoints and
// LSM hooks, whose root is a load-time constant that the program tag does
// not cover, are replaced. The old root keeps its links for the sessions
// the daemon restores there, and gets them back when it is the root again.
// A restart on the same root keeps every link.
func TestCgroupRootChange(t *testing.T) {
	e := newEnv(t, Options{})
	port := listen(t, "tcp4", "127.0.0.1:0")
	rootA := e.opts.CgroupRoot
	idA, err := cgroup.ID(rootA)
	must(t, err)
	dirA, _ := e.session("name: a\npurpose: no egress\n")
	replaced := replacedLinks(e.l)
	onA := pinnedLinkIDs(t, e.l, append(replaced, netProgConnect4)...)

	rootB := rootA + "-b"
	must(t, cgroup.Create(rootB))
	t.Cleanup(func() {
		if err := cgroup.Kill(rootB, 5*time.Second); err != nil {
			t.Error(err)
		}
	})
	e.reopen(rootB)
	onB := pinnedLinkIDs(t, e.l, append(replaced, netProgConnect4)...)
	for _, name := range append(replaced, netProgConnect4) {
		if onB[name] == onA[name] {
			t.Errorf("link %s kept on another root", name)
		}
	}
	if got := linkID(t, setAsidePath(e.l.pinDir, idA, netProgConnect4)); got != onA[netProgConnect4] {
		t.Errorf("link set aside for the old root: %d, want %d", got, onA[netProgConnect4])
	}

	stray := filepath.Join(rootB, "stray")
	must(t, cgroup.Create(stray))
	if p := spawn(t, stray, "", python(t), "-c", "print('ran')"); !p.stopped() || p.out != "" {
		t.Errorf("exec in no session under the new root: %v; want %s, no output", p, stopWord())
	}
	dirB, _ := e.session("name: b\npurpose: no egress\n")
	if got := py(t, dirB, connectTCP("127.0.0.1", port)); got != eperm {
		t.Errorf("connect in a session under the new root: %s, want %s", got, eperm)
	}
	if got := py(t, dirA, connectTCP("127.0.0.1", port)); got != eperm {
		t.Errorf("connect in a session under the old root: %s, want %s", got, eperm)
	}

	e.reopen(rootA)
	back := pinnedLinkIDs(t, e.l, append(replaced, netProgConnect4)...)
	if back[netProgConnect4] != onA[netProgConnect4] {
		t.Errorf("link %s on the old root again: %d, want %d taken back",
			netProgConnect4, back[netProgConnect4], onA[netProgConnect4])
	}
	checkDenied(t, "session under the other root", dirB, port)

	e.reopen(rootA)
	for name, id := range pinnedLinkIDs(t, e.l, append(replaced, netProgConnect4)...) {
		if id != back[name] {
			t.Errorf("link %s replaced on a restart on the same root", name)
		}
	}
}

// A cgroup root removed and created again at the same path is another
// cgroup: the links on the removed one are dropped, and the programs judge
// the new one.
func TestCgroupRootRecreated(t *testing.T) {
	e := newEnv(t, Options{})
	port := listen(t, "tcp4", "127.0.0.1:0")
	root := e.opts.CgroupRoot
	e.l.Close()
	e.l = nil
	must(t, cgroup.Kill(root, 5*time.Second))
	must(t, cgroup.Create(root))

	e.l = e.open()
	stray := filepath.Join(root, "stray")
	must(t, cgroup.Create(stray))
	if p := spawn(t, stray, "", python(t), "-c", "print('ran')"); !p.stopped() || p.out != "" {
		t.Errorf("exec in no session under the new root: %v; want %s, no output", p, stopWord())
	}
	dir, _ := e.session("name: s\npurpose: no egress\n")
	if got := py(t, dir, connectTCP("127.0.0.1", port)); got != eperm {
		t.Errorf("connect in a session: %s, want %s", got, eperm)
	}

	// The old cgroup's links go once the kernel has released it.
	deadline := time.Now().Add(5 * time.Second)
	for {
		e.l.Close()
		e.l = e.open()
		left, err := filepath.Glob(setAsidePath(e.l.pinDir, 0, "*"))
		must(t, err)
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("links on the removed cgroup still pinned: %v", left)
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, err := os.Stat(filepath.Join(e.l.pinDir, "links", "cgroup")); err == nil {
		entries, _ := os.ReadDir(filepath.Join(e.l.pinDir, "links", "cgroup"))
		if len(entries) != 0 {
			t.Errorf("set-aside directories left: %v", fmt.Sprint(entries))
		}
	}
}
