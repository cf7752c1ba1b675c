package main

import (
	"path/filepath"
	"strings"
	"testing"
)

// exampleIntent is the path of an intent in examples/intents.
func exampleIntent(name string) string {
	return filepath.Join("..", "..", "examples", "intents", name)
}

func TestIntentCheckValid(t *testing.T) {
	for _, name := range []string{"payments-analysis.yaml", "payments-subagent.yaml", "coding-agent.yaml"} {
		file := exampleIntent(name)
		r := idend(t, nil, "intent", "check", file)
		if r.status != exitOK || !strings.HasPrefix(r.stdout, file+": valid\n") {
			t.Fatalf("%s: %s", name, r)
		}
		for _, want := range []string{"  hash          sha256:", "Compiles to:\n", "egress (IPv4):"} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("%s: output lacks %q: %s", name, want, r)
			}
		}
	}

	r := idend(t, nil, "intent", "check", exampleIntent("payments-analysis.yaml"))
	for _, want := range []string{"  ttl           1h\n", "127.0.0.2/32  8080/tcp 9090/tcp", "/usr/bin/python3"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("payments-analysis compiles without %q: %s", want, r)
		}
	}
}

func TestIntentCheckInvalid(t *testing.T) {
	file := filepath.Join(t.TempDir(), "bad.yaml")
	writeFile(t, file, []byte(`name: Bad_Name
purpose: test
ttl: forever
network:
  egress:
    - to: 10.0.0.0/8
      ports: [443, 70000]
exec:
  allow: [relative/path]
`))
	r := idend(t, nil, "intent", "check", file)
	if r.status != exitFailure || r.stdout != "" {
		t.Fatalf("want exit 1 and nothing compiled, got %s", r)
	}
	for _, want := range []string{
		file + ":1: name: ",
		file + ":3: ttl: ",
		file + ":7: network.egress[0].ports[1]: ",
		file + ":9: exec.allow[0]: ",
	} {
		if !strings.Contains(r.stderr, "idend: "+want) {
			t.Errorf("stderr lacks %q: %s", want, r)
		}
	}
	if n := strings.Count(r.stderr, "\n"); n != 4 {
		t.Errorf("want one line per problem, 4, got %d: %s", n, r)
	}
}

func TestIntentCheckMissingFile(t *testing.T) {
	r := idend(t, nil, "intent", "check", "/nonexistent/intent.yaml")
	if r.status != exitFailure || !strings.Contains(r.stderr, "/nonexistent/intent.yaml") {
		t.Fatalf("want exit 1 naming the file, got %s", r)
	}
}

func TestIntentCheckParent(t *testing.T) {
	parent, child := exampleIntent("payments-analysis.yaml"), exampleIntent("payments-subagent.yaml")
	r := idend(t, nil, "intent", "check", child, "--parent", parent)
	if r.status != exitOK || !strings.Contains(r.stdout, child+" is a subset of "+parent) {
		t.Fatalf("sub-agent within its parent: %s", r)
	}

	// The other way round, the ttl and the metrics port are wider.
	r = idend(t, nil, "intent", "check", parent, "--parent", child)
	if r.status != exitFailure {
		t.Fatalf("want exit 1, got %s", r)
	}
	for _, want := range []string{
		"idend: " + parent + " is not a subset of " + child + ":\n",
		"idend: " + parent + ":7: ttl: ",
		"idend: " + parent + ":14: network.egress[1]: ",
	} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr lacks %q: %s", want, r)
		}
	}
}
