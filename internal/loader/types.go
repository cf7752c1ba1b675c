package loader

// The records the kernel programs write, as bpf2go generated them from
// bpf/idend.h. A ring buffer sample starts with an EventHeader whose Kind
// says which of the event types it is.
type (
	EventHeader = netEventHeader
	NetEvent    = netNetEvent
	UnixEvent   = netUnixEvent
	ExecEvent   = netExecEvent
	ForkEvent   = netForkEvent
	ExitEvent   = netExitEvent
	EventKind   = netIdendEventKind
	Verdict     = netIdendVerdict
	EventFlag   = netIdendEventFlag
)

// Event kinds.
const (
	KindConnect     = netIdendEventKindEVENT_CONNECT
	KindSendmsg     = netIdendEventKindEVENT_SENDMSG
	KindSocket      = netIdendEventKindEVENT_SOCKET
	KindUnixConnect = netIdendEventKindEVENT_UNIX_CONNECT
	KindUnixSendmsg = netIdendEventKindEVENT_UNIX_SENDMSG
	KindExec        = netIdendEventKindEVENT_EXEC
	KindFork        = netIdendEventKindEVENT_FORK
	KindExit        = netIdendEventKindEVENT_EXIT
)

// Verdicts.
const (
	VerdictAllow     = netIdendVerdictVERDICT_ALLOW
	VerdictDeny      = netIdendVerdictVERDICT_DENY
	VerdictAudit     = netIdendVerdictVERDICT_AUDIT
	VerdictKilled    = netIdendVerdictVERDICT_KILLED
	VerdictLSMDenied = netIdendVerdictVERDICT_LSM_DENIED
)

// Event flags.
const (
	FlagNoSession     = netIdendEventFlagEVENT_F_NO_SESSION
	FlagV4Mapped      = netIdendEventFlagEVENT_F_V4MAPPED
	FlagOutside       = netIdendEventFlagEVENT_F_OUTSIDE
	FlagPathTruncated = netIdendEventFlagEVENT_F_PATH_TRUNCATED
	FlagArgvTruncated = netIdendEventFlagEVENT_F_ARGV_TRUNCATED
	FlagDeleted       = netIdendEventFlagEVENT_F_DELETED
)

// Ring indexes of Losses.
const (
	RingEvents  = int(netIdendRingRING_EVENTS)
	RingDenials = int(netIdendRingRING_DENIALS)
)
