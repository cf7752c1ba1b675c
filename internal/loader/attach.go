package loader

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/idend/idend/internal/cgroup"
)

// load loads the programs, creating the shared maps or reusing the pinned
// ones. The net object creates the shared maps; the others find them pinned.
func (l *Loader) load() error {
	pinned := &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: l.pinDir}}

	netSpec, err := loadNet()
	if err != nil {
		return err
	}
	var ns netSpecs
	if err := netSpec.Assign(&ns); err != nil {
		return fmt.Errorf("assign net specs: %w", err)
	}
	l.sizeRings(ns.EventsRing, ns.DenialsRing)
	l.v4Inner = ns.V4RulesMap.InnerMap.Copy()
	l.v6Inner = ns.V6RulesMap.InnerMap.Copy()
	if err := netSpec.LoadAndAssign(&l.net, pinned); err != nil {
		return fmt.Errorf("load network programs: %w", err)
	}

	execSpec, err := loadExec()
	if err != nil {
		return err
	}
	var es execSpecs
	if err := execSpec.Assign(&es); err != nil {
		return fmt.Errorf("assign exec specs: %w", err)
	}
	l.sizeRings(es.EventsRing, es.DenialsRing)
	level, err := cgroup.Level(l.opts.CgroupRoot)
	if err != nil {
		return err
	}
	if err := errors.Join(es.RootCgroupId.Set(l.rootID), es.RootLevel.Set(level)); err != nil {
		return fmt.Errorf("set exec constants: %w", err)
	}
	if err := execSpec.LoadAndAssign(&l.exec, pinned); err != nil {
		return fmt.Errorf("load exec programs: %w", err)
	}

	if l.features.LSM {
		if err := l.loadLSM(pinned, level); err != nil {
			return err
		}
	}
	if l.features.UnixHooks {
		return l.loadUnixObjects(pinned)
	}
	return nil
}

// loadLSM loads the BPF-LSM exec program, which refuses a forbidden exec
// with EPERM before the exec tracepoint would kill it.
func (l *Loader) loadLSM(pinned *ebpf.CollectionOptions, level uint32) error {
	spec, err := loadLsm()
	if err != nil {
		return err
	}
	var ls lsmSpecs
	if err := spec.Assign(&ls); err != nil {
		return fmt.Errorf("assign lsm specs: %w", err)
	}
	l.sizeRings(ls.EventsRing, ls.DenialsRing)
	if err := errors.Join(ls.RootCgroupId.Set(l.rootID), ls.RootLevel.Set(level)); err != nil {
		return fmt.Errorf("set lsm constants: %w", err)
	}
	l.lsm = new(lsmObjects)
	if err := spec.LoadAndAssign(l.lsm, pinned); err != nil {
		l.lsm = nil
		return fmt.Errorf("load lsm exec program: %w", err)
	}
	return nil
}

// loadUnixObjects loads the unix socket programs (Linux 6.7+).
func (l *Loader) loadUnixObjects(pinned *ebpf.CollectionOptions) error {
	unixSpec, err := loadUnix()
	if err != nil {
		return err
	}
	var us unixSpecs
	if err := unixSpec.Assign(&us); err != nil {
		return fmt.Errorf("assign unix specs: %w", err)
	}
	l.sizeRings(us.EventsRing, us.DenialsRing)
	l.unix = new(unixObjects)
	if err := unixSpec.LoadAndAssign(l.unix, pinned); err != nil {
		l.unix = nil
		return fmt.Errorf("load unix socket programs: %w", err)
	}
	return nil
}

// sizeRings applies the configured ring sizes to one object's copies of
// the shared rings, so that every object matches the pinned maps.
//
// A ring already pinned keeps its size: it holds records no daemon has
// read yet, and replacing it would lose them. A new size takes effect once
// `idend daemon --cleanup` has removed the pins.
func (l *Loader) sizeRings(events, denials *ebpf.MapSpec) {
	for _, r := range []struct {
		spec *ebpf.MapSpec
		want uint32
	}{{events, l.opts.EventsRingBytes}, {denials, l.opts.DenialsRingBytes}} {
		if n := pinnedSize(filepath.Join(l.pinDir, r.spec.Name)); n != 0 {
			r.spec.MaxEntries = n
		} else if r.want != 0 {
			r.spec.MaxEntries = r.want
		}
	}
}

