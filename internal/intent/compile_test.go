package intent

import (
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

func mustParse(t testing.TB, body string) *Intent {
	t.Helper()
	in, err := Parse("intent.yaml", []byte(header+body))
	if err != nil {
		t.Fatal(err)
	}
	return in
}

func mustCompile(t testing.TB, in *Intent, hosts map[string][]netip.Addr) *Compiled {
	t.Helper()
	c, err := Compile(in, hosts, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func pr(prefix string, ports ...PortRule) PrefixRule {
	return PrefixRule{Prefix: netip.MustParsePrefix(prefix), Ports: ports}
}

func tcp(lo, hi uint16) PortRule  { return PortRule{Lo: lo, Hi: hi, Proto: ProtoTCP} }
func udp(lo, hi uint16) PortRule  { return PortRule{Lo: lo, Hi: hi, Proto: ProtoUDP} }
func anyp(lo, hi uint16) PortRule { return PortRule{Lo: lo, Hi: hi, Proto: ProtoAny} }

func TestCompileMerge(t *testing.T) {
	tests := []struct {
		name   string
		egress string
		v4     []PrefixRule
	}{
		{"inner prefix gets the outer ports", `
    - {to: 10.20.0.0/16, ports: [443], protocol: tcp}
    - {to: 10.20.1.0/24, ports: [80], protocol: tcp}`,
			[]PrefixRule{pr("10.20.0.0/16", tcp(443, 443)), pr("10.20.1.0/24", tcp(80, 80), tcp(443, 443))}},
		{"inner prefix allowing nothing more is dropped", `
    - {to: 10.20.1.0/24, ports: [443], protocol: tcp}
    - {to: 10.20.0.0/16, ports: [443, 80], protocol: tcp}`,
			[]PrefixRule{pr("10.20.0.0/16", tcp(80, 80), tcp(443, 443))}},
		{"three levels", `
    - {to: 10.0.0.0/8, ports: [1], protocol: udp}
    - {to: 10.1.0.0/16, ports: [2]}
    - {to: 10.1.1.1, ports: [3], protocol: tcp}
    - {to: 10.2.0.0/16, ports: [4], protocol: tcp}`,
			[]PrefixRule{
				pr("10.0.0.0/8", udp(1, 1)),
				pr("10.1.0.0/16", udp(1, 2), tcp(2, 2)),
				pr("10.1.1.1/32", udp(1, 2), tcp(2, 3)),
				pr("10.2.0.0/16", udp(1, 1), tcp(4, 4)),
			}},
		{"overlapping and adjacent ranges merge", `
    - {to: 10.0.0.1, ports: [80, 81-90, 85-100, 101, 200], protocol: tcp}`,
			[]PrefixRule{pr("10.0.0.1/32", tcp(80, 101), tcp(200, 200))}},
		{"tcp and udp of one range become any", `
    - {to: 10.0.0.1, ports: [53], protocol: tcp}
    - {to: 10.0.0.1, ports: [53], protocol: udp}`,
			[]PrefixRule{pr("10.0.0.1/32", anyp(53, 53))}},
		{"ranges of two protocols that differ stay apart", `
    - {to: 10.0.0.1, ports: [1-100], protocol: tcp}
    - {to: 10.0.0.1, ports: [50], protocol: udp}`,
			[]PrefixRule{pr("10.0.0.1/32", tcp(1, 100), udp(50, 50))}},
		{"any extended by tcp", `
    - {to: 10.0.0.1, ports: [1-10]}
    - {to: 10.0.0.1, ports: [11-20], protocol: tcp}`,
			[]PrefixRule{pr("10.0.0.1/32", udp(1, 10), tcp(1, 20))}},
		{"every port", `
    - {to: 0.0.0.0/0}
    - {to: 10.0.0.0/8, ports: [443], protocol: tcp}`,
			[]PrefixRule{pr("0.0.0.0/0", anyp(0, 65535))}},
		{"mapped prefix is IPv4", `
    - {to: "::ffff:10.0.0.0/104", ports: [22]}`,
			[]PrefixRule{pr("10.0.0.0/8", anyp(22, 22))}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := mustCompile(t, mustParse(t, "network:\n  egress:"+tt.egress+"\n"), nil)
			if !reflect.DeepEqual(c.V4, tt.v4) {
				t.Errorf("got  %v\nwant %v", c.V4, tt.v4)
			}
			if len(c.V6) != 0 {
				t.Errorf("v6: %v", c.V6)
			}
		})
	}
}

func TestCompileHosts(t *testing.T) {
	in := mustParse(t, `network:
  egress:
    - {to: 10.0.0.0/8, ports: [443], protocol: tcp}
    - {to: logs.example, ports: [8080]}
    - {to: db.example, ports: [5432], protocol: tcp}
    - {to: 2001:db8::/32, ports: [443], protocol: tcp}
`)
	hosts := map[string][]netip.Addr{
		"logs.example": {
			netip.MustParseAddr("10.1.2.3"),
			netip.MustParseAddr("::ffff:192.168.0.1"),
			netip.MustParseAddr("2001:db8::5"),
			netip.MustParseAddr("fe80::1%eth0"),
		},
	}
	c := mustCompile(t, in, hosts)
	wantV4 := []PrefixRule{
		pr("10.0.0.0/8", tcp(443, 443)),
		pr("10.1.2.3/32", tcp(443, 443), anyp(8080, 8080)),
		pr("192.168.0.1/32", anyp(8080, 8080)),
	}
	wantV6 := []PrefixRule{
		pr("2001:db8::/32", tcp(443, 443)),
		pr("2001:db8::5/128", tcp(443, 443), anyp(8080, 8080)),
		pr("fe80::1/128", anyp(8080, 8080)),
	}
	if !reflect.DeepEqual(c.V4, wantV4) || !reflect.DeepEqual(c.V6, wantV6) {
		t.Errorf("got\n%v\n%v", c.V4, c.V6)
	}
	if !reflect.DeepEqual(c.Unresolved, []string{"host db.example"}) {
		t.Errorf("unresolved: %v", c.Unresolved)
	}
}

func TestCompileOverflow(t *testing.T) {
	in := mustParse(t, `network:
  egress:
    - {to: a.example, ports: [1, 3, 5, 7, 9, 11, 13, 15, 17], protocol: tcp}
    - {to: b.example, ports: [21, 23, 25, 27, 29, 31, 33, 35], protocol: tcp}
`)
	same := []netip.Addr{netip.MustParseAddr("10.0.0.1")}
	if _, err := Compile(in, map[string][]netip.Addr{"a.example": same, "b.example": {netip.MustParseAddr("10.0.0.2")}}, nil); err != nil {
		t.Fatalf("distinct addresses: %v", err)
	}
	_, err := Compile(in, map[string][]netip.Addr{"a.example": same, "b.example": same}, nil)
	want := "intent.yaml:5: network.egress[0]: 10.0.0.1/32: 17 port rules after merging with enclosing prefixes, at most 16"
	if err == nil || err.Error() != want || !errors.Is(err, ErrTooLarge) {
		t.Errorf("got %v, want %s", err, want)
	}
}

func TestCompileUnixExec(t *testing.T) {
	in := mustParse(t, `network:
  unix: [/run/b.sock, "@abs", /run/a.sock, /run/b.sock]
exec:
  allow: [/usr/bin/python3, /usr/bin/git, /usr/bin/python3.11, /opt/missing]
`)
	py := FileID{Dev: 8<<20 | 1, Ino: 20}
	git := FileID{Dev: 8<<20 | 1, Ino: 10}
	files := map[string]FileID{"/usr/bin/python3": py, "/usr/bin/python3.11": py, "/usr/bin/git": git}
	c, err := Compile(in, nil, files)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"/run/a.sock", "/run/b.sock", "@abs"}; !reflect.DeepEqual(c.Unix, want) {
		t.Errorf("unix: %v", c.Unix)
	}
	if want := []FileID{git, py}; c.ExecAny || !reflect.DeepEqual(c.ExecFiles, want) {
		t.Errorf("exec: any %v files %v", c.ExecAny, c.ExecFiles)
	}
	if c.Names[py] != "/usr/bin/python3" || c.Names[git] != "/usr/bin/git" {
		t.Errorf("names: %v", c.Names)
	}
	if want := []string{"exec /opt/missing"}; !reflect.DeepEqual(c.Unresolved, want) {
		t.Errorf("unresolved: %v", c.Unresolved)
	}

	c = mustCompile(t, mustParse(t, ""), nil)
	if !c.ExecAny || c.ExecFiles != nil || c.RawSockets || c.Mode != ModeBlock {
		t.Errorf("defaults: %+v", c)
	}
}

func TestCompileRefusesInvalid(t *testing.T) {
	in := &Intent{Name: "t", Purpose: "p", TTL: DefaultTTL, Exec: ExecPolicy{Any: true},
		Egress: []Rule{{Prefix: netip.MustParsePrefix("10.0.0.1/8")}, {Ports: []PortRange{{5, 1}}}}}
	_, err := Compile(in, nil, nil)
	want := "network.egress[0].to: 10.0.0.1/8: not in normal form (10.0.0.0/8)\n" +
		"network.egress[1].to: required\n" +
		"network.egress[1].ports[0]: port range 5-1: low end above high end"
	if err == nil || err.Error() != want {
		t.Errorf("got %v\nwant %s", err, want)
	}
}

func TestLimits(t *testing.T) {
	c := &Compiled{V6: make([]PrefixRule, 3), Unix: make([]string, 2)}
	if err := (Limits{MaxPrefixes: 3, MaxUnix: 2}).Check(c); err != nil {
		t.Errorf("at the limits: %v", err)
	}
	err := (Limits{MaxPrefixes: 2}).Check(c)
	if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "3 IPv6 prefixes") {
		t.Errorf("over: %v", err)
	}
	if err := (Limits{}).Check(c); err != nil {
		t.Errorf("no limits: %v", err)
	}
}
