// Package testutil holds what idend's privileged tests share: listeners
// outside any session, and real processes started inside a session's
// cgroup.
package testutil

import (
	"bytes"
	"errors"
	"net"
	"os"
	"os/exec"
	"syscall"
	"testing"
)

// Listen starts a TCP listener that accepts and closes connections in the
// background until the test ends, and returns its port.
func Listen(tb testing.TB, network, addr string) int {
	tb.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}

// RefusedOutput is what Run returns as output for a program whose execve
// BPF-LSM refused, with status 126 (what a shell reports).
const RefusedOutput = "execve: operation not permitted"

// Start starts cmd as a process born in the cgroup directory dir
// (CLONE_INTO_CGROUP), so that it runs nothing outside it. The error is
// cmd.Start's: EPERM when BPF-LSM refuses the exec.
func Start(dir string, cmd *exec.Cmd) error {
	fd, err := syscall.Open(dir, syscall.O_DIRECTORY|syscall.O_RDONLY, 0)
	if err != nil {
		return err
	}
	defer syscall.Close(fd)
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.UseCgroupFD = true
	cmd.SysProcAttr.CgroupFD = fd
	return cmd.Start()
}

// Run runs a program in the cgroup directory dir, with env added to the
// test's environment, and returns its combined output and exit status
// (-1 when a signal ended it).
func Run(tb testing.TB, dir string, env []string, name string, args ...string) (string, int) {
	tb.Helper()
	cmd := exec.Command(name, args...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := Start(dir, cmd)
	if errors.Is(err, syscall.EPERM) {
		return RefusedOutput, 126
	}
	if err != nil {
		tb.Fatalf("start %s: %v", name, err)
	}
	err = cmd.Wait()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return out.String(), ee.ExitCode()
	}
	if err != nil {
		tb.Fatalf("run %s: %v", name, err)
	}
	return out.String(), 0
}

// UDPSink starts a UDP socket on 127.0.0.1 that reads and drops datagrams
// until the test ends, and returns its port.
func UDPSink(tb testing.TB) int {
	tb.Helper()
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 64)
		for {
			if _, _, err := c.ReadFrom(buf); err != nil {
				return
			}
		}
	}()
	return c.LocalAddr().(*net.UDPAddr).Port
}
