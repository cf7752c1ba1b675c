// Command kerneltable writes docs/KERNELS.md: which kernel features idend
// found and what it enforces on each kernel of the test/vm matrix, from
// the records that test/vm/run.sh collected in each guest (the output of
// `idend doctor --json` there) and on the host.
//
//	go run ./test/vm/kerneltable [-o FILE] RESULT-DIR...
//
// Each RESULT-DIR holds a records.txt; the columns follow their order.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// doctor is the part of `idend doctor --json` the table shows.
type doctor struct {
	Kernel      string    `json:"kernel"`
	OK          bool      `json:"ok"`
	Features    []feature `json:"features"`
	Enforced    []string  `json:"enforced"`
	NotEnforced []string  `json:"not_enforced"`
}

type feature struct {
	Name     string `json:"name"`
	OK       bool   `json:"ok"`
	Required bool   `json:"required"`
	Gives    string `json:"gives"`
	Error    string `json:"error"`
}

// entry is one column: a matrix entry or the host.
type entry struct {
	name   string
	kernel string
	lsm    string
	tests  []testRun
	result string // the guest's overall result; empty for the host
	doctor *doctor
}

func main() {
	out := flag.String("o", "", "write to `file` instead of standard output")
	flag.Parse()
	if err := run(*out, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "kerneltable:", err)
		os.Exit(1)
	}
}

func run(out string, dirs []string) error {
	if len(dirs) == 0 {
		return errors.New("no result directories")
	}
	var entries []entry
	for _, dir := range dirs {
		e, err := readRecords(filepath.Join(dir, "records.txt"))
		if err != nil {
			return err
		}
		entries = append(entries, e)
	}

	w := io.Writer(os.Stdout)
	if out != "" {
		f, err := os.Create(out)
		if err != nil {
			return err
		}
		defer f.Close()
		w = f
	}
	return write(w, entries)
}

// readRecords parses one records file: lines of a keyword and its value.
func readRecords(path string) (entry, error) {
	f, err := os.Open(path)
	if err != nil {
		return entry{}, fmt.Errorf("read records: %w", err)
	}
	defer f.Close()

	var e entry
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 4*1024*1024)
	for sc.Scan() {
		key, val, _ := strings.Cut(strings.TrimRight(sc.Text(), "\r"), " ")
		switch key {
		case "name":
			e.name = val
		case "kernel":
			e.kernel = val
		case "lsm":
			e.lsm = val
		case "result":
			e.result = val
		case "test":
			e.tests = append(e.tests, testOutcome(val))
		case "doctor-json":
			var d doctor
			if err := json.Unmarshal([]byte(val), &d); err != nil {
				return e, fmt.Errorf("%s: doctor output: %w", path, err)
			}
			e.doctor = &d
		}
	}
	if err := sc.Err(); err != nil {
		return e, fmt.Errorf("%s: %w", path, err)
	}
	if e.name == "" {
		return e, fmt.Errorf("%s: no name record", path)
	}
	return e, nil
}

// testRun is how one package's test binary ended in a guest.
type testRun struct {
	pkg    string
	status string // exit status, or "error" when it could not run
	passed bool
}

func (t testRun) String() string {
	if t.status == "error" {
		return t.pkg + " did not run"
	}
	return t.pkg + " exit " + t.status
}

// testOutcome parses a test record: "PKG STATUS DURATION".
func testOutcome(val string) testRun {
	fields := strings.Fields(val)
	if len(fields) < 2 {
		return testRun{pkg: val, status: "error"}
	}
	return testRun{pkg: fields[0], status: fields[1], passed: fields[1] == "0"}
}

// bpfLSM says whether bpf is in the entry's active LSM list, or, where
// the list is unknown, whether doctor found BPF-LSM usable.
func (e entry) bpfLSM() string {
	if e.lsm != "" && e.lsm != "unknown" {
		for _, name := range strings.Split(e.lsm, ",") {
			if name == "bpf" {
				return "active"
			}
		}
		return "off"
	}
	if e.doctor != nil {
		for _, f := range e.doctor.Features {
			if f.Name == "bpf_lsm" && f.OK {
				return "active"
			}
			if f.Name == "bpf_lsm" {
				return "off"
			}
		}
	}
	return "unknown"
}
