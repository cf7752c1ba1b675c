package attest

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// Facts are what the kernel reports about a process, read while the process
// is held through a pidfd so that a recycled PID is never attested in its
// place.
//
// UID, GID and their effective counterparts come from /proc/<pid>/status.
// ExeSHA256 is empty when the executable is larger than the attester's cap;
// ExeTooLarge says so. CgroupPath is the cgroup v2 path relative to the
// cgroup2 mount, CgroupID the inode of that directory (the id BPF programs
// see). ContainerID is set when the cgroup path shows a container runtime.
type Facts struct {
	PID               int           `json:"pid"`
	StartTicks        uint64        `json:"start_ticks"`
	UID               uint32        `json:"uid"`
	EUID              uint32        `json:"euid"`
	GID               uint32        `json:"gid"`
	EGID              uint32        `json:"egid"`
	SupplementaryGIDs []uint32      `json:"supplementary_gids,omitempty"`
	ExePath           string        `json:"exe_path,omitempty"`
	ExeSHA256         string        `json:"exe_sha256,omitempty"`
	ExeTooLarge       bool          `json:"exe_too_large,omitempty"`
	CgroupPath        string        `json:"cgroup_path,omitempty"`
	CgroupID          uint64        `json:"cgroup_id,omitempty"`
	ContainerID       string        `json:"container_id,omitempty"`
	Parents           []ParentFacts `json:"parents,omitempty"`
}

// ParentFacts identify one ancestor of an attested process, nearest first.
type ParentFacts struct {
	PID        int    `json:"pid"`
	StartTicks uint64 `json:"start_ticks"`
	ExePath    string `json:"exe_path,omitempty"`
}

// Defaults of AttesterConfig.
const (
	DefaultMaxExeSize    = 256 << 20
	DefaultHashCacheSize = 1024
	DefaultMaxParents    = 64
)

// AttesterConfig configures an Attester. Zero fields take the defaults.
type AttesterConfig struct {
	// CgroupMount is where the cgroup2 hierarchy is mounted. Empty: the
	// first cgroup2 mount of /proc/self/mountinfo, else /sys/fs/cgroup.
	CgroupMount string
	// MaxExeSize caps the size of an executable that is hashed.
	MaxExeSize int64
	// HashCacheSize is the number of executable hashes kept.
	HashCacheSize int
	// MaxParents bounds the length of the parent chain.
	MaxParents int
}

// Attester reads kernel-attested facts about processes. It caches the
// sha256 of executables by device, inode, size and times. It needs Linux
// 5.3 or later (pidfd_open). It is safe for concurrent use.
type Attester struct {
	cgroupMount string
	maxParents  int
	hashes      *hashCache
}

// NewAttester returns an Attester configured by cfg.
func NewAttester(cfg AttesterConfig) (*Attester, error) {
	if cfg.CgroupMount == "" {
		cfg.CgroupMount = cgroup2Mount()
	}
	if cfg.MaxExeSize <= 0 {
		cfg.MaxExeSize = DefaultMaxExeSize
	}
	if cfg.HashCacheSize <= 0 {
		cfg.HashCacheSize = DefaultHashCacheSize
	}
	if cfg.MaxParents <= 0 {
		cfg.MaxParents = DefaultMaxParents
	}

	hashes, err := newHashCache(cfg.HashCacheSize, cfg.MaxExeSize)
	if err != nil {
		return nil, err
	}

	return &Attester{
		cgroupMount: cfg.CgroupMount,
		maxParents:  cfg.MaxParents,
		hashes:      hashes,
	}, nil
}

// Attest returns the facts of the process pid. It fails with ErrProcessGone
// when the process exits before its facts are complete.
func (a *Attester) Attest(pid int) (*Facts, error) {
	pidfd, err := openPidfd(pid)
	if err != nil {
		return nil, err
	}
	defer unix.Close(pidfd)

	return a.attest(pidfd, pid)
}

