package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

const (
	// testList names the test binaries, one a line: the package directory
	// (relative to srcRoot) and the binary, separated by a tab.
	testList = "/etc/vmtest/tests"
	// testArgs holds extra arguments for every test binary, one a line.
	testArgs = "/etc/vmtest/testargs"
	// srcRoot holds the module's files, so that tests find their testdata
	// where `go test` would run them: in their package directory.
	srcRoot = "/src"
)

// runTests runs every test binary of the list. It returns one failure
// phrase per binary that did not pass, and "" for those that did.
func runTests(cfg config, rec *records) []string {
	list, err := readLines(testList)
	if err != nil {
		return []string{fmt.Sprintf("read test list: %v", err)}
	}
	if len(list) == 0 {
		return []string{"no test binaries in the initramfs"}
	}
	extra, err := readLines(testArgs)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return []string{fmt.Sprintf("read test arguments: %v", err)}
	}

	var out []string
	for _, line := range list {
		pkg, bin, ok := strings.Cut(line, "\t")
		if !ok {
			out = append(out, fmt.Sprintf("bad test list line %q", line))
			continue
		}
		out = append(out, runTest(cfg, rec, pkg, bin, extra))
	}
	return out
}

func runTest(cfg config, rec *records, pkg, bin string, extra []string) string {
	argv := append([]string{bin, "-test.v", "-test.count=1",
		"-test.timeout=" + cfg.timeout.String()}, extra...)
	fmt.Printf("\n==== vmtest %s: %s ====\n", cfg.name, pkg)
	start := time.Now()
	e, err := command{
		argv: argv,
		dir:  filepath.Join(srcRoot, pkg),
		// Past -test.timeout the binary panics with its goroutines; kill
		// it if even that does not end it.
		timeout: cfg.timeout + 30*time.Second,
	}.run()
	secs := time.Since(start).Seconds()
	if err != nil {
		rec.add("test %s error %.1fs", pkg, secs)
		return fmt.Sprintf("%s: %v", pkg, err)
	}
	fmt.Printf("==== vmtest %s: %s: %v in %.1fs ====\n", cfg.name, pkg, e, secs)
	rec.add("test %s %d %.1fs", pkg, e.code, secs)
	if e.code != 0 || e.timedOut {
		return fmt.Sprintf("%s: %v", pkg, e)
	}
	return ""
}

// readLines returns the non-empty lines of a file.
func readLines(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()

	var lines []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" {
			lines = append(lines, l)
		}
	}
	return lines, sc.Err()
}