// pinnedSize returns the max_entries of the map pinned at path, or 0.
func pinnedSize(path string) uint32 {
	m, err := ebpf.LoadPinnedMap(path, nil)
	if err != nil {
		return 0
	}
	defer m.Close()
	return m.MaxEntries()
}

type cgroupHook struct {
	name string
	prog *ebpf.Program
	at   ebpf.AttachType
}

// attach attaches every program, adopting the pinned link of a previous
// daemon where one exists.
func (l *Loader) attach() error {
	cg := []cgroupHook{
		{netProgConnect4, l.net.Connect4, ebpf.AttachCGroupInet4Connect},
		{netProgConnect6, l.net.Connect6, ebpf.AttachCGroupInet6Connect},
		{netProgSendmsg4, l.net.Sendmsg4, ebpf.AttachCGroupUDP4Sendmsg},
		{netProgSendmsg6, l.net.Sendmsg6, ebpf.AttachCGroupUDP6Sendmsg},
		{netProgSockCreate, l.net.SockCreate, ebpf.AttachCGroupInetSockCreate},
	}
	if l.unix != nil {
		cg = append(cg,
			cgroupHook{unixProgConnectUnix, l.unix.ConnectUnix, ebpf.AttachCgroupUnixConnect},
			cgroupHook{unixProgSendmsgUnix, l.unix.SendmsgUnix, ebpf.AttachCgroupUnixSendmsg},
		)
	}
	for _, h := range cg {
		if err := l.attachCgroup(h.name, h.prog, h.at); err != nil {
			return err
		}
	}

	return l.attachExec()
}

