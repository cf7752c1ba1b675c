package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"time"
)

// idendBinary is where run.sh puts bin/idend.
const idendBinary = "/usr/bin/idend"

// doctorTimeout bounds each doctor run; probing takes a second or two
// under TCG.
const doctorTimeout = 2 * time.Minute

// runDoctor runs `idend doctor` for people reading the console and
// `idend doctor --json` for the feature table, and records the JSON lines.
// A doctor that fails is a failure of the run; a missing binary is
// reported, since the host only builds it once cmd/idend exists.
func runDoctor(cfg config, rec *records) string {
	if _, err := os.Stat(idendBinary); errors.Is(err, os.ErrNotExist) {
		logf("idend doctor: skipped: no %s in the initramfs", idendBinary)
		rec.add("doctor missing")
		return ""
	}

	fmt.Printf("\n==== vmtest %s: idend doctor ====\n", cfg.name)
	e, err := command{argv: []string{idendBinary, "doctor"}, dir: "/", timeout: doctorTimeout}.run()
	if err != nil {
		return fmt.Sprintf("idend doctor: %v", err)
	}
	fmt.Printf("==== vmtest %s: idend doctor: %v ====\n", cfg.name, e)
	rec.add("doctor %d", e.code)
	if e.code != 0 {
		return fmt.Sprintf("idend doctor: %v", e)
	}

	out, e, err := command{argv: []string{idendBinary, "doctor", "--json"}, dir: "/",
		timeout: doctorTimeout}.output()
	if err != nil {
		return fmt.Sprintf("idend doctor --json: %v", err)
	}
	for _, line := range bytes.Split(bytes.TrimSpace(out), []byte("\n")) {
		if len(line) > 0 {
			rec.add("doctor-json %s", line)
		}
	}
	rec.add("doctor-json-exit %d", e.code)
	if e.code != 0 {
		return fmt.Sprintf("idend doctor --json: %v", e)
	}
	return ""
}
