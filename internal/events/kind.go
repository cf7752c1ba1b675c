package events

import (
	"strings"

	"github.com/idend/idend/internal/events/recordpb"
)

// Kind names, as printed and as accepted by [Filter]. Connect and
// UnixConnect records made by the sendmsg hooks are of kinds KindSendmsg
// and KindUnixSendmsg.
const (
	KindExec           = "exec"
	KindFork           = "fork"
	KindExit           = "exit"
	KindConnect        = "connect"
	KindSendmsg        = "sendmsg"
	KindSocket         = "socket"
	KindUnixConnect    = "unix_connect"
	KindUnixSendmsg    = "unix_sendmsg"
	KindDaemonStart    = "daemon_start"
	KindDaemonStop     = "daemon_stop"
	KindSessionOpen    = "session_open"
	KindSessionClose   = "session_close"
	KindIntentChange   = "intent_change"
	KindEscalation     = "escalation"
	KindApproval       = "approval"
	KindHostResolution = "host_resolution"
	KindExecRefresh    = "exec_refresh"
	KindRetention      = "retention"
	KindProcessFound   = "process_found"
	KindGap            = "gap"
	KindUnknown        = "unknown"
)

// Kinds lists every kind name in schema order.
var Kinds = kindNames[:kindCount-1]

// kindNames are Kinds and KindUnknown, indexed by kindIndex.
var kindNames = [kindCount]string{
	KindExec, KindFork, KindExit, KindConnect, KindSendmsg, KindSocket,
	KindUnixConnect, KindUnixSendmsg, KindDaemonStart, KindDaemonStop, KindSessionOpen,
	KindSessionClose, KindIntentChange, KindEscalation, KindApproval,
	KindHostResolution, KindExecRefresh, KindRetention, KindProcessFound, KindGap, KindUnknown,
}

const kindCount = 21

// Kind returns the kind name of r, or KindUnknown for a record whose body
// this schema does not know.
func Kind(r *recordpb.Record) string {
	return kindNames[kindIndex(r)]
}

// kindIndex returns the index in kindNames of r's kind.
func kindIndex(r *recordpb.Record) int {
	switch b := r.GetBody().(type) {
	case *recordpb.Record_Exec:
		return 0
	case *recordpb.Record_Fork:
		return 1
	case *recordpb.Record_Exit:
		return 2
	case *recordpb.Record_Connect:
		if b.Connect.GetOp() == recordpb.ConnectOp_CONNECT_OP_SENDMSG {
			return 4
		}
		return 3
	case *recordpb.Record_SocketCreate:
		return 5
	case *recordpb.Record_UnixConnect:
		if b.UnixConnect.GetOp() == recordpb.ConnectOp_CONNECT_OP_SENDMSG {
			return 7
		}
		return 6
	}
	return controlKindIndex(r)
}

func controlKindIndex(r *recordpb.Record) int {
	switch r.GetBody().(type) {
	case *recordpb.Record_DaemonStart:
		return 8
	case *recordpb.Record_DaemonStop:
		return 9
	case *recordpb.Record_SessionOpen:
		return 10
	case *recordpb.Record_SessionClose:
		return 11
	case *recordpb.Record_IntentChange:
		return 12
	case *recordpb.Record_Escalation:
		return 13
	case *recordpb.Record_Approval:
		return 14
	case *recordpb.Record_HostResolution:
		return 15
	case *recordpb.Record_ExecRefresh:
		return 16
	case *recordpb.Record_Retention:
		return 17
	case *recordpb.Record_ProcessFound:
		return 18
	case *recordpb.Record_Gap:
		return 19
	}
	return 20
}

// Action is what every kernel action record has in common. The generated
// Exec, Fork, Exit, Connect, SocketCreate and UnixConnect messages
// implement it.
type Action interface {
	GetSessionId() string
	GetCgroupId() uint64
	GetProcess() *recordpb.Process
	GetIdentity() *recordpb.Identity
	GetVerdict() recordpb.Verdict
}

// KernelAction returns the kernel action r records, or nil when r is a
// control or gap record.
func KernelAction(r *recordpb.Record) Action {
	switch b := r.GetBody().(type) {
	case *recordpb.Record_Exec:
		return b.Exec
	case *recordpb.Record_Fork:
		return b.Fork
	case *recordpb.Record_Exit:
		return b.Exit
	case *recordpb.Record_Connect:
		return b.Connect
	case *recordpb.Record_SocketCreate:
		return b.SocketCreate
	case *recordpb.Record_UnixConnect:
		return b.UnixConnect
	}
	return nil
}

// IsControl reports whether r is a control record: one the daemon wrote
// about its own decisions rather than about a kernel event. Gap records
// count as control records.
func IsControl(r *recordpb.Record) bool {
	return r.GetBody() != nil && KernelAction(r) == nil
}

// SessionID returns the session r belongs to, or "" for records of the
// daemon as a whole.
func SessionID(r *recordpb.Record) string {
	if a := KernelAction(r); a != nil {
		return a.GetSessionId()
	}
	switch b := r.GetBody().(type) {
	case *recordpb.Record_SessionOpen:
		return b.SessionOpen.GetSessionId()
	case *recordpb.Record_SessionClose:
		return b.SessionClose.GetSessionId()
	case *recordpb.Record_IntentChange:
		return b.IntentChange.GetSessionId()
	case *recordpb.Record_Escalation:
		return b.Escalation.GetSessionId()
	case *recordpb.Record_Approval:
		return b.Approval.GetSessionId()
	case *recordpb.Record_HostResolution:
		return b.HostResolution.GetSessionId()
	case *recordpb.Record_ExecRefresh:
		return b.ExecRefresh.GetSessionId()
	case *recordpb.Record_ProcessFound:
		return b.ProcessFound.GetSessionId()
	}
	return ""
}

// VerdictName returns the lowercase name of v ("allow", "lsm_denied"), or
// "" when v is unspecified.
func VerdictName(v recordpb.Verdict) string {
	if v == recordpb.Verdict_VERDICT_UNSPECIFIED {
		return ""
	}
	return strings.ToLower(strings.TrimPrefix(v.String(), "VERDICT_"))
}

// StrengthName returns the lowercase name of s ("svid", "attested",
// "bearer"), or "" when s is unspecified.
func StrengthName(s recordpb.Strength) string {
	if s == recordpb.Strength_STRENGTH_UNSPECIFIED {
		return ""
	}
	return strings.ToLower(strings.TrimPrefix(s.String(), "STRENGTH_"))
}
