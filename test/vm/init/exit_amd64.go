package main

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// debugExitPort is the I/O port of qemu's isa-debug-exit device as run.sh
// configures it. A write of v makes qemu exit with status (v<<1)|1.
const debugExitPort = 0xf4

// outl writes one 32-bit value to an I/O port (outl_amd64.s).
func outl(port uint16, val uint32)

// exitQEMU ends the VM with code, which the host sees as (code<<1)|1. It
// returns only when neither ioperm (all Debian kernels have
// CONFIG_X86_IOPL_IOPERM) nor /dev/port (absent from the cloud kernels)
// reaches the device.
func exitQEMU(code uint32) error {
	ioErr := unix.Ioperm(debugExitPort, 4, 1)
	if ioErr == nil {
		outl(debugExitPort, code)
	}

	f, err := os.OpenFile("/dev/port", os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("ioperm: %v; open /dev/port: %w", ioErr, err)
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte{byte(code)}, debugExitPort); err != nil {
		return fmt.Errorf("ioperm: %v; write /dev/port: %w", ioErr, err)
	}
	return fmt.Errorf("ioperm: %v; /dev/port write returned: no isa-debug-exit device", ioErr)
}
