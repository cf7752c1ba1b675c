package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const lsmDoctor = `{"kernel":"6.12.1 x86_64","ok":true,"features":[` +
	`{"name":"btf","ok":true,"required":true,"gives":"type information"},` +
	`{"name":"bpf_lsm","ok":true,"required":false,"gives":"exec refused"}],` +
	`"enforced":["programs, refused with EPERM"]}`

const plainDoctor = `{"kernel":"6.1.0 x86_64","ok":true,"features":[` +
	`{"name":"btf","ok":true,"required":true,"gives":"type information"},` +
	`{"name":"bpf_lsm","ok":false,"required":false,"gives":"exec refused","error":"bpf is not active"}],` +
	`"enforced":["programs, killed at exec"],"not_enforced":["refusing a forbidden exec"]}`

// writeRecords writes a records file as the guest's init does, with the
// carriage returns the serial port adds.
func writeRecords(t *testing.T, lines ...string) string {
	t.Helper()
	dir := t.TempDir()
	text := strings.Join(lines, "\r\n") + "\r\n"
	if err := os.WriteFile(filepath.Join(dir, "records.txt"), []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestTable(t *testing.T) {
	plain := writeRecords(t, "name 6.1", "kernel 6.1.0", "lsm lockdown,capability,yama",
		"test internal/loader 1 50.0s", "test test/vm/selftest 0 1.0s",
		"doctor 0", "doctor-json "+plainDoctor, "result FAIL")
	lsm := writeRecords(t, "name 6.12-bpflsm", "kernel 6.12.1", "lsm lockdown,capability,yama,bpf",
		"test internal/loader 0 50.0s", "doctor 0", "doctor-json "+lsmDoctor, "result PASS")
	host := writeRecords(t, "name host 6.18", "kernel 6.18.0", "lsm unknown")
	out := filepath.Join(t.TempDir(), "KERNELS.md")

	if err := run(out, []string{plain, lsm, host}); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	md := string(data)
	for _, want := range []string{
		"|  | 6.1 | 6.12-bpflsm | host 6.18 |",
		"| BPF-LSM | off | active | unknown |",
		"| tests in the guest | FAIL: internal/loader exit 1 | PASS | n/a (host) |",
		"The guests ran the tests of internal/loader, test/vm/selftest.",
		"| `btf` (required) | type information | yes | yes | not run |",
		"| `bpf_lsm` | exec refused | no [1] | yes | not run |",
		"1. bpf is not active",
		"- not enforced: refusing a forbidden exec",
		"- enforced: programs, refused with EPERM",
		"idend doctor did not run here.",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("table lacks %q:\n%s", want, md)
		}
	}
}

func TestBadDoctorOutput(t *testing.T) {
	dir := writeRecords(t, "name 6.1", "doctor-json {not json")
	if err := run(filepath.Join(t.TempDir(), "out.md"), []string{dir}); err == nil {
		t.Fatal("malformed doctor output accepted")
	}
}

func TestMissingName(t *testing.T) {
	dir := writeRecords(t, "kernel 6.1.0")
	if err := run(filepath.Join(t.TempDir(), "out.md"), []string{dir}); err == nil {
		t.Fatal("records without a name accepted")
	}
}
