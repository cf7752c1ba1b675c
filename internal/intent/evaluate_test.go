package intent

import (
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"
)

func connect(addr string, port uint16, proto Proto) Action {
	return Action{Kind: Connect, Addr: netip.MustParseAddr(addr), Port: port, Proto: proto}
}

func TestEvaluateNet(t *testing.T) {
	c := mustCompile(t, mustParse(t, `network:
  egress:
    - {to: 10.20.0.0/16, ports: [443], protocol: tcp}
    - {to: 10.20.1.0/24, ports: [80], protocol: tcp}
    - {to: 10.30.0.1, ports: [53], protocol: udp}
    - {to: "2001:db8::/64", ports: [8000-8080]}
`), nil)
	tests := []struct {
		a      Action
		in     bool
		reason string
	}{
		{connect("10.20.5.5", 443, ProtoTCP), true, "10.20.5.5:443/tcp: allowed by 10.20.0.0/16 443/tcp"},
		{connect("10.20.5.5", 80, ProtoTCP), false, "10.20.5.5:80/tcp: port not allowed at 10.20.0.0/16"},
		{connect("10.20.1.9", 80, ProtoTCP), true, "10.20.1.9:80/tcp: allowed by 10.20.1.0/24 80/tcp"},
		{connect("10.20.1.9", 443, ProtoTCP), true, "10.20.1.9:443/tcp: allowed by 10.20.1.0/24 443/tcp"},
		{connect("10.20.1.9", 443, ProtoUDP), false, "10.20.1.9:443/udp: port not allowed at 10.20.1.0/24"},
		{connect("10.21.0.1", 443, ProtoTCP), false, "10.21.0.1:443/tcp: no rule for the address"},
		{connect("::ffff:10.20.1.9", 80, ProtoTCP), true, "10.20.1.9:80/tcp: allowed by 10.20.1.0/24 80/tcp"},
		{connect("::ffff:10.21.0.1", 80, ProtoTCP), false, "10.21.0.1:80/tcp: no rule for the address"},
		{Action{Kind: Sendmsg, Addr: netip.MustParseAddr("10.30.0.1"), Port: 53, Proto: ProtoUDP}, true,
			"10.30.0.1:53/udp: allowed by 10.30.0.1/32 53/udp"},
		{Action{Kind: Sendmsg, Addr: netip.MustParseAddr("10.30.0.1"), Port: 53, Proto: ProtoTCP}, false,
			"10.30.0.1:53/tcp: port not allowed at 10.30.0.1/32"},
		{connect("2001:db8::7", 8080, ProtoUDP), true, "[2001:db8::7]:8080/udp: allowed by 2001:db8::/64 8000-8080/any"},
		{connect("2001:db8::7", 8081, ProtoTCP), false, "[2001:db8::7]:8081/tcp: port not allowed at 2001:db8::/64"},
		{connect("2001:db8:0:1::7", 8080, ProtoTCP), false, "[2001:db8:0:1::7]:8080/tcp: no rule for the address"},
		{connect("127.0.0.1", 80, ProtoTCP), false, "127.0.0.1:80/tcp: no rule for the address"},
		{connect("0.0.0.0", 443, ProtoTCP), false, "0.0.0.0:443/tcp: no rule for the address"},
		{connect("::", 443, ProtoTCP), false, "[::]:443/tcp: no rule for the address"},
		{connect("::1", 443, ProtoTCP), false, "[::1]:443/tcp: no rule for the address"},
		{Action{Kind: Connect, Port: 443, Proto: ProtoTCP}, false, "no destination address"},
	}
	for _, tt := range tests {
		d := Evaluate(c, tt.a)
		if d.InIntent != tt.in || d.Reason != tt.reason {
			t.Errorf("%v: got %v %q, want %v %q", tt.a, d.InIntent, d.Reason, tt.in, tt.reason)
		}
	}
}

