package main

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// recordPort is the second serial port, which qemu writes to a file on the
// host. Only init writes there, so its lines are never interleaved with
// kernel messages or test output.
const recordPort = "/dev/ttyS1"

// records are the machine-readable lines the host reads back: what kernel
// ran, each test binary's status, doctor's JSON output, the overall result.
type records struct {
	f *os.File
}

// openRecords opens the record port; before /dev is mounted it opens the
// device node in the initramfs.
func openRecords() *records {
	_ = os.MkdirAll("/dev", 0o755)
	if _, err := os.Stat(recordPort); err != nil {
		// ttyS1 is major 4, minor 65.
		_ = unix.Mknod(recordPort, unix.S_IFCHR|0o600, int(unix.Mkdev(4, 65)))
	}
	f, err := os.OpenFile(recordPort, os.O_WRONLY|unix.O_NOCTTY, 0)
	if err != nil {
		logf("open %s: %v: no records for the host", recordPort, err)
		return &records{}
	}
	return &records{f: f}
}

// add writes one record line.
func (r *records) add(format string, args ...any) {
	if r.f == nil {
		return
	}
	fmt.Fprintf(r.f, format+"\n", args...)
}

func (r *records) close() {
	if r.f == nil {
		return
	}
	// Wait until the UART has sent everything before the VM goes away.
	_ = unix.IoctlSetInt(int(r.f.Fd()), unix.TCSBRK, 1)
	r.f.Close()
}
