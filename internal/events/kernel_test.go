package events

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"unsafe"

	"google.golang.org/protobuf/proto"

	"github.com/idend/idend/internal/events/recordpb"
	"github.com/idend/idend/internal/loader"
)

// sampleOf returns the bytes of ev as the kernel writes them into a ring:
// a copy, so that a test can scribble over it after decoding.
func sampleOf[T any](ev *T) []byte {
	b := unsafe.Slice((*byte)(unsafe.Pointer(ev)), unsafe.Sizeof(*ev))
	return append([]byte(nil), b...)
}

// putC copies s into a kernel char array.
func putC(dst []int8, s string) {
	for i := range len(s) {
		dst[i] = int8(s[i])
	}
}

// header is a sample's header: session 0xab, a process started
// 12,345,678,901 ns after boot (1234 ticks), comm "python3".
func header(kind loader.EventKind, v loader.Verdict, flags loader.EventFlag) loader.EventHeader {
	h := loader.EventHeader{
		KtimeNs: 987_654_321, Session: 0xab, CgroupId: 4242, StartNs: 12_345_678_901,
		Pid: 77, Tid: 78, Uid: 1000, Gid: 1001,
		Kind: uint16(kind), Verdict: uint8(v), Flags: uint32(flags),
	}
	putC(h.Comm[:], "python3")
	return h
}

// wantProcess is the process of header's samples.
func wantProcess() *recordpb.Process {
	return &recordpb.Process{
		Pid: 77, Tid: 78, StartTicks: 1234, Key: "77:1234", Uid: 1000, Gid: 1001, Comm: "python3",
	}
}

func netSample(kind loader.EventKind, v loader.Verdict, family, proto uint16, addr []byte) []byte {
	ev := loader.NetEvent{Hdr: header(kind, v, 0), Port: 5432, Family: family, Protocol: proto, Type: 1}
	copy(ev.Addr[:], addr)
	return sampleOf(&ev)
}

func unixSample(kind loader.EventKind, path string) []byte {
	ev := loader.UnixEvent{Hdr: header(kind, loader.VerdictDeny, loader.FlagOutside), PathLen: uint32(len(path))}
	putC(ev.Path[:], path)
	return sampleOf(&ev)
}

// execSample is an exec of /usr/bin/curl as the kernel writes it: the
// path at the end of its buffer, argv as NUL-separated strings.
func execSample() []byte {
	const path, argv = "/usr/bin/curl", "curl\x00-s\x00https://example.com\x00"
	ev := loader.ExecEvent{
		Hdr:           header(loader.KindExec, loader.VerdictKilled, loader.FlagDeleted|loader.FlagArgvTruncated),
		ParentStartNs: 5_000_000_000, Dev: 2049, Ino: 131, Ppid: 1, Nlink: 0,
		PathLen: uint32(len(path)), ArgvLen: uint32(len(argv)),
	}
	putC(ev.Path[len(ev.Path)-len(path):], path)
	putC(ev.Argv[:], argv)
	putC(ev.Filename[:], "curl")
	return sampleOf(&ev)
}

func forkSample() []byte {
	ev := loader.ForkEvent{
		Hdr: header(loader.KindFork, loader.VerdictAllow, 0), ChildStartNs: 12_355_000_000, ChildPid: 90, ChildTid: 90,
	}
	return sampleOf(&ev)
}

func exitSample(status uint32) []byte {
	ev := loader.ExitEvent{Hdr: header(loader.KindExit, loader.VerdictAllow, 0), ExitCode: status}
	return sampleOf(&ev)
}

type decodeCase struct {
	name   string
	sample []byte
	want   *recordpb.Record
}

