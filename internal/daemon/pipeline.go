package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"

	"github.com/idend/idend/internal/events"
	"github.com/idend/idend/internal/events/recordpb"
	"github.com/idend/idend/internal/intent"
	"github.com/idend/idend/internal/loader"
)

// pipeline moves kernel records from the rings to the recording, stamped
// with their session's identity. Nothing here logs per record: decode
// failures and losses are counted.
type pipeline struct {
	m         *manager
	records   atomic.Uint64
	bad       atomic.Uint64
	lostTotal atomic.Uint64
	lastLoss  [loader.RingCount][loader.KindCount]uint64
	// wallOffset converts the kernel's CLOCK_MONOTONIC to wall time.
	wallOffset int64
}

// newPipeline returns a pipeline recording through m.
func newPipeline(m *manager) *pipeline {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return &pipeline{m: m, wallOffset: time.Now().UnixNano() - ts.Nano()}
}

// pollInterval bounds how long a record waits in the events ring, whose
// programs wake the reader only for a backlog (WAKEUP_BYTES in bpf/maps.h).
const pollInterval = 10 * time.Millisecond

// readRing records every sample of rd until ctx ends or rd is closed.
func (p *pipeline) readRing(ctx context.Context, rd *ringbuf.Reader) error {
	var rec ringbuf.Record
	for {
		rd.SetDeadline(time.Now().Add(pollInterval))
		if err := rd.ReadInto(&rec); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				continue
			}
			if errors.Is(err, ringbuf.ErrClosed) || ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("read ring: %w", err)
		}
		r, err := events.DecodeKernel(rec.RawSample)
		if err != nil {
			p.bad.Add(1)
			continue
		}
		r.WallNs = int64(r.MonoNs) + p.wallOffset
		p.stamp(r)
		if _, err := p.m.rec.Append(r); err != nil {
			return fmt.Errorf("record kernel event: %w", err)
		}
		p.records.Add(1)
	}
}

// stamp adds the session's identity to a kernel record and turns a denial
// in an escalate-mode session into an escalation.
func (p *pipeline) stamp(r *recordpb.Record) {
	a := events.KernelAction(r)
	if a == nil {
		return
	}
	s := p.m.sessionByName(a.GetSessionId())
	if s == nil {
		return
	}
	setIdentity(r, identityRecord(s, false))
	if v := a.GetVerdict(); v != recordpb.Verdict_VERDICT_DENY && v != recordpb.Verdict_VERDICT_KILLED &&
		v != recordpb.Verdict_VERDICT_LSM_DENIED {
		return
	}
	if p.m.mode(s) != intent.ModeEscalate {
		return
	}
	act, desc, ok := actionOf(r)
	if !ok {
		return
	}
	setVerdict(r, recordpb.Verdict_VERDICT_ESCALATE)
	id, fresh := p.m.escalate(s, act, desc)
	if !fresh {
		return
	}
	esc := &recordpb.Escalation{SessionId: s.ID, EscalationId: id}
	switch b := r.Body.(type) {
	case *recordpb.Record_Connect:
		esc.Action = &recordpb.Escalation_Connect{Connect: b.Connect}
	case *recordpb.Record_SocketCreate:
		esc.Action = &recordpb.Escalation_SocketCreate{SocketCreate: b.SocketCreate}
	case *recordpb.Record_UnixConnect:
		esc.Action = &recordpb.Escalation_UnixConnect{UnixConnect: b.UnixConnect}
	case *recordpb.Record_Exec:
		esc.Action = &recordpb.Escalation_Exec{Exec: b.Exec}
	}
	p.m.rec.Append(&recordpb.Record{Body: &recordpb.Record_Escalation{Escalation: esc}})
}

