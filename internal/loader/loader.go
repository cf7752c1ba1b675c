// Package loader owns idend's kernel side: it loads the BPF programs,
// attaches them once to idend's cgroup root, pins programs, links and maps
// under a bpffs directory so that enforcement outlives the daemon, and keeps
// each session's policy in the kernel maps.
package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/idend/idend/internal/cgroup"
)

// LayoutVersion names the layout of the pinned maps. Pinned state of
// another version is replaced, never read.
const LayoutVersion = 1

// Sentinel errors callers branch on.
var (
	ErrTooLarge       = errors.New("policy exceeds capacity")
	ErrNotSupported   = errors.New("not supported by this kernel")
	ErrUnknownSession = errors.New("no such session in the kernel")
)

// Options configure a Loader.
type Options struct {
	// BPFFSDir is a directory on a bpffs mount; the loader pins everything
	// below it. It is created if missing.
	BPFFSDir string
	// CgroupRoot is the absolute path of idend's cgroup v2 root directory.
	CgroupRoot string
	// MaxPrefixes bounds each session's network rules (IPv4 and IPv6
	// prefixes counted separately). Zero means 65536.
	MaxPrefixes int
	// MaxPaths bounds each session's unix socket paths and executables
	// (each). Zero means 1024.
	MaxPaths int
	// EventsRingBytes and DenialsRingBytes size the two event rings: a
	// power of two, at least a page. Zero keeps the built-in sizes (8 MiB
	// and 4 MiB). Pinned rings keep the size they were created with.
	EventsRingBytes, DenialsRingBytes uint32
}

// Loader holds idend's loaded programs and maps. It is safe for concurrent
// use. Close releases the daemon's handles; pinned state stays in force.
type Loader struct {
	opts     Options
	pinDir   string
	features Features
	rootID   uint64
	replaced []string

	v4Inner, v6Inner *ebpf.MapSpec

	net  netObjects
	exec execObjects
	unix *unixObjects
	lsm  *lsmObjects // nil without BPF-LSM

	mu       sync.Mutex
	links    []link.Link
	policies map[uint64]*applied // by cgroup id
	used     map[uint32]bool     // policy ids in use
	next     uint32
	unixUsed int
	execUsed int
}

// Open loads idend's programs, reusing pinned maps, and attaches them to
// the cgroup root, adopting pinned links where they exist, so that no call
// goes unjudged in between. Needs CAP_SYS_ADMIN and CAP_BPF.
func Open(opts Options) (*Loader, error) {
	if opts.MaxPrefixes == 0 {
		opts.MaxPrefixes = 65536
	}
	if opts.MaxPaths == 0 {
		opts.MaxPaths = 1024
	}
	if err := ensureBPFFS(opts.BPFFSDir); err != nil {
		return nil, err
	}
	rootID, err := cgroup.ID(opts.CgroupRoot)
	if err != nil {
		return nil, fmt.Errorf("cgroup root: %w", err)
	}

	l := &Loader{
		opts:     opts,
		pinDir:   filepath.Join(opts.BPFFSDir, fmt.Sprintf("v%d", LayoutVersion)),
		features: Probe(),
		rootID:   rootID,
		policies: make(map[uint64]*applied),
		used:     make(map[uint32]bool),
		next:     1,
	}
	if err := os.MkdirAll(filepath.Join(l.pinDir, "links"), 0o700); err != nil {
		return nil, fmt.Errorf("create pin directory: %w", err)
	}
	if err := l.load(); err != nil {
		l.Close()
		return nil, err
	}
	if err := l.attach(); err != nil {
		l.Close()
		return nil, err
	}
	if err := l.adoptPolicies(); err != nil {
		l.Close()
		return nil, fmt.Errorf("read pinned policies: %w", err)
	}
	if l.replaced, err = removeOtherLayouts(opts.BPFFSDir, LayoutVersion); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// Replaced names the pinned layouts of other versions that Open found and
// removed. Their sessions' rules are gone; the daemon applies them anew.
func (l *Loader) Replaced() []string { return l.replaced }

// Features reports what the kernel offered when the loader opened.
func (l *Loader) Features() Features { return l.features }

// Close releases the loader's file descriptors. Pinned programs, links and
// maps stay, and with them enforcement.
func (l *Loader) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()

	var errs []error
	for _, lk := range l.links {
		errs = append(errs, lk.Close())
	}
	l.links = nil
	errs = append(errs, l.net.Close(), l.exec.Close())
	if l.unix != nil {
		errs = append(errs, l.unix.Close())
	}
	if l.lsm != nil {
		errs = append(errs, l.lsm.Close())
	}
	return errors.Join(errs...)
}

// Cleanup detaches and unpins everything idend pinned under bpffsDir,
// of every layout. Enforcement ends for all sessions.
func Cleanup(bpffsDir string) error {
	if err := os.RemoveAll(bpffsDir); err != nil {
		return fmt.Errorf("remove pinned objects: %w", err)
	}
	return nil
}
