package main

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/idend/idend/internal/events"
)

type replayOptions struct {
	intent   string
	session  string
	asJSON   bool
	stateDir string
}

const replayLong = `Replay re-evaluates every kernel action of a recording (connect, sendmsg,
socket, unix socket connect and sendmsg, exec) with the same evaluator the
daemon compiles intents with, rebuilding each session from the recording's
own control records: its intent, the addresses its host names resolved to,
the files its programs were, the escalations approved.

Without --intent, replay checks the recorded verdicts: each action the
evaluator decides differently from the kernel is a bug or a sign of
tampering, and replay then exits with status 1.

With --intent FILE, replay evaluates every session (or --session ID) under
that intent instead and shows what it would have decided differently: the
actions it would newly deny and newly allow, by kind. Use it to trial a
stricter intent against what agents really did. Differences are the answer
here, not a failure: replay exits 0.

RECORDING is a recording directory or segment files, in order; by default
<state-dir>/recordings. Replay needs no daemon. Its output depends only on
the recording and the intent: the same input prints the same bytes.

With --json, each difference is one JSON object on its own line ("type":
"difference"), followed by one summary object ("type": "summary").`

const replayExample = `  # Would a stricter intent have broken the agent's work?
  sudo idend replay --intent strict.yaml --session s-7f3a2c

  # Check the recorded verdicts of a copied recording.
  idend replay /backup/idend/recordings`

func newReplayCmd(g *globals) *cobra.Command {
	var o replayOptions
	cmd := &cobra.Command{
		Use:     "replay [--intent FILE] [--session ID] [--json] [RECORDING...]",
		Short:   "Re-evaluate a recording, or show what another intent would have decided",
		Long:    replayLong,
		Example: replayExample,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				args = []string{recordingsDir(o.stateDir)}
			}
			return runReplay(cmd.OutOrStdout(), &o, args)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&o.intent, "intent", "",
		"evaluate under the intent in `FILE` instead of the recorded ones")
	fs.StringVar(&o.session, "session", "", "replay the session `ID` only")
	fs.BoolVar(&o.asJSON, "json", false, "print JSON objects, one per line")
	fs.StringVar(&o.stateDir, "state-dir", defaultStateDir,
		"replay the recording of the daemon state `DIR`")
	return cmd
}

func runReplay(w io.Writer, o *replayOptions, paths []string) error {
	var opts events.ReplayOptions
	opts.Session = o.session
	if o.intent != "" {
		in, err := loadIntent(o.intent)
		if err != nil {
			return err
		}
		opts.Intent = in
	}

	rd, err := events.OpenReader(paths...)
	if err != nil {
		return err
	}
	defer rd.Close()

	rep, replayErr := events.Replay(rd.All(), opts)
	write := rep.WriteText
	if o.asJSON {
		write = rep.WriteJSON
	}
	if err := write(w); err != nil {
		return err
	}
	if replayErr != nil {
		return replayErr
	}
	if opts.Intent == nil && rep.Differ > 0 {
		return &exitError{Status: exitFailure,
			Msg: fmt.Sprintf("%d recorded verdicts differ from the evaluator's", rep.Differ)}
	}
	return nil
}
