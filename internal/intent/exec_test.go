package intent

import (
	"bufio"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// TestFileIDMatchesKernel compares FileIDOf with the device and inode the
// kernel shows for the running test binary in /proc/self/maps, which are
// those of the inode's superblock, as the exec tracepoint reads them.
func TestFileIDMatchesKernel(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	id, err := FileIDOf(exe)
	if err != nil {
		t.Fatal(err)
	}

	f, err := os.Open("/proc/self/maps")
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) < 6 || fields[5] != exe {
			continue
		}
		major, minor, _ := strings.Cut(fields[3], ":")
		maj, _ := strconv.ParseUint(major, 16, 32)
		mnr, _ := strconv.ParseUint(minor, 16, 32)
		ino, _ := strconv.ParseUint(fields[4], 10, 64)
		want := FileID{Dev: maj<<20 | mnr, Ino: ino}
		if id != want {
			t.Fatalf("FileIDOf(%s) = %v, the kernel maps it as %v", exe, id, want)
		}
		return
	}
	t.Fatalf("%s not found in /proc/self/maps", exe)
}

func TestResolveExec(t *testing.T) {
	dir := t.TempDir()
	prog := filepath.Join(dir, "prog")
	if err := os.WriteFile(prog, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(prog, link); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing")

	ids, err := ResolveExec([]string{prog, link, missing, dir})
	if !errors.Is(err, fs.ErrNotExist) || !errors.Is(err, ErrNotRegular) {
		t.Errorf("error %v should name the missing file and the directory", err)
	}
	if len(ids) != 2 || ids[prog] != ids[link] || ids[prog].Ino == 0 {
		t.Errorf("ids %v", ids)
	}

	st, err := os.Stat(prog)
	if err != nil {
		t.Fatal(err)
	}
	if ino := st.Sys().(*syscall.Stat_t).Ino; ids[prog].Ino != ino {
		t.Errorf("inode %d, stat says %d", ids[prog].Ino, ino)
	}
}