// attachExec attaches the BPF-LSM hooks, when loaded, then the process
// tracepoints. The LSM exec hook goes first: from then on a forbidden exec
// fails with EPERM and no longer reaches the exec tracepoint.
func (l *Loader) attachExec() error {
	if l.lsm != nil {
		lsm := []struct {
			name, hook string
			prog       *ebpf.Program
		}{
			{lsmProgBprmCredsFile, "lsm/bprm_creds_from_file", l.lsm.BprmCredsFile},
			{lsmProgSocketCreate, "lsm/socket_create", l.lsm.SocketCreate},
		}
		for _, h := range lsm {
			err := l.attachReplacing(h.name, h.hook, h.prog, func() (link.Link, error) {
				return link.AttachLSM(link.LSMOptions{Program: h.prog})
			})
			if err != nil {
				return err
			}
		}
	}

	tp := []struct {
		name, tracepoint string
		prog             *ebpf.Program
	}{
		{execProgSchedExec, "sched_process_exec", l.exec.SchedExec},
		{execProgSchedFork, "sched_process_fork", l.exec.SchedFork},
		{execProgSchedExit, "sched_process_exit", l.exec.SchedExit},
	}
	for _, t := range tp {
		err := l.attachReplacing(t.name, t.tracepoint, t.prog, func() (link.Link, error) {
			return link.AttachRawTracepoint(link.RawTracepointOptions{Name: t.tracepoint, Program: t.prog})
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// attachCgroup attaches prog to the cgroup root. A pinned link from an
// earlier daemon is updated in place, which swaps the program atomically.
//
// The pinned link may be attached to another cgroup: the earlier daemon ran
// with another cgroup root. The daemon restores the sessions it left there,
// so that link stays attached, set aside under links/cgroup/ID/ and updated
// to prog too, until its cgroup is gone; a link set aside for this root
// earlier is taken back.
func (l *Loader) attachCgroup(name string, prog *ebpf.Program, at ebpf.AttachType) error {
	pin := filepath.Join(l.pinDir, "links", name)

	if err := l.setAsideCgroupLink(name); err != nil {
		return err
	}
	old, err := link.LoadPinnedLink(pin, nil)
	if err == nil {
		if err := old.Update(prog); err != nil {
			old.Close()
			return fmt.Errorf("update pinned link %s: %w", name, err)
		}
		l.links = append(l.links, old)
		return l.updateSetAside(name, prog)
	}
	if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("load pinned link %s: %w", name, err)
	}

	lk, err := link.AttachCgroup(link.CgroupOptions{Path: l.opts.CgroupRoot, Attach: at, Program: prog})
	if err != nil {
		return fmt.Errorf("attach %s to %s: %w", name, l.opts.CgroupRoot, err)
	}
	if err := lk.Pin(pin); err != nil {
		lk.Close()
		return fmt.Errorf("pin link %s: %w", name, err)
	}
	l.links = append(l.links, lk)
	return l.updateSetAside(name, prog)
}

// setAsideCgroupLink makes links/name the pinned link on this cgroup root,
// or absent: a link there on another cgroup moves to links/cgroup/ID/name,
// one whose cgroup is gone is dropped, and one set aside for this root
// moves back.
func (l *Loader) setAsideCgroupLink(name string) error {
	pin := filepath.Join(l.pinDir, "links", name)

	cg, err := pinnedLinkCgroup(pin)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return err
	case cg == 0:
		// Detached: its cgroup was removed.
		if err := os.Remove(pin); err != nil {
			return fmt.Errorf("remove detached link %s: %w", name, err)
		}
	case cg != l.rootID:
		aside := setAsidePath(l.pinDir, cg, name)
		if err := os.MkdirAll(filepath.Dir(aside), 0o700); err != nil {
			return fmt.Errorf("set aside link %s: %w", name, err)
		}
		if err := os.Rename(pin, aside); err != nil {
			return fmt.Errorf("set aside link %s: %w", name, err)
		}
	}

	mine := setAsidePath(l.pinDir, l.rootID, name)
	if err := os.Rename(mine, pin); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("take back link %s: %w", name, err)
	}
	return nil
}

// updateSetAside updates the links set aside on other cgroups to prog, and
// drops those whose cgroup is gone.
func (l *Loader) updateSetAside(name string, prog *ebpf.Program) error {
	pins, err := filepath.Glob(setAsidePath(l.pinDir, 0, name))
	if err != nil {
		return fmt.Errorf("list links set aside: %w", err)
	}
	for _, pin := range pins {
		lk, err := link.LoadPinnedLink(pin, nil)
		if err != nil {
			return fmt.Errorf("load link set aside %s: %w", pin, err)
		}
		err = lk.Update(prog)
		if errors.Is(err, unix.ENOLINK) {
			// Its cgroup was removed, which detached it. The directory
			// goes with its last link; until then Remove fails.
			err = lk.Unpin()
			_ = os.Remove(filepath.Dir(pin))
		}
		lk.Close()
		if err != nil {
			return fmt.Errorf("update link set aside %s: %w", pin, err)
		}
	}
	return nil
}

// setAsidePath is where the link name attached to cgroup id is pinned
// while another cgroup is the root; id 0 gives a pattern for every id.
func setAsidePath(pinDir string, id uint64, name string) string {
	dir := "*"
	if id != 0 {
		dir = fmt.Sprint(id)
	}
	return filepath.Join(pinDir, "links", "cgroup", dir, name)
}

// pinnedLinkCgroup returns the id of the cgroup the link pinned at pin is
// attached to, 0 when its cgroup is gone.
func pinnedLinkCgroup(pin string) (uint64, error) {
	lk, err := link.LoadPinnedLink(pin, nil)
	if err != nil {
		return 0, fmt.Errorf("load pinned link %s: %w", filepath.Base(pin), err)
	}
	defer lk.Close()

	info, err := lk.Info()
	if err != nil {
		return 0, fmt.Errorf("read pinned link %s: %w", filepath.Base(pin), err)
	}
	cg := info.Cgroup()
	if cg == nil {
		return 0, fmt.Errorf("pinned link %s: not a cgroup link", filepath.Base(pin))
	}
	return cg.CgroupId, nil
}

// attachReplacing attaches prog with attach, for links that cannot be
// updated in place (raw tracepoints, LSM hooks): a pinned link running a
// program that judges as prog does is kept; otherwise the new link is
// attached before the old one goes, so that for a moment both run rather
// than neither.
func (l *Loader) attachReplacing(name, target string, prog *ebpf.Program, attach func() (link.Link, error)) error {
	pin := filepath.Join(l.pinDir, "links", name)

	old, err := link.LoadPinnedLink(pin, nil)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("load pinned link %s: %w", name, err)
	}
	if old != nil {
		same, err := l.sameProgram(old, prog)
		if err != nil {
			old.Close()
			return fmt.Errorf("compare pinned link %s: %w", name, err)
		}
		if same {
			l.links = append(l.links, old)
			return nil
		}
	}

	lk, err := attach()
	if err != nil {
		if old != nil {
			old.Close()
		}
		return fmt.Errorf("attach %s to %s: %w", name, target, err)
	}
	if old != nil {
		err = errors.Join(old.Unpin(), old.Close())
		if err != nil {
			lk.Close()
			return fmt.Errorf("replace pinned link %s: %w", name, err)
		}
	}
	if err := lk.Pin(pin); err != nil {
		lk.Close()
		return fmt.Errorf("pin link %s: %w", name, err)
	}
	l.links = append(l.links, lk)
	return nil
}

