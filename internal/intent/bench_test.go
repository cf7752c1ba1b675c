package intent

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

// largeIntent has n /24 rules, each with a /28 inside it.
func largeIntent(b *testing.B, n int) *Intent {
	var s strings.Builder
	s.WriteString(header + "network:\n  egress:\n")
	for i := 0; i < n; i++ {
		fmt.Fprintf(&s, "    - {to: 10.%d.%d.0/24, ports: [443], protocol: tcp}\n", i/256, i%256)
		fmt.Fprintf(&s, "    - {to: 10.%d.%d.16/28, ports: [%d]}\n", i/256, i%256, 1000+i%100)
	}
	in, err := Parse("bench.yaml", []byte(s.String()))
	if err != nil {
		b.Fatal(err)
	}
	return in
}

func BenchmarkCompile(b *testing.B) {
	in := largeIntent(b, 1000)
	b.ResetTimer()
	for b.Loop() {
		if _, err := Compile(in, nil, nil); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEvaluate(b *testing.B) {
	c, err := Compile(largeIntent(b, 1000), nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	a := Action{Kind: Connect, Addr: netip.MustParseAddr("10.3.200.17"), Port: 1000, Proto: ProtoTCP}
	b.ResetTimer()
	for b.Loop() {
		Evaluate(c, a)
	}
}
