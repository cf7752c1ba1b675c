package main

import (
	"os"
	"os/exec"
	"regexp"
	"testing"
)

// The demo (make demo) runs idend's main job on real processes; each step
// it shows must come out as the README describes it.
func TestDemo(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the demo needs root")
	}
	if _, err := os.Stat("/usr/bin/python3"); err != nil {
		t.Skip("the demo agent is a python3 program; no /usr/bin/python3")
	}
	cmd := exec.Command("bash", "../../scripts/demo.sh")
	cmd.Env = append(os.Environ(), "IDEND_BIN="+idendBin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, out)
	}
	for _, want := range []string{
		`agent: read the payments logs \(in its intent\): read \d+ bytes, 13 retries`,
		`agent: export the customer table \(outside its intent\): refused \(\[Errno 1\] Operation not permitted\)`,
		// Killed at the exec tracepoint, or refused with EPERM by BPF-LSM.
		`agent: run nc \(not an allowed program\): (nc was killed by signal 9 before it ran|refused \(\[Errno 1\])`,
		`sub-agent: payments logs refused \(\[Errno 1\] Operation not permitted\)`,
		`connect allow attested 127\.0\.0\.2:8080/tcp`,
		`connect deny attested 127\.0\.0\.3:5432/tcp`,
		`exec (killed|lsm_denied) attested /usr/bin/nc`,
		`session_open .* parent `,
		`recordings: ok`,
		`\n1 differences\n`,
		`connect 127\.0\.0\.2:8080/tcp .*: allow -> deny`,
	} {
		if !regexp.MustCompile(want).Match(out) {
			t.Errorf("demo output lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("demo output:\n%s", out)
	}
}
