package intent

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

const canonicalA = `
name: a
purpose: read the logs
ttl: 1h
network:
  egress:
    - to: 10.0.0.0/8
      ports: [443, 80-81]
      protocol: tcp
    - to: Logs.Example.
  unix: [/run/b, /run/a]
exec:
  allow: [/usr/bin/git, /usr/bin/python3]
`

// The same intent: other layout, comments, key and list order, spellings
// of addresses and ports, defaults written out.
const canonicalB = `# the same
exec: {allow: [/usr/bin/python3, /usr/bin/git, /usr/bin/git]}
network:
  unix:
    - /run/a   # first
    - /run/b
  raw_sockets: false
  egress:
    - {to: logs.example}
    - protocol: tcp
      ports: ["80", 81, 443]
      to: ::ffff:10.0.0.0/104
purpose: "read the logs"
on_violation: block
name: a
`

func TestHashStable(t *testing.T) {
	a, err := Parse("a.yaml", []byte(canonicalA))
	if err != nil {
		t.Fatal(err)
	}
	b, err := Parse("b.yaml", []byte(canonicalB))
	if err != nil {
		t.Fatal(err)
	}
	if string(a.Canonical()) != string(b.Canonical()) {
		t.Errorf("canonical forms differ:\n%s\n%s", a.Canonical(), b.Canonical())
	}
	if a.Hash() != b.Hash() || !strings.HasPrefix(a.Hash(), "sha256:") || len(a.Hash()) != 7+64 {
		t.Errorf("hashes %s and %s", a.Hash(), b.Hash())
	}

	for _, change := range []struct{ old, new string }{
		{"ttl: 1h", "ttl: 2h"},
		{"80-81", "80-82"},
		{"protocol: tcp", "protocol: udp"},
		{"/run/a", "/run/c"},
		{"read the logs", "read the log"},
		{"10.0.0.0/8", "10.0.0.0/9"},
	} {
		c, err := Parse("c.yaml", []byte(strings.Replace(canonicalA, change.old, change.new, 1)))
		if err != nil {
			t.Fatal(err)
		}
		if c.Hash() == a.Hash() {
			t.Errorf("%s -> %s keeps the hash", change.old, change.new)
		}
	}
}

func TestCanonicalRoundTrip(t *testing.T) {
	a, err := Parse("a.yaml", []byte(canonicalA))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"version":1,"name":"a","purpose":"read the logs","ttl":"1h0m0s","on_violation":"block",` +
		`"egress":[{"to":"10.0.0.0/8","ports":["80-81","443"],"protocol":"tcp"},{"to":"logs.example","protocol":"any"}],` +
		`"unix":["/run/a","/run/b"],"raw_sockets":false,"exec":{"any":false,"allow":["/usr/bin/git","/usr/bin/python3"]}}`
	if got := string(a.Canonical()); got != want {
		t.Errorf("canonical\n got %s\nwant %s", got, want)
	}

	b, err := FromCanonical(a.Canonical())
	if err != nil {
		t.Fatal(err)
	}
	if b.Hash() != a.Hash() {
		t.Errorf("hash changed in a round trip")
	}
	ca, err := Compile(a, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	cb, err := Compile(b, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(ca, cb) {
		t.Errorf("compiled forms differ:\n%+v\n%+v", ca, cb)
	}
}

func TestFromCanonicalErrors(t *testing.T) {
	valid := `{"version":1,"name":"a","purpose":"p","ttl":"1h0m0s","on_violation":"block",` +
		`"egress":[],"unix":[],"raw_sockets":false,"exec":{"any":true,"allow":[]}}`
	if _, err := FromCanonical([]byte(valid)); err != nil {
		t.Fatalf("valid: %v", err)
	}
	tests := []struct {
		old, new, want string
	}{
		{`"version":1`, `"version":2`, "decode canonical intent: version 2, want 1: invalid intent"},
		{`"raw_sockets":false`, `"raw_sockets":false,"extra":1`, `decode canonical intent: json: unknown field "extra"`},
		{`"name":"a"`, `"name":"A"`, `name: "A": only a-z, 0-9 and - are allowed`},
		{`"ttl":"1h0m0s"`, `"ttl":"x"`, `ttl: "x": not a duration (like 30m or 2h)`},
		{`"on_violation":"block"`, `"on_violation":"deny"`, `on_violation: "deny": one of block, escalate, audit`},
		{`"egress":[]`, `"egress":[{"to":"10.0.0.1/8","ports":["0"],"protocol":"x"}]`,
			"network.egress[0].to: \"10.0.0.1/8\": host bits set (the network is 10.0.0.0/8)\n" +
				"network.egress[0].ports[0]: port 0: ports are 1 to 65535\n" +
				`network.egress[0].protocol: "x": one of tcp, udp, any`},
		{`"unix":[]`, `"unix":["x"]`, `network.unix[0]: "x": not an absolute path (or @name for an abstract socket)`},
		{`"any":true,"allow":[]`, `"any":true,"allow":["/bin/sh"]`, "exec.allow: both any and a list of paths"},
		{`"any":true,"allow":[]`, `"any":false,"allow":[]`, "exec.allow: " + msgEmptyExec},
	}
	for _, tt := range tests {
		_, err := FromCanonical([]byte(strings.Replace(valid, tt.old, tt.new, 1)))
		if err == nil || err.Error() != tt.want {
			t.Errorf("%s: got %v, want %s", tt.new, err, tt.want)
		}
		if !errors.Is(err, ErrInvalid) && !strings.Contains(tt.want, "json") {
			t.Errorf("%s: %v is not ErrInvalid", tt.new, err)
		}
	}
}