// sameProgram reports whether the program a link runs judges as prog does:
// the same instructions, the same pinned maps and the same load-time
// constants. The tag covers only the first: the kernel computes it with
// map references blanked out, so two loads of one object whose .rodata
// differs (root_cgroup_id, root_level: another cgroup root) share a tag.
func (l *Loader) sameProgram(lk link.Link, prog *ebpf.Program) (bool, error) {
	li, err := lk.Info()
	if err != nil {
		return false, fmt.Errorf("read link info: %w", err)
	}
	running, err := ebpf.NewProgramFromID(li.Program)
	if err != nil {
		return false, fmt.Errorf("open running program: %w", err)
	}
	defer running.Close()

	a, err := running.Info()
	if err != nil {
		return false, fmt.Errorf("read running program info: %w", err)
	}
	b, err := prog.Info()
	if err != nil {
		return false, fmt.Errorf("read program info: %w", err)
	}
	if a.Tag != b.Tag {
		return false, nil
	}
	return l.sameMaps(a, b)
}

// sameMaps compares the maps of two programs of one tag, by name: a map
// pinned under the loader's directory must be the same map in both, and
// a map the programs may only read (.rodata) must hold the same bytes.
// Other maps are private to each object and hold nothing from one run to
// the next (path_scratch).
func (l *Loader) sameMaps(running, prog *ebpf.ProgramInfo) (bool, error) {
	have, err := programMaps(running)
	if err != nil {
		return false, err
	}
	defer closeMaps(have)
	want, err := programMaps(prog)
	if err != nil {
		return false, err
	}
	defer closeMaps(want)
	pinned, err := pinnedMapIDs(l.pinDir)
	if err != nil {
		return false, err
	}

	if len(have) != len(want) {
		return false, nil
	}
	for name, w := range want {
		h, ok := have[name]
		if !ok {
			return false, nil
		}
		switch {
		case h.id == w.id:
		case pinned[w.id]:
			return false, nil // the running program uses a map since replaced
		case w.info.Flags&unix.BPF_F_RDONLY_PROG != 0:
			if same, err := sameContents(h.m, w.m); err != nil || !same {
				return false, err
			}
		}
	}
	return true, nil
}

type progMap struct {
	m    *ebpf.Map
	id   ebpf.MapID
	info *ebpf.MapInfo
}