// decodeCases covers every event kind and verdict the kernel writes.
func decodeCases() []decodeCase {
	const session = "00000000000000ab"
	v6 := []byte{0x20, 0x01, 0x0d, 0xb8, 15: 1}
	return []decodeCase{
		{"connect v4 tcp", netSample(loader.KindConnect, loader.VerdictAllow, 2, 6, []byte{10, 0, 0, 5}),
			&recordpb.Record{Body: &recordpb.Record_Connect{Connect: &recordpb.Connect{
				SessionId: session, CgroupId: 4242, Process: wantProcess(), Verdict: recordpb.Verdict_VERDICT_ALLOW,
				Family: 2, Addr: []byte{10, 0, 0, 5}, Port: 5432, Protocol: recordpb.Protocol_PROTOCOL_TCP,
			}}}},
		{"sendmsg v6 udp", netSample(loader.KindSendmsg, loader.VerdictAudit, 10, 17, v6),
			&recordpb.Record{Body: &recordpb.Record_Connect{Connect: &recordpb.Connect{
				SessionId: session, CgroupId: 4242, Process: wantProcess(), Verdict: recordpb.Verdict_VERDICT_AUDIT,
				Family: 10, Addr: v6, Port: 5432, Protocol: recordpb.Protocol_PROTOCOL_UDP,
				Op: recordpb.ConnectOp_CONNECT_OP_SENDMSG,
			}}}},
		{"socket", netSample(loader.KindSocket, loader.VerdictDeny, 2, 255, nil),
			&recordpb.Record{Body: &recordpb.Record_SocketCreate{SocketCreate: &recordpb.SocketCreate{
				SessionId: session, CgroupId: 4242, Process: wantProcess(), Verdict: recordpb.Verdict_VERDICT_DENY,
				Family: 2, Type: 1, Protocol: 255,
			}}}},
		{"unix connect", unixSample(loader.KindUnixConnect, "/run/docker.sock"),
			&recordpb.Record{Body: &recordpb.Record_UnixConnect{UnixConnect: &recordpb.UnixConnect{
				SessionId: session, CgroupId: 4242, Process: wantProcess(), Verdict: recordpb.Verdict_VERDICT_DENY,
				Path: "/run/docker.sock",
			}}}},
		{"unix sendmsg abstract", unixSample(loader.KindUnixSendmsg, "\x00bus"),
			&recordpb.Record{Body: &recordpb.Record_UnixConnect{UnixConnect: &recordpb.UnixConnect{
				SessionId: session, CgroupId: 4242, Process: wantProcess(), Verdict: recordpb.Verdict_VERDICT_DENY,
				Path: "@bus", Op: recordpb.ConnectOp_CONNECT_OP_SENDMSG,
			}}}},
		{"exec", execSample(), &recordpb.Record{Body: &recordpb.Record_Exec{Exec: &recordpb.Exec{
			SessionId: session, CgroupId: 4242, Verdict: recordpb.Verdict_VERDICT_KILLED,
			Process: &recordpb.Process{
				Pid: 77, Tid: 78, StartTicks: 1234, Key: "77:1234", Uid: 1000, Gid: 1001, Comm: "python3",
				ParentKey: "1:500",
			},
			Dev: 2049, Ino: 131, Path: "/usr/bin/curl", Argv: []string{"curl", "-s", "https://example.com"},
			ArgvTruncated: true, Filename: "curl", Deleted: true,
		}}}},
		{"fork", forkSample(), &recordpb.Record{Body: &recordpb.Record_Fork{Fork: &recordpb.Fork{
			SessionId: session, CgroupId: 4242, Process: wantProcess(), Verdict: recordpb.Verdict_VERDICT_ALLOW,
			Child: &recordpb.Process{
				Pid: 90, Tid: 90, StartTicks: 1235, Key: "90:1235", Uid: 1000, Gid: 1001, Comm: "python3",
				ParentKey: "77:1234",
			},
		}}}},
		{"exit 3", exitSample(3 << 8), &recordpb.Record{Body: &recordpb.Record_Exit{Exit: &recordpb.Exit{
			SessionId: session, CgroupId: 4242, Process: wantProcess(), Verdict: recordpb.Verdict_VERDICT_ALLOW,
			ExitCode: 3,
		}}}},
		{"exit killed", exitSample(9), &recordpb.Record{Body: &recordpb.Record_Exit{Exit: &recordpb.Exit{
			SessionId: session, CgroupId: 4242, Process: wantProcess(), Verdict: recordpb.Verdict_VERDICT_ALLOW,
			Signal: 9,
		}}}},
	}
}

