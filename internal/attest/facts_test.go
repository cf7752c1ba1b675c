package attest

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func newTestAttester(t *testing.T, cfg AttesterConfig) *Attester {
	t.Helper()
	a, err := NewAttester(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// startChild starts path with args and kills and reaps it at the end of the
// test.
func startChild(t *testing.T, path string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(path, args...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return cmd
}

func fileSHA256(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func TestAttestSelf(t *testing.T) {
	a := newTestAttester(t, AttesterConfig{})

	f, err := a.Attest(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}

	if f.UID != uint32(os.Getuid()) || f.EUID != uint32(os.Geteuid()) ||
		f.GID != uint32(os.Getgid()) || f.EGID != uint32(os.Getegid()) {
		t.Errorf("credentials %d/%d %d/%d, want %d/%d %d/%d", f.UID, f.EUID, f.GID, f.EGID,
			os.Getuid(), os.Geteuid(), os.Getgid(), os.Getegid())
	}

	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if f.ExePath != exe {
		t.Errorf("exe path %q, want %q", f.ExePath, exe)
	}
	if want := fileSHA256(t, exe); f.ExeSHA256 != want || f.ExeTooLarge {
		t.Errorf("exe sha256 %q (too large %v), want %q", f.ExeSHA256, f.ExeTooLarge, want)
	}

	checkCgroup(t, f)
	checkParents(t, f)
}

func checkCgroup(t *testing.T, f *Facts) {
	t.Helper()
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	want := parseCgroup(b)
	if f.CgroupPath != want {
		t.Errorf("cgroup path %q, want %q", f.CgroupPath, want)
	}
	if want == "" {
		return
	}

	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(cgroup2Mount(), want), &st); err != nil {
		t.Fatal(err)
	}
	if f.CgroupID != st.Ino {
		t.Errorf("cgroup id %d, want %d", f.CgroupID, st.Ino)
	}
}

func checkParents(t *testing.T, f *Facts) {
	t.Helper()
	if len(f.Parents) == 0 {
		t.Fatal("no parents")
	}
	if got := f.Parents[0].PID; got != os.Getppid() {
		t.Errorf("first parent %d, want %d", got, os.Getppid())
	}
	if last := f.Parents[len(f.Parents)-1]; last.PID != 1 {
		t.Errorf("chain ends at pid %d, want 1", last.PID)
	}
	for _, p := range f.Parents {
		if p.StartTicks == 0 && p.PID != 1 {
			t.Errorf("parent %d has no start time", p.PID)
		}
	}
}

func TestAttestMaxParents(t *testing.T) {
	a := newTestAttester(t, AttesterConfig{MaxParents: 1})
	f, err := a.Attest(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Parents) != 1 {
		t.Errorf("%d parents, want 1", len(f.Parents))
	}
}

func TestAttestKeyAfterExit(t *testing.T) {
	a := newTestAttester(t, AttesterConfig{})
	cmd := startChild(t, "/bin/sleep", "60")
	pid := cmd.Process.Pid

	f, err := a.Attest(pid)
	if err != nil {
		t.Fatal(err)
	}
	if f.ExePath != mustEvalSymlinks(t, "/bin/sleep") {
		t.Errorf("exe %q", f.ExePath)
	}

	if _, err := a.AttestKey(pid, f.StartTicks); err != nil {
		t.Fatalf("live key refused: %v", err)
	}

	_ = cmd.Process.Kill()
	_ = cmd.Wait()

	_, err = a.AttestKey(pid, f.StartTicks)
	if !errors.Is(err, ErrProcessGone) {
		t.Fatalf("key of reaped process: got %v, want ErrProcessGone", err)
	}
}

func TestAttestZombie(t *testing.T) {
	a := newTestAttester(t, AttesterConfig{})
	cmd := startChild(t, "/bin/sleep", "60")
	pid := cmd.Process.Pid

	if err := cmd.Process.Signal(unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitState(t, pid, 'Z')

	// The PID still exists, but its process has exited.
	if _, err := a.Attest(pid); !errors.Is(err, ErrProcessGone) {
		t.Fatalf("zombie: got %v, want ErrProcessGone", err)
	}
}

func waitState(t *testing.T, pid int, state byte) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		st, err := readStat(pid)
		if err == nil && st.state == state {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("pid %d never reached state %c", pid, state)
}

func TestAttestKeyWrongStart(t *testing.T) {
	a := newTestAttester(t, AttesterConfig{})
	cmd := startChild(t, "/bin/sleep", "60")
	pid := cmd.Process.Pid

	f, err := a.Attest(pid)
	if err != nil {
		t.Fatal(err)
	}

	// A key whose start time differs names an earlier process that held
	// the same PID: it must never be taken for the live one.
	for _, start := range []uint64{f.StartTicks - 1, f.StartTicks + 1, 0} {
		_, err := a.AttestKey(pid, start)
		if !errors.Is(err, ErrProcessGone) {
			t.Errorf("start %d for live pid with start %d: got %v, want ErrProcessGone",
				start, f.StartTicks, err)
		}
	}
}

func TestAttestPidfd(t *testing.T) {
	a := newTestAttester(t, AttesterConfig{})
	cmd := startChild(t, "/bin/sleep", "60")
	pid := cmd.Process.Pid

	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(pidfd)

	f, err := a.AttestPidfd(pidfd)
	if err != nil {
		t.Fatal(err)
	}
	if f.PID != pid {
		t.Errorf("pid %d, want %d", f.PID, pid)
	}

	_ = cmd.Process.Kill()
	_ = cmd.Wait()

	if _, err := a.AttestPidfd(pidfd); !errors.Is(err, ErrProcessGone) {
		t.Fatalf("pidfd of reaped process: got %v, want ErrProcessGone", err)
	}
}

func TestAttestBadPID(t *testing.T) {
	a := newTestAttester(t, AttesterConfig{})
	for _, pid := range []int{0, -1} {
		if _, err := a.Attest(pid); err == nil {
			t.Errorf("pid %d accepted", pid)
		}
	}
	// PID numbers are bounded by pid_max (at most 2^22).
	if _, err := a.Attest(1 << 23); !errors.Is(err, ErrProcessGone) {
		t.Errorf("unused pid: got %v, want ErrProcessGone", err)
	}
}

func TestExeHashCache(t *testing.T) {
	a := newTestAttester(t, AttesterConfig{})
	exe := copyExecutable(t, "/bin/sleep", nil)

	first := attestChild(t, a, exe)
	second := attestChild(t, a, exe)
	hits, misses := a.HashCacheStats()
	if hits != 1 || misses != 1 {
		t.Errorf("same file: %d hits %d misses, want 1 and 1", hits, misses)
	}
	if first.ExeSHA256 != fileSHA256(t, exe) || second.ExeSHA256 != first.ExeSHA256 {
		t.Errorf("hashes %q and %q, want %q", first.ExeSHA256, second.ExeSHA256,
			fileSHA256(t, exe))
	}

	// Rewrite the file in place: same path and inode, other content.
	copyExecutable(t, "/bin/sleep", []byte("trailing bytes"), exe)
	third := attestChild(t, a, exe)
	hits, misses = a.HashCacheStats()
	if hits != 1 || misses != 2 {
		t.Errorf("rewritten file: %d hits %d misses, want 1 and 2", hits, misses)
	}
	if third.ExeSHA256 == first.ExeSHA256 || third.ExeSHA256 != fileSHA256(t, exe) {
		t.Errorf("rewritten file hashed %q, want %q", third.ExeSHA256, fileSHA256(t, exe))
	}
}

func TestExeTooLarge(t *testing.T) {
	a := newTestAttester(t, AttesterConfig{MaxExeSize: 4096})
	f := attestChild(t, a, "/bin/sleep")
	if f.ExeSHA256 != "" || !f.ExeTooLarge {
		t.Errorf("over the cap: sha256 %q too large %v, want empty and true",
			f.ExeSHA256, f.ExeTooLarge)
	}
}

// attestChild runs exe, attests it and stops it.
func attestChild(t *testing.T, a *Attester, exe string) *Facts {
	t.Helper()
	cmd := exec.Command(exe, "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()

	// Until exec completes, the child still runs the test binary.
	waitExe(t, cmd.Process.Pid, exe)

	f, err := a.Attest(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func waitExe(t *testing.T, pid int, exe string) {
	t.Helper()
	want := mustEvalSymlinks(t, exe)
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		got, _ := os.Readlink(procPath(pid, "exe"))
		if got == want {
			return
		}
		time.Sleep(2 * time.Millisecond)
	}
	t.Fatalf("pid %d never executed %s", pid, exe)
}

// copyExecutable copies src with extra bytes appended to dst, or to a new
// file in a temporary directory, and returns the path written.
func copyExecutable(t *testing.T, src string, extra []byte, dst ...string) string {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}

	path := filepath.Join(t.TempDir(), "sleep-copy")
	if len(dst) > 0 {
		path = dst[0]
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(append(b, extra...)); err != nil {
		t.Fatal(err)
	}
	return path
}

func mustEvalSymlinks(t *testing.T, path string) string {
	t.Helper()
	p, err := filepath.EvalSymlinks(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(p)
}
