package intent

import (
	"cmp"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// A FileID names a file the way the exec tracepoint sees it: the device of
// its superblock in the kernel's encoding (major<<20 | minor, as MKDEV) and
// its inode number.
type FileID struct {
	Dev uint64
	Ino uint64
}

// String returns "major:minor:inode".
func (f FileID) String() string {
	return fmt.Sprintf("%d:%d:%d", f.Dev>>20, f.Dev&(1<<20-1), f.Ino)
}

func (f FileID) compare(g FileID) int {
	if c := cmp.Compare(f.Dev, g.Dev); c != 0 {
		return c
	}
	return cmp.Compare(f.Ino, g.Ino)
}

// ErrNotRegular is returned by FileIDOf for a path that is not a regular
// file.
var ErrNotRegular = errors.New("not a regular file")

// FileIDOf stats path, following symbolic links, and returns the FileID of
// the file it names.
//
// stat reports the device of the file system the file is found on, which
// on most file systems is the device of its superblock that the kernel
// programs read. Overlay and btrfs subvolumes can report another device;
// a program found there then does not match.
func FileIDOf(path string) (FileID, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return FileID{}, fmt.Errorf("stat %s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return FileID{}, fmt.Errorf("%s: %w", path, ErrNotRegular)
	}
	dev := uint64(unix.Major(st.Dev))<<20 | uint64(unix.Minor(st.Dev))
	return FileID{Dev: dev, Ino: st.Ino}, nil
}

// ResolveExec returns the FileID of each path it can stat (see FileIDOf).
// The error joins one error for each path it cannot; the map is complete
// for the others, so that a caller may go on without the missing programs.
func ResolveExec(paths []string) (map[string]FileID, error) {
	ids := make(map[string]FileID, len(paths))
	var errs []error
	for _, p := range paths {
		id, err := FileIDOf(p)
		if err != nil {
			errs = append(errs, fmt.Errorf("resolve exec path: %w", err))
			continue
		}
		ids[p] = id
	}
	return ids, errors.Join(errs...)
}