// programMaps opens the maps a program uses, by name. The caller closes
// them with closeMaps.
func programMaps(p *ebpf.ProgramInfo) (map[string]progMap, error) {
	ids, ok := p.MapIDs()
	if !ok {
		return nil, fmt.Errorf("program %s: map ids: %w", p.Name, ErrNotSupported)
	}
	out := make(map[string]progMap, len(ids))
	for _, id := range ids {
		m, err := ebpf.NewMapFromID(id)
		if err != nil {
			closeMaps(out)
			return nil, fmt.Errorf("open map %d of program %s: %w", id, p.Name, err)
		}
		info, err := m.Info()
		if err != nil {
			m.Close()
			closeMaps(out)
			return nil, fmt.Errorf("read map %d of program %s: %w", id, p.Name, err)
		}
		out[info.Name] = progMap{m: m, id: id, info: info}
	}
	return out, nil
}

func closeMaps(ms map[string]progMap) {
	for _, pm := range ms {
		pm.m.Close()
	}
}

// sameContents compares two single-element arrays, such as .rodata.
func sameContents(a, b *ebpf.Map) (bool, error) {
	if a.Type() != ebpf.Array || b.Type() != ebpf.Array || a.MaxEntries() != 1 || b.MaxEntries() != 1 {
		return false, nil
	}
	x, err := a.LookupBytes(uint32(0))
	if err != nil {
		return false, fmt.Errorf("read running program's constants: %w", err)
	}
	y, err := b.LookupBytes(uint32(0))
	if err != nil {
		return false, fmt.Errorf("read program constants: %w", err)
	}
	return bytes.Equal(x, y), nil
}

// pinnedMapIDs returns the ids of the maps pinned in dir: the state every
// program shares.
func pinnedMapIDs(dir string) (map[ebpf.MapID]bool, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read pin directory: %w", err)
	}
	ids := make(map[ebpf.MapID]bool)
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		m, err := ebpf.LoadPinnedMap(filepath.Join(dir, e.Name()), nil)
		if err != nil {
			return nil, fmt.Errorf("load pinned map %s: %w", e.Name(), err)
		}
		info, err := m.Info()
		m.Close()
		if err != nil {
			return nil, fmt.Errorf("read pinned map %s: %w", e.Name(), err)
		}
		if id, ok := info.ID(); ok {
			ids[id] = true
		}
	}
	return ids, nil
}

// ensureBPFFS creates dir, mounting bpffs at /sys/fs/bpf first when dir is
// below it and nothing is mounted there.
func ensureBPFFS(dir string) error {
	if dir == "" || !filepath.IsAbs(dir) {
		return fmt.Errorf("bpffs directory %q: not an absolute path", dir)
	}
	parent := filepath.Dir(dir)
	if !isBPFFS(parent) && parent == "/sys/fs/bpf" {
		if err := unix.Mount("bpf", parent, "bpf", 0, "mode=0700"); err != nil {
			return fmt.Errorf("mount bpffs at %s: %w", parent, err)
		}
	}
	if !isBPFFS(parent) {
		return fmt.Errorf("bpffs directory %s: %s is not on a bpffs mount", dir, parent)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create bpffs directory: %w", err)
	}
	return nil
}

func isBPFFS(path string) bool {
	var st unix.Statfs_t
	return unix.Statfs(path, &st) == nil && st.Type == unix.BPF_FS_MAGIC
}

// removeOtherLayouts unpins the state of other layout versions, detaching
// their programs, and returns their names. It runs after the current
// layout's programs are attached, so that no call goes unjudged between.
func removeOtherLayouts(dir string, keep int) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read bpffs directory: %w", err)
	}
	var removed []string
	for _, e := range entries {
		if !e.IsDir() || !strings.HasPrefix(e.Name(), "v") || e.Name() == fmt.Sprintf("v%d", keep) {
			continue
		}
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return removed, fmt.Errorf("remove pinned layout %s: %w", e.Name(), err)
		}
		removed = append(removed, e.Name())
	}
	return removed, nil
}
