package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// command is one program init runs and waits for.
type command struct {
	argv []string
	dir  string
	// stdout receives the program's standard output; nil means the
	// console. Standard error always goes to the console.
	stdout *os.File
	// The program's process group is killed after timeout.
	timeout time.Duration
}

// exit is how a program ended.
type exit struct {
	code     int // exit status, or 128+signal
	signal   syscall.Signal
	timedOut bool
}

func (e exit) String() string {
	switch {
	case e.timedOut:
		return fmt.Sprintf("killed after timeout (status %d)", e.code)
	case e.signal != 0:
		return fmt.Sprintf("killed by %v", e.signal)
	}
	return fmt.Sprintf("exit %d", e.code)
}

// run starts the program in a process group of its own and waits for it.
// As PID 1, init inherits every orphan, so run reaps all children while it
// waits and returns when its own has exited; whatever the program left
// behind in its process group is killed then.
func (c command) run() (exit, error) {
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return exit{}, fmt.Errorf("open %s: %w", os.DevNull, err)
	}
	defer devnull.Close()

	stdout := c.stdout
	if stdout == nil {
		stdout = os.Stdout
	}
	p, err := os.StartProcess(c.argv[0], c.argv, &os.ProcAttr{
		Dir:   c.dir,
		Env:   guestEnv,
		Files: []*os.File{devnull, stdout, os.Stderr},
		Sys:   &syscall.SysProcAttr{Setpgid: true},
	})
	if err != nil {
		return exit{}, fmt.Errorf("start %s: %w", c.argv[0], err)
	}
	pid := p.Pid
	defer p.Release()

	timedOut := make(chan struct{})
	timer := time.AfterFunc(c.timeout, func() {
		close(timedOut)
		_ = unix.Kill(-pid, unix.SIGKILL)
	})
	defer timer.Stop()

	ws, err := reapUntil(pid)
	_ = unix.Kill(-pid, unix.SIGKILL)
	if err != nil {
		return exit{}, err
	}
	var e exit
	switch {
	case ws.Exited():
		e.code = ws.ExitStatus()
	case ws.Signaled():
		e.signal = ws.Signal()
		e.code = 128 + int(e.signal)
	}
	select {
	case <-timedOut:
		e.timedOut = true
	default:
	}
	return e, nil
}

// reapUntil reaps children until pid has exited.
func reapUntil(pid int) (unix.WaitStatus, error) {
	for {
		var ws unix.WaitStatus
		got, err := unix.Wait4(-1, &ws, 0, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return ws, fmt.Errorf("wait for %d: %w", pid, err)
		}
		if got == pid {
			return ws, nil
		}
	}
}

// output runs the program and returns its standard output.
func (c command) output() ([]byte, exit, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, exit{}, fmt.Errorf("pipe: %w", err)
	}
	defer r.Close()

	data := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(r)
		data <- b
	}()
	c.stdout = w
	e, err := c.run()
	w.Close()
	return <-data, e, err
}

// guestEnv is the environment of every program init runs; setEnv adds the
// matrix entry's name.
var guestEnv = []string{
	"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
	"HOME=/root",
	"USER=root",
	"LOGNAME=root",
	"TMPDIR=/tmp",
	"LANG=C.UTF-8",
	"TERM=dumb",
	"GOTRACEBACK=all",
}

// guestMarker is set in the environment of the programs init runs, to the
// name of the matrix entry: the selftest runs only where it is set.
const guestMarker = "IDEND_VMTEST"

func setEnv(cfg config) {
	guestEnv = append(guestEnv, guestMarker+"="+cfg.name)
	// Tests that run the idend binary find it here, as the guest has no
	// go command to build one.
	if _, err := os.Stat(idendBinary); err == nil {
		guestEnv = append(guestEnv, "IDEND_BIN="+idendBinary)
	}
	for _, kv := range guestEnv {
		k, v, _ := strings.Cut(kv, "=")
		_ = os.Setenv(k, v)
	}
}