func TestDecodeKernel(t *testing.T) {
	for _, c := range decodeCases() {
		t.Run(c.name, func(t *testing.T) {
			c.want.MonoNs = 987_654_321
			got, err := DecodeKernel(c.sample)
			if err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(got, c.want) {
				t.Fatalf("decoded\n%v\nwant\n%v", got, c.want)
			}
			// The ring reuses a sample's memory once it is read: the
			// record must own everything it holds.
			for i := range c.sample {
				c.sample[i] = 0xff
			}
			if !proto.Equal(got, c.want) {
				t.Fatalf("record changed with its sample's memory:\n%v", got)
			}
		})
	}
}

func TestDecodeKernelOutsideSession(t *testing.T) {
	ev := loader.NetEvent{Hdr: header(loader.KindConnect, loader.VerdictAllow, loader.FlagNoSession), Family: 2}
	ev.Hdr.Session = 0
	got, err := DecodeKernel(sampleOf(&ev))
	if err != nil {
		t.Fatal(err)
	}
	if id := got.GetConnect().GetSessionId(); id != "" {
		t.Fatalf("session id %q outside any session, want empty", id)
	}
}

func TestDecodeKernelRejects(t *testing.T) {
	exec := execSample()
	for _, c := range []struct {
		name   string
		sample []byte
		short  bool
	}{
		{"empty", nil, true},
		{"half a header", exec[:20], true},
		{"exec cut short", exec[:len(exec)-1], true},
		{"unknown kind", sampleOf(&loader.NetEvent{Hdr: loader.EventHeader{Kind: 200}}), false},
	} {
		t.Run(c.name, func(t *testing.T) {
			r, err := DecodeKernel(c.sample)
			if err == nil {
				t.Fatalf("decoded %v, want an error", r)
			}
			if errors.Is(err, ErrShortSample) != c.short {
				t.Fatalf("error %v: ErrShortSample %v, want %v", err, !c.short, c.short)
			}
		})
	}
}

// Many sessions and processes, decoded from two goroutines as the daemon's
// two ring readers do, each get their own names.
func TestDecodeKernelManySessions(t *testing.T) {
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for g := range 2 {
		wg.Go(func() {
			for i := range 20_000 {
				n := uint64(i%3000 + 1)
				ev := loader.NetEvent{Hdr: header(loader.KindConnect, loader.VerdictAllow, 0), Family: 2}
				ev.Hdr.Session = n << (8 * g)
				ev.Hdr.Pid = uint32(i % 5000)
				ev.Hdr.StartNs = uint64(i%7) * 10_000_000
				putC(ev.Hdr.Comm[:], fmt.Sprintf("w%06d", i%4000))
				c := mustDecode(t, sampleOf(&ev)).GetConnect()
				wantKey := fmt.Sprintf("%d:%d", i%5000, i%7)
				if c.GetSessionId() != fmt.Sprintf("%016x", n<<(8*g)) || c.GetProcess().GetKey() != wantKey ||
					c.GetProcess().GetComm() != fmt.Sprintf("w%06d", i%4000) {
					errs <- fmt.Errorf("record %d of %d: session %q, key %q, comm %q",
						i, g, c.GetSessionId(), c.GetProcess().GetKey(), c.GetProcess().GetComm())
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func mustDecode(t testing.TB, sample []byte) *recordpb.Record {
	r, err := DecodeKernel(sample)
	if err != nil {
		t.Error(err)
		return &recordpb.Record{}
	}
	return r
}

// BenchmarkDecodeKernel decodes one sample of a kind over and over, as the
// daemon's ring reader does under a flood from one process.
func BenchmarkDecodeKernel(b *testing.B) {
	for _, c := range []struct {
		name   string
		sample []byte
	}{
		{"sendmsg", netSample(loader.KindSendmsg, loader.VerdictAllow, 2, 17, []byte{127, 0, 0, 1})},
		{"exec", execSample()},
		{"fork", forkSample()},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := DecodeKernel(c.sample); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
		})
	}
}
