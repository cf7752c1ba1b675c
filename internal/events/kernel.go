package events

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
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
	var buf [2*20 + 1]byte
	b := strconv.AppendUint(buf[:0], uint64(pid), 10)
	b = append(b, ':')
	return string(strconv.AppendUint(b, startTicks, 10))
}

// SessionName formats a kernel session number as a session ID: 16 hex
// digits.
func SessionName(n uint64) string {
	if n == 0 {
		return ""
	}
	const digits = "0123456789abcdef"
	var buf [16]byte
	for i := len(buf) - 1; i >= 0; i-- {
		buf[i] = digits[n&0xf]
		n >>= 4
	}
	return string(buf[:])
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
	p := new(recordpb.Process)
	fillProcess(p, h)
	return p
}

// fillProcess sets p to the process that wrote h. Its key and command
// name come from names, formatted once for a run of records.
func fillProcess(p *recordpb.Process, h *loader.EventHeader) {
	ticks := StartTicks(h.StartNs)
	e := names.process(h.Pid, ticks, cBytes(int8Bytes(h.Comm[:])))
	p.Pid, p.Tid, p.StartTicks = h.Pid, h.Tid, ticks
	p.Key, p.Comm = e.key, e.comm
	p.Uid, p.Gid = h.Uid, h.Gid
}

// names remembers the strings of the sessions and processes that wrote
// recent records. A flood of records comes from a few processes of a few
// sessions; without it, every record would format its session's name and
// its process's key and copy its command name.
var names nameCache

// nameCache holds the formatted names of recent session numbers and
// processes in direct-mapped tables of immutable entries: a lookup loads
// a slot and uses it when its key matches, and otherwise formats the name
// and stores a new entry in the slot. Safe for concurrent use; it holds
// at most sessionSlots + processSlots entries.
type nameCache struct {
	sessions  [sessionSlots]atomic.Pointer[sessionEntry]
	processes [processSlots]atomic.Pointer[processEntry]
}

const (
	sessionBits  = 8
	sessionSlots = 1 << sessionBits
	processBits  = 10
	processSlots = 1 << processBits
)

type sessionEntry struct {
	n  uint64
	id string
}

type processEntry struct {
	pid   uint32
	ticks uint64
	key   string
	comm  string
}

// slot spreads keys over a table of 1<<bits slots (Fibonacci hashing).
func slot(k uint64, bits uint) uint64 { return (k * 0x9e3779b97f4a7c15) >> (64 - bits) }

// session returns SessionName(n).
func (c *nameCache) session(n uint64) string {
	if n == 0 {
		return ""
	}
	s := &c.sessions[slot(n, sessionBits)]
	if e := s.Load(); e != nil && e.n == n {
		return e.id
	}
	e := &sessionEntry{n: n, id: SessionName(n)}
	s.Store(e)
	return e.id
}

// process returns the key of process (pid, ticks) and comm as a string.
// comm is a view of the record being decoded, not kept.
func (c *nameCache) process(pid uint32, ticks uint64, comm []byte) *processEntry {
	s := &c.processes[slot(uint64(pid)<<32^ticks, processBits)]
	e := s.Load()
	if e != nil && e.pid == pid && e.ticks == ticks {
		if e.comm == string(comm) {
			return e
		}
		// The same process after an exec.
		e = &processEntry{pid: pid, ticks: ticks, key: e.key, comm: string(comm)}
	} else {
		e = &processEntry{pid: pid, ticks: ticks, key: ProcessKey(pid, ticks), comm: string(comm)}
	}
	s.Store(e)
	return e
}

