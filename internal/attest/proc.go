package attest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// procStat holds the fields of /proc/<pid>/stat that attestation uses.
type procStat struct {
	state      byte
	ppid       int
	startTicks uint64
}

// parseStat parses the content of /proc/<pid>/stat. The command name (field
// 2) may hold spaces and parentheses, so fields are counted from the last
// closing parenthesis.
func parseStat(b []byte) (procStat, error) {
	end := bytes.LastIndexByte(b, ')')
	if end < 0 {
		return procStat{}, errors.New("stat: no command name")
	}

	// Fields from 3 (state) on; starttime is field 22.
	fields := strings.Fields(string(b[end+1:]))
	if len(fields) < 20 {
		return procStat{}, fmt.Errorf("stat: %d fields after command name", len(fields))
	}

	ppid, err := strconv.Atoi(fields[1])
	if err != nil {
		return procStat{}, fmt.Errorf("stat: ppid: %w", err)
	}

	start, err := strconv.ParseUint(fields[19], 10, 64)
	if err != nil {
		return procStat{}, fmt.Errorf("stat: starttime: %w", err)
	}

	return procStat{state: fields[0][0], ppid: ppid, startTicks: start}, nil
}

// procStatus holds the credentials from /proc/<pid>/status.
type procStatus struct {
	uids   [2]uint32 // real, effective
	gids   [2]uint32
	groups []uint32
}

// parseStatus parses the Uid, Gid and Groups lines of /proc/<pid>/status.
func parseStatus(b []byte) (procStatus, error) {
	var st procStatus
	var seen int

	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}

		var err error
		switch key {
		case "Uid":
			st.uids, err = parseIDPair(val)
			seen++
		case "Gid":
			st.gids, err = parseIDPair(val)
			seen++
		case "Groups":
			st.groups, err = parseIDs(val)
		}
		if err != nil {
			return procStatus{}, fmt.Errorf("status: %s: %w", key, err)
		}
	}

	if seen != 2 {
		return procStatus{}, errors.New("status: missing Uid or Gid")
	}
	return st, nil
}

// parseIDPair returns the real and effective ids of a Uid or Gid line.
func parseIDPair(s string) ([2]uint32, error) {
	ids, err := parseIDs(s)
	if err != nil {
		return [2]uint32{}, err
	}
	if len(ids) < 2 {
		return [2]uint32{}, fmt.Errorf("%d ids", len(ids))
	}
	return [2]uint32{ids[0], ids[1]}, nil
}

// parseIDs parses a whitespace separated list of decimal ids.
func parseIDs(s string) ([]uint32, error) {
	var ids []uint32
	for _, f := range strings.Fields(s) {
		id, err := strconv.ParseUint(f, 10, 32)
		if err != nil {
			return nil, err
		}
		ids = append(ids, uint32(id))
	}
	return ids, nil
}

// parseCgroup returns the cgroup v2 path from the "0::" line of
// /proc/<pid>/cgroup, or "" when the process has none (cgroup v1 only).
func parseCgroup(b []byte) string {
	for line := range strings.SplitSeq(string(b), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			return p
		}
	}
	return ""
}

// parseFdinfo returns the value of the "Pid:" line of a pidfd's fdinfo.
func parseFdinfo(b []byte) (int, error) {
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Pid:"); ok {
			return strconv.Atoi(strings.TrimSpace(v))
		}
	}
	return 0, errors.New("fdinfo: no Pid line, not a pidfd")
}

// readProcFile reads /proc/<pid>/<name>.
func readProcFile(pid int, name string) ([]byte, error) {
	return os.ReadFile(procPath(pid, name))
}

// cgroup2Mount returns the mount point of the cgroup2 hierarchy: the first
// cgroup2 mount of the whole hierarchy listed in /proc/self/mountinfo, or
// /sys/fs/cgroup when none is listed.
func cgroup2Mount() string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "/sys/fs/cgroup"
	}
	if m := parseMountinfo(b, "cgroup2"); m != "" {
		return m
	}
	return "/sys/fs/cgroup"
}

// parseMountinfo returns the mount point of the first mount of fstype whose
// root is the root of the filesystem.
func parseMountinfo(b []byte, fstype string) string {
	for line := range strings.SplitSeq(string(b), "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		if !ok {
			continue
		}
		f, p := strings.Fields(pre), strings.Fields(post)
		if len(f) < 5 || len(p) < 1 || p[0] != fstype || f[3] != "/" {
			continue
		}
		return unescapeMountinfo(f[4])
	}
	return ""
}

// unescapeMountinfo decodes the octal escapes (\040 for a space) the
// kernel writes in mountinfo paths.
func unescapeMountinfo(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
