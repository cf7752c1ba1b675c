package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/idend/idend/internal/intent"
)

// resolveTimeout bounds the resolution of an intent's host names.
const resolveTimeout = 5 * time.Second

func newIntentCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "intent",
		Short: "Work with intent files",
		Long: `An intent file declares what a session may do: the destinations it may
connect or send to, the unix sockets it may use, the programs it may run, its
ttl, and what happens to an action outside it (block, escalate or audit).
These commands need no daemon.`,
		Args: cobra.ArbitraryArgs,
		RunE: groupRunE,
	}
	cmd.AddCommand(newIntentCheckCmd())
	return cmd
}

const intentCheckLong = `Check validates the intent in FILE as the daemon would when opening a
session with it, and prints what it compiles to: the prefixes and ports the
kernel allows, the unix socket paths, the programs (by device and inode), and
what compiled to nothing (a host name that does not resolve, a program that
is not there).

Host names are resolved with the system resolver, for this display: the
daemon resolves them itself, and again when their addresses change. Programs
are looked up on this machine.

With --parent PARENT-FILE, check also verifies that FILE is a subset of the
parent intent in every part, as a sub-session's intent must be: destinations,
ports, protocols, unix sockets, programs and ttl, with an on_violation no
looser. Each wider rule is named with its line.

Exit status: 0 when the intent is valid (and a subset of --parent), 1 when
not, with every problem named by file, line and field.`

const intentCheckExample = `  idend intent check examples/intents/payments-retry-analysis.yaml
  idend intent check narrow.yaml --parent agent.yaml`

func newIntentCheckCmd() *cobra.Command {
	var parent string
	cmd := &cobra.Command{
		Use:     "check FILE [--parent PARENT-FILE]",
		Short:   "Validate an intent file and print what it compiles to",
		Long:    intentCheckLong,
		Example: intentCheckExample,
		Args:    namedArgs("FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runIntentCheck(cmd.Context(), cmd.OutOrStdout(), args[0], parent)
		},
	}
	cmd.Flags().StringVar(&parent, "parent", "",
		"check that FILE is a subset of the intent in `PARENT-FILE`")
	return cmd
}

func runIntentCheck(ctx context.Context, w io.Writer, file, parentFile string) error {
	in, err := loadIntent(file)
	if err != nil {
		return err
	}
	var parent *intent.Intent
	if parentFile != "" {
		if parent, err = loadIntent(parentFile); err != nil {
			return err
		}
	}

	hosts := resolveHosts(ctx, os.Stderr, in, parent)
	files, err := intent.ResolveExec(in.Exec.Paths)
	if err != nil {
		fmt.Fprintf(os.Stderr, "idend: warning: %v\n", err)
	}
	c, err := intent.Compile(in, hosts, files)
	if err != nil {
		return intentError(err)
	}

	printIntent(w, file, in)
	fmt.Fprintln(w, "\nCompiles to:")
	if err := c.Describe(w); err != nil {
		return err
	}

	if parent != nil {
		if err := intent.CheckSubset(parent, in, hosts); err != nil {
			fmt.Fprintf(os.Stderr, "idend: %s is not a subset of %s:\n", file, parentFile)
			return intentError(err)
		}
		fmt.Fprintf(w, "\n%s is a subset of %s\n", file, parentFile)
	}
	return nil
}

func loadIntent(file string) (*intent.Intent, error) {
	in, err := intent.Load(file)
	if err != nil {
		return nil, intentError(err)
	}
	return in, nil
}

// intentError prints each problem of an invalid or wider intent on its own
// line and returns the status to exit with.
func intentError(err error) error {
	var ve *intent.ValidationError
	var se *intent.SubsetError
	var lines []string
	switch {
	case errors.As(err, &ve):
		for _, p := range ve.Problems {
			lines = append(lines, p.Error())
		}
	case errors.As(err, &se):
		for _, p := range se.Problems {
			lines = append(lines, p)
		}
	default:
		return err
	}
	for _, l := range lines {
		fmt.Fprintf(os.Stderr, "idend: %s\n", l)
	}
	return &exitError{Status: exitFailure}
}

func printIntent(w io.Writer, file string, in *intent.Intent) {
	fmt.Fprintf(w, "%s: valid\n", file)
	fmt.Fprintf(w, "  name          %s\n", in.Name)
	fmt.Fprintf(w, "  purpose       %s\n", in.Purpose)
	fmt.Fprintf(w, "  hash          %s\n", in.Hash())
	fmt.Fprintf(w, "  ttl           %s\n", shortDuration(in.TTL))
	fmt.Fprintf(w, "  on_violation  %s\n", in.OnViolation)
}

// resolveHosts resolves the host names of the intents with the system
// resolver. A name that does not resolve is left out, with a warning on
// warn.
func resolveHosts(ctx context.Context, warn io.Writer,
	ins ...*intent.Intent) map[string][]netip.Addr {
	var names []string
	for _, in := range ins {
		if in == nil {
			continue
		}
		for _, r := range in.Egress {
			if r.Host != "" {
				names = append(names, r.Host)
			}
		}
	}
	slices.Sort(names)
	names = slices.Compact(names)

	ctx, cancel := context.WithTimeout(ctx, resolveTimeout)
	defer cancel()
	hosts := make(map[string][]netip.Addr, len(names))
	for _, name := range names {
		addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", name)
		if err != nil {
			fmt.Fprintf(warn, "idend: warning: resolve %s: %v\n", name, err)
			continue
		}
		for i, a := range addrs {
			addrs[i] = a.Unmap()
		}
		hosts[name] = addrs
	}
	return hosts
}

// shortDuration writes d without zero units: "1h", "1h30m", "20m", "45s".
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
