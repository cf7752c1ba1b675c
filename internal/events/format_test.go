package events

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/idend/idend/internal/events/recordpb"
)

// stamped returns the sample records with the seq and time a recorder
// would give them.
func stamped() []*recordpb.Record {
	rs := sampleRecords()
	for i, r := range rs {
		r.Seq = uint64(i + 1)
		r.WallNs = 1_780_000_000_123_456_789 + int64(i)*1000
		r.MonoNs = 5000 + uint64(i)
		r.SchemaVersion = currentSchema
	}
	return rs
}

func TestFormatText(t *testing.T) {
	want := map[string]string{
		KindExec: `2026-05-28T20:26:40.123458Z 3 s1 77:1077 exec killed svid ` +
			`/usr/bin/curl (path truncated) ["curl" "-s" "https://example.com" ...] file 0:2049:131 ` +
			`(no link: deleted or memfd)`,
		KindConnect: `2026-05-28T20:26:40.123461Z 6 s1 77:1077 connect allow svid ` +
			`10.0.0.5:5432/tcp comm python3`,
		KindSendmsg: `2026-05-28T20:26:40.123462Z 7 s1 77:1077 sendmsg audit - [::]:53/udp comm python3`,
		KindSocket: `2026-05-28T20:26:40.123463Z 8 s1 77:1077 socket deny - ` +
			`socket(AF_PACKET, SOCK_RAW, 768) comm python3`,
		KindSessionOpen: `2026-05-28T20:26:40.123457Z 2 s1 - session_open - attested ` +
			`intent retry (0909) principal alice identity spiffe://example.org/agent parent s0 ` +
			`expires 2030-03-17T17:46:40.000000Z cgroup /sys/fs/cgroup/idend/s1`,
		KindGap: `2026-05-28T20:26:40.123471Z 16 - - gap - - ` +
			`12 connect records lost between records 0 and 0: "ring buffer full"`,
		KindProcessFound: `2026-05-28T20:26:40.123469Z 14 s1 - process_found - - ` +
			`/usr/bin/python3.11 80:1080 parent 1:1 argv ["python3" "agent.py"]`,
		KindHostResolution: `2026-05-28T20:26:40.123467Z 12 s1 - host_resolution - - ` +
			`db.internal -> 10.0.0.6`,
	}
	for _, r := range stamped() {
		var buf bytes.Buffer
		if err := FormatText(&buf, r); err != nil {
			t.Fatal(err)
		}
		line := buf.String()
		if strings.Count(line, "\n") != 1 || !strings.HasSuffix(line, "\n") {
			t.Errorf("%s: not one line: %q", Kind(r), line)
		}
		if len(strings.Fields(line)) < 8 {
			t.Errorf("%s: too few fields: %q", Kind(r), line)
		}
		if w, ok := want[Kind(r)]; ok && strings.TrimSuffix(line, "\n") != w {
			t.Errorf("%s:\n got %s\nwant %s", Kind(r), line, w)
		}
	}
}

func TestFormatTextQuotesWorkloadStrings(t *testing.T) {
	r := stamped()[5]
	r.GetConnect().Process.Comm = "x\n2026 fake line"
	var buf bytes.Buffer
	if err := FormatText(&buf, r); err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(buf.String(), `comm "x\n2026 fake line"`+"\n") {
		t.Errorf("comm not quoted: %q", buf.String())
	}
}

func TestFormatJSON(t *testing.T) {
	for _, r := range stamped() {
		var a, b bytes.Buffer
		if err := FormatJSON(&a, r); err != nil {
			t.Fatal(err)
		}
		if err := FormatJSON(&b, r); err != nil {
			t.Fatal(err)
		}
		if a.String() != b.String() {
			t.Errorf("%s: output differs between runs", Kind(r))
		}
		if strings.Count(a.String(), "\n") != 1 {
			t.Errorf("%s: not one line: %q", Kind(r), a.String())
		}
		var o map[string]any
		if err := json.Unmarshal(a.Bytes(), &o); err != nil {
			t.Fatalf("%s: %v", Kind(r), err)
		}
		if o["kind"] != Kind(r) || o["seq"] != float64(r.Seq) || o["time"] == nil {
			t.Errorf("%s: missing common keys: %s", Kind(r), a.String())
		}
	}

	var buf bytes.Buffer
	FormatJSON(&buf, stamped()[5])
	want := `{"addr":"10.0.0.5","cgroup_id":4242,"family":"AF_INET","identity":{"fingerprint":"deadbeef",` +
		`"principal":"alice","spiffe_id":"spiffe://example.org/agent/retry","strength":"svid"},` +
		`"kind":"connect","mono_ns":5005,"port":5432,"process":{"comm":"python3","gid":1000,` +
		`"key":"77:1077","parent_key":"1:1","pid":77,"start_ticks":1077,"tid":77,"uid":1000},` +
		`"protocol":"tcp","seq":6,"session":"s1","time":"2026-05-28T20:26:40.123461789Z",` +
		`"verdict":"allow"}` + "\n"
	if buf.String() != want {
		t.Errorf("connect:\n got %s\nwant %s", buf.String(), want)
	}
}

func TestFilter(t *testing.T) {
	rs := stamped()
	count := func(f Filter) int {
		n := 0
		for _, r := range rs {
			if f.Match(r) {
				n++
			}
		}
		return n
	}
	tests := []struct {
		f    Filter
		want int
	}{
		{Filter{}, len(rs)},
		{Filter{Kind: KindConnect}, 1},
		{Filter{Kind: "connect,sendmsg"}, 2},
		{Filter{Verdict: "deny"}, 1},
		{Filter{Verdict: "deny,killed"}, 2},
		{Filter{Session: "s1"}, 15},
		{Filter{Session: "s1", Kind: KindSessionOpen}, 1},
		{Filter{Session: "nope"}, 0},
		{Filter{Session: "s1", Verdict: "allow"}, 2},
	}
	for _, tt := range tests {
		if err := tt.f.Validate(); err != nil {
			t.Errorf("%+v: %v", tt.f, err)
		}
		if got := count(tt.f); got != tt.want {
			t.Errorf("%+v matches %d records, want %d", tt.f, got, tt.want)
		}
	}
	for _, f := range []Filter{{Kind: "connnect"}, {Verdict: "denied"}, {Kind: "exec,"}} {
		if err := f.Validate(); err == nil {
			t.Errorf("%+v accepted", f)
		}
	}
}
