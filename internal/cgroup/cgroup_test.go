package cgroup

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"
)

func TestHierarchy(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates cgroups")
	}
	mnt, err := Mount()
	if err != nil {
		t.Fatal(err)
	}
	if !IsCgroup2(mnt) {
		t.Fatalf("Mount returned %s, not a cgroup2 mount", mnt)
	}
	root := filepath.Join(mnt, "idend-cgtest-"+strconv.Itoa(os.Getpid()))
	child := filepath.Join(root, "child")
	for _, d := range []string{root, child} {
		if err := Create(d); err != nil {
			t.Fatal(err)
		}
	}
	defer Kill(root, 5*time.Second)
	if err := Create(root); !errors.Is(err, os.ErrExist) {
		t.Errorf("create an existing cgroup: %v, want ErrExist", err)
	}

	lr, err := Level(root)
	if err != nil {
		t.Fatal(err)
	}
	lc, _ := Level(child)
	if lr < 1 || lc != lr+1 {
		t.Errorf("levels root %d child %d, want child = root + 1 >= 2", lr, lc)
	}
	id1, err := ID(root)
	if err != nil {
		t.Fatal(err)
	}
	id2, _ := ID(child)
	if id1 == 0 || id1 == id2 {
		t.Errorf("ids %d and %d, want distinct nonzero", id1, id2)
	}
	if _, err := ID(t.TempDir()); !errors.Is(err, ErrNotCgroup2) {
		t.Errorf("ID of a plain directory: %v, want ErrNotCgroup2", err)
	}

	// A process moved into the child is listed, and Kill ends it and
	// removes the whole tree.
	sleeper := exec.Command("sleep", "60")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	if err := Enter(child, sleeper.Process.Pid); err != nil {
		t.Fatal(err)
	}
	pids, err := Procs(child)
	if err != nil || !slices.Contains(pids, sleeper.Process.Pid) {
		t.Fatalf("procs of child: %v, %v; want %d", pids, err, sleeper.Process.Pid)
	}
	if err := Kill(root, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := sleeper.Wait(); err == nil {
		t.Error("process survived Kill")
	}
	if _, err := os.Stat(root); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("cgroup tree left after Kill: %v", err)
	}
	if err := Kill(root, time.Second); err != nil {
		t.Errorf("Kill of a removed cgroup: %v", err)
	}
}