// processKey returns ProcessKey(pid, ticks).
func (c *nameCache) processKey(pid uint32, ticks uint64) string {
	s := &c.processes[slot(uint64(pid)<<32^ticks, processBits)]
	if e := s.Load(); e != nil && e.pid == pid && e.ticks == ticks {
		return e.key
	}
	return ProcessKey(pid, ticks)
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
			SessionId: names.session(h.Session), CgroupId: h.CgroupId, Process: process(h), Verdict: verdict(h),
			Family: uint32(ev.Family), Type: uint32(ev.Type), Protocol: uint32(ev.Protocol),
		}}}
	}
	// The messages of a connect record, the commonest by far, are
	// allocated as one block.
	blk := new(connectBlock)
	c := &blk.connect
	c.SessionId, c.CgroupId, c.Verdict = names.session(h.Session), h.CgroupId, verdict(h)
	fillProcess(&blk.process, h)
	c.Process = &blk.process
	c.Family, c.Port, c.Protocol = uint32(ev.Family), uint32(ev.Port), recordpb.Protocol_PROTOCOL_TCP
	blk.addr = ev.Addr
	if ev.Family == 2 {
		c.Addr = blk.addr[:4:4]
	} else {
		c.Addr = blk.addr[:]
	}
	if ev.Protocol == 17 {
		c.Protocol = recordpb.Protocol_PROTOCOL_UDP
	}
	if loader.EventKind(h.Kind) == loader.KindSendmsg {
		c.Op = recordpb.ConnectOp_CONNECT_OP_SENDMSG
	}
	blk.body.Connect = c
	blk.record.Body = &blk.body
	return &blk.record
}

// connectBlock holds the messages of one connect record.
type connectBlock struct {
	record  recordpb.Record
	body    recordpb.Record_Connect
	connect recordpb.Connect
	process recordpb.Process
	addr    [16]byte
}

func decodeUnix(ev *loader.UnixEvent) *recordpb.Record {
	h := &ev.Hdr
	n := min(int(ev.PathLen), len(ev.Path))
	path := string(int8Bytes(ev.Path[:n]))
	if len(path) > 0 && path[0] == 0 {
		path = "@" + path[1:]
	}
	u := &recordpb.UnixConnect{
		SessionId: names.session(h.Session), CgroupId: h.CgroupId, Process: process(h), Verdict: verdict(h),
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
	p.ParentKey = names.processKey(ev.Ppid, StartTicks(ev.ParentStartNs))
	n := min(int(ev.PathLen), len(ev.Path))
	argv := int8Bytes(ev.Argv[:min(int(ev.ArgvLen), len(ev.Argv))])
	var args []string
	if len(argv) > 0 {
		for _, a := range bytes.Split(bytes.TrimRight(argv, "\x00"), []byte{0}) {
			args = append(args, string(a))
		}
	}
	return &recordpb.Record{Body: &recordpb.Record_Exec{Exec: &recordpb.Exec{
		SessionId: names.session(h.Session), CgroupId: h.CgroupId, Process: p, Verdict: verdict(h),
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
	p := process(h)
	child := &recordpb.Process{
		Pid: ev.ChildPid, Tid: ev.ChildTid, StartTicks: StartTicks(ev.ChildStartNs),
		Uid: h.Uid, Gid: h.Gid, Comm: p.Comm, ParentKey: p.Key,
	}
	child.Key = names.processKey(child.Pid, child.StartTicks)
	return &recordpb.Record{Body: &recordpb.Record_Fork{Fork: &recordpb.Fork{
		SessionId: names.session(h.Session), CgroupId: h.CgroupId, Process: p, Verdict: verdict(h),
		Child: child,
	}}}
}

func decodeExit(ev *loader.ExitEvent) *recordpb.Record {
	h := &ev.Hdr
	status := ev.ExitCode
	return &recordpb.Record{Body: &recordpb.Record_Exit{Exit: &recordpb.Exit{
		SessionId: names.session(h.Session), CgroupId: h.CgroupId, Process: process(h), Verdict: verdict(h),
		ExitCode: int32(status>>8) & 0xff, Signal: int32(status & 0x7f),
	}}}
}

func int8Bytes(s []int8) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(s))), len(s))
}

func cString(b []byte) string { return string(cBytes(b)) }

// cBytes returns b up to its first NUL.
func cBytes(b []byte) []byte {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		return b[:i]
	}
	return b
}
