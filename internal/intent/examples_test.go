package intent

import (
	"errors"
	"net/netip"
	"path/filepath"
	"testing"
)

const examplesDir = "../../examples/intents"

func loadExample(t *testing.T, name string) (*Intent, *Compiled) {
	t.Helper()
	in, err := Load(filepath.Join(examplesDir, name))
	if err != nil {
		t.Fatal(err)
	}
	// The programs may be missing on a test machine; a missing one
	// compiles to nothing.
	files, _ := ResolveExec(in.Exec.Paths)
	c, err := Compile(in, nil, files)
	if err != nil {
		t.Fatal(err)
	}
	return in, c
}

func TestExamples(t *testing.T) {
	matches, err := filepath.Glob(filepath.Join(examplesDir, "*.yaml"))
	if err != nil || len(matches) < 3 {
		t.Fatalf("examples: %v %v", matches, err)
	}
	for _, m := range matches {
		loadExample(t, filepath.Base(m))
	}
}

func TestExampleCodingAgent(t *testing.T) {
	_, c := loadExample(t, "coding-agent.yaml")
	if d := Evaluate(c, connect("127.0.0.1", 9418, ProtoTCP)); d.Verdict != VerdictAllow {
		t.Errorf("git server: %+v", d)
	}
	if d := Evaluate(c, connect("127.0.0.1", 22, ProtoTCP)); d.Verdict != VerdictEscalate {
		t.Errorf("ssh: %+v", d)
	}
	if c.ExecAny {
		t.Errorf("exec any")
	}
}

func TestExamplePayments(t *testing.T) {
	parent, c := loadExample(t, "payments-analysis.yaml")
	if d := Evaluate(c, connect("127.0.0.2", 8080, ProtoTCP)); d.Verdict != VerdictAllow {
		t.Errorf("logs: %+v", d)
	}
	if d := Evaluate(c, connect("127.0.0.3", 5432, ProtoTCP)); d.Verdict != VerdictDeny {
		t.Errorf("customer database: %+v", d)
	}

	child, sc := loadExample(t, "payments-subagent.yaml")
	if err := CheckSubset(parent, child, nil); err != nil {
		t.Errorf("sub-agent is not a subset of its parent:\n%v", err)
	}
	if d := Evaluate(sc, connect("127.0.0.2", 9090, ProtoTCP)); d.Verdict != VerdictDeny {
		t.Errorf("sub-agent reaches the metrics: %+v", d)
	}
	if err := CheckSubset(child, parent, nil); !errors.Is(err, ErrNotSubset) {
		t.Errorf("parent accepted as a subset of the sub-agent: %v", err)
	}

	coding, _ := loadExample(t, "coding-agent.yaml")
	if err := CheckSubset(parent, coding, map[string][]netip.Addr{}); !errors.Is(err, ErrNotSubset) {
		t.Errorf("coding agent accepted under payments-analysis")
	}
}