func TestEvaluateSocket(t *testing.T) {
	strict := mustCompile(t, mustParse(t, ""), nil)
	raw := mustCompile(t, mustParse(t, "network:\n  raw_sockets: true\n"), nil)
	tests := []struct {
		family, typ, proto int
		ordinary           bool
	}{
		{unix.AF_INET, unix.SOCK_STREAM, 0, true},
		{unix.AF_INET, unix.SOCK_STREAM | unix.SOCK_CLOEXEC | unix.SOCK_NONBLOCK, unix.IPPROTO_TCP, true},
		{unix.AF_INET6, unix.SOCK_DGRAM, 0, true},
		{unix.AF_INET6, unix.SOCK_DGRAM, unix.IPPROTO_UDP, true},
		{unix.AF_INET, unix.SOCK_STREAM, unix.IPPROTO_MPTCP, true},
		{unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_ICMP, false},
		{unix.AF_INET6, unix.SOCK_RAW, unix.IPPROTO_RAW, false},
		{unix.AF_INET, unix.SOCK_DGRAM, unix.IPPROTO_ICMP, false},
		{unix.AF_INET6, unix.SOCK_DGRAM, unix.IPPROTO_ICMPV6, false},
		{unix.AF_INET, unix.SOCK_STREAM, unix.IPPROTO_SCTP, false},
		{unix.AF_INET, unix.SOCK_SEQPACKET, 0, false},
		{unix.AF_PACKET, unix.SOCK_DGRAM, 0, false},
		{unix.AF_PACKET, unix.SOCK_RAW, 0, false},
		{unix.AF_VSOCK, unix.SOCK_STREAM, 0, false},
		{unix.AF_VSOCK, unix.SOCK_DGRAM, 0, false},
		{unix.AF_CAN, unix.SOCK_RAW, unix.CAN_RAW, false},
		{unix.AF_CAN, unix.SOCK_DGRAM, unix.CAN_BCM, false},
		{unix.AF_BLUETOOTH, unix.SOCK_SEQPACKET, 0, false},
		{unix.AF_XDP, unix.SOCK_RAW, 0, false},
		{unix.AF_ALG, unix.SOCK_SEQPACKET, 0, false},
		// netlink and unix: SOCK_RAW is SOCK_DGRAM by another name.
		{unix.AF_NETLINK, unix.SOCK_RAW, 0, true},
		{unix.AF_NETLINK, unix.SOCK_DGRAM, 0, true},
		{unix.AF_UNIX, unix.SOCK_STREAM, 0, true},
		{unix.AF_UNIX, unix.SOCK_SEQPACKET, 0, true},
		{unix.AF_UNIX, unix.SOCK_RAW, 0, true},
	}
	for _, tt := range tests {
		a := Action{Kind: Socket, Family: tt.family, SockType: tt.typ, SockProto: tt.proto}
		if d := Evaluate(strict, a); d.InIntent != tt.ordinary {
			t.Errorf("%+v without raw_sockets: %v (%s)", a, d.InIntent, d.Reason)
		}
		if d := Evaluate(raw, a); !d.InIntent {
			t.Errorf("%+v with raw_sockets: %v (%s)", a, d.InIntent, d.Reason)
		}
	}
	a := Action{Kind: Socket, Family: unix.AF_INET, SockType: unix.SOCK_RAW, SockProto: unix.IPPROTO_ICMP}
	if d := Evaluate(strict, a); d.Reason != "socket(AF_INET, SOCK_RAW, 1): needs raw_sockets" {
		t.Errorf("reason %q", d.Reason)
	}
	a = Action{Kind: Socket, Family: unix.AF_VSOCK, SockType: unix.SOCK_STREAM}
	if d := Evaluate(strict, a); d.Reason != "socket(AF_VSOCK, SOCK_STREAM, 0): needs raw_sockets" {
		t.Errorf("reason %q", d.Reason)
	}
}

func TestEvaluateUnixExec(t *testing.T) {
	in := mustParse(t, "network:\n  unix: [/run/a.sock, \"@abs\"]\nexec:\n  allow: [/usr/bin/git]\n")
	git := FileID{Dev: 8<<20 | 1, Ino: 10}
	c, err := Compile(in, nil, map[string]FileID{"/usr/bin/git": git})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		a      Action
		in     bool
		reason string
	}{
		{Action{Kind: UnixConnect, Path: "/run/a.sock"}, true, `unix socket "/run/a.sock": allowed`},
		{Action{Kind: UnixSendmsg, Path: "@abs"}, true, `unix socket "@abs": allowed`},
		{Action{Kind: UnixConnect, Path: "/run/./a.sock"}, false, `unix socket "/run/./a.sock": not in the intent`},
		{Action{Kind: UnixConnect, Path: "/run/abs"}, false, `unix socket "/run/abs": not in the intent`},
		{Action{Kind: UnixConnect, Path: "abs"}, false, `unix socket "abs": not in the intent`},
		{Action{Kind: Exec, File: git}, true, "exec 8:1:10 (/usr/bin/git): allowed"},
		{Action{Kind: Exec, File: git, FileDeleted: true}, false,
			"exec 8:1:10 (/usr/bin/git): file without a link (deleted or memfd)"},
		{Action{Kind: Exec, File: FileID{Dev: 8<<20 | 2, Ino: 10}}, false, "exec 8:2:10: not in the allow list"},
		{Action{}, false, "unknown action kind(0)"},
	}
	for _, tt := range tests {
		d := Evaluate(c, tt.a)
		if d.InIntent != tt.in || d.Reason != tt.reason {
			t.Errorf("%+v: got %v %q, want %v %q", tt.a, d.InIntent, d.Reason, tt.in, tt.reason)
		}
	}

	anyExec := mustCompile(t, mustParse(t, ""), nil)
	if d := Evaluate(anyExec, Action{Kind: Exec, File: git, FileDeleted: true}); !d.InIntent {
		t.Errorf("exec any refused a memfd: %s", d.Reason)
	}
}

func TestEvaluateVerdicts(t *testing.T) {
	out := connect("10.0.0.1", 1, ProtoTCP)
	for _, tt := range []struct {
		mode string
		want Verdict
	}{
		{"block", VerdictDeny}, {"escalate", VerdictEscalate}, {"audit", VerdictAudit},
	} {
		c := mustCompile(t, mustParse(t, "on_violation: "+tt.mode+"\nnetwork:\n  egress: [{to: 10.0.0.1, ports: [2]}]\n"), nil)
		if d := Evaluate(c, out); d.InIntent || d.Verdict != tt.want || d.Verdict.Allowed() != (tt.want == VerdictAudit) {
			t.Errorf("%s: %+v", tt.mode, d)
		}
		if d := Evaluate(c, connect("10.0.0.1", 2, ProtoTCP)); !d.InIntent || d.Verdict != VerdictAllow {
			t.Errorf("%s, inside: %+v", tt.mode, d)
		}
	}
	if d := Evaluate(nil, Action{Kind: Socket, Family: unix.AF_INET, SockType: unix.SOCK_STREAM}); d.Verdict != VerdictDeny {
		t.Errorf("no session, ordinary socket: %+v", d)
	}
	if d := Evaluate(nil, out); d.Verdict != VerdictDeny {
		t.Errorf("no session: %+v", d)
	}
}
