package events

import (
	"net/netip"

	"github.com/idend/idend/internal/events/recordpb"
	"github.com/idend/idend/internal/intent"
)

// actionOf returns the action the evaluator judges for a kernel record,
// or false for records it does not judge (fork, exit).
func actionOf(r *recordpb.Record) (intent.Action, bool) {
	switch b := r.GetBody().(type) {
	case *recordpb.Record_Connect:
		return connectAction(b.Connect), true
	case *recordpb.Record_SocketCreate:
		return socketAction(b.SocketCreate), true
	case *recordpb.Record_UnixConnect:
		return unixAction(b.UnixConnect), true
	case *recordpb.Record_Exec:
		return execAction(b.Exec), true
	}
	return intent.Action{}, false
}

func connectAction(c *recordpb.Connect) intent.Action {
	a := intent.Action{Kind: intent.Connect, Port: uint16(c.GetPort()), Proto: intent.ProtoTCP}
	a.Addr, _ = netip.AddrFromSlice(c.GetAddr())
	if c.GetOp() == recordpb.ConnectOp_CONNECT_OP_SENDMSG {
		a.Kind = intent.Sendmsg
	}
	if c.GetProtocol() == recordpb.Protocol_PROTOCOL_UDP {
		a.Proto = intent.ProtoUDP
	}
	return a
}

func socketAction(s *recordpb.SocketCreate) intent.Action {
	return intent.Action{Kind: intent.Socket, Family: int(s.GetFamily()),
		SockType: int(s.GetType()), SockProto: int(s.GetProtocol())}
}

func unixAction(u *recordpb.UnixConnect) intent.Action {
	a := intent.Action{Kind: intent.UnixConnect, Path: u.GetPath()}
	if u.GetOp() == recordpb.ConnectOp_CONNECT_OP_SENDMSG {
		a.Kind = intent.UnixSendmsg
	}
	return a
}

func execAction(e *recordpb.Exec) intent.Action {
	return intent.Action{Kind: intent.Exec, Path: e.GetPath(),
		File: intent.FileID{Dev: e.GetDev(), Ino: e.GetIno()}, FileDeleted: e.GetDeleted()}
}

// escalatedAction returns the action an Escalation record is about.
func escalatedAction(e *recordpb.Escalation) (intent.Action, bool) {
	switch a := e.GetAction().(type) {
	case *recordpb.Escalation_Connect:
		return connectAction(a.Connect), true
	case *recordpb.Escalation_SocketCreate:
		return socketAction(a.SocketCreate), true
	case *recordpb.Escalation_UnixConnect:
		return unixAction(a.UnixConnect), true
	case *recordpb.Escalation_Exec:
		return execAction(a.Exec), true
	}
	return intent.Action{}, false
}

// recordedVerdict maps a kernel verdict to the evaluator's. An exec
// stopped by SIGKILL or refused by the LSM was denied; an unspecified
// verdict maps to the zero Verdict, which matches no decision.
func recordedVerdict(v recordpb.Verdict) intent.Verdict {
	switch v {
	case recordpb.Verdict_VERDICT_ALLOW:
		return intent.VerdictAllow
	case recordpb.Verdict_VERDICT_DENY, recordpb.Verdict_VERDICT_KILLED,
		recordpb.Verdict_VERDICT_LSM_DENIED:
		return intent.VerdictDeny
	case recordpb.Verdict_VERDICT_AUDIT:
		return intent.VerdictAudit
	case recordpb.Verdict_VERDICT_ESCALATE:
		return intent.VerdictEscalate
	}
	return 0
}
