package intent

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// header is the smallest valid start of an intent file.
const header = "name: t\npurpose: test\n"

func TestParseDefaults(t *testing.T) {
	in, err := Parse("intent.yaml", []byte(header))
	if err != nil {
		t.Fatal(err)
	}
	if in.TTL != time.Hour || in.OnViolation != ModeBlock || !in.Exec.Any || in.RawSockets ||
		len(in.Egress) != 0 || len(in.Unix) != 0 {
		t.Errorf("defaults: %+v", in)
	}

	in, err = Parse("intent.yaml", []byte(header+"network:\n  egress:\n    - to: 10.0.0.1\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := Rule{To: "10.0.0.1", Prefix: netip.MustParsePrefix("10.0.0.1/32"), Protocol: ProtoAny}
	if !reflect.DeepEqual(in.Egress, []Rule{want}) {
		t.Errorf("rule: got %+v, want %+v", in.Egress, want)
	}
}

func TestParseFull(t *testing.T) {
	in, err := Parse("intent.yaml", []byte(`
name: payments-retry-analysis
purpose: >
  analyze retry patterns
  in the payments service
ttl: 30m
on_violation: escalate
network:
  egress:
    - to: 10.20.0.0/16
      ports: [443, "5432-5433"]
      protocol: tcp
    - to: ::ffff:10.1.0.0/112
      protocol: udp
    - to: 2001:db8::1
    - to: Logs.Example.COM.
      ports: [8080]
  unix:
    - /run/postgresql/.s.PGSQL.5432
    - "@idend-test"
  raw_sockets: true
exec:
  allow: [/usr/bin/python3, /usr/bin/git]
`))
	if err != nil {
		t.Fatal(err)
	}
	want := &Intent{
		Name:        "payments-retry-analysis",
		Purpose:     "analyze retry patterns in the payments service",
		TTL:         30 * time.Minute,
		OnViolation: ModeEscalate,
		Egress: []Rule{
			{To: "10.20.0.0/16", Prefix: netip.MustParsePrefix("10.20.0.0/16"),
				Ports: []PortRange{{443, 443}, {5432, 5433}}, Protocol: ProtoTCP},
			{To: "::ffff:10.1.0.0/112", Prefix: netip.MustParsePrefix("10.1.0.0/16"), Protocol: ProtoUDP},
			{To: "2001:db8::1", Prefix: netip.MustParsePrefix("2001:db8::1/128")},
			{To: "Logs.Example.COM.", Host: "logs.example.com", Ports: []PortRange{{8080, 8080}}},
		},
		Unix:       []string{"/run/postgresql/.s.PGSQL.5432", "@idend-test"},
		RawSockets: true,
		Exec:       ExecPolicy{Paths: []string{"/usr/bin/python3", "/usr/bin/git"}},
	}
	in.src = source{}
	if !reflect.DeepEqual(in, want) {
		t.Errorf("got  %+v\nwant %+v", in, want)
	}
}

// TestParseErrors lists every validation error with its exact message.
func TestParseErrors(t *testing.T) {
	long := strings.Repeat("a", 64)
	tests := []struct {
		name string
		file string
		want []string
	}{
		{"empty file", "", []string{
			"intent.yaml:1: name: required",
			"intent.yaml:1: purpose: required",
		}},
		{"syntax", "name: t\n purpose: p\n", []string{
			"intent.yaml:2: yaml: mapping values are not allowed in this context",
		}},
		{"not a mapping", "- a\n- b\n", []string{
			"intent.yaml:1: a mapping of name, purpose, ttl, on_violation, network, exec, not a list",
		}},
		{"two documents", header + "---\nname: u\n", []string{
			"intent.yaml:3: more than one YAML document",
		}},
		{"alias", "name: &n t\npurpose: *n\n", []string{
			"intent.yaml:1: anchors and aliases are not supported",
			"intent.yaml:2: anchors and aliases are not supported",
		}},
		{"unknown field", header + "netwrok: {}\nfoo: 1\n", []string{
			"intent.yaml:3: netwrok: unknown field; did you mean network?",
			"intent.yaml:4: foo: unknown field (known: name, purpose, ttl, on_violation, network, exec)",
		}},
		{"unknown nested field", header + "network:\n  egres: []\n  egress:\n    - to: 10.0.0.1\n      port: [1]\n", []string{
			"intent.yaml:4: network.egres: unknown field; did you mean egress?",
			"intent.yaml:7: network.egress[0].port: unknown field; did you mean ports?",
		}},
		{"duplicate key", header + "ttl: 1h\nttl: 2h\n", []string{
			"intent.yaml:4: ttl: duplicate key (first at line 3)",
		}},
		{"duplicate nested key", header + "network:\n  egress:\n    - to: 10.0.0.1\n      to: 10.0.0.2\n", []string{
			"intent.yaml:6: network.egress[0].to: duplicate key (first at line 5)",
		}},
		{"name missing", "purpose: p\n", []string{"intent.yaml:1: name: required"}},
		{"name empty", "name:\npurpose: p\n", []string{"intent.yaml:1: name: required"}},
		{"name chars", "name: Payments_1\npurpose: p\n", []string{
			`intent.yaml:1: name: "Payments_1": only a-z, 0-9 and - are allowed`,
		}},
		{"name long", "name: " + long + "\npurpose: p\n", []string{
			"intent.yaml:1: name: 64 bytes, at most 63",
		}},
		{"name list", "name: [a]\npurpose: p\n", []string{
			"intent.yaml:1: name: a string, not a list",
		}},
		{"purpose blank", "name: t\npurpose: '  '\n", []string{"intent.yaml:2: purpose: required"}},
		{"purpose long", "name: t\npurpose: " + strings.Repeat("p", 1025) + "\n", []string{
			"intent.yaml:2: purpose: 1025 bytes, at most 1024",
		}},
		{"ttl no unit", header + "ttl: 30\n", []string{
			`intent.yaml:3: ttl: "30": not a duration (like 30m or 2h)`,
		}},
		{"ttl zero", header + "ttl: 0s\n", []string{"intent.yaml:3: ttl: 0s: must be positive"}},
		{"ttl negative", header + "ttl: -5m\n", []string{"intent.yaml:3: ttl: -5m: must be positive"}},
		{"ttl too long", header + "ttl: 721h\n", []string{
			"intent.yaml:3: ttl: 721h: longer than the maximum, 720h",
		}},
		{"ttl empty", header + "ttl:\n", []string{
			"intent.yaml:3: ttl: a duration, like 30m, not an empty value",
		}},
		{"on_violation", header + "on_violation: deny\n", []string{
			`intent.yaml:3: on_violation: "deny": one of block, escalate, audit`,
		}},
		{"network list", header + "network: [a]\n", []string{
			"intent.yaml:3: network: a mapping of egress, unix, raw_sockets, not a list",
		}},
		{"egress mapping", header + "network:\n  egress:\n    to: 10.0.0.1\n", []string{
			"intent.yaml:5: network.egress: a list of rules (- to: ...), not a mapping",
		}},
		{"rule as string", header + "network:\n  egress:\n    - 10.0.0.0/8\n", []string{
			"intent.yaml:5: network.egress[0]: a rule with to, ports and protocol, not a string (write - to: 10.0.0.0/8)",
		}},
		{"to missing", header + "network:\n  egress:\n    - ports: [1]\n", []string{
			"intent.yaml:5: network.egress[0].to: required",
		}},
		{"host bits", header + "network:\n  egress:\n    - to: 10.20.0.1/16\n", []string{
			`intent.yaml:5: network.egress[0].to: "10.20.0.1/16": host bits set (the network is 10.20.0.0/16)`,
		}},
		{"bad cidr address", header + "network:\n  egress:\n    - to: 10.0.0.256/24\n", []string{
			`intent.yaml:5: network.egress[0].to: "10.0.0.256/24": not a CIDR: "10.0.0.256" is not an IP address`,
		}},
		{"bad cidr length", header + "network:\n  egress:\n    - to: 10.0.0.0/33\n    - to: ::/129\n    - to: 10.0.0.0/x\n", []string{
			`intent.yaml:5: network.egress[0].to: "10.0.0.0/33": not a CIDR: prefix length must be 0 to 32`,
			`intent.yaml:6: network.egress[1].to: "::/129": not a CIDR: prefix length must be 0 to 128`,
			`intent.yaml:7: network.egress[2].to: "10.0.0.0/x": not a CIDR: prefix length must be 0 to 32`,
		}},
		{"bad ip", header + "network:\n  egress:\n    - to: 300.1.1.1\n    - to: \"fe80::1::2\"\n", []string{
			`intent.yaml:5: network.egress[0].to: "300.1.1.1": not an IP address`,
			`intent.yaml:6: network.egress[1].to: "fe80::1::2": not an IP address`,
		}},
		{"zone", header + "network:\n  egress:\n    - to: fe80::1%eth0\n", []string{
			`intent.yaml:5: network.egress[0].to: "fe80::1%eth0": zoned addresses are not supported`,
		}},
		{"bad hosts", header + "network:\n  egress:\n    - to: foo_bar.com\n    - to: -a.com\n    - to: a..com\n    - to: a.123\n    - to: " + long + ".com\n", []string{
			`intent.yaml:5: network.egress[0].to: "foo_bar.com": not a valid host name: label "foo_bar" has a character other than a-z, 0-9 and -`,
			`intent.yaml:6: network.egress[1].to: "-a.com": not a valid host name: label "-a" starts or ends with -`,
			`intent.yaml:7: network.egress[2].to: "a..com": not a valid host name: empty label`,
			`intent.yaml:8: network.egress[3].to: "a.123": not a valid host name: the last label is all digits`,
			`intent.yaml:9: network.egress[4].to: "` + long + `.com": not a valid host name: label "` + long + `" longer than 63 characters`,
		}},
		{"host too long", header + "network:\n  egress:\n    - to: " + strings.Repeat("abc.", 64) + "com\n", []string{
			`intent.yaml:5: network.egress[0].to: "` + strings.Repeat("abc.", 64) + `com": not a valid host name: 259 characters, at most 253`,
		}},
		{"ports", header + "network:\n  egress:\n    - to: 10.0.0.1\n      ports: [443, 900-80, 0, 70000, 0-80, http, 1-2-3, 99999999999999999999999]\n", []string{
			"intent.yaml:6: network.egress[0].ports[1]: port range 900-80: low end above high end",
			"intent.yaml:6: network.egress[0].ports[2]: port 0: ports are 1 to 65535",
			"intent.yaml:6: network.egress[0].ports[3]: port 70000: ports are 1 to 65535",
			"intent.yaml:6: network.egress[0].ports[4]: port range 0-80: ports are 1 to 65535",
			`intent.yaml:6: network.egress[0].ports[5]: port "http": not a port number or range (like 443 or 8000-8080)`,
			`intent.yaml:6: network.egress[0].ports[6]: port "1-2-3": not a port number or range (like 443 or 8000-8080)`,
			"intent.yaml:6: network.egress[0].ports[7]: port 99999999999999999999999: ports are 1 to 65535",
		}},
		{"ports block list", header + "network:\n  egress:\n    - to: 10.0.0.1\n      ports:\n        - 443\n        - 900-80\n", []string{
			"intent.yaml:8: network.egress[0].ports[1]: port range 900-80: low end above high end",
		}},
		{"ports scalar", header + "network:\n  egress:\n    - to: 10.0.0.1\n      ports: 443\n", []string{
			"intent.yaml:6: network.egress[0].ports: a list of ports and ranges, like [443, 8000-8080], not a number",
		}},
		{"ports empty", header + "network:\n  egress:\n    - to: 10.0.0.1\n      ports: []\n", []string{
			"intent.yaml:6: network.egress[0].ports: empty list: omit ports to allow every port",
		}},
		{"ports null", header + "network:\n  egress:\n    - to: 10.0.0.1\n      ports:\n", []string{
			"intent.yaml:6: network.egress[0].ports: an empty value: omit ports to allow every port",
		}},
		{"protocol", header + "network:\n  egress:\n    - to: 10.0.0.1\n      protocol: icmp\n", []string{
			`intent.yaml:6: network.egress[0].protocol: "icmp": one of tcp, udp, any`,
		}},
		{"unix", header + "network:\n  unix:\n    - run/x\n    - /run//x\n    - \"@\"\n    - /" + strings.Repeat("s", 107) + "\n    - \"@" + strings.Repeat("s", 108) + "\"\n", []string{
			`intent.yaml:5: network.unix[0]: "run/x": not an absolute path (or @name for an abstract socket)`,
			`intent.yaml:6: network.unix[1]: "/run//x": not a clean path (write /run/x)`,
			`intent.yaml:7: network.unix[2]: "@": empty abstract socket name`,
			`intent.yaml:8: network.unix[3]: "/` + strings.Repeat("s", 60) + `...": 108 bytes, at most 107`,
			`intent.yaml:9: network.unix[4]: "@` + strings.Repeat("s", 60) + `...": abstract name of 108 bytes, at most 107`,
		}},
		{"unix nul", header + "network:\n  unix: [\"/run/a\\0b\"]\n", []string{
			`intent.yaml:4: network.unix[0]: "/run/a\x00b": contains a NUL byte`,
		}},
		{"raw_sockets", header + "network:\n  raw_sockets: yes\n", []string{
			`intent.yaml:4: network.raw_sockets: "yes": true or false`,
		}},
		{"exec word", header + "exec:\n  allow: all\n", []string{
			`intent.yaml:4: exec.allow: "all": the word any or a list of absolute paths`,
		}},
		{"exec paths", header + "exec:\n  allow: [python3, any, /usr/bin/../bin/git, \"\"]\n", []string{
			`intent.yaml:4: exec.allow[0]: "python3": not an absolute path (give the full path, like /usr/bin/python3)`,
			`intent.yaml:4: exec.allow[1]: "any": write allow: any on its own, not in a list`,
			`intent.yaml:4: exec.allow[2]: "/usr/bin/../bin/git": not a clean path (write /usr/bin/git)`,
			`intent.yaml:4: exec.allow[3]: empty path`,
		}},
		{"exec empty", header + "exec:\n  allow: []\n", []string{
			"intent.yaml:4: exec.allow: empty list: would allow no program at all; list the programs or write any",
		}},
		{"exec null", header + "exec:\n  allow:\n", []string{
			"intent.yaml:4: exec.allow: an empty value: write any or a list of absolute paths",
		}},
		{"exec long", header + "exec:\n  allow: [/" + strings.Repeat("x", 4095) + "]\n", []string{
			`intent.yaml:4: exec.allow[0]: "/` + strings.Repeat("x", 60) + `...": 4096 bytes, at most 4095`,
		}},
		{"too many port rules", header + "network:\n  egress:\n    - to: 10.0.0.0/8\n      ports: [1, 3, 5, 7, 9, 11, 13, 15, 17]\n    - to: 10.1.0.0/16\n      ports: [21, 23, 25, 27, 29, 31, 33, 35]\n", []string{
			"intent.yaml:7: network.egress[1]: 10.1.0.0/16: 17 port rules after merging with enclosing prefixes, at most 16",
		}},
		{"host port budget", header + "network:\n  egress:\n    - to: 10.0.0.0/8\n      ports: [1, 3, 5, 7, 9, 11, 13, 15, 17]\n    - to: a.example\n      ports: [21, 23, 25, 27, 29, 31, 33, 35]\n", []string{
			"intent.yaml:7: network.egress[1]: host a.example: 8 port rules, with up to 9 from an enclosing prefix, exceed 16",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in, err := Parse("intent.yaml", []byte(tt.file))
			if err == nil {
				t.Fatalf("accepted: %+v", in)
			}
			var verr *ValidationError
			if !errors.As(err, &verr) {
				t.Fatalf("error %v is not a *ValidationError", err)
			}
			got := strings.Split(err.Error(), "\n")
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got\n\t%s\nwant\n\t%s", strings.Join(got, "\n\t"), strings.Join(tt.want, "\n\t"))
			}
			if len(verr.Problems) != len(tt.want) {
				t.Errorf("%d problems for %d lines", len(verr.Problems), len(tt.want))
			}
		})
	}
}

func TestParseSentinels(t *testing.T) {
	_, err := Parse("intent.yaml", []byte("name: X\n"))
	if !errors.Is(err, ErrInvalid) || errors.Is(err, ErrTooLarge) {
		t.Errorf("invalid file: %v", err)
	}
	_, err = Parse("intent.yaml", []byte(header+"network:\n  egress:\n    - to: 10.0.0.1\n      ports: [1,3,5,7,9,11,13,15,17,19,21,23,25,27,29,31,33]\n"))
	if !errors.Is(err, ErrTooLarge) || errors.Is(err, ErrInvalid) {
		t.Errorf("too many ports: %v", err)
	}
	_, err = Parse("intent.yaml", make([]byte, MaxFileSize+1))
	if !errors.Is(err, ErrTooLarge) {
		t.Errorf("huge file: %v", err)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "intent.yaml")
	if err := os.WriteFile(path, []byte(header+"ttl: x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(path)
	if want := path + `:3: ttl: "x": not a duration (like 30m or 2h)`; err == nil || err.Error() != want {
		t.Errorf("got %v, want %s", err, want)
	}

	_, err = Load(filepath.Join(dir, "missing.yaml"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}

func TestParseManyProblems(t *testing.T) {
	var b strings.Builder
	b.WriteString(header + "network:\n  egress:\n")
	for i := 0; i < 150; i++ {
		b.WriteString("    - {to: 10.0.0.1/8}\n")
	}
	_, err := Parse("intent.yaml", []byte(b.String()))
	var verr *ValidationError
	if !errors.As(err, &verr) || len(verr.Problems) != 150 {
		t.Fatalf("got %v", err)
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != 101 || lines[100] != "... and 50 more problems" {
		t.Errorf("%d lines, last %q", len(lines), lines[len(lines)-1])
	}
}
