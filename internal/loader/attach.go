package loader

import (
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
func (l *Loader) sizeRings(events, denials *ebpf.MapSpec) {
	if n := l.opts.EventsRingBytes; n != 0 {
		events.MaxEntries = n
	}
	if n := l.opts.DenialsRingBytes; n != 0 {
		denials.MaxEntries = n
	}
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

// attachExec attaches the BPF-LSM exec hook, when loaded, then the process
// tracepoints. The LSM hook goes first: from then on a forbidden exec fails
// with EPERM and no longer reaches the exec tracepoint.
func (l *Loader) attachExec() error {
	if l.lsm != nil {
		prog := l.lsm.BprmCredsFile
		err := l.attachReplacing(lsmProgBprmCredsFile, "lsm/bprm_creds_from_file", prog,
			func() (link.Link, error) { return link.AttachLSM(link.LSMOptions{Program: prog}) })
		if err != nil {
			return err
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
func (l *Loader) attachCgroup(name string, prog *ebpf.Program, at ebpf.AttachType) error {
	pin := filepath.Join(l.pinDir, "links", name)

	old, err := link.LoadPinnedLink(pin, nil)
	if err == nil {
		if err := old.Update(prog); err != nil {
			old.Close()
			return fmt.Errorf("update pinned link %s: %w", name, err)
		}
		l.links = append(l.links, old)
		return nil
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
	return nil
}

// attachReplacing attaches prog with attach, for links that cannot be
// updated in place (raw tracepoints, LSM hooks): a pinned link running the
// same program is kept; otherwise the new link is attached before the old
// one goes, so that for a moment both run rather than neither.
func (l *Loader) attachReplacing(name, target string, prog *ebpf.Program, attach func() (link.Link, error)) error {
	pin := filepath.Join(l.pinDir, "links", name)

	old, err := link.LoadPinnedLink(pin, nil)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("load pinned link %s: %w", name, err)
	}
	if old != nil && sameProgram(old, prog) {
		l.links = append(l.links, old)
		return nil
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

// sameProgram reports whether a link runs a program with prog's tag.
func sameProgram(lk link.Link, prog *ebpf.Program) bool {
	li, err := lk.Info()
	if err != nil {
		return false
	}
	running, err := ebpf.NewProgramFromID(li.Program)
	if err != nil {
		return false
	}
	defer running.Close()

	a, errA := running.Info()
	b, errB := prog.Info()
	return errA == nil && errB == nil && a.Tag == b.Tag
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
