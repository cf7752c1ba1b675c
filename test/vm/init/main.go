// Command init is PID 1 of the VMs that test/vm/run.sh boots. It prepares
// the guest as a node would be (file systems, kernel modules, loopback),
// runs the test binaries the host put into the initramfs and idend doctor,
// and carries the outcome out twice: through qemu's isa-debug-exit device,
// which sets qemu's exit status, and as status lines on the serial
// console and on the second serial port, which the host reads as records.
package main

import (
	"fmt"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// statusPrefix starts the line that states the outcome of the run on the
// console; the host treats a run without it as failed.
const statusPrefix = "VMTEST-RESULT:"

// config comes from the kernel command line (vmtest.* parameters, which
// the kernel leaves to userspace).
type config struct {
	name    string        // the matrix entry, as kernels.txt names it
	timeout time.Duration // per test binary
}

func main() {
	start := time.Now()
	rec := openRecords()
	failures := run(rec)

	status := "PASS"
	if len(failures) > 0 {
		status = "FAIL"
	}
	line := fmt.Sprintf("%s %s in %.1fs", statusPrefix, status, time.Since(start).Seconds())
	if len(failures) > 0 {
		line += ": " + strings.Join(failures, "; ")
	}
	fmt.Printf("\n%s\n", line)
	rec.add("result %s", status)
	rec.close()
	// Let the console send the status line before the VM goes away.
	_ = unix.IoctlSetInt(1, unix.TCSBRK, 1)

	code := uint32(0)
	if len(failures) > 0 {
		code = 1
	}
	if err := exitQEMU(code); err != nil {
		logf("isa-debug-exit: %v", err)
	}
	powerOff()
}

// run prepares the guest and runs the tests. It returns one short phrase
// per failure.
func run(rec *records) []string {
	var failures []string
	fail := func(format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		logf("FAIL: %s", msg)
		failures = append(failures, msg)
	}

	for _, err := range mountAll() {
		fail("%v", err)
	}
	openConsole()
	cfg := readConfig()
	setEnv(cfg)
	describe(cfg, rec)

	for _, err := range loadModules() {
		fail("%v", err)
	}
	if err := loopbackUp(); err != nil {
		fail("%v", err)
	}
	if err := enterInitScope(); err != nil {
		fail("%v", err)
	}
	for _, r := range runTests(cfg, rec) {
		if r != "" {
			fail("%s", r)
		}
	}
	if r := runDoctor(cfg, rec); r != "" {
		fail("%s", r)
	}
	return failures
}

// logf prints one line of init's own on the console.
func logf(format string, args ...any) {
	fmt.Printf("vmtest: "+format+"\n", args...)
}