func setIdentity(r *recordpb.Record, id *recordpb.Identity) {
	switch b := r.Body.(type) {
	case *recordpb.Record_Connect:
		b.Connect.Identity = id
	case *recordpb.Record_SocketCreate:
		b.SocketCreate.Identity = id
	case *recordpb.Record_UnixConnect:
		b.UnixConnect.Identity = id
	case *recordpb.Record_Exec:
		b.Exec.Identity = id
	case *recordpb.Record_Fork:
		b.Fork.Identity = id
	case *recordpb.Record_Exit:
		b.Exit.Identity = id
	}
}

func setVerdict(r *recordpb.Record, v recordpb.Verdict) {
	switch b := r.Body.(type) {
	case *recordpb.Record_Connect:
		b.Connect.Verdict = v
	case *recordpb.Record_SocketCreate:
		b.SocketCreate.Verdict = v
	case *recordpb.Record_UnixConnect:
		b.UnixConnect.Verdict = v
	case *recordpb.Record_Exec:
		b.Exec.Verdict = v
	}
}

// actionOf gives the intent action of a refused kernel record, and a
// description that identifies it among a session's escalations.
func actionOf(r *recordpb.Record) (intent.Action, string, bool) {
	switch b := r.Body.(type) {
	case *recordpb.Record_Connect:
		c := b.Connect
		addr, ok := netip.AddrFromSlice(c.Addr)
		if !ok {
			return intent.Action{}, "", false
		}
		a := intent.Action{Kind: intent.Connect, Addr: addr.Unmap(), Port: uint16(c.Port), Proto: intent.ProtoTCP}
		if c.Op == recordpb.ConnectOp_CONNECT_OP_SENDMSG {
			a.Kind = intent.Sendmsg
		}
		if c.Protocol == recordpb.Protocol_PROTOCOL_UDP {
			a.Proto = intent.ProtoUDP
		}
		return a, fmt.Sprintf("%s %s %s", a.Kind, a.Proto, netip.AddrPortFrom(a.Addr, a.Port)), true
	case *recordpb.Record_UnixConnect:
		a := intent.Action{Kind: intent.UnixConnect, Path: b.UnixConnect.Path}
		return a, "unix_connect " + a.Path, true
	case *recordpb.Record_Exec:
		e := b.Exec
		if e.Deleted {
			return intent.Action{}, "", false
		}
		a := intent.Action{Kind: intent.Exec, Path: e.Path, File: intent.FileID{Dev: e.Dev, Ino: e.Ino}}
		return a, "exec " + e.Path, true
	}
	return intent.Action{}, "", false
}

// pollLosses turns new loss counts into Gap records, once a second.
func (p *pipeline) pollLosses(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			p.checkLosses()
			return
		case <-t.C:
			p.checkLosses()
		}
	}
}

func (p *pipeline) checkLosses() {
	losses, err := p.m.loader.Losses()
	if err != nil {
		p.m.log.Error("read losses", "err", err)
		return
	}
	for ring := range loader.RingCount {
		for kind := range loader.KindCount {
			n := losses[ring][kind] - p.lastLoss[ring][kind]
			if n == 0 {
				continue
			}
			p.lastLoss[ring][kind] = losses[ring][kind]
			p.lostTotal.Add(n)
			gap := &recordpb.Gap{Kind: kindName(kind), Count: n, Reason: ringName(ring) + " ring full"}
			p.m.rec.Append(&recordpb.Record{Body: &recordpb.Record_Gap{Gap: gap}})
		}
	}
}

func kindName(k int) string {
	names := map[loader.EventKind]string{
		loader.KindConnect: "connect", loader.KindSendmsg: "sendmsg", loader.KindSocket: "socket",
		loader.KindUnixConnect: "unix_connect", loader.KindUnixSendmsg: "unix_sendmsg",
		loader.KindExec: "exec", loader.KindFork: "fork", loader.KindExit: "exit",
	}
	return names[loader.EventKind(k)]
}

func ringName(r int) string {
	if r == loader.RingDenials {
		return "denials"
	}
	return "events"
}
