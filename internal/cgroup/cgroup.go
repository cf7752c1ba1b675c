// Package cgroup finds or mounts the cgroup v2 hierarchy and manages the
// session directories idend creates in it.
package cgroup

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultMount is where idend mounts cgroup2 when the host has no cgroup2
// mount.
const DefaultMount = "/run/idend/cgroup2"

// ErrNotCgroup2 is returned for a path outside any cgroup v2 mount.
var ErrNotCgroup2 = errors.New("not on a cgroup v2 mount")

// Mount returns the first cgroup2 mount point of this mount namespace,
// mounting cgroup2 at DefaultMount when there is none.
func Mount() (string, error) {
	mnt, err := findMount()
	if err != nil || mnt != "" {
		return mnt, err
	}
	if err := os.MkdirAll(DefaultMount, 0o755); err != nil {
		return "", fmt.Errorf("create %s: %w", DefaultMount, err)
	}
	if err := unix.Mount("cgroup2", DefaultMount, "cgroup2", 0, ""); err != nil {
		return "", fmt.Errorf("mount cgroup2 at %s: %w", DefaultMount, err)
	}
	return DefaultMount, nil
}

func findMount() (string, error) {
	f, err := os.Open("/proc/self/mounts")
	if err != nil {
		return "", fmt.Errorf("read mounts: %w", err)
	}
	defer f.Close()

	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 3 && fields[2] == "cgroup2" {
			return fields[1], nil
		}
	}
	return "", sc.Err()
}

// ID returns the cgroup id of a cgroup v2 directory: the inode number the
// kernel's bpf_get_current_cgroup_id() reports for tasks inside it.
func ID(dir string) (uint64, error) {
	if !IsCgroup2(dir) {
		return 0, fmt.Errorf("%s: %w", dir, ErrNotCgroup2)
	}
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return 0, fmt.Errorf("stat %s: %w", dir, err)
	}
	return st.Ino, nil
}

// IsCgroup2 reports whether path is on a cgroup v2 mount.
func IsCgroup2(path string) bool {
	var st unix.Statfs_t
	return unix.Statfs(path, &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC
}

// Level returns the depth of dir below the root of its cgroup v2
// hierarchy, the level bpf_get_current_ancestor_cgroup_id() takes.
func Level(dir string) (uint32, error) {
	if !IsCgroup2(dir) {
		return 0, fmt.Errorf("%s: %w", dir, ErrNotCgroup2)
	}
	var level uint32
	for d := filepath.Clean(dir); IsCgroup2(filepath.Dir(d)) && d != "/"; d = filepath.Dir(d) {
		level++
	}
	return level, nil
}

// Create makes a cgroup directory. It is an error if it exists.
func Create(dir string) error {
	if err := os.Mkdir(dir, 0o755); err != nil {
		return fmt.Errorf("create cgroup: %w", err)
	}
	return nil
}

// Enter moves the process pid into the cgroup dir.
func Enter(dir string, pid int) error {
	err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0)
	if err != nil {
		return fmt.Errorf("enter cgroup %s: %w", dir, err)
	}
	return nil
}

// Procs lists the processes in dir (not in its children).
func Procs(dir string) ([]int, error) {
	data, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return nil, fmt.Errorf("read cgroup.procs: %w", err)
	}
	var pids []int
	for _, f := range strings.Fields(string(data)) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("parse cgroup.procs: %w", err)
		}
		pids = append(pids, pid)
	}
	return pids, nil
}

// Kill kills every process in dir and its children and removes the
// directories, waiting up to timeout for the processes to be gone. It uses
// cgroup.kill (Linux 5.14); without it, it signals each process, which a
// forking process may outrun, so it repeats until the tree is empty.
func Kill(dir string, timeout time.Duration) error {
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	killFile := filepath.Join(dir, "cgroup.kill")
	deadline := time.Now().Add(timeout)
	for {
		if err := os.WriteFile(killFile, []byte("1"), 0); err != nil {
			if err := signalTree(dir); err != nil {
				return err
			}
		}
		err := removeTree(dir)
		if err == nil || errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("remove cgroup %s: %w", dir, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func signalTree(dir string) error {
	return filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return err
		}
		pids, err := Procs(path)
		if err != nil {
			return err
		}
		for _, pid := range pids {
			_ = unix.Kill(pid, unix.SIGKILL)
		}
		return nil
	})
}

// removeTree removes dir and its child cgroups, deepest first.
func removeTree(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if e.IsDir() {
			if err := removeTree(filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	return unix.Rmdir(dir)
}

// ErrNoController is returned when a controller is not available in a
// cgroup (it is bound to a cgroup v1 hierarchy, or not built).
var ErrNoController = errors.New("controller not available")

// EnableController makes controller available to the children of dir.
func EnableController(dir, controller string) error {
	data, err := os.ReadFile(filepath.Join(dir, "cgroup.controllers"))
	if err != nil {
		return fmt.Errorf("read controllers: %w", err)
	}
	if !slices.Contains(strings.Fields(string(data)), controller) {
		return fmt.Errorf("%s in %s: %w", controller, dir, ErrNoController)
	}
	err = os.WriteFile(filepath.Join(dir, "cgroup.subtree_control"), []byte("+"+controller), 0)
	if err != nil {
		return fmt.Errorf("enable %s in %s: %w", controller, dir, err)
	}
	return nil
}

// SetPidsMax bounds the number of tasks in dir and below it.
func SetPidsMax(dir string, n int) error {
	err := os.WriteFile(filepath.Join(dir, "pids.max"), []byte(strconv.Itoa(n)), 0)
	if err != nil {
		return fmt.Errorf("set pids.max: %w", err)
	}
	return nil
}

// EnableControllerBelow makes controller available to the children of dir
// by enabling it in every cgroup from the mount down to dir.
func EnableControllerBelow(mount, dir, controller string) error {
	rel, err := filepath.Rel(mount, dir)
	if err != nil || strings.HasPrefix(rel, "..") {
		return fmt.Errorf("%s is not below %s", dir, mount)
	}
	cur := mount
	if err := EnableController(cur, controller); err != nil {
		return err
	}
	for _, part := range strings.Split(rel, string(filepath.Separator)) {
		if part == "." {
			continue
		}
		cur = filepath.Join(cur, part)
		if err := EnableController(cur, controller); err != nil {
			return err
		}
	}
	return nil
}

// TreeProcs calls fn for each process in dir and the cgroups below it. A
// tree removed meanwhile is no error.
func TreeProcs(dir string, fn func(pid int)) error {
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return err
		}
		pids, err := Procs(path)
		if err != nil {
			return err
		}
		for _, pid := range pids {
			fn(pid)
		}
		return nil
	})
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}
