package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// pty is the master side of a pseudo-terminal, with what was written to
// the terminal so far.
type pty struct {
	master *os.File
	slave  *os.File

	mu  sync.Mutex
	out bytes.Buffer
}

func openPty(t *testing.T) *pty {
	t.Helper()
	fd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals: %v", err)
	}
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	p := &pty{master: os.NewFile(uintptr(fd), "ptmx")}
	p.slave, err = os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.master.Close(); p.slave.Close() })

	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := p.master.Read(buf)
			p.mu.Lock()
			p.out.Write(buf[:n])
			p.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	return p
}

// waitFor waits until the terminal shows s, and fails the test if it does
// not within 10 seconds.
func (p *pty) waitFor(t *testing.T, s string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(p.output(), s) {
		if time.Now().After(deadline) {
			t.Fatalf("terminal never showed %q; it shows:\n%s", s, p.output())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (p *pty) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

func (p *pty) foreground(t *testing.T) int {
	t.Helper()
	pgrp, err := unix.IoctlGetInt(int(p.master.Fd()), unix.TIOCGPGRP)
	if err != nil {
		t.Fatal(err)
	}
	return pgrp
}

// startOnTerminal starts idend as the session leader of the terminal, in
// its foreground, as a login shell would.
func startOnTerminal(t *testing.T, p *pty, args ...string) int {
	t.Helper()
	cmd := idendCmd(nil, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = p.slave, p.slave, p.slave
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	t.Cleanup(func() { unix.Kill(pid, unix.SIGKILL); unix.Wait4(pid, nil, 0, nil) })
	return pid
}

// wait4 waits for pid to stop or exit, and fails the test if it does
// neither within 10 seconds.
func wait4(t *testing.T, pid int) unix.WaitStatus {
	t.Helper()
	timer := time.AfterFunc(10*time.Second, func() { unix.Kill(pid, unix.SIGKILL) })
	defer timer.Stop()
	var ws unix.WaitStatus
	if _, err := unix.Wait4(pid, &ws, unix.WUNTRACED, nil); err != nil {
		t.Fatal(err)
	}
	return ws
}

func TestRunOnTerminal(t *testing.T) {
	api := startTestAPIWithSession(t)
	p := openPty(t)

	// A shell in the terminal's foreground runs idend run, then says
	// which process group has the terminal.
	args := append([]string{"-c", `echo "shell=$$"; "$@"; ` +
		`echo "status=$? foreground=$(cut -d' ' -f8 /proc/$$/stat)"`, "sh", idendBin},
		runArgs(api, "s1", "sh", "-c", `trap 'echo INT' INT; trap 'exit 3' QUIT; `+
			`echo ready; read l; echo "got $l"; while :; do sleep 0.05; done`)...)
	cmd := exec.Command("sh", args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = p.slave, p.slave, p.slave
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// idend run is in the shell's process group; its command dies with it.
	t.Cleanup(func() { unix.Kill(-cmd.Process.Pid, unix.SIGKILL); cmd.Wait() })

	// The command reads the terminal: it must be in its foreground.
	p.waitFor(t, "ready")
	if fg := p.foreground(t); fg == cmd.Process.Pid {
		t.Fatalf("the command is not in the terminal's foreground")
	}
	p.master.WriteString("hello\n")
	p.waitFor(t, "got hello")

	// Ctrl-C reaches the command once, from the terminal, and not run.
	p.master.WriteString("\x03")
	p.waitFor(t, "INT")
	time.Sleep(200 * time.Millisecond)
	p.master.WriteString("\x1c")

	// run exits with the command's status and gives the terminal back.
	want := fmt.Sprintf("status=3 foreground=%d", cmd.Process.Pid)
	p.waitFor(t, want)
	if n := strings.Count(p.output(), "INT\r\n"); n != 1 {
		t.Fatalf("the command got SIGINT %d times:\n%s", n, p.output())
	}
}

func TestRunSuspendOnTerminal(t *testing.T) {
	api := startTestAPIWithSession(t)
	p := openPty(t)

	pid := startOnTerminal(t, p, runArgs(api, "s1", "sh", "-c",
		`echo ready; read l; echo "got $l"`)...)
	p.waitFor(t, "ready")

	// Ctrl-Z stops the command, and run with it, as a shell's job.
	p.master.WriteString("\x1a")
	if ws := wait4(t, pid); !ws.Stopped() {
		t.Fatalf("want run stopped, got %v:\n%s", ws, p.output())
	}
	if fg := p.foreground(t); fg != pid {
		t.Fatalf("foreground process group %d while stopped, want run's %d", fg, pid)
	}

	// fg: run gets the terminal back and continues, and so does the
	// command, in the foreground again.
	unix.Kill(pid, unix.SIGCONT)
	p.master.WriteString("again\n")
	p.waitFor(t, "got again")
	if ws := wait4(t, pid); !ws.Exited() || ws.ExitStatus() != 0 {
		t.Fatalf("want exit 0, got %v:\n%s", ws, p.output())
	}
}

// jobShell stands for an interactive shell: it runs its arguments as a
// background job in a process group of its own, and on the line "fg" from
// the terminal puts the job in the foreground and continues it, as fg does.
const jobShell = `import os, signal, subprocess, sys
job = subprocess.Popen(sys.argv[1:], process_group=0)
print("job", job.pid, flush=True)
sys.stdin.readline()
signal.signal(signal.SIGTTOU, signal.SIG_IGN)
os.tcsetpgrp(0, job.pid)
os.killpg(job.pid, signal.SIGCONT)
job.wait()
os.tcsetpgrp(0, os.getpgrp())
print("status", job.returncode, flush=True)
`

func TestRunInBackgroundOnTerminal(t *testing.T) {
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("the job-control shell of this test is a python3 program; no python3")
	}
	api := startTestAPIWithSession(t)
	p := openPty(t)

	args := append([]string{"-c", jobShell, idendBin},
		runArgs(api, "s1", "sh", "-c", `echo ready; read l; echo "got $l"`)...)
	cmd := exec.Command("python3", args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = p.slave, p.slave, p.slave
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Kill(-cmd.Process.Pid, unix.SIGKILL); cmd.Wait() })

	// In the background, the command's read of the terminal stops it, and
	// run stops with it.
	p.waitFor(t, "ready")
	out := p.output()
	pid, err := strconv.Atoi(strings.Fields(out[strings.Index(out, "job ")+4:])[0])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Kill(-pid, unix.SIGKILL) })
	deadline := time.Now().Add(10 * time.Second)
	for procState(pid) != "T" {
		if time.Now().After(deadline) {
			t.Fatalf("idend run %d is %q, not stopped with its command:\n%s", pid, procState(pid), out)
		}
		time.Sleep(10 * time.Millisecond)
	}

	// fg: the command gets the terminal and reads from it.
	p.master.WriteString("fg\n")
	time.Sleep(100 * time.Millisecond)
	p.master.WriteString("hello\n")
	p.waitFor(t, "got hello")
	p.waitFor(t, "status 0")
}

// procState returns the state letter of pid, as /proc/PID/stat gives it.
func procState(pid int) string {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return ""
	}
	s := string(data)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) == 0 {
		return ""
	}
	return fields[0]
}
