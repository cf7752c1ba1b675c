package main

import (
	"encoding/json"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/idend/idend/internal/loader"
)

func TestDoctor(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("doctor loads BPF programs to probe the kernel: needs root")
	}
	// What this kernel offers, probed in the test process itself: doctor
	// must say the same.
	want := loader.Probe()

	r := idend(t, nil, "doctor")
	wantStatus := exitOK
	if len(want.Missing()) > 0 {
		wantStatus = exitFailure
	}
	if r.status != wantStatus {
		t.Fatalf("want exit %d, got %s", wantStatus, r)
	}
	for _, f := range want.List {
		state := "ok"
		if !f.OK {
			state = "absent"
			if f.Required {
				state = "MISSING"
			}
		}
		if !strings.Contains(r.stdout, f.Name+" ") || !containsLine(r.stdout, f.Name, state) {
			t.Errorf("doctor does not report %s as %s:\n%s", f.Name, state, r.stdout)
		}
	}
	if wantStatus == exitOK && !strings.Contains(r.stdout, "idend will enforce, in the kernel:") {
		t.Errorf("doctor does not say what it will enforce:\n%s", r.stdout)
	}
	if want.UnixHooks != strings.Contains(r.stdout, "  - unix socket paths, at connect and sendmsg") {
		t.Errorf("unix hooks %v, but doctor says:\n%s", want.UnixHooks, r.stdout)
	}
}

// containsLine reports whether a line of text starts with name and holds
// the word state.
func containsLine(text, name, state string) bool {
	for _, l := range strings.Split(text, "\n") {
		fields := strings.Fields(l)
		if len(fields) >= 2 && fields[0] == name && fields[1] == state {
			return true
		}
	}
	return false
}

func TestDoctorJSON(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("doctor loads BPF programs to probe the kernel: needs root")
	}
	want := loader.Probe()

	r := idend(t, nil, "doctor", "--json")
	if strings.Count(r.stdout, "\n") != 1 {
		t.Fatalf("want one line of JSON, got %s", r)
	}
	var rep doctorReport
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("%v: %s", err, r)
	}
	if rep.OK != (len(want.Missing()) == 0) || len(rep.Features) != len(want.List) {
		t.Fatalf("report %+v does not match the probe %+v", rep, want)
	}
	for i, f := range want.List {
		got := rep.Features[i]
		if got.Name != f.Name || got.OK != f.OK || got.Required != f.Required || (got.Error != "") == f.OK {
			t.Errorf("feature %d: got %+v, probed %+v", i, got, f)
		}
	}
	if rep.OK && len(rep.Enforced) == 0 {
		t.Errorf("nothing enforced: %s", r.stdout)
	}
}

func TestDoctorNeedsRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("runs doctor as nobody, which needs root to arrange")
	}
	cmd := idendCmd(nil, "doctor")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, _ := cmd.CombinedOutput()
	if cmd.ProcessState.ExitCode() != exitFailure || !strings.Contains(string(out), "doctor needs root") {
		t.Fatalf("want exit 1 saying doctor needs root, got %d: %s", cmd.ProcessState.ExitCode(), out)
	}
}

func TestDaemonNeedsRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("runs the daemon as nobody, which needs root to arrange")
	}
	dir := t.TempDir()
	cmd := idendCmd(nil, "daemon", "--state-dir", dir, "--socket", dir+"/sock")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, _ := cmd.CombinedOutput()
	if cmd.ProcessState.ExitCode() != exitFailure || !strings.Contains(string(out), "the daemon needs root") {
		t.Fatalf("want exit 1 saying the daemon needs root, got %d: %s", cmd.ProcessState.ExitCode(), out)
	}
}
