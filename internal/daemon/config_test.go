package daemon

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLoadConfig(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}

	cfg, err := LoadConfig(write("ok.yaml", `
socket: /tmp/x.sock
cgroup_root: agents
registrations:
  - spiffe_id: spiffe://example.org/a
    selectors: ["unix:uid:1001"]
refresh:
  hosts: 30s
`))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Socket != "/tmp/x.sock" || cfg.CgroupRoot != "agents" || cfg.StateDir != DefaultStateDir ||
		cfg.Refresh.Hosts != 30*time.Second || cfg.Refresh.Executables != 2*time.Second ||
		len(cfg.Registrations) != 1 {
		t.Errorf("config %+v: want the file's values over the defaults", cfg)
	}

	cfg, err = LoadConfig(write("empty.yaml", ""))
	if err != nil || cfg.Socket != DefaultSocket {
		t.Errorf("empty config: %+v, %v; want the defaults", cfg, err)
	}

	for name, tt := range map[string]struct{ text, want string }{
		"unknown key":   {"sockett: /x\n", "field sockett not found"},
		"bad selector":  {"registrations:\n  - spiffe_id: spiffe://example.org/a\n    selectors: [\"unix:nope:1\"]\n", "unix:nope:1"},
		"bad id":        {"registrations:\n  - spiffe_id: https://x\n    selectors: [\"unix:uid:1\"]\n", "spiffe"},
		"bad root":      {"cgroup_root: ..\n", "cgroup_root"},
		"bad prefixes":  {"limits:\n  max_prefixes: 0\n", "limits.max_prefixes"},
		"bad refresh":   {"refresh:\n  hosts: -1s\n", "refresh"},
		"bad duration":  {"limits:\n  max_ttl: soon\n", "line 2"},
		"not a mapping": {"- 1\n", "config"},
	} {
		_, err := LoadConfig(write(strings.ReplaceAll(name, " ", "-")+".yaml", tt.text))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want an error naming %q", name, err, tt.want)
		}
	}

	if _, err := LoadConfig(filepath.Join(dir, "missing.yaml")); err == nil {
		t.Error("a named config file that does not exist was accepted")
	}
}
