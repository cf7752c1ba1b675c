package main

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

const crossProcessProg = `import ctypes, os, socket
libc = ctypes.CDLL(None, use_errno=True)
def call(*args):
    return ctypes.get_errno() if libc.syscall(*args) == -1 else 0
print("ptrace", call(101, 0, 0, 0, 0))
pidfd = libc.syscall(434, os.getpid(), 0)
print("pidfd_getfd", call(438, pidfd, 0, 0))
try:
    socket.socket(40, socket.SOCK_STREAM).close()
    print("vsock 0")
except OSError as e:
    print("vsock", e.errno)
`

// Commands idend run starts cannot reach into other processes (which
// could be another session's, of the same user) nor open sockets that no
// cgroup hook sees, unless the intent allows raw sockets.
func TestRunSeccomp(t *testing.T) {
	if runtime.GOARCH != "amd64" {
		t.Skip("the probe program uses x86-64 syscall numbers")
	}
	d := startTestDaemon(t)
	intentFile, credFile := writeTestIntent(t, tcpListener(t))

	r := d.idend(t, "run", "--intent", intentFile, "--credential-file", credFile, "--user", "nobody",
		"--", "python3", "-c", crossProcessProg)
	if r.status != 0 {
		t.Fatalf("probe: %s", r)
	}
	if got, want := strings.TrimSpace(r.stdout), "ptrace 1\npidfd_getfd 1\nvsock 1"; got != want {
		t.Errorf("in a session:\n%s\nwant\n%s", got, want)
	}

	// With raw_sockets the socket family is the kernel's to judge again.
	data, err := os.ReadFile(intentFile)
	if err != nil {
		t.Fatal(err)
	}
	raw := filepath.Join(t.TempDir(), "raw.yaml")
	text := strings.Replace(string(data), "network:\n", "network:\n  raw_sockets: true\n", 1)
	writeFile(t, raw, []byte(text))
	r = d.idend(t, "run", "--intent", raw, "--credential-file", credFile, "--user", "nobody",
		"--", "python3", "-c", crossProcessProg)
	if strings.Contains(r.stdout, "vsock 1\n") || !strings.Contains(r.stdout, "ptrace 1\n") {
		t.Errorf("with raw_sockets: %s; want vsock not refused by the filter, ptrace still refused", r)
	}
}
