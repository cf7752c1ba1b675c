package intent

import (
	"net/netip"
	"strings"
	"testing"
)

func TestDescribe(t *testing.T) {
	in := mustParse(t, `on_violation: escalate
network:
  egress:
    - {to: 10.20.0.0/16, ports: [443], protocol: tcp}
    - {to: 10.20.1.0/24, ports: [80], protocol: tcp}
    - {to: "2001:db8::/32", ports: [53]}
    - {to: db.example, ports: [5432], protocol: tcp}
  unix: [/run/a.sock, "@abs"]
exec:
  allow: [/usr/bin/git, /opt/tool]
`)
	git := FileID{Dev: 8<<20 | 1, Ino: 10}
	c, err := Compile(in, map[string][]netip.Addr{}, map[string]FileID{"/usr/bin/git": git})
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	if err := c.Describe(&b); err != nil {
		t.Fatal(err)
	}
	want := `on violation: escalate
egress (IPv4):
  10.20.0.0/16  443/tcp
  10.20.1.0/24  80/tcp 443/tcp
egress (IPv6):
  2001:db8::/32  53/any
unix sockets:
  /run/a.sock
  @abs
raw sockets: denied
exec (dev:inode):
  8:1:10  /usr/bin/git
compiled to nothing:
  exec /opt/tool
  host db.example
`
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}

	b.Reset()
	c = mustCompile(t, mustParse(t, "network:\n  raw_sockets: true\n"), nil)
	if err := c.Describe(&b); err != nil {
		t.Fatal(err)
	}
	want = `on violation: block
egress (IPv4): none
egress (IPv6): none
unix sockets: none
raw sockets: allowed
exec: any program
`
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
}
