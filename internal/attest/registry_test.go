package attest

import (
	"errors"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

const (
	sumA = "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"
	cid  = "488864a0fd9861ad9d4a1b536658d1fc39f88f00d53bab95ce634f21ba8cff39"
)

// facts is a process of user 1001, group 1001, also in groups 27 and 0.
var facts = &Facts{
	PID: 4242, UID: 1000, EUID: 1001, GID: 1000, EGID: 1001,
	SupplementaryGIDs: []uint32{27, 0},
	ExePath:           "/usr/bin/python3.11",
	ExeSHA256:         sumA,
	CgroupPath:        "/idend/s-17/agent",
	ContainerID:       cid,
}

func TestSelectorMatch(t *testing.T) {
	tests := []struct {
		selector string
		want     bool
	}{
		{"unix:uid:1001", true},
		{"unix:uid:1000", false}, // the real uid: SPIRE matches the effective one
		{"unix:gid:1001", true},
		{"unix:gid:27", true}, // supplementary
		{"unix:gid:1000", false},
		{"unix:user:root", false},
		{"unix:group:root", true}, // gid 0 is supplementary
		{"unix:group:idend-no-such-group", false},
		{"unix:user:idend-no-such-user", false},
		{"unix:path:/usr/bin/python3.11", true},
		{"unix:path:/usr/bin/../bin/python3.11", true},
		{"unix:path:/usr/bin/python3", false},
		{"unix:sha256:" + sumA, true},
		{"unix:sha256:" + strings.ToUpper(sumA), true},
		{"unix:sha256:" + strings.Repeat("0", 64), false},
		{"cgroup:path:/idend/s-17/agent", true},
		{"cgroup:path:/idend/s-17", true},
		{"cgroup:path:/idend/s-17/", true},
		{"cgroup:path:/idend/s-1", false},
		{"cgroup:path:/idend/s-17/agent/sub", false},
		{"cgroup:path:/", true},
		{"container:id:" + cid, true},
		{"container:id:" + strings.Repeat("a", 64), false},
	}
	for _, tt := range tests {
		sel, err := parseSelector(tt.selector)
		if err != nil {
			t.Errorf("%s: %v", tt.selector, err)
			continue
		}
		if got := sel.match(facts); got != tt.want {
			t.Errorf("%s matches = %v, want %v", tt.selector, got, tt.want)
		}
	}
}

func TestSelectorUserName(t *testing.T) {
	root := &Facts{EUID: 0, EGID: 0}
	for _, s := range []string{"unix:user:root", "unix:group:root"} {
		sel, err := parseSelector(s)
		if err != nil {
			t.Fatal(err)
		}
		if !sel.match(root) {
			t.Errorf("%s does not match uid 0 gid 0", s)
		}
	}
}

func TestSelectorInvalid(t *testing.T) {
	for _, s := range []string{
		"", "unix", "unix:uid", "unix:uid:", "unix:uid:-1", "unix:uid:4294967296",
		"unix:uid:abc", "unix:gid:1.5", "unix:user:a b", "unix:path:bin/sh",
		"unix:sha256:abc", "unix:sha256:" + strings.Repeat("g", 64),
		"cgroup:path:idend", "container:id:488864a0fd98", "k8s:ns:default",
		"unix:pid:1",
	} {
		if _, err := parseSelector(s); err == nil {
			t.Errorf("selector %q accepted", s)
		}
	}
}

func TestRegistryMatch(t *testing.T) {
	r, err := NewRegistry([]Entry{
		{SPIFFEID: "spiffe://example.org/python",
			Selectors: []string{"unix:uid:1001", "unix:path:/usr/bin/python3.11"}},
		{SPIFFEID: "spiffe://example.org/other",
			Selectors: []string{"unix:uid:1001", "unix:path:/usr/bin/git"}},
		{SPIFFEID: "spiffe://example.org/python", Selectors: []string{"unix:sha256:" + sumA}},
	})
	if err != nil {
		t.Fatal(err)
	}

	id, err := r.Match(facts)
	if err != nil {
		t.Fatal(err)
	}
	if id.String() != "spiffe://example.org/python" {
		t.Errorf("matched %s", id)
	}

	ident, err := r.Identity(facts)
	if err != nil || ident.Strength != StrengthAttested || ident.SPIFFEID != id.String() ||
		ident.Facts != facts {
		t.Errorf("identity %+v, %v", ident, err)
	}

	other := *facts
	other.EUID = 0
	other.ExeSHA256 = ""
	if _, err := r.Match(&other); !errors.Is(err, ErrNoEntry) {
		t.Errorf("no entry: got %v", err)
	}
}

func TestRegistryAmbiguous(t *testing.T) {
	r, err := NewRegistry([]Entry{
		{SPIFFEID: "spiffe://example.org/by-uid", Selectors: []string{"unix:uid:1001"}},
		{SPIFFEID: "spiffe://example.org/by-cgroup", Selectors: []string{"cgroup:path:/idend"}},
	})
	if err != nil {
		t.Fatal(err)
	}

	_, err = r.Match(facts)
	if !errors.Is(err, ErrAmbiguous) {
		t.Fatalf("got %v, want ErrAmbiguous", err)
	}
	for _, id := range []string{"spiffe://example.org/by-uid", "spiffe://example.org/by-cgroup"} {
		if !strings.Contains(err.Error(), id) {
			t.Errorf("error %q does not name %s", err, id)
		}
	}
}

func TestRegistryInvalid(t *testing.T) {
	tests := []struct {
		name    string
		entries []Entry
		want    []string // substrings of the error
	}{
		{"bad selector", []Entry{
			{SPIFFEID: "spiffe://example.org/a", Selectors: []string{"unix:uid:1"}},
			{SPIFFEID: "spiffe://example.org/b", Selectors: []string{"unix:uid:1", "unix:uid:x"}},
		}, []string{"entry 1", `"unix:uid:x"`}},
		{"bad spiffe id", []Entry{
			{SPIFFEID: "https://example.org/a", Selectors: []string{"unix:uid:1"}},
		}, []string{"entry 0", `"https://example.org/a"`}},
		{"no selectors", []Entry{
			{SPIFFEID: "spiffe://example.org/a"},
		}, []string{"entry 0", "no selectors"}},
		{"same selectors, different ids", []Entry{
			{SPIFFEID: "spiffe://example.org/a", Selectors: []string{"unix:uid:1", "unix:gid:2"}},
			{SPIFFEID: "spiffe://example.org/x", Selectors: []string{"unix:uid:3"}},
			{SPIFFEID: "spiffe://example.org/b", Selectors: []string{"unix:gid:2", "unix:uid:1"}},
		}, []string{"entries 0", "and 2", "spiffe://example.org/a", "spiffe://example.org/b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewRegistry(tt.entries)
			if !errors.Is(err, ErrInvalidEntry) {
				t.Fatalf("got %v, want ErrInvalidEntry", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestRegistrySameSelectorsSameID(t *testing.T) {
	_, err := NewRegistry([]Entry{
		{SPIFFEID: "spiffe://example.org/a", Selectors: []string{"unix:uid:1"}},
		{SPIFFEID: "spiffe://example.org/a", Selectors: []string{"unix:uid:1"}},
	})
	if err != nil {
		t.Errorf("duplicate entry with one id refused: %v", err)
	}
}

func TestEntryYAML(t *testing.T) {
	doc := `
- spiffe_id: spiffe://example.org/agent
  selectors: ["unix:uid:1001", "cgroup:path:/idend"]
`
	var entries []Entry
	if err := yaml.Unmarshal([]byte(doc), &entries); err != nil {
		t.Fatal(err)
	}
	r, err := NewRegistry(entries)
	if err != nil {
		t.Fatal(err)
	}
	if id, err := r.Match(facts); err != nil || id.String() != "spiffe://example.org/agent" {
		t.Errorf("matched %s, %v", id, err)
	}
}

func TestNilRegistry(t *testing.T) {
	var r *Registry
	if _, err := r.Match(facts); !errors.Is(err, ErrNoEntry) {
		t.Errorf("got %v, want ErrNoEntry", err)
	}
}
