package events

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/netip"
	"time"

	"github.com/idend/idend/internal/events/recordpb"
)

// object is one JSON object. encoding/json writes map keys sorted, which
// keeps the output stable.
type object = map[string]any

// FormatJSON writes r as one JSON object on one line. Every object has
// "seq", "time" (RFC 3339 in UTC), "mono_ns" and "kind"; a record of a
// session has "session"; a kernel action has "process", "identity" and
// "verdict"; the other keys depend on the kind and use the field names of
// proto/record.proto. Keys are sorted and empty fields left out, so that
// the same record always gives the same bytes.
func FormatJSON(w io.Writer, r *recordpb.Record) error {
	o := object{
		"seq":     r.GetSeq(),
		"time":    time.Unix(0, r.GetWallNs()).UTC().Format(time.RFC3339Nano),
		"mono_ns": r.GetMonoNs(),
		"kind":    Kind(r),
	}
	if s := SessionID(r); s != "" {
		o["session"] = s
	}
	if a := KernelAction(r); a != nil {
		put(o, "process", processJSON(a.GetProcess()))
		put(o, "identity", identityJSON(a.GetIdentity()))
		put(o, "verdict", VerdictName(a.GetVerdict()))
		put(o, "cgroup_id", a.GetCgroupId())
	}
	addBody(o, r)

	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(o); err != nil {
		return err
	}
	_, err := w.Write(buf.Bytes())
	return err
}

// put sets o[k] unless v is a zero value, an empty object or a nil slice.
func put(o object, k string, v any) {
	switch x := v.(type) {
	case string:
		if x == "" {
			return
		}
	case uint64:
		if x == 0 {
			return
		}
	case uint32:
		if x == 0 {
			return
		}
	case int32:
		if x == 0 {
			return
		}
	case bool:
		if !x {
			return
		}
	case object:
		if len(x) == 0 {
			return
		}
	case []string:
		if x == nil {
			return
		}
	case []object:
		if x == nil {
			return
		}
	}
	o[k] = v
}

func processJSON(p *recordpb.Process) object {
	o := object{}
	put(o, "key", p.GetKey())
	put(o, "pid", p.GetPid())
	put(o, "tid", p.GetTid())
	put(o, "start_ticks", p.GetStartTicks())
	put(o, "uid", p.GetUid())
	put(o, "gid", p.GetGid())
	put(o, "comm", p.GetComm())
	put(o, "parent_key", p.GetParentKey())
	return o
}

func identityJSON(id *recordpb.Identity) object {
	o := object{}
	put(o, "spiffe_id", id.GetSpiffeId())
	put(o, "strength", StrengthName(id.GetStrength()))
	put(o, "fingerprint", hex.EncodeToString(id.GetFingerprint()))
	put(o, "principal", id.GetPrincipal())
	if a := id.GetAttested(); a != nil {
		att := object{}
		put(att, "uid", a.GetUid())
		put(att, "gid", a.GetGid())
		put(att, "exe_path", a.GetExePath())
		put(att, "exe_sha256", hex.EncodeToString(a.GetExeSha256()))
		put(att, "cgroup", a.GetCgroup())
		o["attested"] = att
	}
	return o
}

func intentJSON(in *recordpb.IntentRef) object {
	o := object{}
	put(o, "name", in.GetName())
	put(o, "hash", hashText(in.GetHash()))
	return o
}

func addrJSON(b []byte) string {
	if a, ok := netip.AddrFromSlice(b); ok {
		return a.String()
	}
	return "invalid:" + hex.EncodeToString(b)
}

func addrsJSON(addrs [][]byte) []string {
	out := make([]string, len(addrs))
	for i, a := range addrs {
		out[i] = addrJSON(a)
	}
	return out
}

// addBody adds the fields of r's kind to o.
func addBody(o object, r *recordpb.Record) {
	switch b := r.GetBody().(type) {
	case *recordpb.Record_Exec:
		addExec(o, b.Exec)
	case *recordpb.Record_Fork:
		put(o, "child", processJSON(b.Fork.GetChild()))
	case *recordpb.Record_Exit:
		put(o, "exit_code", b.Exit.GetExitCode())
		put(o, "signal", b.Exit.GetSignal())
	case *recordpb.Record_Connect:
		addConnect(o, b.Connect)
	case *recordpb.Record_SocketCreate:
		addSocket(o, b.SocketCreate)
	case *recordpb.Record_UnixConnect:
		put(o, "path", b.UnixConnect.GetPath())
	default:
		addControl(o, r)
	}
}

func addExec(o object, e *recordpb.Exec) {
	put(o, "path", e.GetPath())
	put(o, "path_truncated", e.GetPathTruncated())
	put(o, "argv", e.GetArgv())
	put(o, "argv_truncated", e.GetArgvTruncated())
	put(o, "filename", e.GetFilename())
	put(o, "deleted", e.GetDeleted())
	put(o, "dev", e.GetDev())
	put(o, "ino", e.GetIno())
}