// AttestKey returns the facts of the process identified by pid and its start
// time in clock ticks (field 22 of /proc/<pid>/stat). It fails with
// ErrProcessGone when no live process has that key, in particular when the
// PID now names a later process.
func (a *Attester) AttestKey(pid int, startTicks uint64) (*Facts, error) {
	f, err := a.Attest(pid)
	if err != nil {
		return nil, err
	}
	if f.StartTicks != startTicks {
		return nil, fmt.Errorf("pid %d started at tick %d, not %d: %w",
			pid, f.StartTicks, startTicks, ErrProcessGone)
	}
	return f, nil
}

// AttestPidfd returns the facts of the process held by pidfd, for example
// one received with SO_PEERPIDFD. The caller keeps ownership of pidfd.
func (a *Attester) AttestPidfd(pidfd int) (*Facts, error) {
	pid, err := pidfdPID(pidfd)
	if err != nil {
		return nil, err
	}
	return a.attest(pidfd, pid)
}

// HashCacheStats returns how many executable hashes were served from the
// cache and how many were computed.
func (a *Attester) HashCacheStats() (hits, misses uint64) {
	return a.hashes.hits.Load(), a.hashes.misses.Load()
}

// attest reads the facts of pid, which pidfd holds, and checks that the
// process is still alive and unchanged once they are read.
func (a *Attester) attest(pidfd, pid int) (*Facts, error) {
	f, err := a.read(pid)
	if err != nil {
		if gone := checkAlive(pidfd); gone != nil {
			return nil, fmt.Errorf("attest pid %d: %w", pid, gone)
		}
		return nil, fmt.Errorf("attest pid %d: %w", pid, err)
	}

	if err := checkAlive(pidfd); err != nil {
		return nil, fmt.Errorf("attest pid %d: %w", pid, err)
	}

	// A second read of the start time closes the window between reading
	// /proc and polling the pidfd.
	st, err := readStat(pid)
	if err != nil || st.startTicks != f.StartTicks {
		return nil, fmt.Errorf("attest pid %d: start time changed: %w", pid, ErrProcessGone)
	}

	f.Parents = a.parents(st.ppid)
	return f, nil
}

// read gathers the facts of pid from /proc and the cgroup2 mount.
func (a *Attester) read(pid int) (*Facts, error) {
	st, err := readStat(pid)
	if err != nil {
		return nil, err
	}
	if st.state == 'Z' || st.state == 'X' {
		return nil, fmt.Errorf("state %c: %w", st.state, ErrProcessGone)
	}

	f := &Facts{PID: pid, StartTicks: st.startTicks}
	if err := readCreds(pid, f); err != nil {
		return nil, err
	}

	if err := a.readExe(pid, f); err != nil {
		return nil, err
	}

	if err := a.readCgroup(pid, f); err != nil {
		return nil, err
	}
	return f, nil
}

// readStat reads and parses /proc/<pid>/stat.
func readStat(pid int) (procStat, error) {
	b, err := readProcFile(pid, "stat")
	if err != nil {
		return procStat{}, err
	}
	return parseStat(b)
}

// readCreds fills the credentials of f from /proc/<pid>/status.
func readCreds(pid int, f *Facts) error {
	b, err := readProcFile(pid, "status")
	if err != nil {
		return err
	}

	st, err := parseStatus(b)
	if err != nil {
		return err
	}

	f.UID, f.EUID = st.uids[0], st.uids[1]
	f.GID, f.EGID = st.gids[0], st.gids[1]
	f.SupplementaryGIDs = st.groups
	return nil
}

// readExe fills the executable path and hash of f. Kernel threads have no
// executable and keep both empty.
func (a *Attester) readExe(pid int, f *Facts) error {
	exe := procPath(pid, "exe")

	path, err := os.Readlink(exe)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read executable path: %w", err)
	}
	f.ExePath = path

	sum, tooLarge, err := a.hashes.sum(exe)
	if err != nil {
		return fmt.Errorf("hash executable %s: %w", path, err)
	}
	f.ExeSHA256, f.ExeTooLarge = sum, tooLarge
	return nil
}

