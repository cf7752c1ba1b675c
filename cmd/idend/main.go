// Command idend is the idend node daemon and its command-line client in one
// binary: `idend daemon` enforces the intents of agent sessions in the
// kernel; the other commands open and inspect sessions through the daemon's
// API socket, run programs inside sessions, and read the recording.
package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"
)

// Exit statuses of idend's own commands. `idend run` exits with its
// command's status instead.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

const (
	defaultSocket   = "/run/idend/idend.sock"
	defaultStateDir = "/var/lib/idend"
	socketEnv       = "IDEND_SOCKET"
	sessionEnv      = "IDEND_SESSION"
)

func main() {
	root := newRootCmd()
	cmd, err := root.ExecuteC()
	os.Exit(exitStatus(cmd, err))
}

// globals holds the flags every command takes.
type globals struct {
	socket string
}

func newRootCmd() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:   "idend",
		Short: "Enforce what AI agents may do, in the kernel, session by session",
		Long: `idend confines untrusted workloads such as AI agents. Each agent runs in a
session: a cgroup opened with a declared intent (an YAML file naming the
destinations, unix sockets and programs it may use) and an identity (a SPIFFE
SVID, kernel-attested process facts, or a bearer credential). eBPF programs
attached to the session's cgroup enforce the intent in the kernel, and every
action is written to a hash-chained recording that can be verified and
replayed.

The same binary is the node daemon (idend daemon) and its client. Client
commands talk to the daemon over its API socket, chosen with --socket or the
IDEND_SOCKET environment variable. The commands that read recordings (events
without --follow, audit verify, replay) and intent check work without a
running daemon.`,
		Example: `  # What does this kernel let idend enforce?
  sudo idend doctor

  # Check an intent file, then run a program under it.
  idend intent check agent.yaml
  sudo idend run --intent agent.yaml --user agent -- python3 agent.py

  # Watch what sessions do, and check the recording was not altered.
  sudo idend events --follow
  sudo idend audit verify`,
		SilenceErrors:     true,
		SilenceUsage:      true,
		Args:              nil, // cobra then reports unknown commands
		RunE:              groupRunE,
		CompletionOptions: cobra.CompletionOptions{HiddenDefaultCmd: false},
	}
	root.PersistentFlags().StringVar(&g.socket, "socket", socketDefault(),
		"`PATH` of the daemon's API socket; $"+socketEnv+" sets the default")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		return usageError{err}
	})

	root.AddCommand(
		newDaemonCmd(g),
		newDoctorCmd(g),
		newIntentCmd(g),
		newSessionCmd(g),
		newRunCmd(g),
		newExecCmd(g),
		newEventsCmd(g),
		newAuditCmd(g),
		newReplayCmd(g),
		newVersionCmd(),
	)
	return root
}

// socketDefault is the API socket used when --socket is not given.
func socketDefault() string {
	if s := os.Getenv(socketEnv); s != "" {
		return s
	}
	return defaultSocket
}

// groupRunE runs a command that only groups others: it refuses unknown
// subcommands and, given none, prints its help as a usage error.
func groupRunE(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usagef("unknown command %q for %q", args[0], cmd.CommandPath())
	}
	cmd.SetOut(cmd.ErrOrStderr())
	_ = cmd.Help()
	return errQuietUsage
}

// usageError is bad usage: an unknown command or flag, a missing argument,
// a bad flag value. idend exits 2 on it.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

// errQuietUsage is a usage error whose explanation was already printed.
var errQuietUsage = usageError{errors.New("")}

// exitError ends idend with a status of its own, printing Msg when set.
type exitError struct {
	Status int
	Msg    string
}

func (e *exitError) Error() string {
	return fmt.Sprintf("exit status %d", e.Status)
}

// exitStatus prints err, if any, as "idend: message" on stderr and returns
// the status idend exits with.
func exitStatus(cmd *cobra.Command, err error) int {
	if err == nil {
		return exitOK
	}

	var ee *exitError
	if errors.As(err, &ee) {
		if ee.Msg != "" {
			fmt.Fprintf(os.Stderr, "idend: %s\n", ee.Msg)
		}
		return ee.Status
	}

	var ue usageError
	if errors.As(err, &ue) || isCobraUsage(err) {
		if err.Error() != "" {
			fmt.Fprintf(os.Stderr, "idend: %s\n", err)
			path := "idend"
			if cmd != nil {
				path = cmd.CommandPath()
			}
			fmt.Fprintf(os.Stderr, "Run '%s --help' for usage.\n", path)
		}
		return exitUsage
	}

	fmt.Fprintf(os.Stderr, "idend: %s\n", err)
	return exitFailure
}

// isCobraUsage recognises the usage errors cobra makes itself, which carry
// no type of their own.
func isCobraUsage(err error) bool {
	msg := err.Error()
	for _, prefix := range []string{"unknown command ", "required flag", "if any flags in the group"} {
		if strings.HasPrefix(msg, prefix) {
			return true
		}
	}
	return false
}

// noArgs refuses positional arguments.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usagef("%s takes no arguments, got %q", cmd.CommandPath(), args[0])
	}
	return nil
}

// namedArgs wants exactly the arguments named, in order.
func namedArgs(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < len(names) {
			return usagef("missing argument %s", strings.Join(names[len(args):], " "))
		}
		if len(args) > len(names) {
			return usagef("unexpected argument %q", args[len(names)])
		}
		return nil
	}
}
