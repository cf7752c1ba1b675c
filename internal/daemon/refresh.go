package daemon

import (
	"context"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/idend/idend/internal/cgroup"
	"github.com/idend/idend/internal/events"
	"github.com/idend/idend/internal/events/recordpb"
	"github.com/idend/idend/internal/intent"
)

// refreshLoop keeps what a session's intent names by name current: host
// names are looked up again every cfg.Refresh.Hosts, and the allowed
// executables are looked at every cfg.Refresh.Executables, so that an
// allow list follows a program a package upgrade replaced with a new file.
func (d *Daemon) refreshLoop(ctx context.Context) {
	exec := time.NewTicker(d.cfg.Refresh.Executables)
	hosts := time.NewTicker(d.cfg.Refresh.Hosts)
	defer exec.Stop()
	defer hosts.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-exec.C:
			d.m.refresh(ctx, false)
		case <-hosts.C:
			d.m.refresh(ctx, true)
		}
	}
}

// refresh looks up the executables, and the host names when withHosts, of
// every session, and applies and records what changed.
func (m *manager) refresh(ctx context.Context, withHosts bool) {
	for _, s := range m.list() {
		m.mu.RLock()
		in, hosts, files := s.intent, maps.Clone(s.Hosts), maps.Clone(s.Files)
		m.mu.RUnlock()
		if in == nil {
			continue
		}

		newFiles, _ := intent.ResolveExec(in.Exec.Paths)
		newHosts := maps.Clone(hosts)
		if withHosts {
			for _, r := range in.Egress {
				if r.Host == "" {
					continue
				}
				addrs, err := m.lookupHost(ctx, r.Host)
				if err != nil {
					m.log.Warn("resolve host", "session", s.ID, "host", r.Host, "err", err)
					continue // keep the addresses it had
				}
				newHosts[r.Host] = addrs
			}
		}
		if maps.EqualFunc(hosts, newHosts, slices.Equal) && maps.Equal(files, newFiles) {
			continue
		}
		if err := m.update(s, newHosts, newFiles); err != nil {
			m.log.Error("refresh session", "session", s.ID, "err", err)
		}
	}
}

// update applies a session's intent with new host addresses and files,
// atomically as the kernel sees it, and records each change.
func (m *manager) update(s *Session, hosts map[string][]netip.Addr, files map[string]intent.FileID) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.sessions[s.ID] != s {
		return nil // closed meanwhile
	}
	next := *s
	next.Hosts, next.Files = hosts, files
	if err := next.build(); err != nil {
		return err
	}
	if err := m.loader.Apply(s.CgroupID, s.Num, next.compiled); err != nil {
		return err
	}
	var recs []*recordpb.Record
	for _, h := range sortedKeys(hosts) {
		if slices.Equal(hosts[h], s.Hosts[h]) {
			continue
		}
		hr := &recordpb.HostResolution{SessionId: s.ID, Host: h}
		for _, a := range hosts[h] {
			hr.Addrs = append(hr.Addrs, a.AsSlice())
		}
		recs = append(recs, &recordpb.Record{Body: &recordpb.Record_HostResolution{HostResolution: hr}})
		m.log.Info("host resolved anew", "session", s.ID, "host", h, "addrs", hosts[h])
	}
	for _, p := range sortedKeys(mergeKeys(files, s.Files)) {
		old, cur := s.Files[p], files[p]
		if old == cur {
			continue
		}
		recs = append(recs, &recordpb.Record{Body: &recordpb.Record_ExecRefresh{ExecRefresh: &recordpb.ExecRefresh{
			SessionId: s.ID, Path: p, OldDev: old.Dev, OldIno: old.Ino, NewDev: cur.Dev, NewIno: cur.Ino}}})
		m.log.Info("executable changed", "session", s.ID, "path", p, "old", old, "new", cur)
	}
	s.Hosts, s.Files, s.compiled = hosts, files, next.compiled
	// A narrower policy also ends the connections it no longer allows.
	if n, err := cutConnections(s.Cgroup, next.compiled); err != nil || n > 0 {
		m.log.Info("connections cut", "session", s.ID, "count", n, "err", err)
	}
	for _, r := range recs {
		if _, err := m.rec.Append(r); err != nil {
			return err
		}
	}
	return m.saveLocked()
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func mergeKeys[V any](a, b map[string]V) map[string]bool {
	out := make(map[string]bool, len(a)+len(b))
	for k := range a {
		out[k] = true
	}
	for k := range b {
		out[k] = true
	}
	return out
}

// recordExisting records, as ProcessFound, every process already in a
// session when the daemon starts: their execs and forks may have happened
// while no daemon recorded, and later records need their lineage.
func (m *manager) recordExisting() {
	for _, s := range m.list() {
		err := cgroup.TreeProcs(s.Cgroup, func(pid int) { m.recordFound(s, pid) })
		if err != nil {
			m.log.Warn("find existing processes", "session", s.ID, "err", err)
		}
	}
}

func (m *manager) recordFound(s *Session, pid int) {
	f, err := m.attester.Attest(pid)
	if err != nil {
		return // gone meanwhile
	}
	p := &recordpb.Process{
		Pid: uint32(f.PID), Tid: uint32(f.PID), StartTicks: f.StartTicks,
		Key: events.ProcessKey(uint32(f.PID), f.StartTicks), Uid: f.UID, Gid: f.GID,
	}
	if len(f.Parents) > 0 {
		p.ParentKey = events.ProcessKey(uint32(f.Parents[0].PID), f.Parents[0].StartTicks)
	}
	argv, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
	found := &recordpb.ProcessFound{SessionId: s.ID, CgroupId: s.CgroupID, Process: p,
		Identity: identityRecord(s, false), ExePath: f.ExePath}
	if a := strings.TrimRight(string(argv), "\x00"); a != "" {
		found.Argv = strings.Split(a, "\x00")
	}
	m.rec.Append(&recordpb.Record{Body: &recordpb.Record_ProcessFound{ProcessFound: found}})
}
