package intent

import (
	"errors"
	"reflect"
	"testing"

	"golang.org/x/sys/unix"
)

func TestWiden(t *testing.T) {
	in := mustParse(t, `on_violation: escalate
network:
  egress:
    - {to: 10.20.0.0/16, ports: [443], protocol: tcp}
  unix: [/run/a.sock]
exec:
  allow: [/usr/bin/git]
`)
	git := FileID{Dev: 8<<20 | 1, Ino: 10}
	c, err := Compile(in, nil, map[string]FileID{"/usr/bin/git": git})
	if err != nil {
		t.Fatal(err)
	}
	orig := c.clone()

	w, err := Widen(c, connect("10.20.1.1", 80, ProtoTCP))
	if err != nil {
		t.Fatal(err)
	}
	want := []PrefixRule{pr("10.20.0.0/16", tcp(443, 443)), pr("10.20.1.1/32", tcp(80, 80), tcp(443, 443))}
	if !reflect.DeepEqual(w.V4, want) {
		t.Errorf("v4 %v", w.V4)
	}
	for _, a := range []Action{connect("10.20.1.2", 80, ProtoTCP), connect("10.20.1.1", 80, ProtoUDP), connect("10.20.1.1", 81, ProtoTCP)} {
		if d := Evaluate(w, a); d.Verdict != VerdictEscalate {
			t.Errorf("widening allowed %v", a)
		}
	}

	w, err = Widen(w, connect("::ffff:10.20.1.1", 53, ProtoUDP))
	if err != nil {
		t.Fatal(err)
	}
	if want := []PortRule{udp(53, 53), tcp(80, 80), tcp(443, 443)}; !reflect.DeepEqual(w.V4[1].Ports, want) {
		t.Errorf("second widening: %v", w.V4)
	}

	w, err = Widen(c, Action{Kind: UnixConnect, Path: "@agent"})
	if err != nil || !reflect.DeepEqual(w.Unix, []string{"/run/a.sock", "@agent"}) {
		t.Errorf("unix: %v %v", w, err)
	}
	other := FileID{Dev: 8<<20 | 1, Ino: 5}
	w, err = Widen(c, Action{Kind: Exec, File: other})
	if err != nil || !reflect.DeepEqual(w.ExecFiles, []FileID{other, git}) {
		t.Errorf("exec: %v %v", w, err)
	}
	w, err = Widen(c, connect("10.20.0.1", 443, ProtoTCP))
	if err != nil || !reflect.DeepEqual(w, c) {
		t.Errorf("already allowed: %v %v", w, err)
	}

	for _, a := range []Action{
		{Kind: Socket, Family: unix.AF_INET, SockType: unix.SOCK_RAW},
		{Kind: Exec, File: other, FileDeleted: true},
		{Kind: UnixConnect, Path: "relative"},
		{Kind: Connect, Port: 80, Proto: ProtoTCP},
		connect("10.0.0.1", 80, ProtoAny),
	} {
		if _, err := Widen(c, a); !errors.Is(err, ErrCannotWiden) {
			t.Errorf("%+v: %v", a, err)
		}
	}
	if !reflect.DeepEqual(c, orig) {
		t.Errorf("Widen modified its input")
	}
}

func TestWidenTooLarge(t *testing.T) {
	c := mustCompile(t, mustParse(t, `network:
  egress:
    - {to: 10.0.0.0/8, ports: [1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31], protocol: tcp}
`), nil)
	if _, err := Widen(c, connect("10.0.0.1", 2, ProtoTCP)); err != nil {
		t.Errorf("merging into a range: %v", err)
	}
	if _, err := Widen(c, connect("10.0.0.1", 100, ProtoTCP)); !errors.Is(err, ErrTooLarge) {
		t.Errorf("17th rule: %v", err)
	}
}
