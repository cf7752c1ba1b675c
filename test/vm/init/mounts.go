package main

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// mount is one file system the guest needs.
type mount struct {
	source, target, fstype, data string
	// Optional mounts are reported when they fail but do not fail the run.
	optional bool
}

// mounts is the guest's file system layout, in mount order: what a
// systemd host has, so that tests see what they would see on a node.
var mounts = []mount{
	{"proc", "/proc", "proc", "", false},
	{"sysfs", "/sys", "sysfs", "", false},
	{"devtmpfs", "/dev", "devtmpfs", "mode=0755", false},
	{"devpts", "/dev/pts", "devpts", "mode=0620,ptmxmode=0666", true},
	{"tmpfs", "/dev/shm", "tmpfs", "mode=1777", true},
	{"tmpfs", "/tmp", "tmpfs", "mode=1777", false},
	{"tmpfs", "/run", "tmpfs", "mode=0755", false},
	{"bpf", "/sys/fs/bpf", "bpf", "mode=0700", false},
	{"cgroup2", "/sys/fs/cgroup", "cgroup2", "nsdelegate", false},
	{"securityfs", "/sys/kernel/security", "securityfs", "", false},
	{"tracefs", "/sys/kernel/tracing", "tracefs", "", true},
	{"debugfs", "/sys/kernel/debug", "debugfs", "", true},
}

// mountAll mounts every file system of the layout. It returns the
// failures of required mounts.
func mountAll() []error {
	var errs []error
	for _, m := range mounts {
		if err := m.mount(); err != nil {
			if m.optional {
				logf("optional mount: %v", err)
				continue
			}
			errs = append(errs, err)
		}
	}
	return errs
}

func (m mount) mount() error {
	if err := os.MkdirAll(m.target, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", m.target, err)
	}
	flags := uintptr(unix.MS_NOSUID)
	if m.fstype != "devtmpfs" && m.fstype != "devpts" {
		flags |= unix.MS_NODEV
	}
	if err := unix.Mount(m.source, m.target, m.fstype, flags, m.data); err != nil {
		return fmt.Errorf("mount %s on %s: %w", m.fstype, m.target, err)
	}
	return nil
}
