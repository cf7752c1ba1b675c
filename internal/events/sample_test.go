package events

import (
	"github.com/idend/idend/internal/events/recordpb"
)

func testProcess(pid uint32) *recordpb.Process {
	return &recordpb.Process{
		Pid: pid, Tid: pid, StartTicks: 1000 + uint64(pid),
		Key: processKey(pid), Uid: 1000, Gid: 1000, Comm: "python3",
		ParentKey: "1:1",
	}
}

func processKey(pid uint32) string {
	return fmtKey(pid, 1000+uint64(pid))
}

var testIdentity = &recordpb.Identity{
	SpiffeId:    "spiffe://example.org/agent/retry",
	Strength:    recordpb.Strength_STRENGTH_SVID,
	Fingerprint: []byte{0xde, 0xad, 0xbe, 0xef},
	Principal:   "alice",
}

func connectRecord(session string, addr []byte, port uint32, v recordpb.Verdict) *recordpb.Record {
	return &recordpb.Record{Body: &recordpb.Record_Connect{Connect: &recordpb.Connect{
		SessionId: session, CgroupId: 4242, Process: testProcess(77),
		Identity: testIdentity, Verdict: v,
		Family: 2, Addr: addr, Port: port, Protocol: recordpb.Protocol_PROTOCOL_TCP,
	}}}
}

// sampleRecords returns one record of every body kind, with every field
// set to something other than its zero value where that matters.
func sampleRecords() []*recordpb.Record {
	exec := &recordpb.Exec{
		SessionId: "s1", CgroupId: 4242, Process: testProcess(77),
		Identity: testIdentity, Verdict: recordpb.Verdict_VERDICT_KILLED,
		Dev: 2049, Ino: 131, Path: "/usr/bin/curl", PathTruncated: true,
		Argv: []string{"curl", "-s", "https://example.com"}, ArgvTruncated: true,
		Filename: "curl", Deleted: true,
	}
	return []*recordpb.Record{
		{Body: &recordpb.Record_DaemonStart{DaemonStart: &recordpb.DaemonStart{
			Version: "0.1.0", Kernel: "6.18.0", Enforcement: []string{"connect4", "exec"},
			Hostname: "node1"}}},
		{Body: &recordpb.Record_SessionOpen{SessionOpen: &recordpb.SessionOpen{
			SessionId: "s1", ParentId: "s0", Ancestors: []string{"s0"},
			CgroupPath: "/sys/fs/cgroup/idend/s1", CgroupId: 4242, Principal: "alice",
			Identity: &recordpb.Identity{
				SpiffeId: "spiffe://example.org/agent", Strength: recordpb.Strength_STRENGTH_ATTESTED,
				Attested: &recordpb.Attested{Uid: 1000, Gid: 1000, ExePath: "/usr/bin/python3",
					ExeSha256: []byte{1, 2, 3}, Cgroup: "/user.slice"}},
			Intent:    &recordpb.IntentRef{Name: "retry", Hash: []byte{9, 9}, Canonical: []byte("name: retry")},
			Hosts:     []*recordpb.HostAddrs{{Host: "db.internal", Addrs: [][]byte{{10, 0, 0, 5}}}},
			ExecFiles: []*recordpb.ExecFile{{Path: "/usr/bin/python3", Dev: 2049, Ino: 77}},
			ExpiresNs: 1_900_000_000_000_000_000}}},
		{Body: &recordpb.Record_Exec{Exec: exec}},
		{Body: &recordpb.Record_Fork{Fork: &recordpb.Fork{
			SessionId: "s1", CgroupId: 4242, Process: testProcess(77), Identity: testIdentity,
			Verdict: recordpb.Verdict_VERDICT_ALLOW, Child: testProcess(78)}}},
		{Body: &recordpb.Record_Exit{Exit: &recordpb.Exit{
			SessionId: "s1", CgroupId: 4242, Process: testProcess(78), Identity: testIdentity,
			ExitCode: 3, Signal: 9}}},
		connectRecord("s1", []byte{10, 0, 0, 5}, 5432, recordpb.Verdict_VERDICT_ALLOW),
		{Body: &recordpb.Record_Connect{Connect: &recordpb.Connect{
			SessionId: "s1", Process: testProcess(77), Verdict: recordpb.Verdict_VERDICT_AUDIT,
			Family: 10, Addr: make([]byte, 16), Port: 53,
			Protocol: recordpb.Protocol_PROTOCOL_UDP, Op: recordpb.ConnectOp_CONNECT_OP_SENDMSG}}},
		{Body: &recordpb.Record_SocketCreate{SocketCreate: &recordpb.SocketCreate{
			SessionId: "s1", Process: testProcess(77), Verdict: recordpb.Verdict_VERDICT_DENY,
			Family: 17, Type: 3, Protocol: 768}}},
		{Body: &recordpb.Record_UnixConnect{UnixConnect: &recordpb.UnixConnect{
			SessionId: "s1", Process: testProcess(77), Verdict: recordpb.Verdict_VERDICT_ESCALATE,
			Path: "/run/docker.sock"}}},
		{Body: &recordpb.Record_Escalation{Escalation: &recordpb.Escalation{
			SessionId: "s1", EscalationId: "e1",
			Action: &recordpb.Escalation_UnixConnect{UnixConnect: &recordpb.UnixConnect{
				SessionId: "s1", Path: "/run/docker.sock"}}}}},
		{Body: &recordpb.Record_Approval{Approval: &recordpb.Approval{
			SessionId: "s1", EscalationId: "e1", ApprovedBy: "root"}}},
		{Body: &recordpb.Record_HostResolution{HostResolution: &recordpb.HostResolution{
			SessionId: "s1", Host: "db.internal", Addrs: [][]byte{{10, 0, 0, 6}}}}},
		{Body: &recordpb.Record_ExecRefresh{ExecRefresh: &recordpb.ExecRefresh{
			SessionId: "s1", Path: "/usr/bin/python3", OldDev: 2049, OldIno: 77,
			NewDev: 2049, NewIno: 78}}},
		{Body: &recordpb.Record_ProcessFound{ProcessFound: &recordpb.ProcessFound{
			SessionId: "s1", CgroupId: 4242, Process: testProcess(80), Identity: testIdentity,
			ExePath: "/usr/bin/python3.11", Argv: []string{"python3", "agent.py"}}}},
		{Body: &recordpb.Record_IntentChange{IntentChange: &recordpb.IntentChange{
			SessionId: "s1", Intent: &recordpb.IntentRef{Name: "retry", Hash: []byte{8},
				Canonical: []byte("name: retry2")}, Reason: "operator"}}},
		{Body: &recordpb.Record_Gap{Gap: &recordpb.Gap{
			Kind: KindConnect, Count: 12, Reason: GapRingBuffer}}},
		{Body: &recordpb.Record_Retention{Retention: &recordpb.Retention{
			Removed: []string{"seg-000000000001.idr"}, ThroughSeq: 3,
			ThroughHash: make([]byte, 32), BytesRemoved: 100}}},
		{Body: &recordpb.Record_SessionClose{SessionClose: &recordpb.SessionClose{
			SessionId: "s1", Reason: "ttl expired"}}},
		{Body: &recordpb.Record_DaemonStop{DaemonStop: &recordpb.DaemonStop{Reason: "SIGTERM"}}},
	}
}
