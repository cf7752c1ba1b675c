package events

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"unsafe"

	"github.com/idend/idend/internal/events/recordpb"
	"github.com/idend/idend/internal/loader"
)

// ErrShortSample is returned for a ring buffer sample smaller than the
// event its header announces.
var ErrShortSample = errors.New("short ring buffer sample")

// TicksPerSecond is USER_HZ, the unit of process start times in /proc: a
// process key's start time is the leader's start_boottime in these ticks,
// so that keys taken from /proc and from the kernel agree.
const TicksPerSecond = 100

// StartTicks converts a kernel start_boottime to /proc's clock ticks.
func StartTicks(startNS uint64) uint64 {
	return startNS / (1e9 / TicksPerSecond)
}

// ProcessKey is the key of a process: its pid and start time, unique even
// when pids are reused.
func ProcessKey(pid uint32, startTicks uint64) string {
	return strconv.FormatUint(uint64(pid), 10) + ":" + strconv.FormatUint(startTicks, 10)
}

// SessionName formats a kernel session number as a session ID.
func SessionName(n uint64) string {
	if n == 0 {
		return ""
	}
	return fmt.Sprintf("%016x", n)
}

// cast views the start of b as a T, the struct bpf2go generated for it.
func cast[T any](b []byte) (*T, error) {
	var zero T
	if len(b) < int(unsafe.Sizeof(zero)) {
		return nil, fmt.Errorf("%w: %d bytes for %T", ErrShortSample, len(b), zero)
	}
	return (*T)(unsafe.Pointer(&b[0])), nil
}

// DecodeKernel turns one ring buffer sample into a record, with MonoNs
// the kernel's CLOCK_MONOTONIC time of the action. Identity and WallNs are
// not set: the caller knows the session's identity and the clock offset.
func DecodeKernel(sample []byte) (*recordpb.Record, error) {
	r, err := decodeKernel(sample)
	if err != nil {
		return nil, err
	}
	r.MonoNs = (*loader.EventHeader)(unsafe.Pointer(&sample[0])).KtimeNs
	return r, nil
}

func decodeKernel(sample []byte) (*recordpb.Record, error) {
	h, err := cast[loader.EventHeader](sample)
	if err != nil {
		return nil, err
	}
	switch loader.EventKind(h.Kind) {
	case loader.KindConnect, loader.KindSendmsg, loader.KindSocket:
		ev, err := cast[loader.NetEvent](sample)
		if err != nil {
			return nil, err
		}
		return decodeNet(ev), nil
	case loader.KindUnixConnect, loader.KindUnixSendmsg:
		ev, err := cast[loader.UnixEvent](sample)
		if err != nil {
			return nil, err
		}
		return decodeUnix(ev), nil
	case loader.KindExec:
		ev, err := cast[loader.ExecEvent](sample)
		if err != nil {
			return nil, err
		}
		return decodeExec(ev), nil
	case loader.KindFork:
		ev, err := cast[loader.ForkEvent](sample)
		if err != nil {
			return nil, err
		}
		return decodeFork(ev), nil
	case loader.KindExit:
		ev, err := cast[loader.ExitEvent](sample)
		if err != nil {
			return nil, err
		}
		return decodeExit(ev), nil
	}
	return nil, fmt.Errorf("unknown event kind %d", h.Kind)
}

func process(h *loader.EventHeader) *recordpb.Process {
	ticks := StartTicks(h.StartNs)
	return &recordpb.Process{
		Pid:        h.Pid,
		Tid:        h.Tid,
		StartTicks: ticks,
		Key:        ProcessKey(h.Pid, ticks),
		Uid:        h.Uid,
		Gid:        h.Gid,
		Comm:       cString(int8Bytes(h.Comm[:])),
	}
}

func verdict(h *loader.EventHeader) recordpb.Verdict {
	switch loader.Verdict(h.Verdict) {
	case loader.VerdictAllow:
		return recordpb.Verdict_VERDICT_ALLOW
	case loader.VerdictDeny:
		return recordpb.Verdict_VERDICT_DENY
	case loader.VerdictAudit:
		return recordpb.Verdict_VERDICT_AUDIT
	case loader.VerdictKilled:
		return recordpb.Verdict_VERDICT_KILLED
	case loader.VerdictLSMDenied:
		return recordpb.Verdict_VERDICT_LSM_DENIED
	}
	return recordpb.Verdict_VERDICT_UNSPECIFIED
}

