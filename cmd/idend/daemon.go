package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"

	"github.com/cilium/ebpf"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/idend/idend/internal/daemon"
)

type daemonOptions struct {
	config     string
	stateDir   string
	bpffsDir   string
	cgroupRoot string
	verbose    bool
	cleanup    bool
}

const daemonLong = `Run the idend node daemon in the foreground.

The daemon loads the eBPF programs and attaches them to the session cgroup
root (or adopts the ones a previous daemon pinned), restores the sessions
that were open, records every action of every session, and serves the API on
the unix socket given by --socket. It logs to stderr: lifecycle at info, per
object detail with --verbose. SIGTERM or SIGINT stop it cleanly; enforcement
stays pinned in the kernel while it is down, and sessions survive a restart.

Configuration comes from --config FILE (YAML: registration entries, the SPIFFE
Workload API socket, the admin group, limits, recording and metrics address),
by default ` + daemon.DefaultConfigPath + ` when it exists, else built-in
defaults. --socket, --state-dir, --bpffs-dir and --cgroup-root override the
file, so that several daemons can run side by side:
  API socket        ` + daemon.DefaultSocket + ` (or $IDEND_SOCKET)
  state, recordings ` + daemon.DefaultStateDir + `
  pinned objects    ` + daemon.DefaultBPFFSDir + ` (a directory under a bpffs mount)
  session cgroups   <cgroup2 mount>/` + daemon.DefaultCgroupRoot + `

With --cleanup, the daemon does not start: it removes the pinned programs and
maps and the session cgroups (killing their processes) of the daemon with the
same flags, and leaves the recordings. The daemon must be stopped first.

The daemon needs root.`

const daemonExample = `  # Run with the defaults (as systemd does with scripts/idend.service).
  sudo idend daemon

  # A second daemon for tests, side by side with the first.
  sudo idend daemon --state-dir /tmp/t --socket /tmp/t/idend.sock \
      --bpffs-dir /sys/fs/bpf/idend-test --cgroup-root idend-test

  # Remove what that daemon left in the kernel.
  sudo idend daemon --cleanup --state-dir /tmp/t \
      --bpffs-dir /sys/fs/bpf/idend-test --cgroup-root idend-test`

func newDaemonCmd(g *globals) *cobra.Command {
	var o daemonOptions
	cmd := &cobra.Command{
		Use:     "daemon [flags]",
		Short:   "Run the node daemon (foreground)",
		Long:    daemonLong,
		Example: daemonExample,
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := daemonConfig(cmd, g, &o)
			if err != nil {
				return err
			}
			if os.Geteuid() != 0 {
				return errors.New("the daemon needs root: it loads BPF programs and manages cgroups")
			}
			if o.cleanup {
				return cleanupDaemon(cfg)
			}
			return runDaemon(cfg, o.verbose)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&o.config, "config", "", "read the configuration from YAML `FILE` "+
		"(default "+daemon.DefaultConfigPath+" when it exists)")
	fs.StringVar(&o.stateDir, "state-dir", "", "keep state and recordings in `DIR` "+
		"(default "+daemon.DefaultStateDir+")")
	fs.StringVar(&o.bpffsDir, "bpffs-dir", "", "pin programs and maps in `DIR`, under a bpffs mount "+
		"(default "+daemon.DefaultBPFFSDir+")")
	fs.StringVar(&o.cgroupRoot, "cgroup-root", "", "create session cgroups under the cgroup2 "+
		"directory `NAME` (default "+daemon.DefaultCgroupRoot+")")
	fs.BoolVarP(&o.verbose, "verbose", "v", false, "log debug detail, and verifier errors in full")
	fs.BoolVar(&o.cleanup, "cleanup", false,
		"remove the pinned objects and session cgroups, then exit")
	return cmd
}

// daemonConfig reads the config file and lays the flags given over it.
func daemonConfig(cmd *cobra.Command, g *globals, o *daemonOptions) (daemon.Config, error) {
	cfg, err := daemon.LoadConfig(o.config)
	if err != nil {
		return cfg, err
	}
	fs := cmd.Flags()
	if fs.Changed("socket") || os.Getenv(socketEnv) != "" {
		cfg.Socket = g.socket
	}
	if fs.Changed("state-dir") {
		cfg.StateDir = o.stateDir
	}
	if fs.Changed("bpffs-dir") {
		cfg.BPFFSDir = o.bpffsDir
	}
	if fs.Changed("cgroup-root") {
		cfg.CgroupRoot = o.cgroupRoot
	}
	for _, f := range []struct{ name, value string }{
		{"--socket", cfg.Socket}, {"--state-dir", cfg.StateDir},
		{"--bpffs-dir", cfg.BPFFSDir}, {"--cgroup-root", cfg.CgroupRoot},
	} {
		if f.value == "" {
			return cfg, usagef("invalid value for %s: empty", f.name)
		}
	}
	return cfg, nil
}

func runDaemon(cfg daemon.Config, verbose bool) error {
	level := slog.LevelInfo
	if verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	ctx, stop := signal.NotifyContext(context.Background(), unix.SIGTERM, unix.SIGINT)
	defer stop()

	err := daemon.Run(ctx, cfg, log)
	var ve *ebpf.VerifierError
	if verbose && errors.As(err, &ve) {
		fmt.Fprintf(os.Stderr, "%+v\n", ve)
	}
	return err
}

func cleanupDaemon(cfg daemon.Config) error {
	if err := daemon.Cleanup(cfg); err != nil {
		return fmt.Errorf("clean up: %w", err)
	}
	return nil
}
