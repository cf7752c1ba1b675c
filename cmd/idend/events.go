package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os/signal"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/idend/idend/internal/api/apipb"
	"github.com/idend/idend/internal/events"
	"github.com/idend/idend/internal/events/recordpb"
)

type eventsOptions struct {
	filter   events.Filter
	follow   bool
	asJSON   bool
	stateDir string
}

const eventsLong = `Print the records of the recording: what sessions did (exec, fork, exit,
connect, sendmsg, socket, unix_connect) with the verdict the kernel gave and
the strength of the identity, and what the daemon decided (session_open,
session_close, intent_change, escalation, approval, ...).

Without --follow, events reads the recording in <state-dir>/recordings from
the start and works without a running daemon. It stops at the first damaged
record, with an error: idend audit verify tells what is wrong. With --follow,
it prints the records the running daemon writes from now on, until
interrupted.

Text output is one record a line:
  TIME SEQ SESSION PROCESS KIND VERDICT STRENGTH WHAT
with "-" for what a record does not have. With --json, each record is one
JSON object on its own line, with the keys seq, time, kind, and, as the
record has them, session, process, identity, verdict and the fields of its
kind.

--session, --kind and --verdict select records; each takes a comma-separated
list. Kinds: exec, fork, exit, connect, sendmsg, socket, unix_connect,
daemon_start, daemon_stop, session_open, session_close, intent_change,
escalation, approval, host_resolution, exec_refresh, retention, gap.
Verdicts (kernel actions only): allow, deny, audit, escalate, killed,
lsm_denied.`

const eventsExample = `  # Everything one session was refused.
  sudo idend events --session s-7f3a2c --verdict deny,killed,escalate

  # Watch escalations as they happen, as JSON.
  sudo idend events --follow --kind escalation --json

  # Read a recording copied elsewhere.
  idend events --state-dir /backup/idend`

func newEventsCmd(g *globals) *cobra.Command {
	var o eventsOptions
	cmd := &cobra.Command{
		Use:     "events [--session ID] [--kind K] [--verdict V] [--follow] [--json]",
		Short:   "Print the recorded actions and decisions, or follow them live",
		Long:    eventsLong,
		Example: eventsExample,
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.check(); err != nil {
				return err
			}
			if o.follow {
				return followEvents(cmd.Context(), cmd.OutOrStdout(), g, &o)
			}
			return readEvents(cmd.OutOrStdout(), &o)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&o.filter.Session, "session", "", "print the records of the sessions `IDS` only")
	fs.StringVar(&o.filter.Kind, "kind", "", "print records of the `KINDS` only")
	fs.StringVar(&o.filter.Verdict, "verdict", "", "print kernel actions with the `VERDICTS` only")
	fs.BoolVarP(&o.follow, "follow", "f", false, "print the records the daemon writes from now on")
	fs.BoolVar(&o.asJSON, "json", false, "print one JSON object per record")
	fs.StringVar(&o.stateDir, "state-dir", defaultStateDir,
		"read the recording of the daemon state `DIR` (without --follow)")
	_ = cmd.RegisterFlagCompletionFunc("session", completeSessions(g))
	_ = cmd.RegisterFlagCompletionFunc("kind", completeList(kinds))
	_ = cmd.RegisterFlagCompletionFunc("verdict", completeList(verdicts))
	return cmd
}

func (o *eventsOptions) check() error {
	if err := (events.Filter{Kind: o.filter.Kind}).Validate(); err != nil {
		return usagef("invalid value for --kind: %v", err)
	}
	if err := (events.Filter{Verdict: o.filter.Verdict}).Validate(); err != nil {
		return usagef("invalid value for --verdict: %v", err)
	}
	return nil
}

// format returns the function that prints a record.
func (o *eventsOptions) format() func(io.Writer, *recordpb.Record) error {
	if o.asJSON {
		return events.FormatJSON
	}
	return events.FormatText
}

func readEvents(w io.Writer, o *eventsOptions) error {
	dir := recordingsDir(o.stateDir)
	rd, err := events.OpenReader(dir)
	if err != nil {
		return err
	}
	defer rd.Close()

	bw := bufio.NewWriter(w)
	defer bw.Flush()
	format := o.format()
	for r, err := range rd.All() {
		if err != nil {
			bw.Flush()
			return fmt.Errorf("read %s: %w (idend audit verify %s tells more)", dir, err, dir)
		}
		if !o.filter.Match(r) {
			continue
		}
		if err := format(bw, r); err != nil {
			return err
		}
	}
	return bw.Flush()
}

func followEvents(ctx context.Context, w io.Writer, g *globals, o *eventsOptions) error {
	ctx, stop := signal.NotifyContext(ctx, unix.SIGINT, unix.SIGTERM)
	defer stop()

	c, err := dial(g.socket)
	if err != nil {
		return err
	}
	defer c.Close()

	// The daemon selects one session; the filter does the rest.
	req := &apipb.EventsRequest{}
	if sessions := o.filter.Session; sessions != "" && !strings.Contains(sessions, ",") {
		req.Session = sessions
	}
	stream, err := c.api.Events(ctx, req)
	if err != nil {
		return c.err(err)
	}

	format := o.format()
	for {
		r, err := stream.Recv()
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("idend at %s ended the event stream", c.socket)
		}
		if err != nil {
			return c.err(err)
		}
		if !o.filter.Match(r) {
			continue
		}
		if err := format(w, r); err != nil {
			return err
		}
	}
}