func decodeNet(ev *loader.NetEvent) *recordpb.Record {
	h := &ev.Hdr
	if loader.EventKind(h.Kind) == loader.KindSocket {
		return &recordpb.Record{Body: &recordpb.Record_SocketCreate{SocketCreate: &recordpb.SocketCreate{
			SessionId: SessionName(h.Session), CgroupId: h.CgroupId, Process: process(h), Verdict: verdict(h),
			Family: uint32(ev.Family), Type: uint32(ev.Type), Protocol: uint32(ev.Protocol),
		}}}
	}
	c := &recordpb.Connect{
		SessionId: SessionName(h.Session), CgroupId: h.CgroupId, Process: process(h), Verdict: verdict(h),
		Family: uint32(ev.Family), Port: uint32(ev.Port), Protocol: recordpb.Protocol_PROTOCOL_TCP,
	}
	if ev.Family == 2 {
		c.Addr = bytes.Clone(ev.Addr[:4])
	} else {
		c.Addr = bytes.Clone(ev.Addr[:])
	}
	if ev.Protocol == 17 {
		c.Protocol = recordpb.Protocol_PROTOCOL_UDP
	}
	if loader.EventKind(h.Kind) == loader.KindSendmsg {
		c.Op = recordpb.ConnectOp_CONNECT_OP_SENDMSG
	}
	return &recordpb.Record{Body: &recordpb.Record_Connect{Connect: c}}
}

func decodeUnix(ev *loader.UnixEvent) *recordpb.Record {
	h := &ev.Hdr
	n := min(int(ev.PathLen), len(ev.Path))
	path := string(int8Bytes(ev.Path[:n]))
	if len(path) > 0 && path[0] == 0 {
		path = "@" + path[1:]
	}
	u := &recordpb.UnixConnect{
		SessionId: SessionName(h.Session), CgroupId: h.CgroupId, Process: process(h), Verdict: verdict(h),
		Path: path,
	}
	if loader.EventKind(h.Kind) == loader.KindUnixSendmsg {
		u.Op = recordpb.ConnectOp_CONNECT_OP_SENDMSG
	}
	return &recordpb.Record{Body: &recordpb.Record_UnixConnect{UnixConnect: u}}
}

func decodeExec(ev *loader.ExecEvent) *recordpb.Record {
	h := &ev.Hdr
	p := process(h)
	p.ParentKey = ProcessKey(ev.Ppid, StartTicks(ev.ParentStartNs))
	n := min(int(ev.PathLen), len(ev.Path))
	argv := int8Bytes(ev.Argv[:min(int(ev.ArgvLen), len(ev.Argv))])
	var args []string
	if len(argv) > 0 {
		for _, a := range bytes.Split(bytes.TrimRight(argv, "\x00"), []byte{0}) {
			args = append(args, string(a))
		}
	}
	return &recordpb.Record{Body: &recordpb.Record_Exec{Exec: &recordpb.Exec{
		SessionId: SessionName(h.Session), CgroupId: h.CgroupId, Process: p, Verdict: verdict(h),
		Dev: ev.Dev, Ino: ev.Ino,
		Path:          string(int8Bytes(ev.Path[len(ev.Path)-n:])),
		PathTruncated: h.Flags&uint32(loader.FlagPathTruncated) != 0,
		Argv:          args,
		ArgvTruncated: h.Flags&uint32(loader.FlagArgvTruncated) != 0,
		Filename:      cString(int8Bytes(ev.Filename[:])),
		Deleted:       h.Flags&uint32(loader.FlagDeleted) != 0,
	}}}
}

func decodeFork(ev *loader.ForkEvent) *recordpb.Record {
	h := &ev.Hdr
	child := &recordpb.Process{
		Pid: ev.ChildPid, Tid: ev.ChildTid, StartTicks: StartTicks(ev.ChildStartNs),
		Uid: h.Uid, Gid: h.Gid, Comm: cString(int8Bytes(h.Comm[:])),
	}
	child.Key = ProcessKey(child.Pid, child.StartTicks)
	p := process(h)
	child.ParentKey = p.Key
	return &recordpb.Record{Body: &recordpb.Record_Fork{Fork: &recordpb.Fork{
		SessionId: SessionName(h.Session), CgroupId: h.CgroupId, Process: p, Verdict: verdict(h),
		Child: child,
	}}}
}

func decodeExit(ev *loader.ExitEvent) *recordpb.Record {
	h := &ev.Hdr
	status := ev.ExitCode
	return &recordpb.Record{Body: &recordpb.Record_Exit{Exit: &recordpb.Exit{
		SessionId: SessionName(h.Session), CgroupId: h.CgroupId, Process: process(h), Verdict: verdict(h),
		ExitCode: int32(status>>8) & 0xff, Signal: int32(status & 0x7f),
	}}}
}

func int8Bytes(s []int8) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(s))), len(s))
}

func cString(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}
