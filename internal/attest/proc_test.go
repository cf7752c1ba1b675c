package attest

import (
	"slices"
	"testing"
)

func TestParseStat(t *testing.T) {
	// A command name may hold spaces and parentheses.
	line := "4242 (a) b (c)) S 17 4242 4242 0 -1 4194560 120 0 0 0 1 2 0 0 20 0 1 0 " +
		"987654 8192000 300 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n"

	st, err := parseStat([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	if st.state != 'S' || st.ppid != 17 || st.startTicks != 987654 {
		t.Errorf("got state %c ppid %d start %d, want S 17 987654",
			st.state, st.ppid, st.startTicks)
	}

	for _, bad := range []string{"", "1 (x S 1 2", "1 (x) S 1 2 3"} {
		if _, err := parseStat([]byte(bad)); err == nil {
			t.Errorf("parseStat(%q) accepted", bad)
		}
	}
}

func TestParseStatus(t *testing.T) {
	status := "Name:\tpython3\nUid:\t1000\t1001\t1002\t1003\n" +
		"Gid:\t100\t101\t102\t103\nGroups:\t4 24 27 \nNgid:\t0\n"

	st, err := parseStatus([]byte(status))
	if err != nil {
		t.Fatal(err)
	}
	if st.uids != [2]uint32{1000, 1001} || st.gids != [2]uint32{100, 101} {
		t.Errorf("got uids %v gids %v", st.uids, st.gids)
	}
	if !slices.Equal(st.groups, []uint32{4, 24, 27}) {
		t.Errorf("got groups %v", st.groups)
	}

	if _, err := parseStatus([]byte("Name:\tx\nUid:\t1 1 1 1\n")); err == nil {
		t.Error("status without Gid accepted")
	}
	if _, err := parseStatus([]byte("Uid:\tx 1 1 1\nGid:\t1 1 1 1\n")); err == nil {
		t.Error("non-numeric uid accepted")
	}
}

func TestParseCgroup(t *testing.T) {
	v1v2 := "4:memory:/process_api/x\n1:cpu:/\n0::/idend/s-1\n"
	if got := parseCgroup([]byte(v1v2)); got != "/idend/s-1" {
		t.Errorf("hybrid: got %q", got)
	}
	if got := parseCgroup([]byte("4:memory:/a\n")); got != "" {
		t.Errorf("v1 only: got %q", got)
	}
}

func TestParseMountinfo(t *testing.T) {
	info := "30 1 0:26 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n" +
		"40 30 0:35 /sub /mnt/sub rw - cgroup2 cgroup2 rw\n" +
		"41 30 0:35 / /sys/fs/cgroup/uni\\040fied rw shared:9 - cgroup2 cgroup2 rw\n"
	if got := parseMountinfo([]byte(info), "cgroup2"); got != "/sys/fs/cgroup/uni fied" {
		t.Errorf("got %q", got)
	}
}

func TestFdinfoPID(t *testing.T) {
	tests := []struct {
		info string
		pid  int
		ok   bool
	}{
		{"pos:\t0\nflags:\t02000002\nPid:\t1234\nNSpid:\t1234\n", 1234, true},
		{"pos:\t0\nPid:\t-1\n", 0, false},
		{"pos:\t0\nPid:\t0\n", 0, false},
		{"pos:\t0\nflags:\t02\n", 0, false},
	}
	for _, tt := range tests {
		pid, err := fdinfoPID([]byte(tt.info))
		if pid != tt.pid || (err == nil) != tt.ok {
			t.Errorf("fdinfoPID(%q) = %d, %v", tt.info, pid, err)
		}
	}
}
