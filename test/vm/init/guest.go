package main

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// openConsole makes /dev/console init's standard streams, for kernels
// that started init without them.
func openConsole() {
	if _, err := unix.FcntlInt(1, unix.F_GETFD, 0); err == nil {
		return
	}
	fd, err := unix.Open("/dev/console", unix.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return
	}
	for i := 0; i < 3; i++ {
		_ = unix.Dup2(fd, i)
	}
}

// readConfig reads the vmtest.* parameters of the kernel command line.
func readConfig() config {
	cfg := config{name: "unnamed", timeout: 5 * time.Minute}
	data, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		logf("read kernel command line: %v", err)
		return cfg
	}
	for _, f := range strings.Fields(string(data)) {
		key, val, _ := strings.Cut(f, "=")
		switch key {
		case "vmtest.name":
			cfg.name = val
		case "vmtest.timeout":
			d, err := time.ParseDuration(val)
			if err != nil {
				logf("vmtest.timeout=%s: %v", val, err)
				continue
			}
			cfg.timeout = d
		}
	}
	return cfg
}

// describe prints and records what kernel this is and how it was booted.
func describe(cfg config, rec *records) {
	var uts unix.Utsname
	_ = unix.Uname(&uts)
	release := unix.ByteSliceToString(uts.Release[:])
	cmdline, _ := os.ReadFile("/proc/cmdline")
	lsm, err := os.ReadFile("/sys/kernel/security/lsm")
	if err != nil {
		lsm = []byte(fmt.Sprintf("unknown (%v)", err))
	}
	_, btfErr := os.Stat("/sys/kernel/btf/vmlinux")

	logf("entry %s: kernel %s", cfg.name, release)
	logf("command line: %s", strings.TrimSpace(string(cmdline)))
	logf("active LSMs: %s", strings.TrimSpace(string(lsm)))
	logf("kernel BTF: %v", btfErr == nil)
	rec.add("name %s", cfg.name)
	rec.add("kernel %s", release)
	rec.add("lsm %s", strings.TrimSpace(string(lsm)))
}

// loopbackUp brings lo up; the kernel gives it 127.0.0.1 and ::1.
func loopbackUp() error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find loopback: %w", err)
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return fmt.Errorf("bring loopback up: %w", err)
	}
	return nil
}

// initScope is where init moves itself, as systemd does on a node: the
// cgroup2 root then has a child, and the tests run outside the root.
const initScope = "/sys/fs/cgroup/init.scope"

func enterInitScope() error {
	if err := os.Mkdir(initScope, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", initScope, err)
	}
	pid := []byte(fmt.Sprint(os.Getpid()))
	if err := os.WriteFile(initScope+"/cgroup.procs", pid, 0); err != nil {
		return fmt.Errorf("move init into %s: %w", initScope, err)
	}
	return nil
}