func addConnect(o object, c *recordpb.Connect) {
	put(o, "family", familyName(c.GetFamily()))
	put(o, "addr", addrJSON(c.GetAddr()))
	o["port"] = c.GetPort()
	put(o, "protocol", protocolName(c.GetProtocol()))
}

func addSocket(o object, s *recordpb.SocketCreate) {
	put(o, "family", familyName(s.GetFamily()))
	put(o, "type", sockTypeName(s.GetType()))
	o["protocol"] = s.GetProtocol()
}

func addControl(o object, r *recordpb.Record) {
	switch b := r.GetBody().(type) {
	case *recordpb.Record_DaemonStart:
		put(o, "version", b.DaemonStart.GetVersion())
		put(o, "kernel", b.DaemonStart.GetKernel())
		put(o, "hostname", b.DaemonStart.GetHostname())
		put(o, "enforcement", b.DaemonStart.GetEnforcement())
	case *recordpb.Record_DaemonStop:
		put(o, "reason", b.DaemonStop.GetReason())
	case *recordpb.Record_SessionOpen:
		addOpen(o, b.SessionOpen)
	case *recordpb.Record_SessionClose:
		put(o, "reason", b.SessionClose.GetReason())
	case *recordpb.Record_IntentChange:
		put(o, "intent", intentJSON(b.IntentChange.GetIntent()))
		put(o, "reason", b.IntentChange.GetReason())
	case *recordpb.Record_Escalation:
		addEscalation(o, b.Escalation)
	case *recordpb.Record_Approval:
		put(o, "escalation_id", b.Approval.GetEscalationId())
		put(o, "approved_by", b.Approval.GetApprovedBy())
	case *recordpb.Record_HostResolution:
		put(o, "host", b.HostResolution.GetHost())
		o["addrs"] = addrsJSON(b.HostResolution.GetAddrs())
	case *recordpb.Record_ExecRefresh:
		e := b.ExecRefresh
		put(o, "path", e.GetPath())
		o["old"] = object{"dev": e.GetOldDev(), "ino": e.GetOldIno()}
		o["new"] = object{"dev": e.GetNewDev(), "ino": e.GetNewIno()}
	case *recordpb.Record_ProcessFound:
		f := b.ProcessFound
		put(o, "exe_path", f.GetExePath())
		put(o, "argv", f.GetArgv())
	case *recordpb.Record_Retention:
		put(o, "removed", b.Retention.GetRemoved())
		put(o, "through_seq", b.Retention.GetThroughSeq())
		put(o, "bytes_removed", b.Retention.GetBytesRemoved())
	case *recordpb.Record_Gap:
		g := b.Gap
		put(o, "lost_kind", g.GetKind())
		o["count"] = g.GetCount()
		put(o, "first_seq", g.GetFirstSeq())
		put(o, "last_seq", g.GetLastSeq())
		put(o, "reason", g.GetReason())
		put(o, "detail", g.GetDetail())
	}
}

func addOpen(o object, s *recordpb.SessionOpen) {
	put(o, "parent", s.GetParentId())
	put(o, "ancestors", s.GetAncestors())
	put(o, "cgroup", s.GetCgroupPath())
	put(o, "cgroup_id", s.GetCgroupId())
	put(o, "principal", s.GetPrincipal())
	put(o, "identity", identityJSON(s.GetIdentity()))
	put(o, "intent", intentJSON(s.GetIntent()))
	if s.GetExpiresNs() != 0 {
		o["expires"] = time.Unix(0, s.GetExpiresNs()).UTC().Format(time.RFC3339Nano)
	}
	if len(s.GetHosts()) > 0 {
		hosts := object{}
		for _, h := range s.GetHosts() {
			hosts[h.GetHost()] = addrsJSON(h.GetAddrs())
		}
		o["hosts"] = hosts
	}
	var files []object
	for _, f := range s.GetExecFiles() {
		files = append(files, object{"path": f.GetPath(), "dev": f.GetDev(), "ino": f.GetIno()})
	}
	put(o, "exec_files", files)
}

func addEscalation(o object, e *recordpb.Escalation) {
	put(o, "escalation_id", e.GetEscalationId())
	action := object{}
	switch a := e.GetAction().(type) {
	case *recordpb.Escalation_Connect:
		action["kind"] = Kind(&recordpb.Record{Body: &recordpb.Record_Connect{
			Connect: a.Connect}})
		addConnect(action, a.Connect)
	case *recordpb.Escalation_SocketCreate:
		action["kind"] = KindSocket
		addSocket(action, a.SocketCreate)
	case *recordpb.Escalation_UnixConnect:
		action["kind"] = Kind(&recordpb.Record{Body: &recordpb.Record_UnixConnect{
			UnixConnect: a.UnixConnect}})
		put(action, "path", a.UnixConnect.GetPath())
	case *recordpb.Escalation_Exec:
		action["kind"] = KindExec
		addExec(action, a.Exec)
	}
	put(o, "action", action)
}
