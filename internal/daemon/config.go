// Package daemon is idend's node daemon: it keeps the kernel programs
// attached, opens and closes sessions, records what sessions do, and
// serves the API on a unix socket.
package daemon

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/idend/idend/internal/attest"
)

// Default paths, as ../shared/SPEC.md gives them.
const (
	DefaultConfigPath = "/etc/idend/config.yaml"
	DefaultSocket     = "/run/idend/idend.sock"
	DefaultStateDir   = "/var/lib/idend"
	DefaultBPFFSDir   = "/sys/fs/bpf/idend"
	DefaultCgroupRoot = "idend"
)

// Config is the daemon's configuration. Its YAML form is the config file.
type Config struct {
	Socket     string `yaml:"socket"`
	StateDir   string `yaml:"state_dir"`
	BPFFSDir   string `yaml:"bpffs_dir"`
	CgroupRoot string `yaml:"cgroup_root"`
	// AdminGroup may open top-level sessions besides root.
	AdminGroup string `yaml:"admin_group"`
	// MetricsAddress serves Prometheus metrics when set, e.g. 127.0.0.1:9477.
	MetricsAddress string `yaml:"metrics_address"`

	SPIFFE        SPIFFEConfig   `yaml:"spiffe"`
	Registrations []attest.Entry `yaml:"registrations"`
	Limits        Limits         `yaml:"limits"`
	Recording     Recording      `yaml:"recording"`
	Refresh       Refresh        `yaml:"refresh"`
}

// Refresh says how often what intents name by name is looked at again.
type Refresh struct {
	// Hosts: host names are resolved again (default 60s). Go's resolver
	// does not report record TTLs, so this is the TTL idend assumes.
	Hosts time.Duration `yaml:"hosts"`
	// Executables: allowed programs are looked at for a new file at
	// their path (default 2s).
	Executables time.Duration `yaml:"executables"`
}

// SPIFFEConfig says where the SPIFFE Workload API is.
type SPIFFEConfig struct {
	// AgentSocket is the Workload API address, e.g.
	// unix:///run/spire/agent.sock. Empty: no SVIDs are accepted.
	AgentSocket string `yaml:"agent_socket"`
	// Audience JWT-SVIDs must be issued for. Default "idend".
	Audience string `yaml:"audience"`
}

// Limits bound what the daemon and the kernel maps hold.
type Limits struct {
	MaxSessions     int `yaml:"max_sessions"`
	MaxPrefixes     int `yaml:"max_prefixes"`
	MaxPaths        int `yaml:"max_paths"`
	EventsRingBytes int `yaml:"events_ring_bytes"`
	// MaxTTL caps every session's lifetime.
	MaxTTL time.Duration `yaml:"max_ttl"`
	// MaxProcesses bounds the tasks of each top-level session and its
	// sub-sessions together (pids.max), where the cgroup v2 pids
	// controller is available. Zero: no bound.
	MaxProcesses int `yaml:"max_processes"`
}

// Recording configures the recorder.
type Recording struct {
	// Fsync is always, control (default) or interval.
	Fsync           string `yaml:"fsync"`
	MaxSegmentBytes int64  `yaml:"max_segment_bytes"`
	MaxTotalBytes   int64  `yaml:"max_total_bytes"`
}

// DefaultConfig returns the built-in defaults.
func DefaultConfig() Config {
	return Config{
		Socket:     DefaultSocket,
		StateDir:   DefaultStateDir,
		BPFFSDir:   DefaultBPFFSDir,
		CgroupRoot: DefaultCgroupRoot,
		Limits: Limits{
			MaxSessions:  1024,
			MaxPrefixes:  65536,
			MaxPaths:     1024,
			MaxTTL:       24 * time.Hour,
			MaxProcesses: 4096,
		},
		Recording: Recording{Fsync: "control"},
		Refresh:   Refresh{Hosts: time.Minute, Executables: 2 * time.Second},
	}
}

// LoadConfig reads a config file over the defaults. An empty path reads
// DefaultConfigPath when it exists and gives the defaults otherwise.
// Unknown keys are errors.
func LoadConfig(path string) (Config, error) {
	cfg := DefaultConfig()
	explicit := path != ""
	if !explicit {
		path = DefaultConfigPath
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) && !explicit {
		return cfg, nil
	}
	if err != nil {
		return cfg, fmt.Errorf("read config: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		return cfg, fmt.Errorf("config %s: %w", path, err)
	}
	if err := cfg.validate(); err != nil {
		return cfg, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

func (c Config) validate() error {
	if _, err := attest.NewRegistry(c.Registrations); err != nil {
		return err
	}
	switch {
	case c.CgroupRoot == "" || c.CgroupRoot == "." || c.CgroupRoot == "..":
		return fmt.Errorf("cgroup_root %q: want a directory name", c.CgroupRoot)
	case c.Limits.MaxPrefixes <= 0 || c.Limits.MaxPrefixes > 1<<20:
		return fmt.Errorf("limits.max_prefixes %d: want 1 to %d", c.Limits.MaxPrefixes, 1<<20)
	case c.Refresh.Hosts <= 0 || c.Refresh.Executables <= 0:
		return fmt.Errorf("refresh intervals %v and %v: want positive durations", c.Refresh.Hosts, c.Refresh.Executables)
	case c.Limits.MaxProcesses < 0:
		return fmt.Errorf("limits.max_processes %d: want 0 (no bound) or more", c.Limits.MaxProcesses)
	case c.Limits.MaxSessions <= 0:
		return fmt.Errorf("limits.max_sessions %d: want at least 1", c.Limits.MaxSessions)
	}
	return nil
}
