package selftest

import (
	"bufio"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"github.com/vishvananda/netlink"
)

// inGuest skips outside a test/vm guest, whose init sets IDEND_VMTEST.
func inGuest(t *testing.T) {
	t.Helper()
	if os.Getenv("IDEND_VMTEST") == "" {
		t.Skip("not in a test/vm guest (IDEND_VMTEST unset)")
	}
}

// mountTypes maps mount points to file system types.
func mountTypes(t *testing.T) map[string]string {
	t.Helper()
	f, err := os.Open("/proc/self/mounts")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	types := make(map[string]string)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 3 {
			types[fields[1]] = fields[2]
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return types
}

func TestMounts(t *testing.T) {
	inGuest(t)
	types := mountTypes(t)
	for target, fstype := range map[string]string{
		"/proc":                "proc",
		"/sys":                 "sysfs",
		"/dev":                 "devtmpfs",
		"/tmp":                 "tmpfs",
		"/run":                 "tmpfs",
		"/sys/fs/bpf":          "bpf",
		"/sys/fs/cgroup":       "cgroup2",
		"/sys/kernel/security": "securityfs",
	} {
		if got := types[target]; got != fstype {
			t.Errorf("%s: mounted as %q, want %s", target, got, fstype)
		}
	}
}

func TestCgroupDirectory(t *testing.T) {
	inGuest(t)
	dir, err := os.MkdirTemp("/sys/fs/cgroup", "selftest-")
	if err != nil {
		t.Fatalf("create a cgroup: %v", err)
	}
	defer os.Remove(dir)
	if _, err := os.Stat(dir + "/cgroup.procs"); err != nil {
		t.Errorf("new cgroup has no cgroup.procs: %v", err)
	}
}

func TestLoopback(t *testing.T) {
	inGuest(t)
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if lo.Attrs().Flags&net.FlagUp == 0 {
		t.Fatal("lo is down")
	}
	for _, network := range []string{"tcp4", "tcp6"} {
		addr := map[string]string{"tcp4": "127.0.0.1:0", "tcp6": "[::1]:0"}[network]
		ln, err := net.Listen(network, addr)
		if err != nil {
			t.Errorf("listen on %s: %v", addr, err)
			continue
		}
		c, err := net.Dial(network, ln.Addr().String())
		if err != nil {
			t.Errorf("connect to %s: %v", ln.Addr(), err)
		} else {
			c.Close()
		}
		ln.Close()
	}
}

// TestModules checks the modules the loader's tests need: socket destroy
// goes through the diag modules, network tests build veth pairs.
func TestModules(t *testing.T) {
	inGuest(t)
	data, err := os.ReadFile("/proc/modules")
	if err != nil {
		t.Fatal(err)
	}
	loaded := make(map[string]bool)
	for _, line := range strings.Split(string(data), "\n") {
		if name, _, ok := strings.Cut(line, " "); ok {
			loaded[name] = true
		}
	}
	for _, m := range []string{"inet_diag", "tcp_diag", "udp_diag", "veth"} {
		if !loaded[m] {
			t.Errorf("module %s is not loaded", m)
		}
	}

	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "selftest0"}, PeerName: "selftest1"}
	if err := netlink.LinkAdd(veth); err != nil {
		t.Fatalf("create a veth pair: %v", err)
	}
	if err := netlink.LinkDel(veth); err != nil {
		t.Errorf("delete the veth pair: %v", err)
	}
}

func TestKernelBTF(t *testing.T) {
	inGuest(t)
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		t.Fatal(err)
	}
	var task *btf.Struct
	if err := spec.TypeByName("task_struct", &task); err != nil {
		t.Errorf("task_struct in kernel BTF: %v", err)
	}
}

// TestBPFProgram loads a socket filter and runs it once.
func TestBPFProgram(t *testing.T) {
	inGuest(t)
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:    ebpf.SocketFilter,
		License: "GPL",
		Instructions: asm.Instructions{
			asm.LoadImm(asm.R0, 42, asm.DWord),
			asm.Return(),
		},
	})
	if err != nil {
		t.Fatalf("load a socket filter: %v", err)
	}
	defer prog.Close()

	ret, err := prog.Run(&ebpf.RunOptions{Data: make([]byte, 14)})
	if err != nil {
		t.Fatalf("run the program: %v", err)
	}
	if ret != 42 {
		t.Errorf("program returned %d, want 42", ret)
	}
}

// TestPrograms runs the userland programs the privileged tests start.
func TestPrograms(t *testing.T) {
	inGuest(t)
	for _, argv := range [][]string{
		{"sh", "-c", "exit 0"},
		{"true"},
		{"sleep", "0"},
		{"cat", "/proc/version"},
		{"curl", "--version"},
		{"nc", "-h"},
		{"python3", "-c", "import socket, json, ssl, subprocess, ctypes; print('ok')"},
	} {
		out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
		// OpenBSD nc prints its usage and exits 1 for -h.
		if err != nil && argv[0] != "nc" {
			t.Errorf("%s: %v: %s", strings.Join(argv, " "), err, out)
		}
		if argv[0] == "nc" && !strings.Contains(string(out), "usage") {
			t.Errorf("nc -h: %s", out)
		}
	}
}
