package attest

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"sync/atomic"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/sys/unix"
)

// fileKey identifies one version of a file. The change time is part of it
// because, unlike the modification time, it cannot be set back by a writer.
type fileKey struct {
	dev, ino     uint64
	size         int64
	mtime, ctime unix.Timespec
}

// hashCache computes and caches the sha256 of files up to a size cap.
// It is safe for concurrent use.
type hashCache struct {
	maxSize int64
	cache   *lru.Cache[fileKey, string]
	hits    atomic.Uint64
	misses  atomic.Uint64
}

// newHashCache returns a cache of size entries for files up to maxSize
// bytes.
func newHashCache(size int, maxSize int64) (*hashCache, error) {
	c, err := lru.New[fileKey, string](size)
	if err != nil {
		return nil, fmt.Errorf("create hash cache: %w", err)
	}
	return &hashCache{maxSize: maxSize, cache: c}, nil
}

// sum returns the hex sha256 of the file at path, or "" and true when the
// file is larger than the cap. path may be a /proc/<pid>/exe link: the open
// follows it to the very file the process executes, even a deleted one.
func (c *hashCache) sum(path string) (string, bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", false, err
	}
	defer f.Close()

	key, err := statKey(f)
	if err != nil {
		return "", false, err
	}
	if key.size > c.maxSize {
		return "", true, nil
	}

	if sum, ok := c.cache.Get(key); ok {
		c.hits.Add(1)
		return sum, false, nil
	}
	c.misses.Add(1)

	return c.compute(f, key)
}

// compute hashes f, whose state before reading was key, and caches the
// result unless the file changed while it was read.
func (c *hashCache) compute(f *os.File, key fileKey) (string, bool, error) {
	h := sha256.New()
	n, err := io.Copy(h, io.LimitReader(f, c.maxSize+1))
	if err != nil {
		return "", false, fmt.Errorf("read: %w", err)
	}
	if n > c.maxSize {
		return "", true, nil
	}
	sum := hex.EncodeToString(h.Sum(nil))

	after, err := statKey(f)
	if err == nil && after == key {
		c.cache.Add(key, sum)
	}
	return sum, false, nil
}

// statKey returns the fileKey of an open file.
func statKey(f *os.File) (fileKey, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return fileKey{}, fmt.Errorf("stat: %w", err)
	}

	return fileKey{
		dev:   st.Dev,
		ino:   st.Ino,
		size:  st.Size,
		mtime: st.Mtim,
		ctime: st.Ctim,
	}, nil
}