// readCgroup fills the cgroup path, id and container id of f.
func (a *Attester) readCgroup(pid int, f *Facts) error {
	b, err := readProcFile(pid, "cgroup")
	if err != nil {
		return err
	}

	f.CgroupPath = parseCgroup(b)
	if f.CgroupPath == "" {
		return nil
	}
	f.ContainerID = ContainerID(f.CgroupPath)

	var st unix.Stat_t
	dir := filepath.Join(a.cgroupMount, f.CgroupPath)
	if err := unix.Stat(dir, &st); err != nil {
		return fmt.Errorf("cgroup id of %s: %w", dir, err)
	}
	f.CgroupID = st.Ino
	return nil
}

// parents walks the parent chain from ppid up to PID 1, at most maxParents
// steps. It stops early at a parent that exits while being read.
func (a *Attester) parents(ppid int) []ParentFacts {
	var chain []ParentFacts
	for ppid > 0 && len(chain) < a.maxParents {
		p, next, ok := parent(ppid)
		if !ok {
			break
		}
		chain = append(chain, p)
		ppid = next
	}
	return chain
}

// parent reads one ancestor through a pidfd and returns it with its own
// parent's PID.
func parent(pid int) (ParentFacts, int, bool) {
	pidfd, err := openPidfd(pid)
	if err != nil {
		return ParentFacts{}, 0, false
	}
	defer unix.Close(pidfd)

	st, err := readStat(pid)
	if err != nil {
		return ParentFacts{}, 0, false
	}

	// The executable is unreadable for kernel threads and, without
	// privilege, for other users' processes: keep the PID regardless.
	exe, _ := os.Readlink(procPath(pid, "exe"))
	if checkAlive(pidfd) != nil {
		return ParentFacts{}, 0, false
	}

	p := ParentFacts{PID: pid, StartTicks: st.startTicks, ExePath: exe}
	return p, st.ppid, true
}

// openPidfd opens a pidfd for pid.
func openPidfd(pid int) (int, error) {
	if pid <= 0 {
		return -1, fmt.Errorf("pid %d: %w", pid, unix.EINVAL)
	}

	fd, err := unix.PidfdOpen(pid, 0)
	if errors.Is(err, unix.ESRCH) {
		return -1, fmt.Errorf("open pidfd of %d: %w", pid, ErrProcessGone)
	}
	if err != nil {
		return -1, fmt.Errorf("open pidfd of %d: %w", pid, err)
	}
	return fd, nil
}

// checkAlive returns ErrProcessGone once the process held by pidfd has
// exited. A pidfd becomes readable when its process exits, zombie or not.
func checkAlive(pidfd int) error {
	fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("poll pidfd: %w", err)
		}
		if n > 0 {
			return fmt.Errorf("process exited: %w", ErrProcessGone)
		}
		return nil
	}
}

// pidfdPID returns the PID a pidfd refers to, from /proc/self/fdinfo.
func pidfdPID(pidfd int) (int, error) {
	b, err := os.ReadFile("/proc/self/fdinfo/" + strconv.Itoa(pidfd))
	if err != nil {
		return 0, fmt.Errorf("read pidfd info: %w", err)
	}

	pid, err := fdinfoPID(b)
	if err != nil {
		return 0, fmt.Errorf("pidfd %d: %w", pidfd, err)
	}
	return pid, nil
}

// fdinfoPID parses the "Pid:" line of a pidfd's fdinfo: -1 once the process
// was reaped, 0 when it lives in a PID namespace not visible from ours.
func fdinfoPID(b []byte) (int, error) {
	st, err := parseFdinfo(b)
	if err != nil {
		return 0, err
	}

	switch {
	case st < 0:
		return 0, ErrProcessGone
	case st == 0:
		return 0, errors.New("process in another pid namespace")
	}
	return st, nil
}

// procPath returns /proc/<pid>/<name>.
func procPath(pid int, name string) string {
	return filepath.Join("/proc", strconv.Itoa(pid), name)
}
