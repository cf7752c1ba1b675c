package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"

	"github.com/idend/idend/internal/daemon"
)

// version overrides idend's release at build time, with
// -ldflags "-X main.version=v1.2.3"; daemon.Version serves otherwise.
var version = ""

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print idend's version",
		Long: `Print idend's version, the commit it was built from when known, and the Go
version it was built with.`,
		Example: `  idend version`,
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return printVersion(cmd.OutOrStdout())
		},
	}
}

func printVersion(w io.Writer) error {
	v, commit := buildVersion()
	if commit != "" {
		v += " (" + commit + ")"
	}
	_, err := fmt.Fprintf(w, "idend %s %s\n", v, runtime.Version())
	return err
}

// buildVersion returns the version and the VCS commit idend was built
// from, as far as the build recorded it.
func buildVersion() (v, commit string) {
	v = version
	if v == "" {
		v = daemon.Version
	}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return v, ""
	}
	var dirty bool
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			commit = s.Value
			if len(commit) > 12 {
				commit = commit[:12]
			}
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if commit != "" && dirty {
		commit += "-dirty"
	}
	return v, commit
}
